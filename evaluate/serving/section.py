"""The evaluation stage's serving section: LoadGen scenarios for every precision × provider, the SingleStream
cross-check against convkit's own closed-loop batch-1 latency, the Server latency-vs-QPS figure, and the
entry point is ``serve``: it takes the prepared models, images and options (a ServingRequest and ScenarioOptions)
and returns a ServingResult; it neither sees the evaluation's setup nor changes its result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from convkit import gates
from convkit.evaluate.result import EvalResult
from convkit.evaluate.serving.backend import OrtBackend
from convkit.evaluate.serving.scenarios import ScenarioOptions, Served, run_scenarios
from convkit.evaluate.serving.sut import SutConfig
from convkit.providers import ProviderConfig, make_session

# SingleStream's p90 (LoadGen, queue SUT) and convkit's closed-loop batch-1 p90 (latency.py) measure nearly
# the same thing; beyond this ratio one of them is not measuring what it claims (or the machine was busy).
DISAGREEMENT_RATIO = 1.5


def session_factory(path, kind: str, sut: SutConfig, cudnn_conv_algo_search: str = "EXHAUSTIVE"):
    """Return a function that builds a new ORT session for ``path`` on ``kind`` with the SUT's thread count."""
    def make():
        return make_session(str(path), ProviderConfig(kind, threads=sut.intra_op_threads, device_id=sut.device_id,
                                                      cudnn_conv_algo_search=cudnn_conv_algo_search))
    return make


def ort_backends(spec, kind: str, sut: SutConfig, cudnn_conv_algo_search: str = "EXHAUSTIVE"):
    """Return a function that makes a new, unloaded OrtBackend of ``spec`` (a ModelSpec) on provider ``kind``."""
    make = session_factory(spec.path, kind, sut, cudnn_conv_algo_search)
    return lambda: OrtBackend(make, spec.input_name, spec.output_name, sut.device_id)


def compare_single_stream(rows: list[dict], latency_rows: list[dict], ratio: float = DISAGREEMENT_RATIO) -> list[str]:
    """Add ``closed_loop_p90_ms``, ``p90_ratio`` and ``p90_disagrees`` to each SingleStream row of ``rows`` that
    has a matching batch-1 ORT row in ``latency_rows``; returns one note per disagreement beyond ``ratio``."""
    notes = []
    for r in rows:
        if r.get("scenario") != "single-stream" or not r.get("p90_ms"):
            continue
        ref = next((x for x in latency_rows if x.get("precision") == r["precision"] and x.get("provider") ==
                    r["provider"] and x.get("backend") in ("ort", "ort-e2e") and x.get("batch") == 1), None)
        if ref is None or not ref.get("p90_ms"):
            continue
        q = r["p90_ms"] / ref["p90_ms"]
        r.update(closed_loop_p90_ms=ref["p90_ms"], p90_ratio=q, p90_disagrees=bool(max(q, 1 / q) > ratio))
        if r["p90_disagrees"]:
            notes.append(f"{r['precision']} {r['provider']}: LoadGen SingleStream p90 {r['p90_ms']:.3f} ms vs "
                         f"closed-loop batch-1 p90 {ref['p90_ms']:.3f} ms ({q:.2f}×, beyond {ratio}×)")
    return notes


@dataclass(frozen=True)
class ServingRequest:
    """What to serve: the prepared models (precision → ModelSpec), the providers, the test images and labels, and
    where LoadGen's logs go. Built by the evaluation from its own setup; serving never sees that setup."""

    specs: dict
    providers: list[str]
    images_u8: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    out_dir: Path
    cudnn_conv_algo_search: str = "EXHAUSTIVE"


@dataclass
class ServingResult:
    """LoadGen's figures: one flat row per precision × provider × scenario, the cross-check notes, the Server
    figures (label → PNG path) and the settings used; eval.json's ``serving`` is ``to_dict()``."""

    scenarios: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Return eval.json's ``serving`` section."""
        return asdict(self)


def serve(request: ServingRequest, opts: ScenarioOptions, latency_rows: list[dict]) -> ServingResult:
    """Run the LoadGen scenarios of ``opts`` for every precision × provider of ``request``; the SingleStream p90 is
    checked against ``latency_rows`` (the closed-loop batch-1 figures). Returns the ServingResult.

    ConvkitError when LoadGen is missing or a model fails mid-run.
    """
    result = ServingResult(settings={"scenarios": list(opts.scenarios), "quick": opts.quick,
                                     "latency_bound_ms": opts.latency_bound_ms, "server_qps": opts.server_qps,
                                     "bisect_steps": opts.bisect_steps, **opts.sut.to_dict()})
    for prec, spec in request.specs.items():
        x = spec.prepare(request.images_u8)  # preprocessed once, outside the timed path, as a server would cache
        for kind in request.providers:
            sut = opts.sut.for_model(spec.fixed_batch)
            served = Served(ort_backends(spec, kind, sut, request.cudnn_conv_algo_search), x, precision=prec,
                            provider=kind, fixed_batch=spec.fixed_batch)
            got = run_scenarios(served, replace(opts, sut=sut), request.out_dir, request.labels, request.class_names)
            for r in got:
                if r["scenario"] == "server":
                    png = write_server_png(Path(r["log_dir"]) / "latency_vs_qps.png", r, opts.latency_bound_ms)
                    if png:
                        result.figures[served.label] = str(png)
            result.scenarios += got
    result.notes = compare_single_stream(result.scenarios, latency_rows)
    return result


def latency_bound(opts: ScenarioOptions | None) -> float:
    """Return the latency bound the recommendation uses: the scenarios' when given, else MLPerf's default."""
    return opts.latency_bound_ms if opts is not None else gates.LATENCY_BOUND_MS


def latency_bound_source(opts: ScenarioOptions | None) -> str:
    """Return where the latency bound came from: "--latency-bound-ms", or the default and why."""
    return opts.latency_bound_source if opts is not None else gates.LATENCY_BOUND_SOURCE


def write_server_png(path: Path, row: dict, bound_ms: float) -> Path | None:
    """Write p50/p99 latency vs target QPS of a Server search (matplotlib Agg); returns the path, None when the
    row has no bisection."""
    steps = sorted((s for s in row.get("bisection") or [] if s.get("p99_ms") is not None), key=lambda s: s["target_qps"])
    if not steps:
        return None
    from convkit import plotting  # matplotlib loads when a figure is drawn: evaluate without scenarios never needs it

    fig = plotting.new_figure(7, 4.5)
    ax = fig.add_subplot()
    q = [s["target_qps"] for s in steps]
    ax.plot(q, [s["p99_ms"] for s in steps], "o-", label="p99")
    ax.plot(q, [s["p50_ms"] for s in steps], "s--", label="p50")
    ok = [s for s in steps if s.get("meets_latency_bound")]
    ax.plot([s["target_qps"] for s in ok], [s["p99_ms"] for s in ok], "o", color="green", label="p99 within bound")
    ax.axhline(bound_ms, color="red", lw=1, label=f"bound {bound_ms:g} ms")
    ax.set_yscale("log")
    ax.set_xlabel("LoadGen Server target QPS")
    ax.set_ylabel("latency per sample (ms)")
    note = "quick runs, not valid" if row.get("quick") else "full-length runs"
    ax.set_title(f"{row['precision']} {row['provider']}: Server latency vs QPS ({note})", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return plotting.save(fig, Path(path))


def _f(v, spec: str = ".3f") -> str:
    return "—" if v is None else format(v, spec)


def markdown_lines(result: EvalResult) -> list[str]:
    """Return eval.md's "Serving (MLPerf LoadGen)" and "Deployment recommendation" sections; [] when the
    evaluation ran no scenario and made no recommendation."""
    lines: list[str] = []
    serving = result.serving or {}
    rows = [r for r in serving.get("scenarios") or [] if r.get("scenario") != "accuracy"]
    if rows:
        st = serving.get("settings", {})
        lines += ["## Serving (MLPerf LoadGen)", "",
                  f"LoadGen issues the queries and measures. SingleStream runs each query synchronously inside "
                  f"LoadGen's issue callback on one ORT session (as MLPerf's reference harness does); the other "
                  f"scenarios' SUT is a queue in front of {st.get('workers')} ORT "
                  f"session(s) × {st.get('intra_op_threads')} intra-op thread(s) (inter-op "
                  f"{st.get('inter_op_threads')}), dynamic batching for Server and Offline up to "
                  f"{st.get('max_batch')} samples or {st.get('batch_timeout_ms')} ms. Latency bound "
                  f"{st.get('latency_bound_ms')} ms (p99, Server). Logs: `loadgen/<precision>-<provider>-<scenario>/`.",
                  "", "| precision | provider | scenario | target QPS | QPS | p50 ms | p90 ms | p99 ms | mean batch | "
                  "LoadGen | valid |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['precision']} | {r['provider']} | {r['scenario']} | {_f(r.get('target_qps'), ',.0f')} | "
                         f"{_f(r.get('qps'), ',.0f')} | {_f(r.get('p50_ms'))} | {_f(r.get('p90_ms'))} | "
                         f"{_f(r.get('p99_ms'))} | {_f(r.get('mean_batch'), '.1f')} | {r.get('loadgen_validity')} | "
                         f"{r.get('validity_note')} |")
        lines.append("")
        for r in serving.get("scenarios") or []:
            if r.get("scenario") == "accuracy":
                lines.append(f"- LoadGen accuracy mode ({r['precision']} {r['provider']}, Offline): top-1 "
                             f"{r['accuracy']:.4f} over {r['n']} samples, computed from LoadGen's logged responses")
            if r.get("closed_loop_p90_ms"):
                flag = " **DISAGREE**" if r.get("p90_disagrees") else ""
                lines.append(f"- {r['precision']} {r['provider']} SingleStream p90 {r['p90_ms']:.3f} ms vs "
                             f"closed-loop batch-1 p90 {r['closed_loop_p90_ms']:.3f} ms ({r['p90_ratio']:.2f}×){flag}")
        lines.append("")
    return lines + recommendation_lines(result.recommendation)


def recommendation_lines(rec: dict | None) -> list[str]:
    """Return the "Deployment recommendation" section of eval.md and the report: the latency bound and its source,
    the statistic ranked on, the recommendation (or the tie), every other configuration with why it lost, the
    figures re-measured and the LoadGen results left unranked; [] without a recommendation."""
    if not rec:
        return []
    lines = ["## Deployment recommendation", ""]
    if rec.get("latency_bound_ms") is not None:
        lines += [f"Latency bound: p99 ≤ {rec['latency_bound_ms']:g} ms ({rec.get('latency_bound_source') or 'source not recorded'}). "
                  f"Ranked on: {rec.get('statistic') or 'not recorded'}; two configurations tie when the interval "
                  "of their ratio holds 1.", ""]
    lines += [rec["text"], ""]
    if rec.get("remeasured"):
        lines += [f"Re-measured interleaved before ranking (the finalists: at least one of their table figures was "
                  f"UNSTABLE): {', '.join(rec['remeasured'])}.", ""]
    lines += [f"- not chosen: {w}" for w in rec.get("why_not") or []]
    lines += [f"- {w}" for w in rec.get("not_ranked") or []]
    return lines + [""]

