"""Confidence calibration of a classifier: reliability bins and the expected calibration error (ECE).

Kept in the core package (numpy only) so the evaluation writes it into eval.json and the report reads it back
without importing a stage.
"""

from __future__ import annotations

import numpy as np

from convkit.uncertainty import ece_interval

DEFAULT_BINS = 15


def _probabilities(scores: np.ndarray, atol: float = 1e-3) -> np.ndarray:
    """Return softmax(scores) unless every row is already non-negative and sums to 1."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size and np.all(s >= -1e-6) and np.allclose(s.sum(axis=1), 1.0, atol=atol):
        return s
    z = s - s.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def calibration_bins(scores, labels, n_bins: int = DEFAULT_BINS) -> dict:
    """Return {"ece": float, "n_bins": int, "bins": [{"lo", "hi", "count", "confidence", "accuracy"}, ...]}.

    ``scores`` [N, classes] are logits or probabilities (softmaxed when rows do not sum to 1). Confidence is
    the top-class probability; bins are ``n_bins`` equal-width intervals of [0, 1], left-open except the first
    (a confidence of exactly 0 still counts). ECE = Σ_b (count_b / N) · |accuracy_b − confidence_b|; empty
    bins carry count 0 and None for confidence/accuracy. With no rows the ECE is None.
    """
    probs = _probabilities(scores)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    conf = probs.max(axis=1) if n else np.zeros(0)
    correct = (probs.argmax(axis=1) == labels) if n else np.zeros(0, dtype=bool)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # side="left" puts a confidence equal to an upper edge into that bin: bins are (lo, hi].
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        mask = idx == b
        count = int(mask.sum())
        entry = {"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": count, "confidence": None,
                 "accuracy": None}
        if count:
            entry["confidence"] = float(conf[mask].mean())
            entry["accuracy"] = float(correct[mask].mean())
            ece += count / n * abs(entry["accuracy"] - entry["confidence"])
        bins.append(entry)
    ci = ece_interval(conf, correct, n_bins)
    return {"ece": float(ece) if n else None, "ece_ci": ci.to_list() if ci else None, "n_bins": n_bins,
            "bins": bins}
