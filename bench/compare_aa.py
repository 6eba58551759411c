"""False alarms and power of `convkit compare`'s latency A/B (not a test), on this machine's CPU.

A/A: the same ONNX file compared with itself ``--repeats`` times through the interleaved A/B that `convkit
compare` runs (convkit.compare.latency_ab): the share of comparisons called "regressed" at p50 and at p99, beside
what github-action-benchmark's default alert (current ÷ previous > 200 %) and a plain ratio of two runs (p50 of
the second run ÷ p50 of the first > 1 + margin, no interval) say on the same calls. The "two runs" are the A
calls and the B calls of each A/A, i.e. the same measurements.

Power: B made slower by a planted busy-wait of a fixed share of A's p50 before each call; the smallest share
called "regressed" at p50 in at least 4 of 5 tries.

    python bench/compare_aa.py                       # a small CNN, 20 A/A comparisons, 5 tries per slowdown
    python bench/compare_aa.py --repeats 50 --threads 2

Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from convkit.compare import latency_ab
from convkit.compare.gate import DEFAULT_LATENCY_MARGIN

SLOWDOWNS = (0.02, 0.05, 0.1, 0.2, 0.4)  # planted extra time, as a share of A's p50
GHA_BENCHMARK_ALERT = 2.0  # github-action-benchmark's default alert-threshold: "200%"


def small_cnn(path: Path) -> Path:
    """Write a small CNN (conv 3→16 → ReLU → conv 16→32 → ReLU → global pool → linear 10) on 3×32×32, random
    weights, with onnx.helper."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = {"w1": rng.normal(0, 0.1, (16, 3, 3, 3)), "w2": rng.normal(0, 0.1, (32, 16, 3, 3)),
         "w3": rng.normal(0, 0.1, (32, 10))}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("MatMul", ["f", "w3"], ["y"])]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                              initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in w.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def as_gated(p50: str, p99: str) -> str:
    """Return the latency part of compare's verdict: p50 as judged; p99 counts only when regressed
    (gate.tail_policy)."""
    if "regressed" in (p50, p99):
        return "regressed"
    return p50


def spin(seconds: float) -> None:
    """Busy-wait ``seconds`` (sleep's granularity is too coarse for tens of microseconds)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20, help="A/A comparisons.")
    ap.add_argument("--tries", type=int, default=5, help="Comparisons per planted slowdown.")
    ap.add_argument("--threads", type=int, default=1, help="ORT intra-op threads.")
    ap.add_argument("--blocks", type=int, default=latency_ab.AbTiming.blocks)
    ap.add_argument("--calls", type=int, default=latency_ab.AbTiming.calls)
    args = ap.parse_args()
    from convkit.providers import ProviderConfig, make_session

    timing = latency_ab.AbTiming(blocks=args.blocks, calls=args.calls)
    with tempfile.TemporaryDirectory() as tmp:
        session = make_session(small_cnn(Path(tmp) / "cnn.onnx"), ProviderConfig("cpu", threads=args.threads))
    x = {"x": np.random.default_rng(1).normal(size=(1, 3, 32, 32)).astype(np.float32)}

    def run():
        return session.run(["y"], x)

    margin = DEFAULT_LATENCY_MARGIN
    rows = []
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        a, b = latency_ab.interleaved(run, run, timing)
        checks = {m: latency_ab.ab_checks(a, b, m, timing) for m in (0.0, margin)}
        rows.append({"p50_0": checks[0.0]["p50"]["verdict"], "p99_0": checks[0.0]["p99"]["verdict"],
                     "p50_m": checks[margin]["p50"]["verdict"], "p99_m": checks[margin]["p99"]["verdict"],
                     "gha": a.mean() and b.mean() / a.mean() > GHA_BENCHMARK_ALERT,
                     "plain_0": np.median(b) / np.median(a) > 1.0, "plain_m": np.median(b) / np.median(a) > 1 + margin,
                     "ratio": np.median(b) / np.median(a), "p50": np.median(a)})
        rows[-1]["gate"] = as_gated(rows[-1]["p50_m"], rows[-1]["p99_m"])
    aa_seconds = time.perf_counter() - t0
    n = len(rows)

    def share(key, value="regressed"):
        k = sum(r[key] == value if isinstance(value, str) else bool(r[key]) for r in rows)
        return f"{k}/{n} ({100 * k / n:.0f} %)"

    print(f"A/A: {n} comparisons of one small CNN with itself, batch 1, {args.threads} thread(s), "
          f"{timing.describe()}; p50 {np.median([r['p50'] for r in rows]):.3f} ms; plain p50 ratios "
          f"{min(r['ratio'] for r in rows):.3f}–{max(r['ratio'] for r in rows):.3f}; {aa_seconds:.0f} s\n")
    print("| rule | called regressed (A/A: all false alarms) | inconclusive |")
    print("|---|---:|---:|")
    print(f"| convkit compare p50, margin 0 | {share('p50_0')} | {share('p50_0', 'inconclusive')} |")
    print(f"| convkit compare p99, margin 0 | {share('p99_0')} | {share('p99_0', 'inconclusive')} |")
    for q in ("p50", "p99"):
        print(f"| convkit compare {q}, margin {margin:.0%} (default) | {share(q + '_m')} "
              f"| {share(q + '_m', 'inconclusive')} |")
    print(f"| convkit compare's latency verdict as gated (p50, and p99 only when clearly beyond) "
          f"| {share('gate')} | {share('gate', 'inconclusive')} |")
    print(f"| github-action-benchmark default (mean ratio > 200 %) | {share('gha', True)} | — |")
    print(f"| plain ratio of two runs, p50 > 1 | {share('plain_0', True)} | — |")
    print(f"| plain ratio of two runs, p50 > 1 + {margin:.0%} | {share('plain_m', True)} | — |")
    power(run, timing, args.tries, float(np.median([r["p50"] for r in rows])), margin)


def power(run, timing, tries: int, p50_ms: float, margin: float) -> None:
    """Print how often each planted slowdown is called regressed (p50), at margin 0 and the default margin."""
    print(f"\nPower: B = A + a busy-wait of a share of A's p50 ({p50_ms:.3f} ms) per call; {tries} tries each\n")
    print(f"| planted slowdown | p50 regressed, margin 0 | p50 regressed, margin {margin:.0%} "
          f"| measured p50 ratio (median) |")
    print("|---:|---:|---:|---:|")
    smallest = {0.0: None, margin: None}
    for share in SLOWDOWNS:
        extra = share * p50_ms / 1e3

        def slower():
            spin(extra)
            return run()

        hits, ratios = {0.0: 0, margin: 0}, []
        for _ in range(tries):
            a, b = latency_ab.interleaved(run, slower, timing)
            ratios.append(float(np.median(b) / np.median(a)))
            for m in hits:
                hits[m] += latency_ab.ab_checks(a, b, m, timing)["p50"]["verdict"] == "regressed"
        for m in hits:
            if smallest[m] is None and hits[m] >= 4 * tries / 5:
                smallest[m] = share
        print(f"| +{share:.0%} | {hits[0.0]}/{tries} | {hits[margin]}/{tries} | {np.median(ratios):.3f} |")
    for m, s in smallest.items():
        print(f"\nSmallest planted slowdown detected in ≥ 4 of 5 tries at margin {m:.0%}: "
              f"{'+' + format(s, '.0%') if s is not None else 'none of ' + ', '.join(f'{x:.0%}' for x in SLOWDOWNS)}")


if __name__ == "__main__":
    main()
