"""Per-class accuracy change of one model against another on the same images, each class tested with McNemar's
exact test on that class's images, the family of tests corrected with Holm's step-down method (it controls the
family-wise error rate under any dependence; Holm 1979), so "int8 costs cats 6 points" is a tested statement.
"""

from __future__ import annotations

import numpy as np

from convkit.uncertainty import LEVEL, mcnemar

CORRECTION = "Holm (family-wise error rate)"


def holm(p_values) -> np.ndarray:
    """Return Holm's adjusted p-values: sorted ascending, p_(i)·(m − i + 1) made monotone, capped at 1."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = adjusted
    return out


def per_class_drops(base_correct, candidate_correct, labels, class_names, level: float = LEVEL) -> dict:
    """Return the per-class change of ``candidate`` against ``base`` (per-image correctness, same images): for every
    class with images, its count, both accuracies, the change in points, McNemar's exact p on its images and
    Holm's adjusted p over every class with images ("classes_tested"); "rows" lists the classes with at least one
    discordant image, "significant" those whose adjusted p is below 1 − ``level``."""
    base, cand, labels = np.asarray(base_correct, bool), np.asarray(candidate_correct, bool), np.asarray(labels)
    rows = []
    for k, name in enumerate(class_names):
        mask = labels == k
        n = int(mask.sum())
        if n == 0:
            continue
        test = mcnemar(base[mask], cand[mask], level)
        rows.append({"class": str(name), "index": k, "images": n, "base_accuracy": float(base[mask].mean()),
                     "candidate_accuracy": float(cand[mask].mean()), "delta_points": test.delta * 100,
                     "only_base_right": test.only_base_right, "only_candidate_right": test.only_candidate_right,
                     "p_value": test.p_value})
    adjusted = holm([r["p_value"] for r in rows]) if rows else []
    for row, p in zip(rows, adjusted):
        row["p_holm"] = float(p)
        row["significant"] = bool(p < 1 - level)
    changed = [r for r in rows if r["only_base_right"] + r["only_candidate_right"]]
    # classes with no discordant image (p = 1) count in Holm's family but are not listed: eval.json stays small
    return {"test": "McNemar exact, two-sided, on each class's images", "correction": CORRECTION,
            "alpha": 1 - level, "classes_tested": len(rows), "rows": changed,
            "significant": [r["class"] for r in changed if r["significant"]]}


def describe_drops(result: dict, candidate: str, base: str) -> str:
    """Return one line: the classes whose change is significant after Holm, or that none is."""
    sig = [r for r in result["rows"] if r["significant"]]
    if not sig:
        return (f"{candidate} vs {base}: no class changes beyond noise ({result['classes_tested']} classes, McNemar "
                "per class, Holm-corrected)")
    parts = [f"{r['class']} {r['delta_points']:+.1f} pts (p_Holm = {r['p_holm']:.2g})" for r in sig]
    return f"{candidate} vs {base}: " + ", ".join(parts) + " (McNemar per class, Holm-corrected)"


def markdown_lines(accuracy: list[dict]) -> list[str]:
    """Return eval.md's per-class changes: for each ORT entry, against PyTorch and (fp16/int8) against fp32, the
    classes that changed beyond noise after Holm's correction, or that none did."""
    from convkit.text import md_text

    lines = []
    for acc in accuracy:
        for result, candidate, base in (((acc.get("vs_pytorch") or {}).get("per_class_test"), acc["precision"],
                                         "PyTorch"), (acc.get("per_class_vs_fp32"), acc["precision"], "fp32")):
            if isinstance(result, dict) and "rows" in result:
                lines.append(f"- ORT {md_text(acc['provider'])}: {md_text(describe_drops(result, candidate, base))}")
    if not lines:
        return []
    return ["### Per-class changes", "", "Each class's images tested with McNemar's exact test; the p-values of all "
            "classes corrected with Holm's method (α = 0.05).", "", *lines, ""]
