"""The deployment recommendation (issue 31): one statistic with an interval, ties in both directions, never ranked
from an UNSTABLE figure, the latency bound and its source, the terminal's headline per precision.

Expected values are computed here from the planted figures with the published formulas (throughput = batch ÷ p50;
the ratio interval of two intervals [a, b] ÷ [c, d] = [a / d, b / c]), never read from the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest

from convkit import gates
from convkit.evaluate.result import EvalResult
from convkit.evaluate.serving import cli as serving_cli
from convkit.evaluate.serving.recommend import advantage, candidates, recommend
from convkit.evaluate.serving.remeasure import Rounds, interleaved
from convkit.evaluate.serving.section import recommendation_lines


def _row(prec, batch, p50, ci, p99=None, p99_ci=None, unstable=None, provider="cpu", backend="ort"):
    return {"precision": prec, "provider": provider, "backend": backend, "batch": batch, "p50_ms": p50,
            "p50_ci_pair_ms": list(ci) if ci else None, "p50_ci_ms": list(ci) if ci else None,
            "p99_ms": p99 if p99 is not None else p50 * 1.2, "p99_ci_ms": p99_ci, "unstable": unstable, "n": 500}


def _result(latency, precisions=("fp32",), model=None):
    acc = [{"precision": p, "provider": "cpu", "accuracy": 0.9, "accuracy_ci": [0.88, 0.92],
            "gate": {"drop_points": 0.0, "max_drop_points": 1.0, "passed": True}} for p in precisions]
    return EvalResult.from_json({"accuracy": acc, "latency": latency, "model": model or {}})


def _thr(batch, ci):
    """Median throughput interval, images/s, from a p50 interval in ms: batch ÷ p50 reverses the ends."""
    return batch * 1e3 / ci[1], batch * 1e3 / ci[0]


@pytest.mark.parametrize("fast_ci, verdict", [
    ((0.40, 0.45), "better"),  # throughput interval wholly above the other's: ratio interval above 1
    ((0.95, 1.30), "tie"),  # overlapping intervals: the ratio interval holds 1
])
def test_tie_logic_on_planted_intervals(fast_ci, verdict):
    slow_ci = (1.00, 1.10)
    fast_p50 = sum(fast_ci) / 2
    res = _result([_row("fp32", 1, 1.05, slow_ci), _row("int8", 1, fast_p50, fast_ci)], ("fp32", "int8"))
    rec = recommend(res, latency_bound_ms=15)
    # the recommended one: int8 when it is faster beyond noise; of a tie, the lower p50 per call (fp32's 1.05)
    first, second = (fast_ci, slow_ci) if verdict == "better" else (slow_ci, fast_ci)
    first_thr, second_thr = _thr(1, first), _thr(1, second)
    expected = [first_thr[0] / second_thr[1], first_thr[1] / second_thr[0]]
    got = rec["versus_runner_up"]
    assert got["ratio_ci"] == pytest.approx(expected)
    assert got["verdict"] == verdict
    assert (expected[0] > 1) == (verdict == "better")  # the planted interval lies where the verdict says
    if verdict == "tie":
        assert "TIE" in rec["text"] and "holds 1" in rec["text"] and rec["tied"]
        # of a tie the lower p50 per call is named, whichever point figure happened to be higher
        assert rec["recommended"]["p50_ms"] == min(1.05, fast_p50)
    else:
        assert "TIE" not in rec["text"] and "beyond noise" in rec["text"] and not rec["tied"]
        assert rec["recommended"]["precision"] == "int8"


def test_a_ratio_interval_below_one_is_worse_never_a_tie():
    slow, fast = _row("fp32", 1, 1.05, (1.0, 1.1)), _row("int8", 1, 0.42, (0.40, 0.45))
    cands = {c["precision"]: c for c in candidates(_result([slow, fast], ("fp32", "int8")))}
    got = advantage(cands["fp32"], cands["int8"])
    expected = [_thr(1, (1.0, 1.1))[0] / _thr(1, (0.40, 0.45))[1], _thr(1, (1.0, 1.1))[1] / _thr(1, (0.40, 0.45))[0]]
    assert got["ratio_ci"] == pytest.approx(expected) and expected[1] < 1
    assert got["verdict"] == "worse"


def test_runner_up_is_the_real_second_and_every_loser_says_why():
    rows = [_row("int8", 1, 0.50, (0.48, 0.52)), _row("int8", 8, 2.0, (1.9, 2.1)),  # 2000 vs 4000 images/s
            _row("fp32", 1, 1.0, (0.95, 1.05)), _row("fp32", 8, 5.0, (4.8, 5.2)),
            _row("int8", 64, 10.0, (9.5, 10.5), p99=40.0)]  # fastest, but over the bound
    rec = recommend(_result(rows, ("fp32", "int8")), latency_bound_ms=15)
    assert rec["recommended"]["name"] == "int8 cpu ort batch 8"
    assert rec["runner_up"]["name"] == "int8 cpu ort batch 1"  # the real second: same precision
    why = {w.split(":")[0]: w for w in rec["why_not"]}
    assert set(why) == {"int8 cpu ort batch 1", "fp32 cpu ort batch 1", "fp32 cpu ort batch 8", "int8 cpu ort batch 64"}
    assert "exceeds the 15 ms bound" in why["int8 cpu ort batch 64"]
    assert "beyond noise" in why["int8 cpu ort batch 1"]


def test_p99_interval_straddling_the_bound_does_not_qualify():
    rows = [_row("fp32", 8, 2.0, (1.9, 2.1), p99=14.4, p99_ci=[13.0, 16.1]), _row("fp32", 1, 0.5, (0.48, 0.52))]
    rec = recommend(_result(rows), latency_bound_ms=15)
    assert rec["recommended"]["batch"] == 1
    assert any("may exceed the 15 ms bound" in w for w in rec["why_not"])
    # faster, and only noise keeps it out: the answer is stated as a tie with it
    assert rec["contested"] == ["fp32 cpu ort batch 8"] and "UNDECIDED" in rec["text"]
    rows[0]["p99_ci_ms"] = [15.5, 17.0]  # over the bound beyond noise: out, no tie
    rec = recommend(_result(rows), latency_bound_ms=15)
    assert rec["contested"] == [] and "TIE" not in rec["text"]


def test_never_chosen_from_an_unstable_figure():
    """The fastest figure is UNSTABLE: without re-measuring it is left unranked; a fake timing source re-measures
    the finalists, and the ranking uses the re-measured figures."""
    rows = [_row("int8", 8, 1.0, (0.5, 3.0), unstable="p90/p50 2.10 > 1.5"), _row("fp32", 8, 4.0, (3.9, 4.1))]
    res = _result(rows, ("fp32", "int8"))
    rec = recommend(res, latency_bound_ms=15)
    assert rec["recommended"]["precision"] == "fp32"
    assert any(w.startswith("int8 cpu ort batch 8: not ranked: its figure is UNSTABLE") for w in rec["why_not"])

    asked = []

    def fake(stable_p50):
        def remeasure(finalists):
            asked.append([c["name"] for c in finalists])
            return {c["name"]: {"p50_ms": stable_p50 if c["precision"] == "int8" else 4.0,
                                "p50_ci_pair_ms": [stable_p50 * 0.98, stable_p50 * 1.02] if c["precision"] == "int8"
                                else [3.95, 4.05], "p99_ms": 5.0, "p99_ci_ms": [4.8, 5.2], "n": 900, "unstable": None}
                    for c in finalists}
        return remeasure

    rec = recommend(res, latency_bound_ms=15, remeasure=fake(2.0))
    assert asked == [["int8 cpu ort batch 8", "fp32 cpu ort batch 8"]]  # the finalists, together
    assert rec["recommended"]["precision"] == "int8" and rec["recommended"]["remeasured"]
    assert rec["recommended"]["throughput"] == pytest.approx(8 * 1e3 / 2.0)  # the re-measured figure, not 8000
    assert rec["remeasured"] == ["int8 cpu ort batch 8", "fp32 cpu ort batch 8"]

    def still_unstable(finalists):
        return {c["name"]: {**_row(c["precision"], 8, 1.0, (0.5, 3.0)), "unstable": "std/mean 0.9 > 0.5"}
                for c in finalists if c["precision"] == "int8"}

    rec = recommend(res, latency_bound_ms=15, remeasure=still_unstable)
    assert rec["recommended"]["precision"] == "fp32"
    assert any("UNSTABLE" in w and "even after re-measuring" in w for w in rec["why_not"])
    # its unsettled 8,000 images/s could beat fp32's 2,000: a stated tie, never a confident answer
    assert rec["contested"] == ["int8 cpu ort batch 8"] and "int8 cpu ort batch 8" in rec["tied"]
    assert rec["text"].startswith("TIE — ") and "UNDECIDED against int8 cpu ort batch 8" in rec["text"]


def test_interleaved_rounds_alternate_and_stop_when_stable():
    """A fake clock: each call advances it by its planted duration; the first rounds of A are noisy."""
    now = [0.0]
    order = []
    a_times = iter([0.001, 0.003] * 10 + [0.001] * 10_000)  # two modes: the median is not settled at first

    def call(name, durations):
        def run():
            order.append(name)
            now[0] += next(durations)
        return run

    calls = {"A": (call("A", a_times), None, 1), "B": (call("B", iter([0.002] * 10_000)), None, 4)}
    stats = interleaved(calls, Rounds(min_rounds=2, max_rounds=40, calls=10, seconds=0.0), clock=lambda: now[0])
    runs = [k for i, k in enumerate(order) if i == 0 or order[i - 1] != k]
    assert runs[:4] == ["A", "B", "A", "B"]  # rounds alternate
    assert stats["B"]["p50_ms"] == pytest.approx(2.0) and stats["B"]["batch"] == 4
    a = np.asarray([0.001, 0.003] * 10 + [0.001] * (order.count("A") - 20)) * 1e3
    assert order.count("A") >= 30  # 20 or 30 calls: the median's interval still reaches the slow mode
    assert stats["A"]["p50_ms"] == pytest.approx(np.percentile(a, 50))
    assert stats["A"]["unstable"] is None and stats["A"]["rounds"] < 40


def test_a_remeasured_figure_is_settled_by_its_median_not_by_rare_stalls():
    """Thousands of 0.03 ms calls with three 10 ms stalls: latency.py flags std/mean, but the median's interval is
    tight, so the figure may be ranked on its median; one whose median could fall in either of two modes may not."""
    from convkit.evaluate.latency import summarize
    from convkit.evaluate.serving.remeasure import unsettled

    calls = np.full(3000, 0.03) + np.random.default_rng(1).random(3000) * 0.001
    calls[[10, 900, 2000]] = 10.0
    stats = summarize(calls, 1, 0.0)
    assert stats["unstable"] and "std/mean" in stats["unstable"] and "p90/p50" not in stats["unstable"]
    assert unsettled(stats) is None
    # half the calls in a slow mode: the median could land in either, its interval spans both
    bimodal = summarize(np.concatenate([np.full(500, 0.03), np.full(500, 0.09)]), 1, 0.0)
    assert "wider than ±5%" in unsettled(bimodal)


def test_latency_bound_source_in_recommendation_and_eval_md():
    rows = [_row("fp32", 1, 0.5, (0.48, 0.52))]
    rec = recommend(_result(rows))
    assert rec["latency_bound_ms"] == gates.LATENCY_BOUND_MS and rec["latency_bound_source"].startswith("default")
    assert "15 ms p99 bound (MLPerf's default)" in rec["text"] and "mlperf.conf" in rec["latency_bound_source"]
    md = "\n".join(recommendation_lines(rec))
    assert f"p99 ≤ {gates.LATENCY_BOUND_MS:g} ms (default" in md
    rec = recommend(_result(rows), latency_bound_ms=7, bound_source="--latency-bound-ms")
    assert "7 ms p99 bound (--latency-bound-ms)" in rec["text"]
    opts = serving_cli.options_from_cli((), False, None, 16, 2.0, 1, None, threads=1)
    assert opts.latency_bound_source == gates.LATENCY_BOUND_SOURCE
    opts = serving_cli.options_from_cli((), False, 9.0, 16, 2.0, 1, None, threads=1)
    assert (opts.latency_bound_ms, opts.latency_bound_source) == (9.0, "--latency-bound-ms")


def test_terminal_headline_per_precision():
    rows = [_row("fp32", 1, 0.80, (0.78, 0.82)), _row("fp32", 64, 20.0, (19.0, 21.0)),
            _row("int8", 1, 0.50, (0.49, 0.51)), _row("int8", 64, 8.0, (7.5, 8.5)),
            _row("int8", 256, 20.0, (18.0, 22.0), unstable="p90/p50 1.8 > 1.5")]
    res = _result(rows, ("fp32", "int8"), model={"image_shape_chw": [3, 32, 32]})
    res.recommendation = recommend(res)
    lines = serving_cli.headline_lines(res)
    fp32 = [x for x in lines if x.strip().startswith("fp32 cpu:")]
    int8 = [x for x in lines if x.strip().startswith("int8 cpu:")]
    assert len(fp32) == len(int8) == 1
    assert "top-1 0.9000 [0.8800, 0.9200]" in fp32[0]
    assert "batch-1 p50 0.800 [0.780, 0.820] ms on 1×3×32×32" in fp32[0]
    res.method = {"input_shape_timed": "[batch, 3, 32, 32] (NCHW float32)"}  # what the evaluation records
    assert "ms on [1, 3, 32, 32] (NCHW float32);" in serving_cli.headline_lines(res)[0]
    assert f"best throughput {64e3 / 20:,.0f} images/s at batch 64" in fp32[0]  # 3,200 > 1,250 at batch 1
    # int8: batch 256 (12,800/s) is flagged UNSTABLE, so the headline gives the best stable one: batch 64
    assert f"best throughput {64e3 / 8:,.0f} images/s at batch 64" in int8[0]
    assert any(x.strip().startswith(f"latency bound {gates.LATENCY_BOUND_MS:g} ms p99 (default") for x in lines)
