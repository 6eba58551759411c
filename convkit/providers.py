"""ONNX Runtime execution providers and the one session factory (make_session) that export and evaluate share.

ONNX Runtime silently falls back to the CPU provider when the CUDA (or TensorRT) provider cannot load its
libraries. Every session built here is checked with ``session.get_providers()``; a fallback becomes a
``ProviderUnavailable`` error naming the missing library instead of a CPU figure labelled "cuda".
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import tempfile
from dataclasses import dataclass, field

import onnxruntime as ort
import torch
from onnx import TensorProto, helper

from convkit.envinfo import physical_cores
from convkit.errors import ConvkitError, first_line

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
GPU_KINDS = ("cuda", "tensorrt")
CONV_ALGO_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")


class ProviderUnavailable(ConvkitError):
    """An execution provider was asked for but cannot run here (exit 2)."""


@dataclass
class ProviderConfig:
    """How to build sessions for one provider kind ("cpu", "cuda" or "tensorrt")."""

    kind: str
    threads: int | None = None  # CPU intra-op threads; None = physical cores
    device_id: int = 0
    cudnn_conv_algo_search: str = "EXHAUSTIVE"
    cache_dir: str | None = None  # TensorRT engine cache
    extra: dict = field(default_factory=dict)

    def describe(self, cuda_graph: bool = False) -> dict:
        """Return the provider options actually passed to ONNX Runtime (for the report)."""
        providers, so = build_session_config(self, cuda_graph=cuda_graph)
        opts = {p[0] if isinstance(p, tuple) else p: (p[1] if isinstance(p, tuple) else {}) for p in providers}
        return {"providers": opts, "intra_op_num_threads": so.intra_op_num_threads,
                "graph_optimization_level": "ORT_ENABLE_ALL"}


@functools.lru_cache(maxsize=1)
def preload_cuda_libraries() -> str:
    """Load the CUDA/cuDNN libraries torch brought, so ORT's CUDA provider finds them; returns a note.

    torch is imported first (its wheels carry CUDA and cuDNN), then ``onnxruntime.preload_dlls()`` (ORT >= 1.21)
    loads them from torch's or NVIDIA's site-packages. Harmless on machines without a GPU.
    """
    # torch is imported at module level: its CUDA libraries are in the process before ORT looks for them.
    if not hasattr(ort, "preload_dlls"):
        return "onnxruntime.preload_dlls unavailable (ORT < 1.21): CUDA libraries come from the system search path"
    try:
        ort.preload_dlls(directory=None)
    except Exception as exc:  # preload is best effort; the session check below reports what is missing
        return f"onnxruntime.preload_dlls failed: {exc}"
    return "onnxruntime.preload_dlls() loaded the CUDA/cuDNN libraries that torch brought"


def build_session_config(cfg: ProviderConfig, cuda_graph: bool = False):
    """Return (providers list, SessionOptions) for ``cfg``; graph optimization ALL, CPU threads configurable."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # fallbacks are detected and reported by us, not as ORT warnings
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    so.intra_op_num_threads = int(cfg.threads or physical_cores())
    cuda_opts = {
        "device_id": str(cfg.device_id),
        "cudnn_conv_algo_search": cfg.cudnn_conv_algo_search,
        "do_copy_in_default_stream": "1",
        "enable_cuda_graph": "1" if cuda_graph else "0",
        # fp32 files run in fp32: TF32 would round convolutions and matmuls to 10 mantissa bits, and the
        # accuracy compared with PyTorch's fp32 reference (TF32 off as well) would not be the same model's.
        "use_tf32": "0",
    }
    if cfg.kind == "cpu":
        providers = ["CPUExecutionProvider"]
    elif cfg.kind == "cuda":
        providers = [("CUDAExecutionProvider", cuda_opts), "CPUExecutionProvider"]
    elif cfg.kind == "tensorrt":
        cache = cfg.cache_dir or os.path.join(tempfile.gettempdir(), "convkit-trt-cache")
        trt_opts = {"device_id": str(cfg.device_id), "trt_engine_cache_enable": "True",
                    "trt_engine_cache_path": cache, "trt_fp16_enable": "False"}
        if cuda_graph:
            trt_opts["trt_cuda_graph_enable"] = "True"
        cuda_opts["enable_cuda_graph"] = "0"
        providers = [("TensorrtExecutionProvider", trt_opts), ("CUDAExecutionProvider", cuda_opts),
                     "CPUExecutionProvider"]
    else:
        raise ConvkitError(f"unknown provider {cfg.kind!r}; use cpu, cuda, tensorrt or all")
    # No busy-waiting between runs: ORT's spinning workers would otherwise steal the cores from the PyTorch
    # reference timed in the same process (and from other processes on a shared machine).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return providers, so


def _missing_library(provider_lib: str) -> str | None:
    """Try to dlopen ORT's provider library; return the loader's error (names the missing .so) or None."""

    path = os.path.join(os.path.dirname(ort.__file__), "capi", provider_lib)
    if not os.path.exists(path):
        return f"{provider_lib} is not part of this onnxruntime wheel (install onnxruntime-gpu)"
    try:
        ctypes.CDLL(os.path.join(os.path.dirname(path), "libonnxruntime_providers_shared.so"), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(path)
    except OSError as exc:
        return str(exc)
    return None


_HINTS = {
    "libcuda.so": "the NVIDIA driver library: no GPU or no driver on this machine",
    "libcudnn": "cuDNN 9: install torch with CUDA or the nvidia-cudnn wheel",
    "libcublas": "cuBLAS: install torch with CUDA or the nvidia-cublas wheel",
    "libcudart": "the CUDA runtime: install torch with CUDA or the nvidia-cuda-runtime wheel",
    "libnvinfer": "TensorRT: install the tensorrt wheel",
}


def explain_unavailable(kind: str) -> str:
    """Return one line saying why provider ``kind`` cannot load here (naming the missing library when known)."""
    lib = {"cuda": "libonnxruntime_providers_cuda.so", "tensorrt": "libonnxruntime_providers_tensorrt.so"}.get(kind)
    reason = _missing_library(lib) if lib else None
    if reason:
        m = re.search(r"(lib[\w.+-]+?\.so(?:\.[\d.]+)?)", reason)
        name = m.group(1) if m and "not part of" not in reason else None
        hint = next((h for k, h in _HINTS.items() if name and name.startswith(k)), None)
        if name:
            return f"{PROVIDERS[kind]} cannot load: {name} not found" + (f" ({hint})" if hint else "")
        return f"{PROVIDERS[kind]} cannot load: {reason}"
    try:

        if not torch.cuda.is_available():
            return f"{PROVIDERS[kind]} cannot run: no CUDA GPU is visible (torch.cuda.is_available() is False)"
    except Exception:
        pass
    return f"{PROVIDERS[kind]} failed to initialise and ONNX Runtime fell back to CPU"


def make_session(model, cfg: ProviderConfig, cuda_graph: bool = False):
    """Return an ``InferenceSession`` for ``model`` (path or bytes) running on ``cfg.kind``.

    Raises ProviderUnavailable when ORT fell back to another provider, ConvkitError when the model cannot
    be loaded by ORT at all.
    """

    if cfg.kind in GPU_KINDS:
        preload_cuda_libraries()
        if PROVIDERS[cfg.kind] not in ort.get_available_providers():
            raise ProviderUnavailable(f"{PROVIDERS[cfg.kind]} is not in this onnxruntime build "
                                      f"({', '.join(ort.get_available_providers())}); install onnxruntime-gpu")
        # Check the provider library loads before ORT tries (and logs a fallback warning).
        lib = {"cuda": "libonnxruntime_providers_cuda.so", "tensorrt": "libonnxruntime_providers_tensorrt.so"}
        if _missing_library(lib[cfg.kind]) is not None:
            raise ProviderUnavailable(explain_unavailable(cfg.kind) + "; ONNX Runtime would silently run on CPU")
    providers, so = build_session_config(cfg, cuda_graph=cuda_graph)
    try:
        sess = ort.InferenceSession(model, sess_options=so, providers=providers)
    except Exception as exc:
        raise ConvkitError(f"ONNX Runtime cannot load the model on {cfg.kind}: {first_line(exc)}") from None
    got = sess.get_providers()
    if got[0] != PROVIDERS[cfg.kind]:
        raise ProviderUnavailable(explain_unavailable(cfg.kind) + f"; ORT would have run on {got[0]} instead")
    return sess


def _tiny_model() -> bytes:

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@functools.lru_cache(maxsize=None)
def provider_error(kind: str, device_id: int = 0) -> str | None:
    """Return None when provider ``kind`` really runs here, else one line saying why it does not."""
    if kind == "cpu":
        return None

    ort.set_default_logger_severity(4)  # provider_error reports failures itself
    try:
        make_session(_tiny_model(), ProviderConfig(kind, device_id=device_id))
    except ConvkitError as exc:
        return exc.message
    finally:
        ort.set_default_logger_severity(3)
    return None


def select_providers(requested: str | None, device_id: int = 0) -> tuple[list[str], list[str]]:
    """Resolve ``--provider`` into (kinds to use, notes about skipped ones).

    ``None`` (default) and ``"all"`` use every provider that really works here and note the others; an explicit
    ``cuda``/``tensorrt`` that cannot run raises ProviderUnavailable (exit 2).
    """
    if requested in (None, "auto", "all"):
        kinds, notes = ["cpu"], []
        for kind in GPU_KINDS:
            why = provider_error(kind, device_id)
            if why is None:
                kinds.append(kind)
            else:
                notes.append(f"{kind} skipped: {why}")
        return kinds, notes
    kinds = []
    for kind in [k.strip().lower() for k in requested.split(",") if k.strip()]:
        if kind not in PROVIDERS:
            raise ConvkitError(f"unknown provider {kind!r}; use cpu, cuda, tensorrt or all")
        why = provider_error(kind, device_id)
        if why is not None:
            raise ProviderUnavailable(f"--provider {kind} requested but {why}")
        kinds.append(kind)
    return kinds, []
