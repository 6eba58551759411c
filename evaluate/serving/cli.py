"""``convkit evaluate``'s serving options (MLPerf LoadGen scenarios, SUT batching and threads) as one decorator,
so the command gains them in one line. Module-level imports stay light (click), as in ``cli.py``.
"""

from __future__ import annotations

import click

from convkit import gates
from convkit.evaluate.options import MAX_BATCH_SIZE
from convkit.evaluate.result import EvalResult
from convkit.uncertainty import format_interval

# A target above this is no single machine's: LoadGen's Python SUT callbacks top out far below it.
MAX_SERVER_QPS = 1_000_000
MAX_WORKERS = 64


# the click parameters cli_options adds, in options_from_cli's order
OPTION_NAMES = ("scenario", "quick", "latency_bound_ms", "max_batch", "batch_timeout_ms", "workers", "server_qps")


def cli_options(command):
    """Decorator adding ``convkit evaluate``'s serving options (``--scenario`` and its settings) to ``command``;
    they arrive as keyword arguments for ``options_from_cli``."""
    opts = [
        click.option("--scenario", "scenario", multiple=True,
                     help="MLPerf LoadGen scenario: single-stream, multi-stream, server, offline or all; repeatable "
                          "(needs `pip install mlcommons-loadgen`)."),
        click.option("--quick", is_flag=True,
                     help="Short LoadGen runs (2 s, >= 64 queries) for CI and demos; reported as not valid."),
        click.option("--latency-bound-ms", type=click.FloatRange(0, 600_000, min_open=True), default=None,
                     help=f"p99 bound for Server and the recommendation, your service's (default: "
                          f"{gates.LATENCY_BOUND_MS:g}, MLPerf's ResNet-50 Server bound; the recommendation says "
                          "which it used)."),
        click.option("--max-batch", type=click.IntRange(1, MAX_BATCH_SIZE), default=16, show_default=True,
                     help="SUT dynamic batching: most samples per batch (Server, Offline)."),
        click.option("--batch-timeout-ms", type=click.FloatRange(0, 10_000), default=2.0, show_default=True,
                     help="SUT dynamic batching: longest wait for a batch to fill (Server, Offline)."),
        click.option("--workers", type=click.IntRange(1, MAX_WORKERS), default=1, show_default=True,
                     help="SUT concurrent ORT sessions, one thread each; intra-op threads = --threads / workers."),
        click.option("--server-qps", type=click.FloatRange(0, MAX_SERVER_QPS, min_open=True), default=None,
                     help="Run Server at this target QPS instead of searching for the peak (at most what LoadGen's "
                          "pre-generated queries leave room for in memory)."),
    ]
    for opt in reversed(opts):
        command = opt(command)
    return command


def summary_lines(result: EvalResult) -> list[str]:
    """Return the CLI's lines for the LoadGen scenarios and the recommendation of one evaluation result."""
    lines = []
    for r in (result.serving or {}).get("scenarios") or []:
        if r["scenario"] == "accuracy":
            lines.append(f"  LoadGen accuracy mode {r['precision']} {r['provider']}: top-1 {r['accuracy']:.4f}")
            continue
        qps = f"{r['qps']:,.0f}" if r.get("qps") else "—"
        p99 = f"{r['p99_ms']:.3f}" if r.get("p99_ms") is not None else "—"
        lines.append(f"  LoadGen {r['scenario']} {r['precision']} {r['provider']}: {qps} samples/s, p99 {p99} ms, "
                     f"{r.get('validity_note')}")
    rec = result.recommendation
    if rec:
        lines.append(f"  recommendation: {rec['text']}")
    return lines


def headline_lines(result: EvalResult) -> list[str]:
    """Return one terminal line per precision × provider — top-1 with its interval, batch-1 p50 with its interval
    and the input shape, the best median throughput with its batch — and the latency bound the recommendation
    used, with its source."""
    lines = []
    timed = (result.method or {}).get("input_shape_timed")  # e.g. "[batch, 3, 48, 192] (NCHW float32)"
    chw = "×".join(str(v) for v in (result.model or {}).get("image_shape_chw") or [])
    shape = timed.replace("batch", "1", 1) if isinstance(timed, str) else f"1×{chw}" if chw else "input not recorded"
    entries = {(a.get("precision"), a.get("provider")): a for a in result.accuracy or []}
    for r in result.latency or []:  # a precision timed but not scored still gets its line
        if r.get("backend") == "ort":
            entries.setdefault((r.get("precision"), r.get("provider")), {})
    for (prec, kind), a in entries.items():
        acc = ("outputs degenerate" if a.get("degenerate") else "top-1 not measured" if a.get("accuracy") is None
               else f"top-1 {format_interval(a.get('accuracy'), a.get('accuracy_ci'))}")
        rows = [r for r in result.latency or [] if (r.get("precision"), r.get("provider"), r.get("backend")) ==
                (prec, kind, "ort") and r.get("p50_ms")]
        b1 = next((r for r in rows if r.get("batch") == 1), None)
        p50 = (f"batch-1 p50 {format_interval(b1['p50_ms'], b1.get('p50_ci_ms'), '.3f')} ms on {shape}"
               + (" UNSTABLE" if b1.get("unstable") else "") if b1 else "batch-1 p50 not measured")
        stable = [r for r in rows if not r.get("unstable")] or rows  # an UNSTABLE figure only when all are
        best = max(stable, key=lambda r: r["batch"] / r["p50_ms"], default=None)
        thr = (f"best throughput {best['batch'] * 1e3 / best['p50_ms']:,.0f} images/s at batch {best['batch']} "
               f"(batch ÷ p50)" + (" UNSTABLE" if best.get("unstable") else "") if best else "throughput not measured")
        lines.append(f"  {prec} {kind}: {acc}; {p50}; {thr}")
    rec = result.recommendation
    if rec and rec.get("latency_bound_ms") is not None:
        lines.append(f"  latency bound {rec['latency_bound_ms']:g} ms p99 "
                     f"({rec.get('latency_bound_source') or gates.LATENCY_BOUND_SOURCE})")
    return lines


def options_from_cli(scenario, quick, latency_bound_ms, max_batch, batch_timeout_ms, workers, server_qps,
                     threads: int | None = None, device_id: int = 0):
    """Return the ScenarioOptions of the CLI values (ConvkitError for an unknown scenario); intra-op threads per
    worker = ``threads`` (default: physical cores) // workers, at least 1; the SUT's sessions use GPU ``device_id``."""
    from convkit.envinfo import physical_cores
    from convkit.evaluate.serving.scenarios import ScenarioOptions, check_server_qps, parse_scenarios, require_loadgen
    from convkit.evaluate.serving.sut import SutConfig

    names = parse_scenarios(scenario)
    if server_qps is not None:
        check_server_qps(server_qps, quick)
    if names:
        require_loadgen()  # fail before the accuracy and latency passes, not after them

    total = int(threads or physical_cores())
    sut = SutConfig(max_batch=max_batch, batch_timeout_ms=batch_timeout_ms, workers=workers,
                    intra_op_threads=max(1, total // workers), device_id=device_id)
    bound = {} if latency_bound_ms is None else {"latency_bound_ms": latency_bound_ms,
                                                 "latency_bound_source": "--latency-bound-ms"}
    return ScenarioOptions(scenarios=names, quick=quick, server_qps=server_qps, sut=sut, **bound)
