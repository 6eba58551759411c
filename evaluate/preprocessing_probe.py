"""Is the preprocessing right? Whenever a value was defaulted or guessed (not stated by a flag, a config file or
metadata), probe the usual conventions on a few hundred images and test each against the preprocessing used
(exact McNemar on the same images); say loudly, with the flags, when one is better beyond noise. Detect collapsed
predictions and degenerate outputs (NaN, constant) too.

A wrong input range, normalization or channel order rarely crashes: the model still answers, a few points worse
or with one class. A confident wrong accuracy is worse than an error.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from convkit.data.folder import IMAGENET_MEAN, IMAGENET_STD
from convkit import preprocessing as P
from convkit.evaluate.accuracy import ort_scores
from convkit.uncertainty import wilson

PROBE_IMAGES = 300  # images the probe runs each convention on (spread over the split with a fixed seed)
COLLAPSE_SHARE = 0.5  # one class taking more than half of the predictions, on labels with no such majority
PROBE_SEED = 0
ALPHA = 0.05  # family-wise error rate of the probe's tests (split over the conventions compared)


def collapse_reason(labels: np.ndarray, preds: np.ndarray, class_names: list[str]) -> str | None:
    """Return why the predictions look collapsed (one class takes most of them although the labels are balanced,
    or chance 1/k lies inside the accuracy's 95 % Wilson interval), or None when they look like a working
    classifier's."""
    k, n = len(class_names), len(labels)
    if n == 0 or k < 2:
        return None
    reasons = []
    label_share = np.bincount(labels, minlength=k).max() / n
    pred_counts = np.bincount(preds, minlength=k)
    top, share = int(pred_counts.argmax()), pred_counts.max() / n
    if share > COLLAPSE_SHARE and label_share <= COLLAPSE_SHARE / 2 and share > 2 * label_share:
        reasons.append(f"class {class_names[top]!r} takes {share:.0%} of the predictions "
                       f"(the most frequent label is {label_share:.0%} of the images)")
    correct = int((preds == labels).sum())
    interval = wilson(correct, n)
    if interval is not None and interval.contains(1 / k):  # chance cannot be told apart from this accuracy
        reasons.append(f"accuracy {correct / n:.3f} [{interval.low:.3f}, {interval.high:.3f}] is indistinguishable "
                       f"from chance (1/{k} = {1 / k:.3f})")
    return "; ".join(reasons) or None


def _fmt(values) -> str:
    return ",".join(f"{v:g}" for v in values)


def _norms(spec, dataset_mean, dataset_std) -> list[tuple[str, tuple, tuple]]:
    """Return the (input range, mean, std) candidates, the current one first. Defaulted values vary — the range
    over 0..1 and raw 0..255, mean/std over the dataset's, ImageNet's (colour models), 0.5/0.5 and none — while
    values stated by a flag, a config file or metadata are kept."""
    defaulted = set(spec.defaulted())
    current = (spec.input_range, tuple(spec.mean), tuple(spec.std))
    ranges = ["1", "255"] if "input_range" in defaulted else [spec.input_range]
    pairs = [(tuple(spec.mean), tuple(spec.std))]
    if defaulted & {"mean", "std"}:
        pairs.append((tuple(dataset_mean), tuple(dataset_std)))
        if spec.image_shape[0] in (3, None):
            pairs.append((tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)))
        pairs += [((0.0,), (1.0,)), ((0.5,), (0.5,))]
    norms = [current] + [(r, m, s) for r in ranges for m, s in pairs]
    return list(dict.fromkeys(norms))  # each convention once


def probed_values(spec, images=None) -> list[str]:
    """Return which preprocessing dimensions the probe varies: those whose value was defaulted or guessed
    ("norm" for range/mean/std together, "channel_order", "layout" when the input shape allows both, "geometry"
    when ``geometry_unverified``)."""
    defaulted = set(spec.defaulted())
    dims = []
    if defaulted & {"input_range", "mean", "std"}:
        dims.append("norm")
    if "channel_order" in defaulted:
        dims.append("channel_order")
    if "layout" in defaulted:
        dims.append("layout")
    if images is not None and geometry_unverified(spec, images):
        dims.append("geometry")
    return dims


def geometry_unverified(spec, images, n: int = PROBE_IMAGES) -> bool:
    """Return True when the geometry matters and nobody stated it: images read from a folder, the mode or size
    defaulted or guessed, and the model's spatial input dynamic or non-square, or the images (the probe's sample,
    by their headers) not already the input's size."""
    pre = spec.pre
    if not hasattr(images, "with_preprocessing") or pre.stated_geometry():
        return False
    _, h, w = spec.image_shape
    if not (h and w) or h != w:
        return True
    from PIL import Image

    for path in images.paths[:n]:
        with Image.open(path) as im:
            if im.size[::-1] != tuple(pre.size):
                return True
    return False


def geometries(spec) -> list[tuple[P.Preprocessing, str]]:
    """Return the geometry candidates, the current one first, each with its flags: center crop at the input
    size (shorter side resized), squash, letterbox (centred, pixel 0) and keep-ratio height + pad at the end (in
    model and in pixel space) — at the model's size, and for a dynamic width at 1, 2 and 4 times its height."""
    pre = spec.pre
    h, w = pre.size
    widths = [w] if spec.image_shape[2] else list(dict.fromkeys([w, h, 2 * h, 4 * h]))
    out = [(pre, "")]
    for width in widths:
        if width > P.MAX_SIDE:
            continue
        size = f"--size {h}x{width}"
        for fields, flags in (
                ({"resize_mode": "shorter", "resize": None, "crop": "center", "pad": "center"},
                 "--resize-mode shorter --crop center"),
                ({"resize_mode": "squash"}, "--resize-mode squash"),
                ({"resize_mode": "letterbox", "pad": "center", "pad_value": 0.0, "pad_space": "pixel"},
                 "--resize-mode letterbox --pad center --pad-value 0 --pad-space pixel"),
                ({"resize_mode": "height", "pad": "end", "pad_value": 0.0, "pad_space": "model"},
                 "--resize-mode height --pad end --pad-value 0 --pad-space model"),
                ({"resize_mode": "height", "pad": "end", "pad_value": 0.0, "pad_space": "pixel"},
                 "--resize-mode height --pad end --pad-value 0 --pad-space pixel")):
            out.append((pre.replace("probed", size=(h, width), **fields), f"{flags} {size}"))
    return out


def conventions(spec, dataset_mean, dataset_std, dims: list[str] | None = None) -> list[dict]:
    """Return the preprocessing conventions to try, the current one first: every combination of the values of
    ``dims`` (default: all of "norm", "channel_order", "layout" that apply), the others kept as they are. Each
    is {"fields": ModelSpec fields, "flags": the command-line flags of the probed values}."""
    dims = ["norm", "channel_order", "layout"] if dims is None else dims
    keep = (spec.input_range, tuple(spec.mean), tuple(spec.std))
    norms = _norms(spec, dataset_mean, dataset_std) if "norm" in dims and not spec.raw_uint8 else [keep]
    three = spec.image_shape[0] in (3, None)
    orders = list(dict.fromkeys([spec.channel_order, "rgb", "bgr"])) if "channel_order" in dims and three else \
        [spec.channel_order]
    layouts = list(dict.fromkeys([spec.layout, "NCHW", "NHWC"])) if "layout" in dims else [spec.layout]
    out = []
    for layout in layouts:
        for order in orders:
            for rng, mean, std in norms:
                flags = []
                if len(norms) > 1:
                    flags.append(f"--input-range {rng} --mean {_fmt(mean)} --std {_fmt(std)}")
                if len(orders) > 1:
                    flags.append(f"--channel-order {order}")
                if len(layouts) > 1:
                    flags.append(f"--layout {layout.lower()}")
                out.append({"fields": {"input_range": rng, "mean": mean, "std": std, "layout": layout,
                                       "channel_order": order}, "flags": " ".join(flags)})
    return out


def mcnemar_better(base: np.ndarray, cand: np.ndarray) -> tuple[int, int, float]:
    """Return (b, c, p): images only the candidate gets right, images only the base gets right, and the one-sided
    exact McNemar p-value that the candidate is better, P(X >= b) for X ~ Binomial(b + c, 1/2)."""
    b = int(np.sum(cand & ~base))
    c = int(np.sum(base & ~cand))
    n = b + c
    if b <= c:
        return b, c, 1.0
    return b, c, sum(math.comb(n, k) for k in range(b, n + 1)) / 2 ** n


def probe(session, spec, images, labels: np.ndarray, dataset_norm: tuple, batch: int = 256, n: int = PROBE_IMAGES,
          dims: list[str] | None = None) -> dict:
    """Return the probe: top-1 accuracy of every convention (``dataset_norm``: the dataset's (mean, std) among
    them) on ``n`` images spread over the split, best first,
    each with its exact McNemar test against the current preprocessing (the first convention) on the same images.

    A convention the model cannot run (e.g. a layout its fixed shape refuses) is skipped. ``better`` is the most
    accurate convention that beats the current one beyond noise: p below ALPHA divided by the number of
    conventions compared (Bonferroni), else None.
    """
    rng = np.random.default_rng(PROBE_SEED)
    idx = np.sort(rng.choice(len(labels), size=min(n, len(labels)), replace=False))
    y = np.asarray(labels)[idx]
    pixel_dims = None if dims is None else [d for d in dims if d != "geometry"]
    results: list[dict] = []
    base: list = []  # the current preprocessing's correctness, once measured

    def run(gpre, gflags: str, convs: list[dict]) -> list[dict]:
        x = images.with_preprocessing(gpre)[idx] if gflags else images[idx]
        gspec, out = dataclasses.replace(spec, pre=gpre), []
        for conv in convs:
            flags = " ".join(f for f in (conv["flags"], gflags) if f)
            if any(r["flags"] == flags for r in results):
                continue
            candidate = dataclasses.replace(gspec, pre=gpre.replace("probed", **conv["fields"]))
            try:
                correct = ort_scores(session, candidate, x, batch).argmax(1) == y
            except Exception:  # noqa: BLE001 — ORT refuses shapes of the wrong layout; that convention is skipped
                continue
            base.append(correct) if not base else None
            b, c, p = mcnemar_better(base[0], correct)
            out.append({"flags": flags, "accuracy": float(correct.mean()), "only_this_right": b,
                        "only_current_right": c, "p_value": p, "_conv": conv, "_geometry": (gpre, gflags)})
        results.extend(out)
        return out

    # the pixel conventions at the current geometry; then, when the geometry is unverified, every geometry at the
    # best of those, and the pixel conventions again at the best geometry (a staged search, not every product)
    found = run(spec.pre, "", conventions(spec, *dataset_norm, pixel_dims))
    if dims and "geometry" in dims and found:
        best_conv = max(found, key=lambda r: r["accuracy"])["_conv"]
        for gpre, gflags in geometries(spec)[1:]:
            run(gpre, gflags, [{**best_conv, "fields": best_conv["fields"]}])
        gpre, gflags = max(results, key=lambda r: r["accuracy"])["_geometry"]
        if gflags:
            run(gpre, gflags, conventions(dataclasses.replace(spec, pre=gpre), *dataset_norm, pixel_dims))
    for r in results:
        del r["_conv"], r["_geometry"]
    compared = max(len(results) - 1, 1)
    threshold = ALPHA / compared
    current = results[0] if results else None
    better = [r for r in results[1:] if r["p_value"] < threshold]
    results.sort(key=lambda r: -r["accuracy"])  # stable: the current preprocessing (tried first) wins ties
    return {"images": int(len(idx)), "seed": PROBE_SEED, "varied": dims, "candidates": results,
            "best": results[0] if results else None, "current": current, "threshold_p": threshold,
            "test": f"one-sided exact McNemar test against the current preprocessing, p < {ALPHA:g} / {compared} "
                    f"(Bonferroni over the conventions compared)",
            "better": max(better, key=lambda r: r["accuracy"]) if better else None}


def check_preprocessing(spec, session, entry: dict, images, labels: np.ndarray, dataset_mean, dataset_std,
                        batch: int = 256) -> dict:
    """Return {"used", "sources", "defaulted", "verdict", "warnings", "notes", "collapse", "probe"} for the primary
    model's accuracy ``entry``.

    Whenever a value was defaulted or guessed, the probe runs; ``verdict`` is "unverified" when a convention beats
    the preprocessing used beyond noise (``probe.better``), "checked" when none does, "stated" when nothing was
    defaulted (every value from flags, a config file or metadata). Collapsed predictions are warned about loudly.
    """
    defaulted = spec.defaulted()
    folder = hasattr(images, "with_preprocessing")
    if folder and geometry_unverified(spec, images):
        defaulted += spec.pre.defaulted(("resize_mode", "size"))
    result = {"used": spec.preprocessing_line(geometry=folder), "value": spec.pre.to_json(),
              "sources": dict(spec.sources), "defaulted": defaulted,
              "probe": None, "verdict": "stated", "warnings": [], "notes": []}
    preds = np.asarray(entry["predictions"])
    result["collapse"] = collapse_reason(np.asarray(labels), preds, spec.class_names)
    dims = probed_values(spec, images)
    if dims or result["collapse"]:
        found = probe(session, spec, images, labels, (dataset_mean, dataset_std), batch, dims=dims or None)
        result["probe"] = found
        # only a defaulted value can be unverified: a collapse with every value stated (flags, a config file,
        # convkit's own metadata) is reported, but a stated value is not overruled by a probe on a model that
        # predicts one class (an untrained model "prefers" BGR at p = 0.02 by chance)
        result["verdict"] = ("unverified" if found["better"] else "checked") if dims else "stated"
    result["warnings"], result["notes"] = _messages(spec, result)
    return result


def _messages(spec, result: dict) -> tuple[list[str], list[str]]:
    """Return (warnings, notes) in words: what was defaulted, what the probe found, a collapse."""
    warnings, notes = [f"{spec.path.name}: {c}" for c in spec.conflicts], []
    defaulted, found = result["defaulted"], result["probe"]
    if defaulted:
        values = ", ".join(f"{k} ({spec.sources.get(k)})" for k in defaulted)
        warnings.append(f"{spec.path.name}: {values} {'was' if len(defaulted) == 1 else 'were'} defaulted or "
                        f"guessed, not stated by a flag, a config file or metadata")
    if found and found["better"] and defaulted:
        b, cur = found["better"], found["current"]
        warnings.append(f"PREPROCESSING UNVERIFIED: `{b['flags']}` gives {b['accuracy']:.2f}, the preprocessing used "
                        f"{cur['accuracy']:.2f} on the same {found['images']} images (exact McNemar p = "
                        f"{b['p_value']:.2g}); rerun with those flags, or pass --accept-defaults to keep these")
    elif found and defaulted:
        notes.append(f"the probe of {len(found['candidates'])} conventions on {found['images']} images found none "
                     f"better than the defaulted values ({found['test']})")
    if result["collapse"]:
        best = found["best"] if found else None
        flags = (best["flags"] or "the preprocessing used") if best else ""
        hint = (f"; probe on {found['images']} images: accuracy {best['accuracy']:.2f} with {flags}" if best else
                "; no convention the probe tried runs on this model")
        geometry = [k for k in defaulted if k in ("resize_mode", "size")]
        cause = (f"the geometry ({spec.pre.geometry_line()}) was defaulted, not stated: state it (--resize-mode, "
                 f"--size, --pad) or pass the model's config" if geometry else
                 "the preprocessing is probably wrong" if defaulted else
                 "a config file overrode the model's metadata (see above): check which is right" if spec.conflicts
                 else
                 "every preprocessing value was stated, so the model itself is the likely cause (untrained, or "
                 "trained on other data)")
        warnings.append(f"PREDICTIONS COLLAPSED: {result['collapse']}; {cause}{hint}")
    return warnings, notes
