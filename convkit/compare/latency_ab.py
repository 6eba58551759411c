"""Latency A/B of two models in one process: interleaved blocks, and the interval of the p50 and p99 ratios.

Timing both models in alternating blocks (A B B A A B …) exposes them to the same machine state: a noisy
neighbour, frequency scaling or a warming cache hits both alike, which two separate runs cannot promise (the
noise github-action-benchmark's 200 % rule exists to absorb). Calls inside a block are correlated, so the
interval comes from a paired **block bootstrap**: the block pairs (one block of A, its neighbour of B) are
resampled with replacement, the quantile of each side recomputed from the calls of the drawn blocks, and the
percentile interval of new ÷ base taken (seeded: a re-run of the same numbers prints the same interval).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from convkit.compare.stats import INCONCLUSIVE, PASSED, REGRESSED
from convkit.uncertainty import BOOTSTRAP_SEED, LEVEL

CLOCK = "time.perf_counter around each call"
QUANTILES = {"p50": 50.0, "p99": 99.0}


@dataclass(frozen=True)
class AbTiming:
    """How long the A/B runs: untimed warm-up calls per model, then ``blocks`` block pairs of ``calls`` calls each."""

    warmup: int = 10
    blocks: int = 20
    calls: int = 25
    resamples: int = 2000

    def describe(self) -> str:
        """Return the method in words."""
        return (f"{self.warmup} untimed calls each, then {self.blocks} pairs of interleaved blocks of {self.calls} "
                f"calls (order alternating A B / B A), {CLOCK}; ratio interval: paired block bootstrap, "
                f"{self.resamples} resamples, percentile")


def interleaved(run_base: Callable[[], object], run_new: Callable[[], object], timing: AbTiming) -> tuple[np.ndarray,
                                                                                                          np.ndarray]:
    """Return the per-call times in ms of both callables, each [blocks, calls], timed in alternating blocks."""
    for fn in (run_base, run_new):
        for _ in range(timing.warmup):
            fn()
    base = np.empty((timing.blocks, timing.calls))
    new = np.empty((timing.blocks, timing.calls))
    for b in range(timing.blocks):
        order = ((run_base, base), (run_new, new)) if b % 2 == 0 else ((run_new, new), (run_base, base))
        for fn, out in order:
            for i in range(timing.calls):
                t = time.perf_counter()
                fn()
                out[b, i] = (time.perf_counter() - t) * 1e3
    return base, new


def ratio(base_ms: np.ndarray, new_ms: np.ndarray, quantile: float, timing: AbTiming = AbTiming(),
          level: float = LEVEL, seed: int = BOOTSTRAP_SEED) -> dict:
    """Return new ÷ base of the ``quantile`` (percent) of the calls, with its block-bootstrap interval."""
    blocks = base_ms.shape[0]
    point = float(np.percentile(new_ms, quantile) / np.percentile(base_ms, quantile))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, blocks, size=(timing.resamples, blocks))
    boot = np.percentile(new_ms[draws].reshape(timing.resamples, -1), quantile, axis=1) / np.percentile(
        base_ms[draws].reshape(timing.resamples, -1), quantile, axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail])
    return {"base_ms": float(np.percentile(base_ms, quantile)), "new_ms": float(np.percentile(new_ms, quantile)),
            "ratio": point, "ratio_ci": [float(low), float(high)]}


def judge(ratio_ci: list[float] | None, margin: float) -> str:
    """Return the latency verdict of a new ÷ base ratio interval against a slowdown ``margin`` (0.05 = 5 %):
    regressed when the whole interval lies above 1 + margin, passed when all of it lies at or below, else
    inconclusive."""
    if ratio_ci is None:
        return INCONCLUSIVE
    if ratio_ci[0] > 1 + margin:
        return REGRESSED
    if ratio_ci[1] <= 1 + margin:
        return PASSED
    return INCONCLUSIVE


def ab_checks(base_ms: np.ndarray, new_ms: np.ndarray, margin: float, timing: AbTiming) -> dict[str, dict]:
    """Return {"p50": …, "p99": …}: each the ratio, its interval and its verdict against ``margin``."""
    out = {}
    for name, q in QUANTILES.items():
        r = ratio(base_ms, new_ms, q, timing)
        out[name] = {**r, "verdict": judge(r["ratio_ci"], margin), "calls": int(base_ms.size)}
    return out
