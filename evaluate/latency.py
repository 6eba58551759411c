"""Latency measurement: one timing loop, and the ways of feeding it (ORT CPU, ORT CUDA, PyTorch eager/compile).

Method: the first call is timed on its own (it includes lazy initialisation, cuDNN algorithm search, CUDA-graph
capture or torch.compile); then ``warmup`` more untimed calls; then timed calls until at least ``runs``
repetitions AND at least ``min_seconds`` have passed. Each repetition is timed with ``time.perf_counter``
around the call plus a device synchronisation (``torch.cuda.synchronize``) on GPU.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from convkit.compilation import compile_model
from convkit.errors import one_line
from convkit.evaluate.model_io import NP_TYPES
from convkit.evaluate.options import TimingOptions
from convkit.uncertainty import Interval, median_interval, pair_level, ratio_interval, ratio_verdict

CLOCK = "time.perf_counter around each call, after torch.cuda.synchronize() on GPU"
# A figure is unstable when its tail or its spread is large: p90 more than 1.5× p50 (one call in ten much slower,
# e.g. a noisy neighbour or frequency scaling), or std more than half the mean. Such a p50 is still reported, flagged;
# ratios are not formed from it.
UNSTABLE_P90_OVER_P50 = 1.5
UNSTABLE_STD_OVER_MEAN = 0.5
IMAGES_PER_S_BASIS = "batch ÷ mean latency"


def stability(p50: float, p90: float, mean: float, std: float) -> str | None:
    """Return why a latency figure is unstable (p90/p50 or std/mean above the thresholds), or None when stable."""
    reasons = []
    if p50 > 0 and p90 / p50 > UNSTABLE_P90_OVER_P50:
        reasons.append(f"p90/p50 {p90 / p50:.2f} > {UNSTABLE_P90_OVER_P50:g}")
    if mean > 0 and std / mean > UNSTABLE_STD_OVER_MEAN:
        reasons.append(f"std/mean {std / mean:.2f} > {UNSTABLE_STD_OVER_MEAN:g}")
    return "; ".join(reasons) or None


@dataclass(frozen=True)
class Timing:
    """How long to measure: untimed warm-up calls, minimum timed repetitions, minimum timed seconds."""

    warmup: int = 10
    runs: int = 50
    min_seconds: float = 1.0
    max_runs: int = 100_000

    def to_dict(self) -> dict:
        return asdict(self)


def measure(fn: Callable[[], object], batch: int, timing: Timing, sync: Callable[[], None] | None = None) -> dict:
    """Return latency statistics in ms (first_run, p50, p90, p99, mean, std, min, max), n, images/s (from the
    mean, see ``images_per_s_basis``) and ``unstable`` (the reason, or None) for ``fn``.

    ``p50_ci_ms`` is the 95 % order-statistic interval of the median over the timed calls, ``p50_ci_pair_ms`` the
    97.5 % one that ratios are bounded with (convkit.uncertainty); None with too few calls.
    """
    sync = sync or (lambda: None)
    t0 = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - t0
    for _ in range(max(0, timing.warmup - 1)):
        fn()
    sync()
    times = []
    start = time.perf_counter()
    while len(times) < timing.max_runs and (len(times) < timing.runs or time.perf_counter() - start < timing.min_seconds):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    ms = np.asarray(times) * 1e3
    return summarize(ms, batch, first * 1e3)


def summarize(ms: np.ndarray, batch: int, first_ms: float) -> dict:
    """Return the latency statistics of the timed calls ``ms`` (see ``measure``)."""
    mean = float(ms.mean())
    p50, p90, std = float(np.percentile(ms, 50)), float(np.percentile(ms, 90)), float(ms.std())
    return {
        "batch": batch,
        "first_run_ms": first_ms,
        "p50_ms": p50,
        "p50_ci_ms": _ci_list(median_interval(ms)),
        "p50_ci_pair_ms": _ci_list(median_interval(ms, pair_level())),
        "p90_ms": p90,
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": mean,
        "std_ms": std,
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "n": int(len(ms)),
        "images_per_s": batch / (mean / 1e3) if mean > 0 else None,
        "images_per_s_basis": IMAGES_PER_S_BASIS,
        "unstable": _with_interval(stability(p50, p90, mean, std), median_interval(ms)),
    }


def _with_interval(reason: str | None, interval) -> str | None:
    """Return an unstable figure's reason with the median's interval, which says how far the p50 can be trusted."""
    if reason is None:
        return None
    if interval is None:
        return f"{reason}; too few calls for an interval of the p50"
    return f"{reason}; p50 95 % interval [{interval.low:.3g}, {interval.high:.3g}] ms"


def _ci_list(interval) -> list[float] | None:
    return interval.to_list() if interval else None


def compare_latency(candidate: dict, other: dict) -> dict:
    """Return candidate p50 ÷ other p50 with its interval (from both rows' ``p50_ci_pair_ms``, at least 95 %)
    and ``verdict``: "faster" / "slower" only when the interval excludes 1, else "tie"."""
    def interval(row):
        ci = row.get("p50_ci_pair_ms")
        return Interval(ci[0], ci[1], pair_level()) if ci else None

    ratio = ratio_interval(interval(candidate), interval(other))
    return {"ratio": candidate["p50_ms"] / other["p50_ms"] if other["p50_ms"] else None,
            "ratio_ci": ratio.to_list() if ratio else None, "verdict": ratio_verdict(ratio)}


def make_batch(images_u8: np.ndarray, batch: int) -> np.ndarray:
    """Return ``batch`` real test images (cycled when the split has fewer) as uint8 [batch, C, H, W]."""
    head = np.asarray(images_u8[:batch])  # a slice, so a lazily decoded folder decodes only these images
    reps = -(-batch // len(head))
    return np.ascontiguousarray(np.concatenate([head] * reps)[:batch]) if reps > 1 else head.copy()


def ort_host_latency(session, spec, x: np.ndarray, timing: Timing, sync=None) -> dict:
    """Return stats of ``session.run`` with a host (numpy) input and output: on CPU the plain figure, on GPU the
    end-to-end figure that includes host→device and device→host copies."""
    feed = {spec.input_name: x}
    names = [spec.output_name]
    return measure(lambda: session.run(names, feed), len(x), timing, sync)


def _torch_dtype(ort_type: str):
    return {"tensor(float)": torch.float32, "tensor(float16)": torch.float16, "tensor(double)": torch.float64,
            "tensor(uint8)": torch.uint8}.get(ort_type, torch.float32)


def ort_device_latency(session, spec, x: np.ndarray, timing: Timing, device_id: int = 0) -> dict:
    """Return stats of ``run_with_iobinding`` with input and output resident on CUDA device ``device_id``.

    Buffers are torch CUDA tensors bound by pointer and never re-bound, so the same session also serves
    CUDA-graph replay (``enable_cuda_graph``), which needs fixed addresses.
    """
    dev = torch.device("cuda", device_id)
    x_dev = torch.from_numpy(x).to(dev).contiguous()
    out_meta = next(o for o in session.get_outputs() if o.name == spec.output_name)
    y_dev = torch.empty((len(x), len(spec.class_names)), dtype=_torch_dtype(out_meta.type), device=dev)
    io = session.io_binding()
    io.bind_input(spec.input_name, "cuda", device_id, x.dtype, tuple(x_dev.shape), x_dev.data_ptr())
    io.bind_output(spec.output_name, "cuda", device_id, NP_TYPES.get(out_meta.type, np.float32), tuple(y_dev.shape),
                   y_dev.data_ptr())
    for o in session.get_outputs():
        if o.name != spec.output_name:
            io.bind_output(o.name, "cuda", device_id)
    torch.cuda.synchronize(dev)
    # x_dev and y_dev stay referenced by this frame for the whole measurement
    return measure(lambda: session.run_with_iobinding(io), len(x), timing, lambda: torch.cuda.synchronize(dev))


def torch_latency(model, x: np.ndarray, timing: Timing, device: str = "cpu", compile: bool = False) -> dict:
    """Return stats of the eager (or ``torch.compile(mode="reduce-overhead")``) PyTorch ``model`` on the prepared NCHW float batch ``x``.

    The input is already on the device; on CUDA each repetition is followed by ``torch.cuda.synchronize``.
    ``first_run_ms`` includes compilation when ``compile`` is set.
    """
    dev = torch.device(device)
    model = model.to(dev).eval()
    # reduce-overhead = torch.compile with CUDA graphs: the fair peer of ORT's CUDA-graph figure.
    fn_model = compile_model(model, mode="reduce-overhead") if compile else model
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32)).to(dev)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else None

    def call():
        with torch.inference_mode():
            return fn_model(xt)

    return measure(call, len(x), timing, sync)


# ---- runners: one per backend, each returning flat rows ------------------------------------------------------------
def timing_of(opts: TimingOptions) -> Timing:
    """Return the Timing of the options."""
    return Timing(warmup=opts.warmup, runs=opts.runs, min_seconds=opts.min_seconds)


def batches_for(provider: str, opts: TimingOptions, spec, notes: list[str]) -> list[int]:
    """Return the batch sizes to time ``spec`` at on ``provider``: its fixed batch when it has one (noted)."""
    sizes = opts.batches_for(provider)
    if not spec.fixed_batch:
        return sizes
    note = f"{spec.path.name} has a fixed batch size of {spec.fixed_batch}: latency measured at that size only"
    if sizes != [spec.fixed_batch] and note not in notes:
        notes.append(note)
    return [spec.fixed_batch]


def ort_rows(sessions: dict, specs: dict, images_u8: np.ndarray, opts: TimingOptions, device_id: int,
             graph_session: Callable, notes: list[str]) -> list[dict]:
    """Return latency rows of every (precision, provider) session at its batch sizes.

    On CPU one row per batch (backend ``ort``); on a GPU provider ``ort`` (IO binding), ``ort-e2e`` (host
    arrays, copies included) and, with ``opts.cuda_graph``, ``ort-cudagraph`` from ``graph_session(spec)``.
    """
    timing = timing_of(opts)
    gpu_sync = (lambda: torch.cuda.synchronize(device_id)) if torch.cuda.is_available() else None
    rows = []
    for (prec, kind), session in sessions.items():
        spec = specs[prec]
        for b in batches_for(kind, opts, spec, notes):
            x = spec.prepare(make_batch(images_u8, b))
            base = {"precision": prec, "provider": kind}
            if kind == "cpu":
                rows.append({**base, "backend": "ort", **ort_host_latency(session, spec, x, timing)})
                continue
            rows.append({**base, "backend": "ort", **ort_device_latency(session, spec, x, timing, device_id)})
            rows.append({**base, "backend": "ort-e2e", **ort_host_latency(session, spec, x, timing, gpu_sync)})
            if kind == "cuda" and opts.cuda_graph:
                rows += _cuda_graph_row(base, graph_session, spec, x, timing, device_id, notes)
    return rows


def _cuda_graph_row(base: dict, graph_session: Callable, spec, x: np.ndarray, timing: Timing, device_id: int,
                    notes: list[str]) -> list[dict]:
    """Return [the ort-cudagraph row], or [] with a note when the graph cannot be captured."""
    try:
        session = graph_session(spec)
        # capture happens during warm-up: give it at least 3 calls
        graph_timing = Timing(max(timing.warmup, 3), timing.runs, timing.min_seconds, timing.max_runs)
        return [{**base, "backend": "ort-cudagraph", **ort_device_latency(session, spec, x, graph_timing, device_id)}]
    except Exception as exc:  # graphs need every node on CUDA; report, don't fail
        msg = getattr(exc, "message", None) or one_line(exc, 200)
        notes.append(f"{base['precision']} CUDA graph at batch {len(x)} not measured: {msg}")
        return []


def torch_rows(reference, providers: list[str], images_u8: np.ndarray, opts: TimingOptions, device_id: int,
               notes: list[str]) -> list[dict]:
    """Return latency rows of the run's fp32 PyTorch model (eager, and compiled on CUDA) on each provider's device.

    A backend that cannot run here (e.g. torch.compile without a toolchain) is noted, not raised.
    """
    rows = []
    for device in dict.fromkeys("cpu" if k == "cpu" else f"cuda:{device_id}" for k in providers):
        modes = ["eager"] + (["compile"] if device != "cpu" and opts.torch_compile else [])
        for b in opts.batches_for("cpu" if device == "cpu" else "cuda"):
            x = reference.model_input(torch.from_numpy(make_batch(images_u8, b))).numpy()
            for mode in modes:
                try:
                    stats = torch_latency(reference.model, x, timing_of(opts), device, compile=mode == "compile")
                except Exception as exc:
                    notes.append(f"PyTorch {mode} on {device} at batch {b} not measured: "
                                 f"{one_line(exc, 200)}")
                    continue
                rows.append({"precision": "fp32", "provider": "cpu" if device == "cpu" else "cuda",
                             "backend": f"torch-{mode}", **stats})
    reference.model.to("cpu")
    return rows


def attach_ratios(rows: list[dict]) -> list[dict]:
    """Return ``rows`` with PyTorch p50 and ORT ÷ PyTorch ratios attached to every ORT row, in one pass.

    An ORT row on a GPU provider is compared with PyTorch on CUDA at the same batch size. When either figure is
    unstable the ratio is not formed: ``ratio_to_pytorch_<mode>`` is None and ``ratio_to_pytorch_<mode>_note``
    says which figure was unstable; else ``ratio_to_pytorch_<mode>_ci`` is its interval (at least 95 %) and
    ``ratio_to_pytorch_<mode>_verdict`` "faster", "slower" or "tie" (the interval holds 1).
    """
    torch_rows_by_key = {(r["provider"], r["batch"], r["backend"][len("torch-"):]): r
                         for r in rows if r["backend"].startswith("torch-")}
    for r in rows:
        if r["backend"].startswith("torch-"):
            continue
        device = "cpu" if r["provider"] == "cpu" else "cuda"
        for mode in ("eager", "compile"):
            t = torch_rows_by_key.get((device, r["batch"], mode))
            if not t or not t["p50_ms"]:
                continue
            r[f"pytorch_{mode}_p50_ms"] = t["p50_ms"]
            unstable = [f"{who} ({why})" for who, why in (("ORT", r.get("unstable")), ("PyTorch", t.get("unstable")))
                        if why]
            if unstable:
                r[f"ratio_to_pytorch_{mode}"] = None
                r[f"ratio_to_pytorch_{mode}_note"] = "not formed: unstable " + ", ".join(unstable)
            else:
                versus = compare_latency(r, t)
                r[f"ratio_to_pytorch_{mode}"] = r["p50_ms"] / t["p50_ms"]
                r[f"ratio_to_pytorch_{mode}_ci"] = versus["ratio_ci"]
                r[f"ratio_to_pytorch_{mode}_verdict"] = versus["verdict"]
    return rows
