"""Corruption-robustness arithmetic (Hendrycks & Dietterich, ICLR 2019), numpy only, shared by evaluate and report.

Errors are top-1 error rates (1 − accuracy). For a model f, a baseline b and corruption c over severities s:

    CE_c   = Σ_s E(f, s, c) / Σ_s E(b, s, c)
    rCE_c  = Σ_s (E(f, s, c) − E(f, clean)) / Σ_s (E(b, s, c) − E(b, clean))
    mCE    = mean_c CE_c,      relative mCE = mean_c rCE_c

Only corruptions and severities measured for both models count; a zero denominator (for rCE: a baseline that
does not lose accuracy under that corruption) leaves that corruption out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convkit.errors import ConvkitError

Errors = dict[str, dict[int, float]]  # corruption → severity → top-1 error


@dataclass(frozen=True)
class CorruptionScores:
    """mCE and relative mCE of a model against a baseline, with the per-corruption terms they average."""

    ce: dict[str, float]
    relative_ce: dict[str, float]
    mce: float | None
    relative_mce: float | None
    corruptions: list[str]  # the corruptions both models were measured on


def common_pairs(model: Errors, baseline: Errors) -> dict[str, list[int]]:
    """Return corruption → the severities measured for both ``model`` and ``baseline``."""
    out = {}
    for c, sev in model.items():
        both = sorted(s for s in sev if s in baseline.get(c, {}))
        if both:
            out[c] = both
    return out


def corruption_scores(model: Errors, model_clean: float, baseline: Errors, baseline_clean: float) -> CorruptionScores:
    """Return CE per corruption, relative CE, mCE and relative mCE of ``model`` against ``baseline``.

    ``*_clean`` are the clean-data top-1 errors. mCE / relative mCE are None when no corruption counts.
    """
    ce, rce = {}, {}
    pairs = common_pairs(model, baseline)
    for c, sevs in pairs.items():
        m = np.array([model[c][s] for s in sevs], dtype=np.float64)
        b = np.array([baseline[c][s] for s in sevs], dtype=np.float64)
        if b.sum() > 0:
            ce[c] = float(m.sum() / b.sum())
        if (b - baseline_clean).sum() > 0:  # a baseline that does not degrade leaves relative CE undefined
            rce[c] = float((m - model_clean).sum() / (b - baseline_clean).sum())
    return CorruptionScores(ce=ce, relative_ce=rce, mce=float(np.mean(list(ce.values()))) if ce else None,
                            relative_mce=float(np.mean(list(rce.values()))) if rce else None,
                            corruptions=list(pairs))


def mean_error(errors: Errors) -> float | None:
    """Return the unnormalized mean top-1 error over every measured corruption and severity, None when empty."""
    values = [e for sev in errors.values() for e in sev.values()]
    return float(np.mean(values)) if values else None


def parse_severities(text: str | None) -> tuple[int, ...]:
    """Return the severities of ``--severities``: "1-5", "3", "1,3,5" (ConvkitError, exit 2, otherwise)."""
    text = (text or "1-5").strip()
    try:
        if "-" in text:
            lo, hi = (int(p) for p in text.split("-", 1))
            # the bounds are checked before the range is built: "1-60000000" must not make a 60-million list
            values = list(range(lo, hi + 1)) if 1 <= lo <= hi <= 5 else [0]
        else:
            values = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        values = []
    if not values or any(v not in range(1, 6) for v in values):
        raise ConvkitError(f"--severities {text!r}: give severities between 1 and 5, e.g. 1-5, 3 or 1,3,5")
    return tuple(sorted(set(values)))


def noise_points(n: int) -> float | None:
    """Return the 95 % half-width, in points, of a top-1 measured on ``n`` images at the widest case (50 %):
    1.96 · sqrt(0.25 / n) · 100 (normal approximation); None without images."""
    return 1.96 * (0.25 / n) ** 0.5 * 100 if n else None


def difference_noise_points(n: int | None) -> float | None:
    """Return the half-width, in points, within which two top-1 figures on ``n`` images differ by sampling noise
    alone: √2 × ``noise_points`` (unpaired, hence conservative for two models on the same images); None without
    images."""
    one = noise_points(n) if n else None
    return one * 2 ** 0.5 if one else None
