"""Which PyTorch module an ONNX node or tensor came from, read from the dynamo exporter's node metadata.

torch.onnx.export(dynamo=True) writes into each node's ``metadata_props``: ``pkg.torch.onnx.name_scopes`` (the
module path, one scope per level, the aten op last), ``pkg.torch.onnx.class_hierarchy`` (the classes, same
levels) and ``namespace`` (both in one string). A node that onnxscript's rewriter fused (Conv + BatchNorm) carries
the metadata of the last fused node and ``pkg.onnxscript.rewriter.rule_name``. The values are foreign text: they
are parsed as literals only (never evaluated), capped in length, and rendered escaped by the writers.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

MAX_META_CHARS = 10_000  # a name-scope list longer than this is not read


@dataclass(frozen=True)
class ModuleRef:
    """A PyTorch module: its path in the model ("layer3.1.conv2", "" for the root) and class name ("Conv2d")."""

    path: str
    cls: str
    fused_by: str | None = None  # the rewriter rule that fused this node (its metadata is the last fused node's)

    def describe(self) -> str:
        """Return "layer3.1.conv2 (Conv2d)", with the fusion when there was one."""
        text = f"{self.path or '<root>'} ({self.cls})"
        return text + (f", fused by {self.fused_by}" if self.fused_by else "")

    def to_dict(self) -> dict:
        """Return the JSON form."""
        return {"path": self.path, "class": self.cls, "fused_by": self.fused_by}


def _literal_list(text: str | None) -> list[str] | None:
    if not text or len(text) > MAX_META_CHARS:
        return None
    try:
        value = ast.literal_eval(text)  # a literal only: never runs code
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else None


def module_of_node(node) -> ModuleRef | None:
    """Return the module that produced ``node`` (an onnx NodeProto) from the exporter's metadata, else None."""
    meta = {p.key: p.value for p in node.metadata_props}
    scopes = _literal_list(meta.get("pkg.torch.onnx.name_scopes"))
    classes = _literal_list(meta.get("pkg.torch.onnx.class_hierarchy"))
    fused = meta.get("pkg.onnxscript.rewriter.rule_name") or None
    if scopes and classes and len(scopes) >= 2 and len(classes) >= 2:
        return ModuleRef(scopes[-2], classes[-2].rsplit(".", 1)[-1], fused)
    namespace = meta.get("namespace")
    if namespace and len(namespace) <= MAX_META_CHARS:
        parts = [p.split(": ", 1) for p in namespace.split("/")]
        if len(parts) >= 2 and len(parts[-2]) == 2:
            return ModuleRef(parts[-2][0].strip(), parts[-2][1].rsplit(".", 1)[-1].strip(), fused)
    return None


def tensor_modules(model_proto) -> dict[str, ModuleRef]:
    """Return {tensor name: module of the node producing it} for every node output that has exporter metadata."""
    out = {}
    for node in model_proto.graph.node:
        ref = module_of_node(node)
        if ref is not None:
            for name in node.output:
                out[name] = ref
    return out


def node_modules(model_proto) -> dict[str, ModuleRef]:
    """Return {node name: module} for every node of ``model_proto`` that has exporter metadata."""
    return {n.name: ref for n in model_proto.graph.node if (ref := module_of_node(n)) is not None}
