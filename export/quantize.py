"""Reduced-precision variants of an exported fp32 model: fp16 (float32 I/O kept) and int8 (static QDQ)."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import version_converter
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import convert_float_to_float16

from convkit.errors import ConvkitError, one_line
from convkit.export.onnx_export import INPUT_NAME

CALIB_METHOD = "MinMax"
CALIB_BATCH = 64
PERCENTILE = 99.999  # ONNX Runtime's default CalibPercentile, stated in the settings
# int8 files are emitted at opset 21: DequantizeLinear's per-channel form (axis) is current there (19 and 21 only
# added types), so independent runtimes such as onnx.reference run the file; ONNX Runtime 1.30/1.31 run and quantize
# opset 21 (they support up to 23). The fp32 file keeps the exporter's opset.
INT8_OPSET = 21


def to_fp16(model_proto):
    """Return a float16 copy of ``model_proto`` whose input and output stay float32 (keep_io_types=True)."""


    with _quiet():
        converted = convert_float_to_float16(copy.deepcopy(model_proto), keep_io_types=True)
    return toposort(converted)


def toposort(model_proto):
    """Reorder the main graph's nodes topologically (in place; returns the proto).

    ``convert_float_to_float16(keep_io_types=True)`` appends the input Cast nodes after their consumers,
    which onnx.checker rejects; a stable Kahn sort restores a valid order without changing the graph.
    """
    graph = model_proto.graph
    nodes = list(graph.node)
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    producers = {out: idx for idx, node in enumerate(nodes) for out in node.output}
    done, order = set(), []
    pending = list(range(len(nodes)))
    while pending:
        progressed, rest = False, []
        for idx in pending:
            deps = [x for x in nodes[idx].input if x not in available and x in producers]
            if all(producers[d] in done for d in deps):
                order.append(idx)
                done.add(idx)
                progressed = True
            else:
                rest.append(idx)
        if not progressed:  # a cycle: leave the graph as it was and let onnx.checker report it
            return model_proto
        pending = rest
    sorted_nodes = [nodes[i] for i in order]
    del graph.node[:]
    graph.node.extend(sorted_nodes)
    return model_proto


class _ArrayReader:
    """CalibrationDataReader over a float32 array, yielding batches of CALIB_BATCH images."""

    def __init__(self, x: np.ndarray):
        self.x = x
        self.i = 0

    def get_next(self):
        if self.i >= len(self.x):
            return None
        batch = self.x[self.i:self.i + CALIB_BATCH]
        self.i += CALIB_BATCH
        return {INPUT_NAME: batch}

    def rewind(self):
        self.i = 0


@contextlib.contextmanager
def _quiet():
    """Silence the quantizer's prints and INFO/WARNING logs."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def prune_opset_imports(model_proto):
    """Drop the opset domains no node of the graph (or its functions) uses; returns the proto (changed in place).

    quant_pre_process saves through ONNX Runtime, which declares every domain it knows (com.microsoft, ai.onnx.ml,
    ...); a consumer that does not know them refuses the file although nothing uses them.
    """
    used = {n.domain or "" for n in model_proto.graph.node}
    used |= {n.domain or "" for f in model_proto.functions for n in f.node} | {f.domain for f in model_proto.functions}
    keep = [o for o in model_proto.opset_import if (o.domain or "") in used or o.domain in ("", "ai.onnx")]
    del model_proto.opset_import[:]
    model_proto.opset_import.extend(keep)
    return model_proto


def calibration_images(train_images_u8, k: int, seed: int):
    """Return (indices, uint8 images): ``k`` training images drawn without replacement by a seeded permutation."""

    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(train_images_u8), generator=gen)[:k].sort().values
    return idx, train_images_u8[idx]


CALIB_METHODS = {"MinMax": CalibrationMethod.MinMax, "Entropy": CalibrationMethod.Entropy,
                 "Percentile": CalibrationMethod.Percentile}  # ONNX Runtime's calibrators convkit offers


def to_int8(model_proto, calib: np.ndarray, method: str = CALIB_METHOD,
            keep_fp32_nodes: tuple[str, ...] = ()) -> tuple[object, dict]:
    """Statically quantize ``model_proto`` with ONNX Runtime (QDQ, per-channel int8 weights, uint8 activations,
    ``method`` calibration (MinMax by default) on ``calib`` float32 images); returns (quantized ModelProto,
    settings dict). ``keep_fp32_nodes`` names nodes of the prepared graph (see ``prepare_int8``) that stay fp32
    (quantize_static's ``nodes_to_exclude``).

    uint8 activations with int8 weights (U8S8) is the combination ONNX Runtime's x86 kernels are fastest at:
    on this project's 2-core Xeon (AVX-512 VNNI) a kernel_cnn_k3 took 0.44 ms at batch 1 and 50 ms at batch 256
    with U8S8 against 0.88 ms and 205 ms with S8S8 (fp32: 0.67 ms and 99 ms).
    """
    prepared, settings = prepare_int8(model_proto)
    quantized = quantize_prepared(prepared, calib, method, keep_fp32_nodes)
    settings.update(calibrate_method=method, calibration_images=int(len(calib)))
    if keep_fp32_nodes:
        settings["nodes_to_exclude"] = list(keep_fp32_nodes)
    return quantized, settings


def prepare_int8(model_proto) -> tuple[object, dict]:
    """Return (the fp32 graph quantize_static is given, settings): ``model_proto`` converted to INT8_OPSET and run
    through ``quant_pre_process`` (shape inference + ORT basic optimizations such as Conv+BatchNorm fusion); when
    that fails the converted graph itself, and the settings say so. Its node and tensor names are the ones
    ``keep_fp32_nodes`` and the int8 file use."""
    # uint8 activations with 7-bit weights (reduce_range): ONNX Runtime's x86 kernels for uint8 x int8 on CPUs
    # without VNNI (AVX2, AVX-512F) multiply with VPMADDUBSW, whose 16-bit pair sums saturate with full 8-bit
    # weights, so the file would compute something else than its graph says (measured on an AVX2 EPYC: logits 0.16
    # off in 0.21); 7-bit weights cannot saturate there. int8 activations (S8S8) are exact too, but 1.3-4.1x slower
    # than fp32 on such CPUs (docs/benchmarks.md).
    settings = {"format": "QDQ", "per_channel": True, "weight_type": "QInt8", "activation_type": "QUInt8",
                "reduce_range": True,
                "calibration_batch": CALIB_BATCH, "opset": INT8_OPSET}
    try:
        upgraded = version_converter.convert_version(model_proto, INT8_OPSET)
    except Exception as exc:
        raise ConvkitError(f"int8: cannot convert the fp32 graph to opset {INT8_OPSET} "
                           f"({one_line(exc, 200)})") from None
    with tempfile.TemporaryDirectory(prefix="convkit-int8-") as tmp:
        src, pre = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx")
        onnx.save_model(upgraded, str(src))
        try:
            with _quiet():
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            settings["preprocess"] = "quant_pre_process (onnx shape inference + ORT basic optimizations)"
            return onnx.load(str(pre)), settings
        except Exception as exc:  # quantizing the unprocessed graph still works, only less fused
            settings["preprocess"] = f"skipped ({type(exc).__name__})"
            return upgraded, settings


def quantize_prepared(prepared, calib: np.ndarray, method: str = CALIB_METHOD, keep_fp32_nodes=(),
                      calibration_cache: Path | None = None):
    """Return the QDQ int8 ModelProto of a ``prepare_int8`` graph, ``keep_fp32_nodes`` left in fp32.

    ``calibration_cache``: ONNX Runtime's JSON cache of the tensor ranges; calibration runs once per method and
    cache, later calls (other ``keep_fp32_nodes``) reuse its ranges, so they differ only in the nodes kept.
    """

    class Reader(_ArrayReader, CalibrationDataReader):
        pass

    if method not in CALIB_METHODS:
        raise ConvkitError(f"unknown calibration method {method!r}; use {', '.join(CALIB_METHODS)}")
    if method != "MinMax" and len(calib) > CALIB_BATCH:
        # ONNX Runtime's histogram calibrators stack the batches' outputs: they need batches of one size
        calib = calib[:len(calib) - len(calib) % CALIB_BATCH]
    with tempfile.TemporaryDirectory(prefix="convkit-int8-") as tmp:
        src, dst = Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        onnx.save_model(prepared, str(src))
        try:
            with _quiet():
                quantize_static(str(src), str(dst), Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True,
                                calibrate_method=CALIB_METHODS[method], use_external_data_format=False,
                                nodes_to_exclude=list(keep_fp32_nodes) or None,
                                calibration_cache_path=str(calibration_cache) if calibration_cache else None,
                                extra_options={"CalibPercentile": PERCENTILE} if method == "Percentile" else None)
        except Exception as exc:
            raise ConvkitError(f"int8 quantization failed ({one_line(exc, 200)})") from None
        return prune_opset_imports(onnx.load(str(dst)))
