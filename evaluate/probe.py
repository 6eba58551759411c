"""Is the preprocessing right? Warn when values were defaulted on a model without convkit metadata, detect
collapsed predictions, and then probe the usual conventions on a few hundred images to name the flags that work.

A wrong input range or normalization rarely crashes: the model still answers, mostly with one class. A
confident wrong accuracy is worse than an error, so a collapse is reported loudly with the flags of the best
convention found.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from convkit.evaluate.accuracy import ort_scores

PROBE_IMAGES = 300  # images the probe runs each convention on (spread over the split with a fixed seed)
COLLAPSE_SHARE = 0.5  # one class taking more than half of the predictions, on labels with no such majority
CHANCE_FACTOR = 1.5  # accuracy below 1.5 × chance (1 / classes) is "near chance"
PROBE_SEED = 0


def collapse_reason(labels: np.ndarray, preds: np.ndarray, class_names: list[str]) -> str | None:
    """Return why the predictions look collapsed (one class takes most of them although the labels are balanced,
    or accuracy is near chance), or None when they look like a working classifier's."""
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
    accuracy = float((preds == labels).mean())
    if accuracy < CHANCE_FACTOR / k:
        reasons.append(f"accuracy {accuracy:.3f} is near chance (1/{k} = {1 / k:.3f})")
    return "; ".join(reasons) or None


def _fmt(values) -> str:
    return ",".join(f"{v:g}" for v in values)


def conventions(spec, dataset_mean, dataset_std) -> list[dict]:
    """Return the preprocessing conventions to try: the current one, 0..1 with the dataset's mean/std, with
    0.5/0.5 and without normalization, raw 0..255; each in RGB and BGR (3 channels) and NCHW and NHWC. Each is {"fields", "flags"}."""
    norms = [(spec.input_range, tuple(spec.mean), tuple(spec.std)), ("1", tuple(dataset_mean), tuple(dataset_std)),
             ("1", (0.5,), (0.5,)), ("1", (0.0,), (1.0,)), ("255", (0.0,), (1.0,))]
    norms = list(dict.fromkeys(norms))  # the current preprocessing first, each convention once
    orders = ["rgb", "bgr"] if spec.image_shape[0] in (3, None) else [spec.channel_order]
    out = []
    for layout in dict.fromkeys([spec.layout, "NCHW", "NHWC"]):
        for order in dict.fromkeys([spec.channel_order, *orders]):
            for rng, mean, std in norms:
                flags = f"--input-range {rng} --mean {_fmt(mean)} --std {_fmt(std)} --layout {layout.lower()}"
                if len(orders) > 1:
                    flags += f" --channel-order {order}"
                out.append({"fields": {"input_range": rng, "mean": mean, "std": std, "layout": layout,
                                       "channel_order": order}, "flags": flags})
    return out


def probe(session, spec, images, labels: np.ndarray, dataset_mean, dataset_std, batch: int = 256,
          n: int = PROBE_IMAGES) -> dict:
    """Return the probe: top-1 accuracy of every convention on ``n`` images spread over the split, best first.

    A convention the model cannot run (e.g. a layout its fixed shape refuses) is skipped. ``best`` is the first
    entry (the current preprocessing wins ties, it is tried first).
    """
    rng = np.random.default_rng(PROBE_SEED)
    idx = np.sort(rng.choice(len(labels), size=min(n, len(labels)), replace=False))
    x, y = images[idx], np.asarray(labels)[idx]
    results = []
    for conv in conventions(spec, dataset_mean, dataset_std):
        candidate = dataclasses.replace(spec, **conv["fields"])
        try:
            scores = ort_scores(session, candidate, x, batch)
        except Exception:  # noqa: BLE001 — ORT refuses shapes of the wrong layout; that convention is just skipped
            continue
        results.append({"flags": conv["flags"], "accuracy": float((scores.argmax(1) == y).mean())})
    results.sort(key=lambda r: -r["accuracy"])  # stable: the current preprocessing (tried first) wins ties
    return {"images": int(len(idx)), "seed": PROBE_SEED, "candidates": results, "best": results[0] if results else None}


def check_preprocessing(spec, session, entry: dict, images, labels: np.ndarray, dataset_mean, dataset_std,
                        batch: int = 256) -> dict:
    """Return {"used", "sources", "warnings", "collapse", "probe"} for the primary model's accuracy ``entry``.

    Warns when a model without convkit metadata had values defaulted or guessed; when its predictions collapse,
    warns loudly and runs ``probe`` (whose best flags the warning names).
    """
    warnings, result = [], {"used": spec.preprocessing_line(), "sources": dict(spec.sources), "probe": None}
    defaulted = spec.defaulted()
    if not spec.has_convkit_metadata and defaulted:
        warnings.append(f"{spec.path.name} has no convkit metadata and {', '.join(defaulted)} "
                        f"{'was' if len(defaulted) == 1 else 'were'} defaulted or guessed: check them against the "
                        f"model's training preprocessing and pass the flags")
    preds = np.asarray(entry["predictions"])
    result["collapse"] = collapse_reason(np.asarray(labels), preds, spec.class_names)
    if result["collapse"]:
        found = probe(session, spec, images, labels, dataset_mean, dataset_std, batch)
        result["probe"] = found
        best = found["best"]
        hint = (f"; probe on {found['images']} images: accuracy {best['accuracy']:.2f} with {best['flags']}"
                if best else "; no convention the probe tried runs on this model")
        warnings.append(f"PREDICTIONS COLLAPSED: {result['collapse']}; the preprocessing is probably wrong{hint}")
    result["warnings"] = warnings
    return result
