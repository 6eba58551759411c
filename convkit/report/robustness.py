"""The report's corruption-robustness section of a table: accuracy vs severity per model, CE / mCE / relative mCE
against the suite's baseline row (convkit.suite.ROBUSTNESS_BASELINES), the int8 − fp32 gap clean vs corrupted,
and observations computed from those numbers. Reads eval.json's "robustness" (written by ``evaluate
--corruptions``); the arithmetic is convkit.robustness's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np

from convkit import robustness as R
from convkit.report import figures as F
from convkit.report.collect import NOT_MEASURED, RunData, dig, number
from convkit.report.stats import pct, pts
from convkit.suite import ROBUSTNESS_BASELINES, Experiment


@dataclass
class ModelRobustness:
    """One run's corruption figures for the report (ORT fp32 on the evaluation's first provider)."""

    label: str
    dataset: str
    checksum: str | None
    n: int | None
    clean: float | None
    errors: R.Errors  # corruption → severity → top-1 error
    int8_gap: dict | None  # {"clean", "corrupted"} int8 − fp32 top-1, or None
    mean_ece: float | None


def of_run(label: str, dataset: str, run: RunData | None) -> ModelRobustness | None:
    """Return the ModelRobustness of ``run``, None when it was not evaluated with --corruptions."""
    doc = dig(run.eval if run else None, "robustness")
    variants = dig(doc, "summary", "variants")
    if not isinstance(variants, dict):
        return None
    key = next((k for k in variants if k.startswith("ort/fp32/")), None)
    if key is None:
        return None
    errors: R.Errors = {}
    for r in dig(doc, "rows") or []:
        acc = number(dig(r, "accuracy"))
        mine = isinstance(r, dict) and f"{r.get('backend')}/{r.get('precision')}/{r.get('provider')}" == key
        if mine and acc is not None:
            errors.setdefault(str(r.get("corruption")), {})[int(r.get("severity", 0))] = 1.0 - acc
    gap = dig(doc, "summary", "int8_minus_fp32", key.split("/")[2])
    return ModelRobustness(label, dataset, dig(doc, "data_checksum"), dig(doc, "n"),
                           number(dig(variants, key, "clean_accuracy")), errors,
                           gap if isinstance(gap, dict) else None, number(dig(variants, key, "mean_ece")))


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def severity_curve(m: ModelRobustness) -> tuple[list[int], list[float]]:
    """Return ([0, severities...], [clean top-1, mean top-1 over corruptions at each severity])."""
    sevs = sorted({s for sev in m.errors.values() for s in sev})
    return [0, *sevs], [m.clean, *[1.0 - _mean([e[s] for e in m.errors.values() if s in e]) for s in sevs]]


def severity_plot(models: list[ModelRobustness], title: str, path: Path) -> Path | None:
    """Write top-1 vs severity (0 = clean) per model; returns the path, None without data."""
    models = [m for m in models if m.clean is not None and m.errors]
    if not models:
        return None
    fig = F.new_figure(8, 4.2, layout="constrained")
    ax = fig.subplots()
    colors = matplotlib.colormaps["tab10"].colors
    for i, m in enumerate(models):
        x, y = severity_curve(m)
        ax.plot(x, y, marker="o", ms=4, color=colors[i % len(colors)], label=m.label)
    ax.set_xlabel("severity (0 = clean)")
    ax.set_ylabel("ORT fp32 top-1 (mean over corruptions)")
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    return F.save(fig, path)


def baseline_of(dataset: str, runs: dict[str, RunData]) -> tuple[str | None, ModelRobustness | None]:
    """Return (the baseline experiment's name for ``dataset``, its ModelRobustness or None when not measured)."""
    name = ROBUSTNESS_BASELINES.get(dataset)
    return name, (of_run(name, dataset, runs.get(name)) if name else None)


def scores_against(m: ModelRobustness, base: ModelRobustness | None) -> R.CorruptionScores | None:
    """Return m's mCE / relative mCE against ``base``; None without a baseline measured on the same data."""
    if base is None or m.clean is None or base.clean is None or m.checksum != base.checksum:
        return None
    return R.corruption_scores(m.errors, 1.0 - m.clean, base.errors, 1.0 - base.clean)


def _mean_corrupted(m: ModelRobustness) -> float | None:
    e = R.mean_error(m.errors)
    return None if e is None else 1.0 - e


def _worst(m: ModelRobustness) -> str | None:
    per_c = {c: _mean(list(s.values())) for c, s in m.errors.items()}
    return max(per_c, key=per_c.get) if per_c else None


def _beyond(points: float, bound: float | None) -> bool:
    """Return True when a difference of ``points`` exceeds ``bound`` (convkit.robustness.difference_noise_points)."""
    return bound is not None and abs(points) > bound


def _versus(points: float, bound: float | None) -> str:
    """Return "beyond / within sampling noise (±bound points)" for a difference of ``points``."""
    if bound is None:
        return "sampling noise not known"
    return f"{'beyond' if _beyond(points, bound) else 'within'} sampling noise (±{bound:.1f} points)"


def observations(models: list[ModelRobustness], scores: dict, base_name: str | None) -> list[str]:
    """Return sentences computed from the section's numbers: who survives best, who degrades least, what hurts
    most, and what int8 costs under shift; each difference between rows says whether it exceeds sampling noise
    at the section's image count (the report calls no difference real inside it)."""
    obs = []
    counts = [m.n for m in models if m.n]
    bound = R.difference_noise_points(min(counts)) if counts else None
    ranked = sorted(((m, scores[m.label].mce) for m in models
                     if scores.get(m.label) and scores[m.label].mce is not None), key=lambda mv: mv[1])
    if ranked:
        m, v = ranked[0]
        line = f"Lowest mCE (against `{base_name}` = 100 %): {m.label}, {v * 100:.1f} %"
        if len(ranked) > 1 and _mean_corrupted(m) is not None and _mean_corrupted(ranked[1][0]) is not None:
            ahead = (_mean_corrupted(m) - _mean_corrupted(ranked[1][0])) * 100
            line += (f"; its mean corrupted top-1 is {ahead:+.2f} points against the next, {ranked[1][0].label}: "
                     + _versus(ahead, bound))
        obs.append(line + ".")
    drops = [(m, (m.clean - _mean_corrupted(m)) * 100) for m in models
             if m.clean is not None and _mean_corrupted(m) is not None]
    if len(drops) > 1:
        lo, hi = min(drops, key=lambda d: d[1]), max(drops, key=lambda d: d[1])
        obs.append(f"Clean → corrupted top-1 drop: smallest {lo[0].label} ({lo[1]:.2f} points), largest "
                   f"{hi[0].label} ({hi[1]:.2f} points); their difference is {_versus(hi[1] - lo[1], bound)}.")
    per_c: dict[str, list[float]] = {}
    for m in models:
        if m.clean is None:
            continue
        for c, sev in m.errors.items():
            per_c.setdefault(c, []).append((_mean(list(sev.values())) - (1.0 - m.clean)) * 100)
    if per_c:
        worst = sorted(per_c, key=lambda c: -np.mean(per_c[c]))[:3]
        obs.append("Corruptions that hurt most (mean drop over the rows): "
                   + ", ".join(f"{c} {np.mean(per_c[c]):.2f} points" for c in worst) + ".")
    gaps = [(m, m.int8_gap) for m in models if m.int8_gap]
    if gaps:
        costlier = [g for _, g in gaps if g["corrupted"] < g["clean"]]
        real = [g for g in costlier if _beyond((g["corrupted"] - g["clean"]) * 100, bound)]
        obs.append("int8 − fp32 top-1, clean vs corrupted: " + "; ".join(
            f"{m.label} {pts(g['clean'] * 100)} vs {pts(g['corrupted'] * 100)} points" for m, g in gaps)
            + f". int8 costs more under shift for {len(costlier)} of {len(gaps)} row(s); beyond sampling noise "
            + f"for {len(real)} of them.")
    else:
        obs.append(f"int8 under shift: {NOT_MEASURED} (no int8 variant evaluated with --corruptions).")
    return obs


def section(title: str, rows: list[tuple[Experiment, RunData | None]], runs: dict[str, RunData], out: Path,
            rel) -> list[tuple]:
    """Return the robustness blocks of one table (``rel`` makes figure paths relative), [] when no row of it was
    evaluated with --corruptions."""
    models = [m for e, r in rows if (m := of_run(e.title, e.dataset, r)) is not None]
    if not models:
        return []
    base_name, base = baseline_of(rows[0][0].dataset, runs)
    scores = {m.label: scores_against(m, base) for m in models}
    n = sorted({m.n for m in models if m.n})
    noise = R.noise_points(min(n)) if n else None
    # relative CE divides by the baseline's loss under corruption: when that loss is within sampling noise the
    # ratio is noise too, and is not printed as a figure
    weak = base is not None and noise is not None and base.clean is not None and any(
        _mean(list(sev.values())) - (1.0 - base.clean) < noise / 100 for sev in base.errors.values())
    table = []
    for m in models:
        s = scores[m.label]
        relative = f"{s.relative_mce * 100:.1f} %" if s and s.relative_mce is not None else NOT_MEASURED
        table.append([m.label, pct(m.clean), pct(_mean_corrupted(m)), _worst(m) or NOT_MEASURED,
                      f"{s.mce * 100:.1f} %" if s and s.mce is not None else NOT_MEASURED,
                      "within noise" if weak and s and s.relative_mce is not None else relative,
                      pts(m.int8_gap["clean"] * 100) if m.int8_gap else NOT_MEASURED,
                      pts(m.int8_gap["corrupted"] * 100) if m.int8_gap else NOT_MEASURED,
                      f"{m.mean_ece:.3f}" if m.mean_ece is not None else NOT_MEASURED])
    weak_note = (f" Relative mCE reads \"within noise\" where `{base_name}` loses less top-1 under a corruption "
                 "than the sampling noise." if weak else "")
    noise_note = weak_note if not noise else weak_note + (
        f" At {min(n)} images a top-1 figure is uncertain by up to ±{noise:.1f} points (95 %), so smaller "
        "differences between rows, or between int8 and fp32 gaps, are within sampling noise.")
    base_note = (f"mCE and relative mCE against `{base_name}` (the suite's baseline for {rows[0][0].dataset})"
                 if base else f"mCE: {NOT_MEASURED} (the baseline `{base_name}` has no corruption results here)")
    blocks = [("h3", "Corruption robustness"),
              ("p", f"ONNX Runtime fp32 top-1 on corrupted copies of the test split ({', '.join(map(str, n))} images "
                    f"each; `convkit evaluate --corruptions`); {base_note}. CE_c = Σ_s E(model) / Σ_s E(baseline), "
                    "relative CE subtracts each model's clean error (left out for a corruption the baseline does not "
                    "lose accuracy under); mCE averages over corruptions." + noise_note),
              ("table", ["row", "clean top-1", "corrupted top-1 (mean)", "worst corruption", "mCE", "relative mCE",
                         "int8 − fp32 clean (pts)", "int8 − fp32 corrupted (pts)", "ECE corrupted (mean)"], table)]
    if any(scores.values()):
        corruptions = list(dict.fromkeys(c for s in scores.values() if s for c in s.ce))
        ce_rows = [[m.label, *[f"{scores[m.label].ce[c] * 100:.0f} %" if scores[m.label] and c in scores[m.label].ce
                               else NOT_MEASURED for c in corruptions]] for m in models]
        blocks += [("p", f"Corruption error CE_c per corruption (% of `{base_name}`'s error, summed over the "
                         "severities):"), ("table", ["row", *corruptions], ce_rows)]
    path = severity_plot(models, f"{title}: top-1 vs corruption severity", out / f"robustness-{_slug(title)}.png")
    if path is not None:
        blocks.append(("img", rel(path), f"Top-1 vs corruption severity, {title}"))
    return [*blocks, ("h3", "Robustness observations"), ("ul", observations(models, scores, base_name))]


def _slug(title: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in title.lower()).strip("-")[:40]
