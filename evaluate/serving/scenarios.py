"""MLPerf LoadGen scenarios (SingleStream, MultiStream, Server, Offline) against the queue SUT of ``sut.py``.

LoadGen itself issues the queries, times them and judges validity; this module only configures it, runs it,
and reads its logs (``mlperf_log_summary.txt`` / ``mlperf_log_detail.txt``) back into flat dicts.

* Full runs take MLPerf's rules for its image-classification benchmark (ResNet-50) from the ``mlperf.conf``
  compiled into LoadGen: min_duration 600 s, Offline at least 24 576 samples, MultiStream 8 samples per query
  and at least 662 queries, Server p99 bound 15 ms, its RNG seeds. ``valid`` is LoadGen's own verdict.
* ``quick`` runs (CI, the demo) last ``QUICK_MIN_DURATION_MS`` with ``QUICK_MIN_QUERIES``; they are always
  labelled not valid, whatever LoadGen says about the shortened settings.
* Server: bisection on the target QPS; a step passes when LoadGen reports its latency constraint met (p99 at
  most the bound).

``mlperf_loadgen`` is imported only when a scenario runs: convkit works without it.
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from convkit import gates
from convkit.artifacts import LOADGEN_DIR
from convkit.errors import ConvkitError, one_line
from convkit.evaluate.accuracy import classification_metrics
from convkit.evaluate.serving.backend import Backend
from convkit.evaluate.serving.sut import QueueSUT, SutConfig, make_sut

SCENARIOS = {"single-stream": "SingleStream", "multi-stream": "MultiStream", "server": "Server", "offline": "Offline"}
MLPERF_MODEL = "resnet50"
QUICK_MIN_DURATION_MS = 2000
QUICK_MIN_QUERIES = 64
PERF_SAMPLE_COUNT = 1024  # mlperf.conf resnet50 performance_sample_count_override
INSTALL_HINT = "pip install mlcommons-loadgen"
MLPERF_MIN_DURATION_S = 600  # mlperf.conf's min_duration for every scenario of a full run
# LoadGen generates a Server run's whole query schedule (target QPS × duration) before it starts; measured with
# mlcommons-loadgen 6.0: 300-480 bytes per query (RSS of Server runs at 1e3, 2e5 and 4e5 QPS for 1 s). Rounded up.
LOADGEN_BYTES_PER_QUERY = 512
# untimed calls per batch size on a fresh SUT session before LoadGen's clock starts: ORT's first calls allocate
# (memory arena, thread pool); a handful leaves that out of the measured percentiles
WARM_UP_CALLS = 10


@dataclass
class ScenarioOptions:
    """What to run and how: the scenarios, run length, the latency bound and the SUT's serving settings."""

    scenarios: tuple[str, ...] = ()
    quick: bool = False
    latency_bound_ms: float = gates.LATENCY_BOUND_MS
    latency_bound_source: str = gates.LATENCY_BOUND_SOURCE  # "--latency-bound-ms" when given, else the default's why
    server_qps: float | None = None  # pin Server to this target QPS instead of bisecting
    bisect_steps: int = 7
    accuracy: bool = True  # also run LoadGen's accuracy mode once
    sut: SutConfig = field(default_factory=SutConfig)


def available_memory() -> int:
    """Return the bytes this process may still allocate: the machine's MemAvailable (else its free pages), at most
    the address-space limit (ulimit -v) and the container's memory limit (cgroup v2 memory.max)."""
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        with open("/proc/meminfo") as fh:
            free = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:"))
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    limits = [free]
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limits.append(soft)
    try:
        limits.append(int(Path("/sys/fs/cgroup/memory.max").read_text().strip()))
    except (OSError, ValueError):  # "max" or no cgroup v2: no container limit
        pass
    return min(limits)


def max_server_qps(quick: bool, available: int | None = None) -> int:
    """Return the highest Server target QPS whose pre-generated queries fit half of ``available`` bytes (default:
    the memory available now) for a quick or a full run."""
    duration_s = QUICK_MIN_DURATION_MS / 1000 if quick else MLPERF_MIN_DURATION_S
    available = available_memory() if available is None else available
    return max(1, int(available // 2 // LOADGEN_BYTES_PER_QUERY / duration_s))


def check_server_qps(qps: float, quick: bool, available: int | None = None) -> None:
    """Raise ConvkitError (exit 2) when a Server run at ``qps`` would pre-generate more queries than half the
    available memory holds (``available`` bytes; default: the machine's now)."""
    duration_s = QUICK_MIN_DURATION_MS / 1000 if quick else MLPERF_MIN_DURATION_S
    max_qps = max_server_qps(quick, available)
    if qps > max_qps:
        need_gib = qps * duration_s * LOADGEN_BYTES_PER_QUERY / 2**30
        raise ConvkitError(f"--server-qps {qps:g}: LoadGen would pre-generate {qps * duration_s:,.0f} queries "
                           f"(about {need_gib:,.1f} GiB) for a {duration_s:g} s run, more than this machine's "
                           f"memory allows; pass --server-qps {max_qps} or less")


def parse_scenarios(values) -> tuple[str, ...]:
    """Return the scenario names (in canonical order) from ``--scenario`` values; "all" = the four.

    ConvkitError (exit 2) for an unknown name.
    """
    names = set()
    for value in values or ():
        for part in str(value).split(","):
            part = part.strip().lower().replace("_", "-")
            if not part:
                continue
            if part == "all":
                names.update(SCENARIOS)
            elif part in SCENARIOS:
                names.add(part)
            else:
                raise ConvkitError(f"--scenario: unknown scenario {part!r}; use single-stream, multi-stream, "
                                   "server, offline or all")
    return tuple(s for s in SCENARIOS if s in names)


def require_loadgen():
    """Return the ``mlperf_loadgen`` module; ConvkitError (exit 2) saying how to install it when missing."""
    try:
        import mlperf_loadgen
    except ImportError:
        raise ConvkitError(f"--scenario needs MLPerf LoadGen, which is not installed: {INSTALL_HINT}") from None
    return mlperf_loadgen


# ----------------------------------------------------------------------------------------------- log parsing
def parse_detail(text: str) -> dict:
    """Return {key: value} of the ``:::MLLOG {json}`` lines of mlperf_log_detail.txt (last value wins), plus
    ``errors``: the messages of error entries."""
    out: dict = {"errors": []}
    for line in text.splitlines():
        if not line.startswith(":::MLLOG"):
            continue
        try:
            entry = json.loads(line[len(":::MLLOG"):].strip())
        except json.JSONDecodeError:
            continue
        key = entry.get("key")
        if key is None:
            continue
        if str(key).startswith("error"):
            out["errors"].append(f"{key}: {entry.get('value')}")
        out[key] = entry.get("value")
    return out


def parse_summary(text: str) -> dict:
    """Return the "Result is", "Scenario", recommendations and early-stopping lines of mlperf_log_summary.txt."""
    out: dict = {}
    m = re.search(r"Result is\s*:\s*(\w+)", text)
    if m:
        out["validity"] = m.group(1)
    m = re.search(r"Scenario\s*:\s*(\w+)", text)
    if m:
        out["scenario"] = m.group(1)
    m = re.search(r"Recommendations:\n((?: \*.*\n?)+)", text)
    if m:
        out["recommendations"] = [line.strip(" *") for line in m.group(1).splitlines() if line.strip()]
    m = re.search(r"Early Stopping Result:\n(.*?)(?:\n\n|\n=)", text, re.S)
    if m:
        out["early_stopping"] = " ".join(m.group(1).split())
    return out


def _ms(ns) -> float | None:
    return None if ns is None else float(ns) / 1e6


def results_row(scenario: str, detail: dict, summary: dict, samples_per_query: int = 1) -> dict:
    """Return the flat result of one LoadGen run from its parsed logs: validity (LoadGen's word and reason),
    throughput ``qps`` (samples/s as MLPerf reports it for the scenario) and latency in ms.

    Latencies are per sample, except MultiStream's, which are per query (its metric: the p99 of queries).
    """
    per_query = scenario == "multi-stream"
    pat = re.compile(r"result_(\d+(?:\.\d+)?)_percentile_per_query_latency_ns" if per_query
                     else r"result_(\d+(?:\.\d+)?)_percentile_latency_ns")
    row: dict = {"loadgen_validity": detail.get("result_validity", summary.get("validity")),
                 "invalid_reason": (detail.get("result_invalid_reason") or "").strip() or None,
                 "perf_constraints_met": detail.get("result_perf_constraints_met"),
                 "min_duration_met": detail.get("result_min_duration_met"),
                 "min_queries_met": detail.get("result_min_queries_met"),
                 "early_stopping_met": detail.get("early_stopping_met"),
                 "early_stopping": detail.get("early_stopping_result") or summary.get("early_stopping"),
                 "query_count": detail.get("result_query_count")}
    for key, val in detail.items():
        m = pat.fullmatch(key)
        if m:
            row[f"p{float(m.group(1)):g}_ms".replace(".", "_")] = _ms(val)
    prefix = "result_{}_query_latency_ns" if per_query else "result_{}_latency_ns"
    for stat in ("min", "mean", "max"):
        row[f"{stat}_ms"] = _ms(detail.get(prefix.format(stat)))
    if scenario == "server":
        row["qps"] = detail.get("result_completed_samples_per_sec")
        row["scheduled_qps"] = detail.get("result_scheduled_samples_per_sec")
    elif scenario == "offline":
        row["qps"] = detail.get("result_samples_per_second")
    elif scenario == "single-stream":
        row["qps"] = detail.get("result_qps_with_loadgen_overhead")
        row["early_stopping_p90_ms"] = _ms(detail.get("early_stopping_latency_ss"))
    else:
        mean = detail.get("result_mean_query_latency_ns")
        row["qps"] = samples_per_query * 1e9 / mean if mean else None
        row["early_stopping_p99_ms"] = _ms(detail.get("early_stopping_latency_ms"))
    if detail.get("errors"):
        row["loadgen_errors"] = detail["errors"][:5]
    return row


def parse_accuracy_log(path: Path, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (sample indices, float32 output rows) from LoadGen's mlperf_log_accuracy.json.

    Each entry's ``data`` is the hex dump of the response bytes the SUT returned (the float32 output row).
    """
    entries = json.loads(Path(path).read_text() or "[]")
    idx = np.asarray([e["qsl_idx"] for e in entries], dtype=np.int64)
    rows = [np.frombuffer(bytes.fromhex(e["data"]), dtype=np.float32) for e in entries]
    if not rows or len(set(idx.tolist())) != n_samples:
        raise ConvkitError(f"LoadGen's accuracy log holds {len(set(idx.tolist()))} of {n_samples} samples")
    return idx, np.stack(rows)


# ------------------------------------------------------------------------------------------------ settings
def make_settings(lg, scenario: str, mode: str, opts: ScenarioOptions, estimate: dict, target_qps: float | None = None):
    """Return (lg.TestSettings, flat dict of the settings that matter) for one run.

    ``estimate`` holds the SUT's warm-up figures (``b1_s``: seconds per batch-1 call, ``ms_s``: per
    MultiStream query, ``qps``: batched throughput), which LoadGen uses to size its pre-generated queries.
    """
    s = lg.TestSettings()
    if not opts.quick:
        rc = s.FromConfig("", MLPERF_MODEL, SCENARIOS[scenario], 0)  # 0 = LoadGen's built-in mlperf.conf
        if rc != 0:
            raise ConvkitError(f"LoadGen could not read its built-in mlperf.conf for {MLPERF_MODEL} (code {rc})")
    s.scenario = getattr(lg.TestScenario, SCENARIOS[scenario])
    s.mode = lg.TestMode.AccuracyOnly if mode == "accuracy" else lg.TestMode.PerformanceOnly
    if opts.quick:
        s.min_duration_ms = QUICK_MIN_DURATION_MS
        s.min_query_count = QUICK_MIN_QUERIES
    s.single_stream_expected_latency_ns = int(max(estimate["b1_s"], 1e-5) * 1e9)
    s.multi_stream_expected_latency_ns = int(max(estimate["ms_s"], 1e-5) * 1e9)
    s.offline_expected_qps = float(estimate["qps"])
    s.server_target_latency_ns = int(opts.latency_bound_ms * 1e6)
    if target_qps is not None:
        s.server_target_qps = float(target_qps)
    recorded = {"loadgen_scenario": SCENARIOS[scenario], "mode": mode, "quick": opts.quick,
                "rules": "quick (not valid by MLPerf's rules)" if opts.quick else f"mlperf.conf {MLPERF_MODEL}",
                "min_duration_ms": int(s.min_duration_ms), "min_query_count": int(s.min_query_count),
                "latency_bound_ms": opts.latency_bound_ms,
                "target_latency_percentile": 99 if scenario in ("server", "multi-stream") else 90,
                "target_qps": float(target_qps) if target_qps is not None else None,
                "samples_per_query": int(s.multi_stream_samples_per_query) if scenario == "multi-stream" else 1}
    return s, recorded


def run_loadgen(lg, sut_factory: Callable[[Callable], QueueSUT], n_samples: int, settings,
                log_dir: Path) -> tuple[dict, dict, QueueSUT]:
    """Run one LoadGen test against a fresh SUT; return (parsed detail log, parsed summary, the stopped SUT).

    ``sut_factory(complete)`` builds and starts the SUT. A model that raises ends the run early (the SUT
    completes every outstanding sample empty) and raises ConvkitError with the model's one-line error.
    """
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)

    def complete(pairs):
        responses, keep = [], []  # keep: the buffers must outlive QuerySamplesComplete, which copies them
        for rid, row in pairs:
            if row is None:
                responses.append(lg.QuerySampleResponse(rid, 0, 0))
                continue
            arr = np.ascontiguousarray(row, dtype=np.float32)
            keep.append(arr)
            responses.append(lg.QuerySampleResponse(rid, arr.ctypes.data, arr.nbytes))
        lg.QuerySamplesComplete(responses)
        del keep

    sut = sut_factory(complete)
    handle = lg.ConstructSUT(lambda qs: sut.issue([(q.id, q.index) for q in qs]), lambda: None)
    qsl = lg.ConstructQSL(n_samples, min(n_samples, PERF_SAMPLE_COUNT), lambda idx: None, lambda idx: None)
    out = lg.LogOutputSettings()
    out.outdir = str(log_dir)
    out.copy_summary_to_stdout = False
    log = lg.LogSettings()
    log.log_output = out
    log.enable_trace = False
    try:
        lg.StartTestWithLogSettings(handle, qsl, settings, log)
    finally:
        sut.stop()
        lg.DestroyQSL(qsl)
        lg.DestroySUT(handle)
    if sut.error is not None:
        raise ConvkitError(f"the model failed during the LoadGen run: {sut.error}")
    _drop_empty_logs(log_dir)
    detail = parse_detail(_read(log_dir / "mlperf_log_detail.txt"))
    summary = parse_summary(_read(log_dir / "mlperf_log_summary.txt"))
    return detail, summary, sut


def _drop_empty_logs(log_dir: Path) -> None:
    # The trace (tracing is off) and a performance run's accuracy log are empty: keep the folder readable.
    for name in ("mlperf_log_trace.json", "mlperf_log_accuracy.json"):
        f = log_dir / name
        if f.is_file() and f.stat().st_size < 16:
            f.unlink()


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


# ------------------------------------------------------------------------------------------------- running
@dataclass
class Served:
    """One model under one provider and precision, ready to serve: what ``run_scenarios`` needs."""

    backend_factory: Callable[[], Backend]  # returns a new, unloaded backend (one per SUT worker)
    inputs: np.ndarray  # preprocessed samples, indexed by LoadGen's sample index
    precision: str = "fp32"
    provider: str = "cpu"
    fixed_batch: int | None = None

    @property
    def label(self) -> str:
        """Return "<precision>-<provider>", the prefix of this model's LoadGen log folders."""
        return f"{self.precision}-{self.provider}"


def _make_sut(served: Served, config: SutConfig):
    def factory(complete):
        sut = make_sut(served.backend_factory, served.inputs, complete, config, served.fixed_batch).start()
        try:  # fresh sessions: pay ORT's lazy first-run work before LoadGen's clock starts, not in its p99
            sut.warm_up(sorted({1, config.max_batch}), repeats=WARM_UP_CALLS)
        except Exception as exc:
            sut.stop()
            raise ConvkitError(f"the model failed while warming up the SUT: {one_line(exc)}") from None
        return sut
    return factory


def estimate_speed(served: Served, config: SutConfig, samples_per_query: int = 8) -> dict:
    """Return warm-up timings of the SUT: ``b1_s`` (s per batch-1 call), ``ms_s`` (s per MultiStream query),
    ``batch_s`` (s per ``max_batch`` call) and ``qps`` (all workers at ``max_batch``). Also warms the sessions."""
    sut = QueueSUT(served.backend_factory, served.inputs, lambda p: None, config, served.fixed_batch)
    try:
        t = sut.load().warm_up(sorted({1, samples_per_query, config.max_batch}), repeats=3)
    except Exception as exc:
        raise ConvkitError(f"the model failed while warming up the SUT: {one_line(exc)}") from None
    b = served.fixed_batch or config.max_batch
    return {"b1_s": t[served.fixed_batch or 1], "ms_s": t[served.fixed_batch or samples_per_query],
            "batch_s": t[b], "qps": config.workers * b / max(t[b], 1e-6)}


def run_one(lg, scenario: str, served: Served, opts: ScenarioOptions, estimate: dict, log_dir: Path,
            target_qps: float | None = None, mode: str = "performance") -> dict:
    """Run one LoadGen test; return the flat row: scenario, precision, provider, settings, SUT threads and
    batching, throughput, latency percentiles (ms), LoadGen's validity and ``valid`` (False for quick runs)."""
    settings, recorded = make_settings(lg, scenario, mode, opts, estimate, target_qps)
    config = opts.sut.for_scenario(scenario, recorded["samples_per_query"])
    detail, summary, sut = run_loadgen(lg, _make_sut(served, config), len(served.inputs), settings, log_dir)
    row = {"scenario": scenario, "precision": served.precision, "provider": served.provider, **recorded,
           **{f"sut_{k}": v for k, v in config.to_dict().items()},
           "io_binding": any(b.io_binding for b in sut.backends),
           "mean_batch": float(np.mean(sut.batches)) if sut.batches else None,
           **results_row(scenario, detail, summary, recorded["samples_per_query"]), "log_dir": str(log_dir)}
    loadgen_valid = row["loadgen_validity"] == "VALID"
    row["valid"] = bool(loadgen_valid and not opts.quick)
    if opts.quick:
        row["validity_note"] = (f"not valid: quick run ({QUICK_MIN_DURATION_MS / 1000:g} s, at least "
                                f"{QUICK_MIN_QUERIES} queries; MLPerf requires 600 s)")
        if not loadgen_valid:
            row["validity_note"] += f"; LoadGen: {row['invalid_reason'] or 'INVALID'}"
    elif not loadgen_valid:
        row["validity_note"] = f"not valid: {row['invalid_reason'] or 'LoadGen reported INVALID'}"
    else:
        row["validity_note"] = "valid (LoadGen, mlperf.conf rules)"
    if scenario == "server":
        row["meets_latency_bound"] = bool(row["perf_constraints_met"])
    return row


def bisect_peak_qps(run_at: Callable[[float], dict], start: float, steps: int,
                    ceiling: float = math.inf) -> tuple[dict | None, list]:
    """Return (the passing run with the highest target QPS or None, every run in order) of a search.

    ``run_at(qps)`` returns a row with ``meets_latency_bound``. The first run is at ``start`` (an estimate of
    the SUT's throughput); while runs pass, the target doubles, up to ``ceiling`` (what memory allows: the search
    stops once a run at the ceiling passes); once a run has failed, each next run bisects between the highest
    pass (or 0) and the lowest failure. ``steps`` runs at most.
    """
    history: list = []
    best, lo, hi = None, 0.0, None
    qps = min(start, ceiling)
    for _ in range(max(1, steps)):
        row = run_at(qps)
        history.append(row)
        if row.get("meets_latency_bound"):
            if best is None or qps > best["target_qps"]:
                best = row
            lo = qps
        else:
            hi = qps
        if hi is None and lo >= ceiling:
            break
        qps = min(2 * lo, ceiling) if hi is None else (lo + hi) / 2
    return best, history


def run_server(lg, served: Served, opts: ScenarioOptions, estimate: dict, folder: Path) -> dict:
    """Return the Server row: the peak target QPS whose p99 met the bound (bisection, or ``opts.server_qps``),
    with ``bisection`` (every step: target QPS, achieved QPS, p99, pass) and ``peak_found``.

    Each step's logs stay in ``folder/steps/<n>-qps<q>/``; the chosen run's logs are copied to ``folder``.
    """
    runs_dir = folder / "steps"

    def run_at(qps: float) -> dict:
        n = len(list(runs_dir.glob("*"))) if runs_dir.is_dir() else 0
        return run_one(lg, "server", served, opts, estimate, runs_dir / f"{n}-qps{qps:.0f}", target_qps=qps)

    if opts.server_qps:
        best = run_at(opts.server_qps)
        history = [best]
        best = best if best["meets_latency_bound"] else None
    else:
        # Start well below the warm-up throughput, which leaves out the per-query cost of the queue and of
        # LoadGen's Python callbacks: a run far above capacity takes many times min_duration to drain, while
        # one below the knee costs only min_duration and the search doubles from there.
        best, history = bisect_peak_qps(run_at, max(1.0, estimate["qps"] / 8), opts.bisect_steps,
                                        ceiling=max_server_qps(opts.quick))
    chosen = best or min(history, key=lambda r: r["target_qps"])
    for name in ("mlperf_log_summary.txt", "mlperf_log_detail.txt"):
        src = Path(chosen["log_dir"]) / name
        if src.is_file():
            shutil.copyfile(src, folder / name)
    row = {**chosen, "log_dir": str(folder), "peak_found": best is not None,
           "bisection": [{k: r.get(k) for k in ("target_qps", "qps", "p50_ms", "p99_ms", "meets_latency_bound",
                                                "loadgen_validity", "invalid_reason", "log_dir")} for r in history]}
    if best is None:
        row["validity_note"] = (f"no tried QPS kept p99 under {opts.latency_bound_ms:g} ms (lowest tried "
                                f"{chosen['target_qps']:.1f}); " + row["validity_note"])
    return row


def run_accuracy(lg, served: Served, labels: np.ndarray, class_names: list[str], opts: ScenarioOptions,
                 estimate: dict, folder: Path) -> dict:
    """Return LoadGen accuracy mode's result (Offline scenario, every sample once, on the same SUT): top-1
    ``accuracy`` computed from the responses LoadGen logged, ``n``, and the log folder."""
    settings, _ = make_settings(lg, "offline", "accuracy", opts, estimate)
    run_loadgen(lg, _make_sut(served, opts.sut), len(served.inputs), settings, folder)
    idx, rows = parse_accuracy_log(folder / "mlperf_log_accuracy.json", len(served.inputs))
    scores = np.zeros((len(served.inputs), rows.shape[1]), dtype=np.float32)
    scores[idx] = rows
    m = classification_metrics(scores, np.asarray(labels), class_names)
    return {"scenario": "accuracy", "precision": served.precision, "provider": served.provider,
            "loadgen_mode": "AccuracyOnly", "loadgen_scenario": "Offline", "n": m["n"], "accuracy": m["accuracy"],
            "log_dir": str(folder)}


def run_scenarios(served: Served, opts: ScenarioOptions, out_dir: Path, labels: np.ndarray | None = None,
                  class_names: list[str] | None = None) -> list[dict]:
    """Run ``opts.scenarios`` (and, with ``labels``, LoadGen's accuracy mode) for one precision × provider.

    Returns one flat row per scenario (see ``run_one``; Server as ``run_server``) plus an "accuracy" row. Logs
    go to ``out_dir/loadgen/<precision>-<provider>-<scenario>/``. ConvkitError without LoadGen installed,
    or when the model fails mid-run.
    """
    lg = require_loadgen()
    root = Path(out_dir) / LOADGEN_DIR
    estimate = estimate_speed(served, opts.sut)
    rows = []
    for scenario in opts.scenarios:
        folder = root / f"{served.label}-{scenario}"
        if folder.exists():
            shutil.rmtree(folder)  # stale logs of an earlier evaluation would be mistaken for this one's
        folder.mkdir(parents=True)
        if scenario == "server":
            rows.append(run_server(lg, served, opts, estimate, folder))
        else:
            rows.append(run_one(lg, scenario, served, opts, estimate, folder))
    if opts.accuracy and labels is not None and class_names:
        folder = root / f"{served.label}-accuracy"
        shutil.rmtree(folder, ignore_errors=True)
        rows.append(run_accuracy(lg, served, labels, class_names, opts, estimate, folder))
    return rows
