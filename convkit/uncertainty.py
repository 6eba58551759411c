"""How sure convkit is of a number: 95 % intervals and paired tests, in one place (scipy.stats underneath).

- a proportion (top-1/top-5 accuracy, a class's recall): Wilson score interval;
- two models on the same images: McNemar's exact test on the discordant images (only one of the two right), and
  the interval of the paired accuracy difference (Agresti–Min adjusted Wald);
- ECE: percentile bootstrap over the images, seeded, so a re-run prints the same interval;
- a latency median: distribution-free order-statistic interval over the timed calls; a ratio of two medians: the
  ratio of their 97.5 % intervals (Bonferroni: at least 95 % for the pair);
- several seeds: mean ± sample standard deviation, min–max.

Intervals are written into JSON as ``[low, high]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
# with fewer timed calls than this no order-statistic interval of the median reaches 95 %
MIN_CALLS_FOR_MEDIAN_INTERVAL = 6


@dataclass(frozen=True)
class Interval:
    """A two-sided confidence interval [low, high] at ``level``."""

    low: float
    high: float
    level: float = LEVEL

    def to_list(self) -> list[float]:
        """Return [low, high] for JSON."""
        return [float(self.low), float(self.high)]

    def contains(self, value: float) -> bool:
        """Return True when ``value`` lies inside the interval (bounds included)."""
        return self.low <= value <= self.high


def wilson(successes: int, n: int, level: float = LEVEL) -> Interval | None:
    """Return the Wilson score interval of the proportion successes / n, None when n is 0."""
    if n <= 0:
        return None
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return Interval(float(ci.low), float(ci.high), level)


@dataclass(frozen=True)
class PairedTest:
    """McNemar's exact test of candidate vs base on the same images, and the paired accuracy difference."""

    only_candidate_right: int  # b
    only_base_right: int  # c
    n: int
    p_value: float  # two-sided exact: Binomial(b + c, 1/2)
    delta: float  # accuracy(candidate) − accuracy(base) = (b − c) / n
    delta_interval: Interval

    @property
    def distinguishable(self) -> bool:
        """True when the difference is real at the 5 % level (the exact test rejects equal accuracy)."""
        return self.p_value < 1 - self.delta_interval.level

    def to_dict(self) -> dict:
        """Return the JSON form."""
        return {"test": "McNemar exact, two-sided", "only_candidate_right": self.only_candidate_right,
                "only_base_right": self.only_base_right, "n": self.n, "p_value": self.p_value,
                "delta": self.delta, "delta_ci": self.delta_interval.to_list(),
                "distinguishable": self.distinguishable}


def mcnemar(base_correct, candidate_correct, level: float = LEVEL) -> PairedTest:
    """Return McNemar's exact test of two per-image correctness vectors (same images, same order).

    The p-value is two-sided exact: b of the b + c discordant images against Binomial(b + c, 1/2). The interval
    of the difference (b − c) / n is Agresti & Min's (2005) adjusted Wald interval (half an image added to each
    discordant count), which stays honest when b + c is 0 or small. The test, not the interval, decides
    ``distinguishable``.
    """
    base, cand = np.asarray(base_correct, bool), np.asarray(candidate_correct, bool)
    if base.shape != cand.shape:
        raise ValueError(f"paired test needs the same images: {base.shape} vs {cand.shape}")
    n = int(base.size)
    b, c = int(np.sum(cand & ~base)), int(np.sum(base & ~cand))
    p_value = 1.0 if b + c == 0 else float(min(1.0, stats.binomtest(b, b + c, 0.5).pvalue))
    b_adj, c_adj, n_adj = b + 0.5, c + 0.5, n + 2
    centre = (b_adj - c_adj) / n_adj
    z = stats.norm.ppf(1 - (1 - level) / 2)
    half = z * math.sqrt(max(b_adj + c_adj - (b_adj - c_adj) ** 2 / n_adj, 0.0)) / n_adj
    interval = Interval(float(max(centre - half, -1.0)), float(min(centre + half, 1.0)), level)
    return PairedTest(b, c, n, p_value, (b - c) / n if n else 0.0, interval)


def _ece_statistic(n_bins: int):
    """Return a vectorised ECE(confidence, correct) over the last axis, the bins of convkit.calibration."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)

    def ece(conf, correct, axis=-1):
        conf, correct = np.moveaxis(conf, axis, -1), np.moveaxis(correct, axis, -1)
        idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
        gap = conf - correct  # Σ_b |Σ_i∈b (conf_i − correct_i)| / N = Σ_b (count_b / N)·|acc_b − conf_b|
        total = sum(np.abs(np.where(idx == k, gap, 0.0).sum(axis=-1)) for k in range(n_bins))
        return total / conf.shape[-1]

    return ece


def ece_interval(confidence, correct, n_bins: int, level: float = LEVEL,
                 resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Interval | None:
    """Return the percentile-bootstrap interval of the ECE (images resampled, seeded), None under 2 images or with
    non-finite confidences."""
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    if conf.size < 2 or not np.isfinite(conf).all():  # NaN scores (degenerate outputs) have no interval
        return None
    res = stats.bootstrap((conf, hit), _ece_statistic(n_bins), paired=True, vectorized=True, axis=-1,
                          n_resamples=resamples, batch=50, confidence_level=level, method="percentile",
                          rng=np.random.default_rng(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return Interval(low, high, level) if math.isfinite(low) and math.isfinite(high) else None


def median_interval(values, level: float = LEVEL) -> Interval | None:
    """Return the distribution-free interval of the median: order statistics x(l) and x(n−l+1), l the largest
    rank with P(Binomial(n, 1/2) < l) ≤ (1 − level) / 2; None when there are too few values for ``level``."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = len(x)
    if n == 0:
        return None
    rank = int(stats.binom.ppf((1 - level) / 2, n, 0.5))  # 1-based l; cdf(l − 1) < (1 − level) / 2
    if rank < 1:
        return None
    return Interval(float(x[rank - 1]), float(x[n - rank]), level)


def quantile_interval(values, q: float, level: float = LEVEL) -> Interval | None:
    """Return the distribution-free interval of the ``q`` quantile (0 < q < 1): order statistics x(l) and x(u),
    l = the ``(1 − level) / 2`` quantile of Binomial(n, q), u = its ``(1 + level) / 2`` quantile + 1 (for q = 1/2
    the median's interval); None when there are too few values for either end (e.g. p99 from under ~300 calls)."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = len(x)
    if n == 0:
        return None
    low = int(stats.binom.ppf((1 - level) / 2, n, q))
    high = int(stats.binom.ppf((1 + level) / 2, n, q)) + 1
    if low < 1 or high > n:
        return None
    return Interval(float(x[low - 1]), float(x[high - 1]), level)


def pair_level(level: float = LEVEL) -> float:
    """Return the level of each of two intervals whose combination holds at ``level`` (Bonferroni)."""
    return 1 - (1 - level) / 2


def ratio_interval(numerator: Interval | None, denominator: Interval | None) -> Interval | None:
    """Return the interval of numerator ÷ denominator from two positive intervals (each at ``pair_level``)."""
    if numerator is None or denominator is None or denominator.low <= 0 or numerator.low < 0:
        return None
    level = 1 - 2 * (1 - numerator.level)
    return Interval(numerator.low / denominator.high, numerator.high / denominator.low, level)


def versus_point(interval: Interval | None, value: float | None) -> str | None:
    """Return how convkit's figure with ``interval`` stands against a single published ``value``: "above",
    "below" or "within noise" (the value inside the interval); None when either is missing."""
    if interval is None or value is None:
        return None
    if value < interval.low:
        return "above"
    if value > interval.high:
        return "below"
    return "within noise"


def ratio_verdict(interval: Interval | None) -> str:
    """Return "faster", "slower" or "tie" for a latency ratio candidate ÷ other: beyond 1 only outside the interval."""
    if interval is None:
        return "tie"
    if interval.high < 1:
        return "faster"
    if interval.low > 1:
        return "slower"
    return "tie"


@dataclass(frozen=True)
class Spread:
    """Several seeds' values of one figure: mean, sample standard deviation (None for one), min, max."""

    n: int
    mean: float
    sd: float | None
    low: float
    high: float

    def to_dict(self) -> dict:
        """Return the JSON form."""
        return {"n": self.n, "mean": self.mean, "sd": self.sd, "min": self.low, "max": self.high}

    def format(self, spec: str = ".4f") -> str:
        """Return "mean ± sd (min–max, n seeds)", or the single value for one seed."""
        if self.n == 1:
            return f"{self.mean:{spec}} (1 seed)"
        return f"{self.mean:{spec}} ± {self.sd:{spec}} ({self.low:{spec}}–{self.high:{spec}}, {self.n} seeds)"


def spread(values) -> Spread | None:
    """Return the Spread of the finite ``values``, None when there are none."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return None
    sd = float(v.std(ddof=1)) if v.size > 1 else None
    return Spread(int(v.size), float(v.mean()), sd, float(v.min()), float(v.max()))


def format_interval(value: float | None, interval: Interval | list | None, spec: str = ".4f") -> str:
    """Return "value [low, high]", or just the value when there is no interval, "—" without a value."""
    if value is None:
        return "—"
    if interval is None:
        return f"{value:{spec}}"
    low, high = (interval.low, interval.high) if isinstance(interval, Interval) else interval
    return f"{value:{spec}} [{low:{spec}}, {high:{spec}}]"


def format_paired(test: dict | None) -> str:
    """Return a PairedTest's JSON form in words: "+0.12 [−0.05, +0.30] pts, p = 0.31, within noise"."""
    interval = as_interval(test.get("delta_ci")) if isinstance(test, dict) else None
    numbers = isinstance(test, dict) and all(isinstance(test.get(k), (int, float)) for k in ("delta", "p_value"))
    if interval is None or not numbers:
        return "—"
    low, high = interval.low, interval.high
    verdict = "real" if test["distinguishable"] else "within noise"
    return (f"{test['delta'] * 100:+.2f} [{low * 100:+.2f}, {high * 100:+.2f}] pts, p = {test['p_value']:.2g}, "
            f"{verdict}")


def rows_differ(a: Spread | None, b: Spread | None, a_interval: Interval | None = None,
                b_interval: Interval | None = None) -> bool | None:
    """Return whether two rows' accuracies differ beyond noise: Welch's t-test over their seeds (p < 0.05) when
    both have two or more seeds, else whether their 95 % intervals are disjoint; None when neither is at hand."""
    if a is not None and b is not None and a.n > 1 and b.n > 1:
        if a.sd == 0 and b.sd == 0:
            return a.mean != b.mean
        test = stats.ttest_ind_from_stats(a.mean, a.sd, a.n, b.mean, b.sd, b.n, equal_var=False)
        return bool(test.pvalue < 1 - LEVEL)
    if a_interval is None or b_interval is None:
        return None
    return a_interval.high < b_interval.low or b_interval.high < a_interval.low


def as_interval(value, level: float = LEVEL) -> Interval | None:
    """Return ``value`` read back from JSON ([low, high], two finite numbers, low ≤ high) as an Interval, else
    None: a damaged or foreign file's interval is left out, never trusted."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        return None
    return Interval(float(value[0]), float(value[1]), level) if value[0] <= value[1] else None
