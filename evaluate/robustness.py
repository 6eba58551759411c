"""``evaluate --corruptions``: the test split's corrupted copies through every ORT session the clean evaluation
opened (and the PyTorch reference when a checkpoint is at hand); top-1, ECE and the change against clean data.

Corrupted splits come from convkit.data.corruptions (published parameters, seeded, cached); the arithmetic
across models (mCE, relative mCE) is convkit.robustness's and happens in the suite report, where a baseline is.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from convkit import robustness
from convkit.calibration import calibration_bins
from convkit.data import corruptions as C
from convkit.errors import ConvkitError
from convkit.evaluate import accuracy as acc
from convkit.evaluate.images import TestData
from convkit.reference import reference_logits


@dataclass(frozen=True)
class CorruptionOptions:
    """Which corruptions (names, or ("all",)), which severities, which seed."""

    names: tuple[str, ...] = ("all",)
    severities: tuple[int, ...] = C.SEVERITIES
    seed: int = 0


@dataclass
class CorruptionRow:
    """Top-1 and ECE of one variant (or the PyTorch reference) on one corrupted split."""

    corruption: str
    severity: int
    backend: str  # "ort" | "pytorch"
    precision: str
    provider: str
    accuracy: float
    ece: float | None
    delta_vs_clean: float | None  # accuracy − the same variant's clean accuracy
    degenerate: str | None = None  # accuracy.degenerate_reason: NaN/Inf, identical outputs, one class for all


@dataclass
class RobustnessResult:
    """Everything ``--corruptions`` measured for one evaluation; eval.json's "robustness"."""

    parameters: str  # which published parameters: "CIFAR-10-C", "ImageNet-C", "+ MNIST-C affine"
    seed: int
    corruptions: list[str]
    severities: list[int]
    n: int
    data_checksum: str
    clean: dict[str, float]  # "<backend>/<precision>/<provider>" → clean top-1
    rows: list[CorruptionRow] = field(default_factory=list)
    seconds_per_corruption: dict[str, float] = field(default_factory=dict)  # make (or read) + evaluate, all severities
    cached: list[str] = field(default_factory=list)  # "<corruption>/<severity>" read from the cache
    left_out: dict[str, str] = field(default_factory=lambda: dict(C.LEFT_OUT))
    skipped: dict[str, str] = field(default_factory=dict)  # asked for but not applicable to these images

    def to_dict(self) -> dict:
        """Return the JSON form (eval.json's "robustness"), with the per-variant summary."""
        return {**asdict(self), "summary": summarize(self)}


def resolve_names(names: tuple[str, ...], channels: int) -> tuple[list[str], dict[str, str]]:
    """Return (the corruptions to run on images with ``channels`` channels, {asked-for name: why it is skipped}).

    ConvkitError (exit 2) for an unknown name, a left-out one (saying why), or when none of the names applies.
    """
    usable = C.available(channels)
    if tuple(names) == ("all",):
        return usable, {}
    check_known(names)
    run = [n for n in dict.fromkeys(names) if n in usable]
    if not run:
        raise ConvkitError(f"--corruptions: none of {', '.join(names)} applies to {channels}-channel images; "
                           f"choose from {', '.join(usable)} or all")
    return run, {n: f"not defined for {channels}-channel images" for n in names if n not in usable}


def check_known(names: tuple[str, ...]) -> None:
    """Raise ConvkitError (exit 2) for an unknown or a left-out (not generated) corruption name, saying why."""
    for name in names:
        if name in C.LEFT_OUT:
            raise ConvkitError(f"--corruptions: {name} is not generated ({C.LEFT_OUT[name]}); choose from "
                               f"{', '.join(C.CORRUPTIONS)}")
        if name not in C.CORRUPTIONS:
            raise ConvkitError(f"--corruptions: unknown corruption {name[:60]!r}; choose from "
                               f"{', '.join(C.CORRUPTIONS)} or all")


def parse_names(text: str | None) -> tuple[str, ...] | None:
    """Return the names of ``--corruptions`` ("all" or a comma list), None when the flag is absent; ConvkitError
    (exit 2) for a name that is not a corruption, before anything runs (train-all checks it before training)."""
    if text is None:
        return None
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise ConvkitError("--corruptions needs 'all' or a comma list, e.g. gaussian_noise,contrast")
    if "all" in names:
        return ("all",)
    check_known(names)
    return names


def options_from_cli(names: str | None, severities: str | None, seed: int = 0) -> CorruptionOptions | None:
    """Return the CorruptionOptions of the --corruptions / --severities flags, None without --corruptions."""
    parsed = parse_names(names)
    return None if parsed is None else CorruptionOptions(parsed, robustness.parse_severities(severities), seed)


def _key(backend: str, precision: str, provider: str) -> str:
    return f"{backend}/{precision}/{provider}"


def _row(corruption, severity, key: str, scores: np.ndarray, labels: np.ndarray, clean: dict) -> CorruptionRow:
    backend, precision, provider = key.split("/")
    top1 = float((scores.argmax(axis=1) == labels).mean())
    base = clean.get(key)
    return CorruptionRow(corruption, severity, backend, precision, provider, top1,
                         calibration_bins(scores, labels)["ece"], None if base is None else top1 - base,
                         acc.degenerate_reason(scores, labels, "scores"))


def measure(sessions: dict, specs: dict, reference, data: TestData, clean: dict[str, float],
            options: CorruptionOptions, eval_batch: int, device: str) -> RobustnessResult:
    """Return the RobustnessResult: each corruption × severity of ``data``'s test images through every (precision,
    provider) session in ``sessions`` and, when ``reference`` (a RunModel) is given, through the PyTorch model on
    ``device``.

    ``clean`` maps "<backend>/<precision>/<provider>" to that variant's clean top-1 (the deltas' base).
    """
    images, labels, checksum = data.images, data.labels, data.checksum
    names, skipped = resolve_names(options.names, images.shape[1])
    res = RobustnessResult(C.parameter_set(images.shape[-1], images.shape[1]), options.seed, names,
                           list(options.severities), len(labels), checksum, clean, skipped=skipped)
    for name in names:
        t0 = time.perf_counter()
        for sev in options.severities:
            corrupted, cached = C.corrupted_split(images, checksum, name, sev, options.seed)
            if cached:
                res.cached.append(f"{name}/{sev}")
            for (prec, kind), session in sessions.items():
                batch = eval_batch if kind == "cpu" else max(eval_batch, 1024)
                scores = acc.ort_scores(session, specs[prec], corrupted, batch)
                res.rows.append(_row(name, sev, _key("ort", prec, kind), scores, labels, clean))
            if reference is not None:
                scores = reference_logits(reference, corrupted, None, device)
                res.rows.append(_row(name, sev, _key("pytorch", "fp32", device), scores, labels, clean))
        res.seconds_per_corruption[name] = time.perf_counter() - t0
    return res


def errors_of(rows: list, key: str) -> robustness.Errors:
    """Return corruption → severity → top-1 error of the rows (dicts or CorruptionRow) of variant ``key``."""
    out: robustness.Errors = {}
    for r in rows:
        r = r if isinstance(r, dict) else asdict(r)
        if _key(r["backend"], r["precision"], r["provider"]) == key:
            out.setdefault(r["corruption"], {})[int(r["severity"])] = 1.0 - float(r["accuracy"])
    return out


def summarize(res: RobustnessResult) -> dict:
    """Return per variant: clean and mean corrupted top-1, mean ECE, the worst corruption; and the int8 − fp32
    top-1 gap on clean and on corrupted data per provider (when both were measured)."""
    variants = {}
    for key in dict.fromkeys(_key(r.backend, r.precision, r.provider) for r in res.rows):
        rows = [r for r in res.rows if _key(r.backend, r.precision, r.provider) == key]
        errors = errors_of(rows, key)
        per_c = {c: float(np.mean(list(s.values()))) for c, s in errors.items()}
        eces = [r.ece for r in rows if r.ece is not None]
        variants[key] = {"clean_accuracy": res.clean.get(key),
                         "mean_corrupted_accuracy": 1.0 - robustness.mean_error(errors),
                         "mean_ece": float(np.mean(eces)) if eces else None,
                         "worst_corruption": max(per_c, key=per_c.get) if per_c else None}
    gaps = {}
    for key, v in variants.items():
        backend, prec, provider = key.split("/")
        fp32 = variants.get(_key(backend, "fp32", provider))
        if prec == "int8" and fp32 and v["clean_accuracy"] is not None and fp32["clean_accuracy"] is not None:
            gaps[provider] = {"clean": v["clean_accuracy"] - fp32["clean_accuracy"],
                              "corrupted": v["mean_corrupted_accuracy"] - fp32["mean_corrupted_accuracy"]}
    return {"variants": variants, "int8_minus_fp32": gaps}


def markdown_lines(doc: dict | None) -> list[str]:
    """Return eval.md's compact corruption table (mean top-1 per corruption and variant over the severities,
    and the summary), [] when the evaluation ran no corruption."""
    if not doc:
        return []
    keys = list(doc["summary"]["variants"])
    bound = robustness.difference_noise_points(doc["n"])
    intro = (f"{len(doc['corruptions'])} corruptions × severities {', '.join(map(str, doc['severities']))} of the "
             f"{doc['n']} test images, {doc['parameters']} parameters, seed {doc['seed']}. Cells: top-1 averaged "
             "over the severities (change vs the same variant on clean data, points)."
             + (f" At {doc['n']} images a difference of two top-1 figures within ±{bound:.1f} points (√2 × the "
                "widest 95 % half-width; unpaired, so conservative) is within sampling noise." if bound else ""))
    lines = ["## Corruption robustness", "", intro, "",
             "| corruption | " + " | ".join(f"`{k}`" for k in keys) + " |", "|---|" + "---:|" * len(keys)]
    for c in doc["corruptions"]:
        cells = []
        for k in keys:
            rows = [r for r in doc["rows"]
                    if r["corruption"] == c and _key(r["backend"], r["precision"], r["provider"]) == k]
            a = np.mean([r["accuracy"] for r in rows]) if rows else None
            d = [r["delta_vs_clean"] for r in rows if r["delta_vs_clean"] is not None]
            cells.append("—" if a is None else f"{a:.4f}" + (f" ({np.mean(d) * 100:+.2f})" if d else ""))
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    summ = doc["summary"]["variants"]
    lines.append("| **mean** | " + " | ".join(f"**{summ[k]['mean_corrupted_accuracy']:.4f}**" for k in keys) + " |")
    for provider, g in doc["summary"]["int8_minus_fp32"].items():
        change = (g["corrupted"] - g["clean"]) * 100
        verdict = ("" if not bound else
                   f"; the change, {change:+.2f} points, is {'beyond' if abs(change) > bound else 'within'} "
                   "sampling noise")
        lines += ["", (f"int8 − fp32 top-1 on {provider}: {g['clean'] * 100:+.2f} points clean, "
                       f"{g['corrupted'] * 100:+.2f} points on corrupted data (mean over corruptions and severities)"
                       f"{verdict}.")]
    if doc.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in doc["skipped"].items()) + "."]
    if doc.get("left_out"):
        lines += ["", "Not generated: " + "; ".join(f"{k} ({v})" for k, v in doc["left_out"].items()) + "."]
    return lines + [""]


def check_applicable(options: CorruptionOptions | None, images) -> None:
    """Raise ConvkitError (exit 2) before any measuring when ``--corruptions`` cannot run on these images: a
    folder read lazily (``--data``) or a name that does not apply."""
    if options is None:
        return
    if not isinstance(images, np.ndarray):
        raise ConvkitError("--corruptions runs on a catalog dataset's test split (held in memory), not on --data "
                           "folders; drop --corruptions or evaluate on --dataset")
    resolve_names(options.names, images.shape[1])
