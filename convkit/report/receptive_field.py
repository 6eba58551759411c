"""Receptive fields computed analytically from a model's structure.

The model is traced with torch.fx so that branches (residual shortcuts, squeeze-excitation gates) are
followed as the data flows, and every node carries the geometry of its input window: size ``rf``, step
``jump`` between neighbouring units and ``start``, the input coordinate of unit 0's centre. A conv or pool
with kernel k, stride s, dilation d and padding p maps (rf, jump, start) to

    rf' = rf + (k − 1)·d·jump,   jump' = jump·s,   start' = start + ((k − 1)·d/2 − p)·jump

and an addition merges its inputs' windows (their union). Operations that mix all positions (global means,
as in squeeze-excitation, adaptive pooling, flattening) set ``global_context``: such a unit then depends on
every input pixel although its local window is ``rf``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.fx as fx
import torch.nn as nn

from convkit.models.layers import L2Pool2d

# Leaf modules whose geometry this module knows, plus adaptive pools (which mix all positions).
_WINDOWED = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, L2Pool2d)
_GLOBAL_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Linear)
_GLOBAL_OPS = {"mean", "sum", "amax", "flatten", "view", "reshape", "adaptive_avg_pool2d", "adaptive_max_pool2d"}


@dataclass(frozen=True)
class Window:
    """The input window of one unit: size ``rf`` (pixels), ``jump`` between units, ``start`` centre of unit 0."""

    rf: float
    jump: float
    start: float
    global_context: bool = False

    @property
    def lo(self) -> float:
        """Return the input coordinate of unit 0's first pixel."""
        return self.start - (self.rf - 1) / 2

    @property
    def hi(self) -> float:
        """Return the input coordinate of unit 0's last pixel."""
        return self.start + (self.rf - 1) / 2


def _first(v) -> int:
    return int(v[0] if isinstance(v, (tuple, list)) else v)


def layer_geometry(m: nn.Module) -> dict:
    """Return {"kernel", "stride", "dilation", "padding"} of a conv or pooling module (square: first dimension)."""
    if isinstance(m, L2Pool2d):
        return {"kernel": 2, "stride": 2, "dilation": 1, "padding": 0}
    k = _first(m.kernel_size)
    d = _first(getattr(m, "dilation", 1))
    pad = m.padding
    if isinstance(pad, str):  # "same" keeps the centre: (k − 1)·d/2 on each side; "valid" is 0
        pad = (k - 1) * d // 2 if pad == "same" else 0
    stride = m.stride if m.stride is not None else m.kernel_size  # pools default stride to the kernel
    return {"kernel": k, "stride": _first(stride), "dilation": d, "padding": _first(pad)}


def apply_layer(w: Window, kernel: int, stride: int, dilation: int = 1, padding: int = 0) -> Window:
    """Return the window after one conv/pool layer with the given geometry (the formulas in the module doc)."""
    span = (kernel - 1) * dilation
    return Window(w.rf + span * w.jump, w.jump * stride, w.start + (span / 2 - padding) * w.jump, w.global_context)


def merge(windows: list[Window]) -> Window | None:
    """Return the union of ``windows`` (an addition or product of branches), None when there are none."""
    if not windows:
        return None
    lo, hi = min(w.lo for w in windows), max(w.hi for w in windows)
    return Window(hi - lo + 1, max(w.jump for w in windows), (lo + hi) / 2, any(w.global_context for w in windows))


class _Tracer(fx.Tracer):
    """Keeps the layers whose geometry is read off the module (and custom autograd pools) as leaves."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        """Return True for torch's own modules and the layers whose geometry or global effect is known here."""
        return isinstance(m, _WINDOWED + _GLOBAL_MODULES) or super().is_leaf_module(m, qualname)


def _op_name(node: fx.Node) -> str:
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def _describe(m: nn.Module, g: dict) -> str:
    if isinstance(m, nn.Conv2d):
        return f"conv {g['kernel']}×{g['kernel']}/{g['stride']}" + (f" d{g['dilation']}" if g["dilation"] > 1 else "")
    kind = {nn.MaxPool2d: "max-pool", nn.AvgPool2d: "avg-pool"}.get(type(m), "L2-pool")
    return f"{kind} {g['kernel']}×{g['kernel']}/{g['stride']}"


def receptive_fields(model: nn.Module) -> list[dict]:
    """Return one row per conv and pooling layer in execution order.

    Each row: {"layer" (module path), "op" (e.g. "conv 3×3/1"), "kernel", "stride", "dilation", "padding",
    "rf" (pixels), "jump", "start", "global_context"}. Raises whatever torch.fx raises for an untraceable model.
    """
    graph = _Tracer().trace(model)
    modules = dict(model.named_modules())
    state: dict[fx.Node, Window | None] = {}
    rows = []
    for node in graph.nodes:
        inputs = []
        fx.node.map_arg((node.args, node.kwargs), lambda n: inputs.append(state.get(n)))
        inputs = [w for w in inputs if w is not None]
        if node.op == "placeholder":
            state[node] = Window(1, 1, 0.0)
            continue
        if node.op == "output" or not inputs:
            state[node] = None
            continue
        w = merge(inputs)
        m = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(m, _WINDOWED):
            g = layer_geometry(m)
            w = apply_layer(w, g["kernel"], g["stride"], g["dilation"], g["padding"])
            rows.append({"layer": node.target, "op": _describe(m, g), **g, "rf": int(round(w.rf)),
                         "jump": int(round(w.jump)), "start": w.start, "global_context": w.global_context})
        elif isinstance(m, _GLOBAL_MODULES) or (m is None and _op_name(node) in _GLOBAL_OPS):
            w = Window(w.rf, w.jump, w.start, True)
        state[node] = w
    return rows
