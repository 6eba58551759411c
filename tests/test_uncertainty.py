"""convkit.uncertainty against the published formulas and examples, computed here with math only."""

from __future__ import annotations

import math

import numpy as np
import pytest

from convkit import uncertainty as u

Z95 = 1.959963984540054  # Φ⁻¹(0.975)


def wilson_by_formula(k: int, n: int) -> tuple[float, float]:
    """Wilson (1927): (p̂ + z²/2n ± z·sqrt(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)."""
    p = k / n
    centre = p + Z95 ** 2 / (2 * n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n))
    return (centre - half) / (1 + Z95 ** 2 / n), (centre + half) / (1 + Z95 ** 2 / n)


def exact_two_sided(b: int, c: int) -> float:
    """Exact McNemar: 2 · P(X ≤ min(b, c)), X ~ Binomial(b + c, 1/2), capped at 1."""
    n = b + c
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n)


def pairs(n: int, both: int, only_base: int, only_cand: int) -> tuple[np.ndarray, np.ndarray]:
    """Return per-image correctness of a base and a candidate with the given concordant/discordant counts."""
    base = np.zeros(n, bool)
    cand = np.zeros(n, bool)
    base[:both] = cand[:both] = True
    base[both:both + only_base] = True
    cand[both + only_base:both + only_base + only_cand] = True
    order = np.random.default_rng(3).permutation(n)
    return base[order], cand[order]


def test_wilson_9953_of_10000():
    ci = u.wilson(9953, 10000)
    low, high = wilson_by_formula(9953, 10000)
    assert ci.low == pytest.approx(low, abs=1e-9) and ci.high == pytest.approx(high, abs=1e-9)
    assert (round(ci.low, 4), round(ci.high, 4)) == (0.9938, 0.9965)  # the figure the issue quotes
    assert u.format_interval(0.9953, ci) == "0.9953 [0.9938, 0.9965]"
    assert u.wilson(0, 0) is None
    zero = u.wilson(0, 20)  # Wilson stays inside [0, 1] and is not degenerate at 0 successes
    assert zero.low == pytest.approx(0.0, abs=1e-12) and zero.high == pytest.approx(wilson_by_formula(0, 20)[1])


def test_mcnemar_agresti_presidential_approval():
    """Agresti, Categorical Data Analysis, table 10.1: 794 / 150 / 86 / 570 of 1600; difference 0.04 with the
    Wald interval (0.021, 0.059)."""
    base, cand = pairs(1600, both=794, only_base=86, only_cand=150)
    t = u.mcnemar(base, cand)
    assert (t.only_candidate_right, t.only_base_right, t.n) == (150, 86, 1600)
    assert t.p_value == pytest.approx(exact_two_sided(150, 86), rel=1e-9)
    assert t.delta == pytest.approx(0.04)
    b, c, n = 150.5, 86.5, 1602  # Agresti & Min (2005): half an image added to each discordant cell
    half = Z95 * math.sqrt(b + c - (b - c) ** 2 / n) / n
    assert t.delta_interval.low == pytest.approx((b - c) / n - half) and t.delta_interval.high == pytest.approx(
        (b - c) / n + half)
    assert (round(t.delta_interval.low, 3), round(t.delta_interval.high, 3)) == (0.021, 0.059)
    assert t.distinguishable


def test_mcnemar_small_discordant_counts_and_symmetry():
    base, cand = pairs(100, both=80, only_base=2, only_cand=8)
    t = u.mcnemar(base, cand)
    assert t.p_value == pytest.approx(exact_two_sided(8, 2))  # 0.109: not distinguishable
    assert not t.distinguishable and t.delta_interval.contains(0.0)
    back = u.mcnemar(cand, base)
    assert back.p_value == pytest.approx(t.p_value) and back.delta == pytest.approx(-t.delta)
    same = u.mcnemar(base, base)
    assert same.p_value == 1.0 and same.delta == 0.0 and same.delta_interval.low < 0 < same.delta_interval.high


@pytest.mark.parametrize("only_base,only_cand,real", [(250, 50, True), (55, 45, False)])
def test_planted_flips_on_10000_images(only_base, only_cand, real):
    """A 2-point loss (250 images lost, 50 gained) is detected; a 0.1-point one (55 lost, 45 gained) is not."""
    base, cand = pairs(10_000, both=8_500, only_base=only_base, only_cand=only_cand)
    t = u.mcnemar(base, cand)
    assert t.delta == pytest.approx((only_cand - only_base) / 10_000)
    assert t.distinguishable is real
    assert t.delta_interval.contains(0.0) is not real
    assert ("real" in u.format_paired(t.to_dict())) is real


def test_median_interval_order_statistics():
    """Distribution-free interval of the median: ranks 18 and 33 for n = 50 (published tables, e.g. Conover)."""
    values = np.arange(1.0, 51.0)[::-1]
    ci = u.median_interval(values)
    assert (ci.low, ci.high) == (18.0, 33.0)
    # coverage by the binomial sum, computed here: 1 − 2·P(X ≤ 17), X ~ Binomial(50, 1/2) ≥ 0.95
    assert 1 - 2 * sum(math.comb(50, i) for i in range(18)) / 2 ** 50 >= 0.95
    assert u.median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) is None  # five calls cannot give 95 %
    assert u.median_interval(np.arange(6.0)) is not None


def test_latency_of_a_model_with_itself_is_a_tie():
    """One model timed in alternating calls (so machine drift hits both alike) is reported as a tie."""
    import time

    import torch
    import torchvision

    from convkit.evaluate.latency import compare_latency, summarize

    model = torchvision.models.squeezenet1_1(num_classes=10).eval()
    x = torch.rand(1, 3, 64, 64)
    times = []
    with torch.inference_mode():
        model(x)
        for _ in range(120):
            t = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t) * 1e3)
    first, second = summarize(np.asarray(times[0::2]), 1, 0.0), summarize(np.asarray(times[1::2]), 1, 0.0)
    low, high = first["p50_ci_ms"]
    assert low <= first["p50_ms"] <= high
    versus = compare_latency(first, second)
    assert versus["ratio_ci"][0] <= versus["ratio"] <= versus["ratio_ci"][1]
    assert versus["verdict"] == "tie", versus


def test_ratio_verdicts_from_intervals():
    fast = u.Interval(1.0, 1.1, u.pair_level())
    slow = u.Interval(2.0, 2.2, u.pair_level())
    assert u.ratio_verdict(u.ratio_interval(fast, slow)) == "faster"
    assert u.ratio_verdict(u.ratio_interval(slow, fast)) == "slower"
    assert u.ratio_verdict(u.ratio_interval(fast, u.Interval(1.05, 1.2, u.pair_level()))) == "tie"
    assert u.ratio_interval(fast, slow).level == pytest.approx(0.95)


def test_ece_bootstrap_interval_is_seeded_and_covers_the_ece():
    from convkit.calibration import calibration_bins

    rng = np.random.default_rng(5)
    logits = rng.normal(size=(2000, 10)) * 3
    labels = rng.integers(0, 10, 2000)
    cal = calibration_bins(logits, labels)
    low, high = cal["ece_ci"]
    assert low < cal["ece"] < high and high - low < 0.2
    assert calibration_bins(logits, labels)["ece_ci"] == cal["ece_ci"]  # seeded: a re-run prints the same


def test_spread_of_seeds():
    s = u.spread([0.97, 0.98, 0.99])
    assert s.mean == pytest.approx(0.98) and s.sd == pytest.approx(0.01) and (s.low, s.high) == (0.97, 0.99)
    assert s.format() == "0.9800 ± 0.0100 (0.9700–0.9900, 3 seeds)"
    assert u.spread([0.5]).sd is None and u.spread([]) is None


def test_eval_metrics_carry_intervals_and_paired_tests():
    """classification_metrics / compare_backends / ort_accuracy's fp32 pairing, checked against the formulas."""
    from convkit.evaluate.accuracy import classification_metrics, compare_backends

    rng = np.random.default_rng(7)
    labels = rng.integers(0, 10, 2000)
    ref_scores = rng.normal(size=(2000, 10))
    ref_scores[np.arange(2000), labels] += 2.0
    ort_scores = ref_scores.copy()
    flip = rng.choice(2000, 60, replace=False)
    ort_scores[flip, labels[flip]] -= 10.0  # 60 images the ORT side now gets wrong (some were wrong already)
    ref = {**classification_metrics(ref_scores, labels, [str(i) for i in range(10)]), "labels": labels}
    ort = classification_metrics(ort_scores, labels, [str(i) for i in range(10)])
    hits = int((ref_scores.argmax(1) == labels).sum())
    assert ref["accuracy_ci"] == pytest.approx(list(wilson_by_formula(hits, 2000)))
    recall0 = int(((ref_scores.argmax(1) == 0) & (labels == 0)).sum())
    assert ref["per_class"][0]["recall_ci"] == pytest.approx(list(wilson_by_formula(recall0, int((labels == 0).sum()))))
    top5 = int((np.argsort(-ref_scores, 1)[:, :5] == labels[:, None]).any(1).sum())
    assert ref["top5_accuracy_ci"] == pytest.approx(list(wilson_by_formula(top5, 2000)))
    test = compare_backends(ort, ref)["paired_test"]
    ref_ok, ort_ok = ref_scores.argmax(1) == labels, ort_scores.argmax(1) == labels
    b, c = int((ort_ok & ~ref_ok).sum()), int((ref_ok & ~ort_ok).sum())
    assert (test["only_candidate_right"], test["only_base_right"]) == (b, c) and c > 20
    assert test["p_value"] == pytest.approx(exact_two_sided(b, c)) and test["distinguishable"]
