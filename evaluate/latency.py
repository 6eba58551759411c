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

from convkit.compilation import compile_model
from convkit.evaluate.model_io import _NP_TYPES

CLOCK = "time.perf_counter around each call, after torch.cuda.synchronize() on GPU"


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
    """Return latency statistics in ms (first_run, p50, p90, p99, mean, std, min, max), n and images/s for ``fn``."""
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
    mean = float(ms.mean())
    return {
        "batch": batch,
        "first_run_ms": first * 1e3,
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": mean,
        "std_ms": float(ms.std()),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "n": int(len(ms)),
        "images_per_s": batch / (mean / 1e3) if mean > 0 else None,
    }


def make_batch(images_u8: np.ndarray, batch: int) -> np.ndarray:
    """Return ``batch`` real test images (cycled when the split has fewer) as uint8 [batch, C, H, W]."""
    reps = -(-batch // len(images_u8))
    return np.ascontiguousarray(np.concatenate([images_u8] * reps)[:batch]) if reps > 1 else images_u8[:batch].copy()


def ort_host_latency(session, spec, x: np.ndarray, timing: Timing, sync=None) -> dict:
    """Return stats of ``session.run`` with a host (numpy) input and output: on CPU the plain figure, on GPU the
    end-to-end figure that includes host→device and device→host copies."""
    feed = {spec.input_name: x}
    names = [spec.output_name]
    return measure(lambda: session.run(names, feed), len(x), timing, sync)


def _torch_dtype(ort_type: str):
    import torch

    return {"tensor(float)": torch.float32, "tensor(float16)": torch.float16, "tensor(double)": torch.float64,
            "tensor(uint8)": torch.uint8}.get(ort_type, torch.float32)


def ort_device_latency(session, spec, x: np.ndarray, timing: Timing, device_id: int = 0) -> dict:
    """Return stats of ``run_with_iobinding`` with input and output resident on CUDA device ``device_id``.

    Buffers are torch CUDA tensors bound by pointer and never re-bound, so the same session also serves
    CUDA-graph replay (``enable_cuda_graph``), which needs fixed addresses.
    """
    import torch

    dev = torch.device("cuda", device_id)
    x_dev = torch.from_numpy(x).to(dev).contiguous()
    out_meta = next(o for o in session.get_outputs() if o.name == spec.output_name)
    y_dev = torch.empty((len(x), len(spec.class_names)), dtype=_torch_dtype(out_meta.type), device=dev)
    io = session.io_binding()
    io.bind_input(spec.input_name, "cuda", device_id, x.dtype, tuple(x_dev.shape), x_dev.data_ptr())
    io.bind_output(spec.output_name, "cuda", device_id, _NP_TYPES.get(out_meta.type, np.float32), tuple(y_dev.shape),
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
    import torch

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
