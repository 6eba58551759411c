"""``convkit evaluate``'s serving options (MLPerf LoadGen scenarios, SUT batching and threads) as one decorator,
so the command gains them in one line. Module-level imports stay light (click), as in ``cli.py``.
"""

from __future__ import annotations

import click

from convkit import gates
from convkit.evaluate.options import MAX_BATCH_SIZE
from convkit.evaluate.result import EvalResult

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
        click.option("--latency-bound-ms", type=click.FloatRange(0, 600_000, min_open=True),
                     default=gates.LATENCY_BOUND_MS,
                     show_default=True, help="p99 bound for Server and the recommendation (MLPerf ResNet-50 Server: 15)."),
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
    return ScenarioOptions(scenarios=names, quick=quick, latency_bound_ms=latency_bound_ms,
                           server_qps=server_qps, sut=sut)
