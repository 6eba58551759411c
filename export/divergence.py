"""The first PyTorch module whose output the ONNX file stops matching.

One input array goes to both runners (Polygraphy's rule): ONNX Runtime with every intermediate tensor made a
graph output (qdq_loss_debug's ``modify_model_output_intermediate_tensors``, graph optimizations off so the
tensors keep their names) and the eager module with a forward hook on every submodule. They are aligned through
the exporter's node metadata (convkit.export.module_map): a module's output is the output of the last ONNX node,
in graph order, inside that module's scope. Modules are compared in the order their hooks fired (execution order,
a child before its parent), and the first whose output differs beyond ``atol + rtol · max|PyTorch|`` is named.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationDataReader
from onnxruntime.quantization.qdq_loss_debug import collect_activations, modify_model_output_intermediate_tensors

from convkit.devices import exact_fp32
from convkit.export.module_map import module_of_node
from convkit.export.onnx_export import INPUT_NAME
from convkit.export.quantize import _quiet

ATOL = 1e-4  # convkit.gates.FP32_ATOL, the fp32 gate's logit tolerance
RTOL = 1e-4
FP16_RTOL = 1e-2  # an fp16 file: 10 mantissa bits (~1e-3 per value), accumulated over a layer
IMAGES = 16  # images both runners see (every intermediate of every image is held in memory)


def onnx_intermediates(proto, x: np.ndarray) -> dict[str, np.ndarray]:
    """Return {tensor name: flattened values} of every float tensor of ``proto`` on ``x`` (one batch)."""

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{INPUT_NAME: x}])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="convkit-divergence-") as tmp:
        src, aug = Path(tmp, "model.onnx"), Path(tmp, "aug.onnx")
        onnx.save_model(proto, str(src))
        with _quiet(), contextlib.redirect_stderr(io.StringIO()):
            modify_model_output_intermediate_tensors(str(src), str(aug))
            acts = collect_activations(str(aug), Reader())
    return {k: np.asarray(v[0]) for k, v in acts.items()}


def torch_intermediates(module: torch.nn.Module, x: np.ndarray,
                        device: str = "cpu") -> list[tuple[str, str, np.ndarray]]:
    """Return [(module path, class, flattened output)] of every submodule whose output is one tensor, in the
    order their forward hooks fired, for ``x`` run on ``device`` in fp32 (TF32 off)."""
    fired: list[tuple[str, str, np.ndarray]] = []
    handles = []

    def hook(name):
        def record(mod, args, out):
            if isinstance(out, torch.Tensor):
                # a copy now: an in-place op after the module (ReLU(inplace=True)) would overwrite the tensor
                value = out.detach().to("cpu", torch.float32, copy=True)
                fired.append((name, type(mod).__name__, value.numpy().ravel()))
        return record

    for name, sub in module.named_modules():
        if name:
            handles.append(sub.register_forward_hook(hook(name)))
    try:
        module.to(device).eval()
        with torch.inference_mode(), exact_fp32():
            module(torch.from_numpy(np.ascontiguousarray(x)).to(device))
    finally:
        for h in handles:
            h.remove()
        module.to("cpu")
    return fired


def module_outputs(proto) -> dict[str, tuple[str, list[str]]]:
    """Return {module path: (the ONNX tensor holding its output, op types of its nodes)} from the exporter's
    metadata: the last node in graph order whose scope is the module or inside it."""
    out: dict[str, tuple[str, list[str]]] = {}
    for node in proto.graph.node:
        ref = module_of_node(node)
        if ref is None or not node.output:
            continue
        parts = ref.path.split(".") if ref.path else []
        for depth in range(1, len(parts) + 1):
            path = ".".join(parts[:depth])
            ops = out.get(path, (None, []))[1]
            out[path] = (node.output[0], ops + ([node.op_type] if node.op_type not in ops else []))
    return out


def first_divergence(proto, module: torch.nn.Module, x: np.ndarray, device: str = "cpu", atol: float = ATOL,
                     rtol: float = RTOL, metadata_from=None) -> dict:
    """Return where ONNX stops matching PyTorch on ``x[:IMAGES]``: "first" (module path, class, ONNX tensor, op
    types, max/mean abs diff, max |PyTorch|) or None when every aligned module matches, "compared" (modules
    aligned), "unaligned" (modules with no ONNX counterpart, e.g. fused away) and the tolerance.
    ``metadata_from``: the graph whose exporter metadata names the modules (the fp32 export for an fp16 file made
    from it, whose tensors keep their names); default ``proto`` itself."""
    from convkit.export.int8_sensitivity import bounded_images

    x = np.ascontiguousarray(x[:bounded_images(IMAGES, x.shape[1:])], dtype=np.float32)
    onnx_values = onnx_intermediates(proto, x)
    outputs = module_outputs(metadata_from if metadata_from is not None else proto)
    compared, unaligned, first, rows = 0, [], None, []
    for path, cls, ref in torch_intermediates(module, x, device):
        tensor, ops = outputs.get(path, (None, []))
        got = onnx_values.get(tensor) if tensor else None
        if got is None or got.size != ref.size:
            unaligned.append(path)
            continue
        compared += 1
        diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))  # inf/NaN (an fp16 overflow) diverge
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        finite = bool(np.isfinite(diff).all())
        row = {"module": path, "class": cls, "tensor": tensor, "op_types": ops,
               "max_abs_diff": float(diff.max()) if finite else None,  # None: ONNX gave inf/NaN (JSON has no inf)
               "mean_abs_diff": float(diff.mean()) if finite else None, "non_finite": not finite,
               "max_abs_reference": scale, "diverges": bool(not finite or diff.max() > atol + rtol * scale)}
        rows.append(row)
        if row["diverges"] and first is None:
            first = row
    return {"images": len(x), "atol": atol, "rtol": rtol, "rule": "max|ONNX − PyTorch| > atol + rtol·max|PyTorch|",
            "first": first, "compared": compared, "unaligned": unaligned[:50], "modules": rows[:200]}


def describe(result: dict, what: str = "ONNX") -> str:
    """Return the divergence of the ``what`` file ("ONNX", "the fp16 file") in one line."""
    first = result.get("first")
    if first is None:
        return (f"{what} matches PyTorch at every one of the {result['compared']} aligned modules "
                f"(within {result['atol']:g} + {result['rtol']:g}·max|PyTorch|)")
    error = ("ONNX gives inf/NaN" if first.get("non_finite") else
             f"max |Δ| {first['max_abs_diff']:.3g}, mean {first['mean_abs_diff']:.3g}")
    return (f"first module where {what} stops matching PyTorch: {first['module']} ({first['class']}; ONNX "
            f"{'/'.join(first['op_types'])} → `{first['tensor']}`): {error} (|PyTorch| up to "
            f"{first['max_abs_reference']:.3g})")


def locate(proto, module, x: np.ndarray, device: str = "cpu", atol: float = ATOL, rtol: float = RTOL,
           metadata_from=None) -> dict:
    """Return ``first_divergence`` at the gate's ``atol`` for a failed parity gate, or {"error": why} when it
    cannot run: locating the divergence never takes the export down."""
    try:
        return first_divergence(proto, module, x, device, atol, rtol, metadata_from)
    except Exception as exc:  # noqa: BLE001 — a diagnosis that fails leaves the gate's report as it was
        from convkit.errors import one_line

        return {"error": one_line(exc, 200)}


def note(report: dict) -> str:
    """Return "; <the first diverging module>" for an export report whose fp32 gate failed, else ""."""
    found = ((report.get("precisions") or {}).get("fp32") or {}).get("divergence")
    if not found or "error" in found:
        return ""
    return "; " + describe(found)
