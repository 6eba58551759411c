"""The paired statistics of a comparison: non-inferiority of an accuracy difference on the same images, the images
that would decide an inconclusive one, Holm's correction, and the ECE difference's paired bootstrap interval."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from convkit.uncertainty import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, LEVEL, PairedTest, mcnemar

PASSED, REGRESSED, INCONCLUSIVE = "passed", "regressed", "inconclusive"


@dataclass(frozen=True)
class NonInferiority:
    """The paired difference new − base of one per-image success rate, judged against a margin (a fraction)."""

    test: PairedTest
    margin: float
    verdict: str  # passed: the interval lies above −margin; regressed: below it; inconclusive: it holds −margin
    images_needed: int | None  # inconclusive: images of this kind that would decide it at the observed rates

    def to_dict(self) -> dict:
        """Return the JSON form (fractions; the interval two-sided at the test's level)."""
        return {**self.test.to_dict(), "margin": self.margin, "verdict": self.verdict,
                "images_needed": self.images_needed}


def non_inferiority(base_ok, new_ok, margin: float, level: float = LEVEL) -> NonInferiority:
    """Return the non-inferiority verdict of ``new_ok`` vs ``base_ok`` (per-image booleans, same images).

    The difference's interval is McNemar's Agresti–Min interval (convkit.uncertainty.mcnemar): ``passed`` when its
    low end is at or above −margin (the drop is at most ``margin``, one-sided at (1 + level) / 2), ``regressed``
    when its high end is below −margin (the drop exceeds the margin beyond noise), else ``inconclusive``.
    """
    test = mcnemar(base_ok, new_ok, level)
    low, high = test.delta_interval.low, test.delta_interval.high
    if low >= -margin:
        verdict = PASSED
    elif high < -margin:
        verdict = REGRESSED
    else:
        verdict = INCONCLUSIVE
    needed = images_to_decide(test, margin, level) if verdict == INCONCLUSIVE else None
    return NonInferiority(test, margin, verdict, needed)


def images_to_decide(test: PairedTest, margin: float, level: float = LEVEL) -> int | None:
    """Return how many images would put the interval clear of −margin if the discordant rates and the difference
    stayed as observed: n ≥ z²·(p_b + p_c − δ²) / (δ + margin)² (the Wald half-width); None when δ = −margin,
    which no number of images decides."""
    n = max(test.n, 1)
    b, c = test.only_candidate_right + 0.5, test.only_base_right + 0.5  # Agresti–Min's counts, as the interval
    delta = (b - c) / (n + 2)
    gap = abs(delta + margin)
    if gap < 1e-12:
        return None
    z = stats.norm.ppf(1 - (1 - level) / 2)
    variance = (b + c) / (n + 2) - delta ** 2
    return max(int(math.ceil(z * z * variance / gap ** 2)), n + 1)


def holm(p_values) -> np.ndarray:
    """Return Holm's step-down adjusted p-values (family-wise error at the nominal level), in the input order."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order]) if m else p
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def per_class(labels, base_ok, new_ok, class_names: list[str], margin: float, level: float = LEVEL) -> list[dict]:
    """Return one row per class present: its recall in base and new, the exact McNemar p-value on its images, the
    Holm-adjusted p-value across the classes, and ``regressed``: adjusted p < 1 − level and a drop beyond
    ``margin``."""
    labels = np.asarray(labels)
    rows = []
    for c in np.unique(labels):
        mask = labels == c
        t = mcnemar(base_ok[mask], new_ok[mask], level)
        rows.append({"class": class_names[int(c)], "n": int(mask.sum()), "base": float(base_ok[mask].mean()),
                     "new": float(new_ok[mask].mean()), "delta": t.delta, "delta_ci": t.delta_interval.to_list(),
                     "only_base_right": t.only_base_right, "only_new_right": t.only_candidate_right,
                     "p_value": t.p_value})
    for row, adj in zip(rows, holm([r["p_value"] for r in rows])):
        row["p_holm"] = float(adj)
        row["regressed"] = bool(adj < 1 - level and row["delta"] < -margin)
    return rows


@dataclass(frozen=True)
class EceChange:
    """ECE of base and new on the same images, and the difference new − base with its bootstrap interval."""

    base: float
    new: float
    delta: float
    delta_ci: list[float] | None

    def to_dict(self) -> dict:
        """Return the JSON form."""
        return {"base": self.base, "new": self.new, "delta": self.delta, "delta_ci": self.delta_ci,
                "method": f"paired percentile bootstrap over images, {BOOTSTRAP_RESAMPLES} resamples, seed "
                          f"{BOOTSTRAP_SEED}"}


def _bin_of(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Return each confidence's bin, as convkit.calibration: equal-width (lo, hi], a confidence of 0 in the first."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)


def _ece_of_draws(bins: np.ndarray, gap: np.ndarray, draws: np.ndarray, n_bins: int) -> np.ndarray:
    """Return the ECE of each resample (rows of ``draws``): Σ_b |Σ_i∈b (conf_i − correct_i)| / N, by bincount."""
    r, n = draws.shape
    keys = (np.arange(r)[:, None] * n_bins + bins[draws]).ravel()
    sums = np.bincount(keys, weights=gap[draws].ravel(), minlength=r * n_bins).reshape(r, n_bins)
    return np.abs(sums).sum(axis=1) / n


def ece_change(base_conf, base_ok, new_conf, new_ok, n_bins: int = 15, level: float = LEVEL,
               resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> EceChange:
    """Return ECE(new) − ECE(base) with the percentile-bootstrap interval of the difference: the same images drawn
    for both in each resample (seeded: a re-run prints the same interval); the bins are convkit.calibration's.
    Resamples are drawn in chunks, so memory stays bounded at 50,000 images; the ECE of each is one bincount
    (scipy.stats.bootstrap over convkit.uncertainty's per-bin statistic took 7 s at 10,000 images here)."""
    conf = [np.asarray(base_conf, dtype=np.float64), np.asarray(new_conf, dtype=np.float64)]
    gaps = [conf[0] - np.asarray(base_ok, dtype=np.float64), conf[1] - np.asarray(new_ok, dtype=np.float64)]
    bins = [_bin_of(c, n_bins) for c in conf]
    n = len(conf[0])
    whole = np.arange(n)[None, :]
    base, new = (float(_ece_of_draws(b, g, whole, n_bins)[0]) if n else 0.0 for b, g in zip(bins, gaps))
    if n < 2 or not all(np.isfinite(a).all() for a in conf + gaps):
        return EceChange(base, new, new - base, None)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, 2_000_000 // n))
    diffs = []
    for start in range(0, resamples, chunk):
        draws = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        diffs.append(_ece_of_draws(bins[1], gaps[1], draws, n_bins) - _ece_of_draws(bins[0], gaps[0], draws, n_bins))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(np.concatenate(diffs), [tail, 100 - tail])
    return EceChange(base, new, new - base, [float(low), float(high)])
