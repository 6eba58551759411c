"""Eager module → ONNX ModelProto with the dynamo exporter: dynamic batch, pinned opset, one self-contained file.

Failures of the exporter become one-line ConvkitErrors naming the operator and the module that uses it.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings

import onnx
import torch

from convkit.errors import ConvkitError, first_line, one_line

OPSET = 18  # pinned ai.onnx opset, recorded in every file's metadata and export.json
TRACE_BATCH = 2  # the example batch the exporter traces with (>= 2 so the batch dim is not specialised)
MAX_BATCH = 256  # upper bound of the dynamic batch dim; the parity gate runs this batch size on the file
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def _batch_dim():

    return torch.export.Dim("batch", min=1, max=MAX_BATCH)


def export_onnx(model, input_shape: tuple[int, int, int]):
    """Export eager ``model`` (put into eval mode here) and return the ``onnx.ModelProto``.

    Input ``input`` [batch, C, H, W] float32 with a dynamic ``batch`` dim, output ``logits``; opset OPSET; the
    weights are embedded (external_data=False). Raises ConvkitError (exit 2) naming the operator/module the
    exporter could not handle.
    """

    if hasattr(model, "_orig_mod"):  # a torch.compile wrapper: export the eager module it wraps
        model = model._orig_mod
    model = model.eval()
    example = torch.zeros(TRACE_BATCH, *input_shape, dtype=torch.float32)
    dynamic_shapes = ({0: _batch_dim()},)
    chatter = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model, (example,), None, dynamo=True, external_data=False, opset_version=OPSET,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes=dynamic_shapes,
                optimize=True, verbose=False,
            )
    except Exception as exc:  # the exporter raises many types; all become one line naming the culprit
        raise ConvkitError(describe_export_failure(exc, model, example, dynamic_shapes)) from None
    if program is None:
        raise ConvkitError("torch.onnx.export returned no program; this torch build is not supported")
    return program.model_proto


def _chain(exc: BaseException) -> list[BaseException]:
    """Return ``exc`` and its causes/contexts, outermost first."""
    seen, out = set(), []
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _module_names(model) -> dict[int, tuple[str, str]]:
    return {id(m): (name or "<root>", type(m).__name__) for name, m in model.named_modules()}


def _module_from_traceback(chain: list[BaseException], model) -> str | None:
    """The innermost frame whose ``self`` is a submodule of ``model``, as 'path (Type)'."""
    names = _module_names(model)
    found = None
    for exc in chain:
        tb = exc.__traceback__
        while tb is not None:
            owner = tb.tb_frame.f_locals.get("self")
            if owner is not None and id(owner) in names:
                path, kind = names[id(owner)]
                found = f"{path} ({kind}) at {tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"
            tb = tb.tb_next
    return found


def _module_of_op(op: str, model, example, dynamic_shapes) -> str | None:
    """Re-run torch.export and return the module path/type of the first node calling ``op`` (or a close name)."""

    base = op.split(".")[-1].replace("_", "")
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            ep = torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes, strict=False)
    except Exception:
        return None
    for node in ep.graph.nodes:
        if node.op != "call_function":
            continue
        target = str(node.target)
        name = target.split(".")[1] if target.count(".") >= 1 else target
        if name.replace("_", "") == base or base in name.replace("_", ""):
            stack = node.meta.get("nn_module_stack") or {}
            if stack:
                path, kind = list(stack.values())[-1]
                return f"{path or '<root>'} ({kind.rsplit('.', 1)[-1]})"
    return None


def describe_export_failure(exc: BaseException, model, example, dynamic_shapes) -> str:
    """Return one line saying which operator (and module) the exporter failed on, and why."""
    chain = _chain(exc)
    text = "\n".join(str(e) for e in chain)
    op = None
    m = re.search(r"No ONNX function found for <OpOverload\(op='([\w.]+)'", text)
    if m:
        op = m.group(1)
    else:
        m = re.search(r"target=torch\.ops\.([\w]+\.[\w]+)", text)
        if m:
            op = m.group(1)
    stage = "export to ONNX" if type(exc).__name__ == "ConversionError" else "torch.export tracing"
    # The innermost exception's first line is the most specific reason.
    innermost = chain[-1]
    reason = one_line(innermost)
    summary = re.search(r"## Exception summary\s+<class '([\w.]+)'>: ([^\n]+)", text)
    if summary:
        reason = f"{summary.group(1).rsplit('.', 1)[-1]}: {summary.group(2).strip()}"
    module = (_module_of_op(op, model, example, dynamic_shapes) if op else None) or _module_from_traceback(chain, model)
    where = f"operator {op}" if op else "the model"
    if module:
        where += f" in module {module}"
    reason = re.sub(r"\x1b\[[0-9;]*m", "", reason)[:300]
    return (f"cannot export {type(model).__name__}: {stage} failed on {where} ({reason}); "
            "replace that operation with ONNX-exportable ops")


def check_onnx(model_proto):
    """Run ``onnx.checker.check_model(full_check=True)`` and strict shape inference; return the inferred proto.

    Raises ConvkitError (exit 2) when the exported graph is invalid.
    """

    try:
        onnx.checker.check_model(model_proto, full_check=True)
        return onnx.shape_inference.infer_shapes(model_proto, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ConvkitError(f"exported ONNX graph fails onnx.checker/shape inference: {first_line(exc)}") from None
