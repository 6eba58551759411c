"""Which quantized tensor costs int8 its accuracy, measured on real labelled images, and the smallest set kept in
fp32 that passes the int8 gate.

The unit is an activation *tensor group*: a tensor and the tensors it flows into unchanged through ops that carry
their input's quantization scale (Relu, MaxPool, Flatten, ...): an outlier in a convolution's output is still
there after the ReLU and the pool, and ONNX Runtime gives them one scale. Keeping a group in fp32 excludes
(quantize_static's ``nodes_to_exclude``) its producer and every node that consumes any of its tensors, together;
excluding any one of those nodes alone leaves the others' quantizers on the same ruined range.

1. rank the groups cheaply: ONNX Runtime's ``qdq_loss_debug`` activation SQNR (dB) of each tensor before and after
   its QuantizeLinear/DequantizeLinear pair, on a few held-out images, and the same SQNR over the tensor's bulk
   (outliers left out: ``bulk_sqnr``); the lower of the two ranks (lowest first);
2. measure the leading candidates: top-1 on the held-out images with that group alone kept in fp32, the images
   whose prediction flips against the fp32 file, and McNemar's exact test against the full int8 file;
3. ``search_keep_fp32``: greedy over the groups by measured gain (flips against fp32 removed, then top-1) until
   the int8 gate passes; convkit.export.keep_fp32 times every step's file against fp32 and the full int8 file.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader
from onnxruntime.quantization.qdq_loss_debug import (
    collect_activations,
    compute_activation_error,
    create_activation_matching,
    modify_model_output_intermediate_tensors,
)

from convkit import gates
from convkit.errors import ConvkitError, one_line
from convkit.export.module_map import ModuleRef, node_modules, tensor_modules
from convkit.export.onnx_export import INPUT_NAME
from convkit.export.parity import compare, ort_logits, variant_gate
from convkit.export.quantize import CALIB_BATCH, CALIB_METHODS, _quiet, quantize_prepared
from convkit.providers import ProviderConfig, make_session
from convkit.uncertainty import mcnemar, wilson

# Ops whose int8 output reuses their input's scale in ONNX Runtime's QDQ quantizer (or that a quantized Relu/Clip
# is folded into): an outlier passes through them unchanged.
PASS_THROUGH = frozenset({"Relu", "Clip", "MaxPool", "GlobalMaxPool", "Flatten", "Reshape", "Transpose", "Squeeze",
                          "Unsqueeze", "Identity", "Dropout", "Resize", "Slice", "Split", "Gather"})
BULK_PERCENTILE = 90.0  # bulk SQNR: the values within this percentile of |x| (outliers left out)
SQNR_IMAGES = 64  # held-out images the SQNR ranking runs on (it keeps every activation of every image in memory)
TOP_CANDIDATES = 5  # groups measured on the held-out images, in SQNR order (each costs one quantize + one pass)
MAX_KEEP = 8  # the greedy search stops after keeping this many groups
EVAL_BATCH = 256


@dataclass(frozen=True)
class Candidate:
    """One activation tensor group: its head tensor (a node output or the model input), every tensor in it, the
    nodes that stay fp32 when it is kept, their op types, and the PyTorch module the head came from."""

    tensor: str
    tensors: tuple[str, ...]
    nodes: tuple[str, ...]
    op_types: tuple[str, ...]
    module: ModuleRef | None

    def describe(self) -> str:
        """Return "`tensor` (Conv) from layer3.1.conv2 (Conv2d)"."""
        where = f" from {self.module.describe()}" if self.module else ""
        return f"`{self.tensor}` ({self.op_types[0] if self.op_types else '?'}){where}"

    def to_dict(self) -> dict:
        """Return the JSON form."""
        return {"tensor": self.tensor, "tensors": list(self.tensors), "nodes": list(self.nodes),
                "op_types": list(self.op_types), "module": self.module.to_dict() if self.module else None}


@dataclass
class Problem:
    """What measuring int8 needs: the exported fp32 graph (with the exporter's metadata), the graph quantize_static
    is given (``prepare_int8``), calibration images, held-out images (model input) with labels and PyTorch's
    logits on them, the gate, the calibration method, and where ONNX Runtime's calibration caches go."""

    fp32: object
    prepared: object
    calib: np.ndarray
    x: np.ndarray
    labels: np.ndarray
    reference_logits: np.ndarray
    limits: dict  # {"max_drop_points": ..., "max_disagreement_points": ...} of the int8 gate
    method: str
    workdir: Path
    provider: str = "cpu"
    fp32_logits: np.ndarray | None = None

    def __post_init__(self):
        if self.fp32_logits is None:
            self.fp32_logits = logits_of(self.fp32, self.x, self.provider)

    @property
    def reference_accuracy(self) -> float:
        """PyTorch's top-1 on the held-out images (the gate's reference)."""
        return float((self.reference_logits.argmax(1) == self.labels).mean())

    def quantize(self, nodes: tuple[str, ...] = (), method: str | None = None):
        """Return the int8 proto with ``nodes`` kept fp32 (calibrated once per method: the ranges are cached)."""
        method = method or self.method
        cache = self.workdir / f"calibration-{method}.json"
        return quantize_prepared(self.prepared, self.calib, method, nodes, calibration_cache=cache)


def logits_of(proto, x: np.ndarray, provider: str = "cpu") -> np.ndarray:
    """Return ONNX Runtime's logits of ``proto`` on ``x`` (batches of EVAL_BATCH) on ``provider``."""
    session = make_session(proto.SerializeToString(), ProviderConfig(provider))
    return ort_logits(session, x, EVAL_BATCH)


@dataclass
class Trial:
    """One int8 file measured on the held-out images: the groups kept fp32, its top-1, the images whose top-1
    differs from the fp32 file's, its gate, and McNemar's test against the full int8 file."""

    kept: tuple[str, ...]
    accuracy: float
    correct: np.ndarray = field(repr=False)
    flips: int
    gate: dict
    vs_full_int8: dict | None = None
    proto: object = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """Return the JSON form (no arrays)."""
        n = len(self.correct)
        ci = wilson(int(self.correct.sum()), n)
        return {"kept_fp32": list(self.kept), "accuracy": self.accuracy, "accuracy_ci": ci.to_list() if ci else None,
                "images": n, "flips_vs_fp32": self.flips, "gate": self.gate, "vs_full_int8": self.vs_full_int8}


def measure(problem: Problem, proto, kept: tuple[str, ...], full: Trial | None = None) -> Trial:
    """Return the Trial of int8 ``proto`` (``kept``: the groups it keeps fp32), tested against ``full``."""
    out = logits_of(proto, problem.x, problem.provider)
    parity = compare(out, problem.reference_logits, problem.labels).to_dict()
    gate = variant_gate("int8", parity, problem.reference_accuracy, **problem.limits)
    correct = out.argmax(1) == problem.labels
    flips = int((out.argmax(1) != problem.fp32_logits.argmax(1)).sum())
    test = mcnemar(full.correct, correct).to_dict() if full is not None else None
    return Trial(tuple(kept), float(correct.mean()), correct, flips, gate, test, proto)


def quantized_tensors(int8_proto) -> set[str]:
    """Return the activation tensors the int8 graph quantizes (inputs of QuantizeLinear that are not weights)."""
    weights = {t.name for t in int8_proto.graph.initializer}
    return {n.input[0] for n in int8_proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in weights}


def candidates(prepared, fp32, int8_proto) -> list[Candidate]:
    """Return the tensor groups of ``prepared`` that the int8 graph quantizes, in graph order, each with the
    module its head tensor came from (looked up in ``fp32``'s exporter metadata by tensor, then node name)."""
    graph = prepared.graph
    weights = {t.name for t in graph.initializer}
    consumers: dict[str, list] = {}
    producer = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
        for name in node.output:
            producer[name] = node
    by_tensor, by_node = tensor_modules(fp32), node_modules(fp32)
    quantized = quantized_tensors(int8_proto)
    heads = [i.name for i in graph.input if i.name not in weights]
    heads += [out for n in graph.node if n.op_type not in PASS_THROUGH for out in n.output if out]
    found = []
    for head in heads:
        group, nodes, todo = [head], [producer[head]] if head in producer else [], [head]
        while todo:
            tensor = todo.pop()
            for node in consumers.get(tensor, []):
                nodes.append(node)
                if node.op_type in PASS_THROUGH and node.input and node.input[0] == tensor and node.output:
                    group.append(node.output[0])
                    todo.append(node.output[0])
        if not quantized.intersection(group):
            continue
        seen = list(dict.fromkeys(n.name for n in nodes))
        ops = [n.op_type for n in nodes]
        module = by_tensor.get(head) or (by_node.get(producer[head].name) if head in producer else None)
        found.append(Candidate(head, tuple(group), tuple(seen), tuple(dict.fromkeys(ops)), module))
    return found


def activation_sqnr(problem: Problem, int8_proto, images: int = SQNR_IMAGES) -> dict[str, dict]:
    """Return {tensor: {"qdq_err": dB, "xmodel_err": dB}} from ONNX Runtime's qdq_loss_debug on ``images``
    held-out images: SQNR of each quantized activation before vs after its QDQ pair, and fp32 graph vs int8."""

    class Reader(CalibrationDataReader):
        def __init__(self, x):
            self.batches = iter([{INPUT_NAME: x[i:i + CALIB_BATCH]} for i in range(0, len(x), CALIB_BATCH)])

        def get_next(self):
            return next(self.batches, None)

    x = problem.x[:bounded_images(images, problem.x.shape[1:])]
    with tempfile.TemporaryDirectory(prefix="convkit-sqnr-", dir=problem.workdir) as tmp:
        paths = {}
        for name, proto in (("float", problem.prepared), ("qdq", int8_proto)):
            src, aug = Path(tmp, f"{name}.onnx"), Path(tmp, f"{name}.aug.onnx")
            onnx.save_model(proto, str(src))
            with _quiet(), contextlib.redirect_stderr(io.StringIO()):
                modify_model_output_intermediate_tensors(str(src), str(aug))
            paths[name] = str(aug)
        with _quiet():
            qdq = collect_activations(paths["qdq"], Reader(x))
            flt = collect_activations(paths["float"], Reader(x))
    matching = create_activation_matching(qdq, flt)
    errors = compute_activation_error(matching)
    bulk = compute_activation_error(matching, bulk_sqnr)
    return {k: {**{m: float(v) for m, v in errs.items()}, "bulk_err": float(bulk[k]["qdq_err"])}
            for k, errs in errors.items()}


def bounded_images(images: int, input_shape, reference_elements: int = 3 * 32 * 32, least: int = 2) -> int:
    """Return how many images keep every activation of every one in memory bounded: ``images`` at a 32×32 RGB
    input, fewer in proportion to larger inputs (a 224×224 model gets 2 of 64), never under ``least``."""
    elements = int(np.prod(input_shape)) or 1
    return max(least, min(images, images * reference_elements // elements))


def bulk_sqnr(pre, post) -> float:
    """Return the SQNR (dB) of the values whose |pre| is within its BULK_PERCENTILE: whole-tensor SQNR is
    dominated by a few huge outliers (their norm is the signal) and misses that every ordinary value was rounded
    to zero by the range they forced; this one sees it."""
    x = np.concatenate([np.ravel(a) for a in pre]).astype(np.float64)
    y = np.concatenate([np.ravel(a) for a in post]).astype(np.float64)
    mask = np.abs(x) <= np.percentile(np.abs(x), BULK_PERCENTILE)
    signal, noise = np.linalg.norm(x[mask]), np.linalg.norm(x[mask] - y[mask])
    eps = np.finfo(np.float32).eps
    return float(20 * np.log10(max(signal, eps) / max(noise, eps)))


def rank(problem: Problem, full_proto) -> list[tuple[Candidate, dict]]:
    """Return every candidate group with its SQNR (the lowest of its tensors'), lowest SQNR first."""
    sqnr = activation_sqnr(problem, full_proto)
    ranked = []
    for cand in candidates(problem.prepared, problem.fp32, full_proto):
        errs = [sqnr[t] for t in cand.tensors if t in sqnr]
        qdq = min((e["qdq_err"] for e in errs), default=None)
        bulk = min((e["bulk_err"] for e in errs), default=None)
        xmodel = min((e["xmodel_err"] for e in errs if "xmodel_err" in e), default=None)
        score = None if qdq is None else min(qdq, bulk if bulk is not None else qdq)
        ranked.append((cand, {"qdq_sqnr_db": qdq, "bulk_sqnr_db": bulk, "fp32_vs_int8_sqnr_db": xmodel,
                              "rank_sqnr_db": score}))
    return sorted(ranked, key=lambda item: (item[1]["rank_sqnr_db"] is None, item[1]["rank_sqnr_db"] or 0.0))


def sensitivity(problem: Problem, top: int = TOP_CANDIDATES, full: Trial | None = None) -> dict:
    """Return the int8 sensitivity report: the full int8 file measured, every group ranked by SQNR, and for the
    ``top`` lowest the file with that group alone kept fp32 measured (top-1, flips vs fp32, McNemar vs full int8,
    the share of full int8's flips it removes), ordered by flips removed, then top-1 gained. ``full``: the full
    int8 file already measured. The Trials are under "_trials"."""
    full = full or measure(problem, problem.quantize(), ())
    ranked = rank(problem, full.proto)
    trials: dict[str, Trial] = {}
    rows = []
    for cand, sqnr in ranked[:top]:
        trial = measure(problem, problem.quantize(cand.nodes), (cand.tensor,), full)
        trials[cand.tensor] = trial
        removed = full.flips - trial.flips
        rows.append({**cand.to_dict(), **sqnr, **trial.to_dict(),
                     "gain_points": (trial.accuracy - full.accuracy) * 100,
                     "flips_removed": removed, "flips_share": removed / full.flips if full.flips else None})
    rows.sort(key=lambda r: (-r["flips_removed"], -r["gain_points"]))
    sqnr_images = min(bounded_images(SQNR_IMAGES, problem.x.shape[1:]), len(problem.x))
    return {"method": problem.method, "images": len(problem.labels), "sqnr_images": sqnr_images,
            "reference_accuracy": problem.reference_accuracy,
            "fp32_accuracy": float((problem.fp32_logits.argmax(1) == problem.labels).mean()),
            "full_int8": full.to_dict(), "ranked": [{**c.to_dict(), **s} for c, s in ranked],
            "measured": rows, "test": "McNemar exact, two-sided, kept vs full int8 on the same images",
            "_trials": trials, "_full": full, "_candidates": {c.tensor: c for c, _ in ranked}}


def search_keep_fp32(problem: Problem, report: dict, top: int = TOP_CANDIDATES, max_keep: int = MAX_KEEP) -> dict:
    """Return the greedy search for the smallest set of groups kept fp32 that passes the int8 gate: each round
    measures the ``top`` untried groups best by their single-group gain (SQNR order for the unmeasured) added to
    the set and keeps the one with the fewest images flipped against fp32 (then the best top-1); it stops when the
    gate passes, when no group improves flips or top-1, or at ``max_keep``.
    "passed" False: no set within reach passes (never recommended). Steps carry their Trials under "_trial"."""
    full: Trial = report["_full"]
    cands: dict[str, Candidate] = report["_candidates"]
    order = [r["tensor"] for r in report["measured"]] + [t for t in cands if t not in report["_trials"]]
    kept: list[str] = []
    current, steps = full, []
    while not current.gate["passed"] and len(kept) < max_keep:
        pool = [t for t in order if t not in kept][:top]
        if not pool:
            break
        tried = []
        for tensor in pool:
            names = (*kept, tensor)
            if len(names) == 1 and tensor in report["_trials"]:
                tried.append(report["_trials"][tensor])
                continue
            nodes = tuple(dict.fromkeys(n for t in names for n in cands[t].nodes))
            tried.append(measure(problem, problem.quantize(nodes), names, full))
        # fidelity to fp32 first: top-1 on a few hundred images rewards noise on a weak model, flips do not
        best = min(tried, key=lambda t: (t.flips, -t.accuracy))
        if best.flips >= current.flips and best.accuracy <= current.accuracy:
            break
        kept.append(best.kept[-1])
        current = best
        steps.append({"added": best.kept[-1], **best.to_dict(), "_trial": best})
    nodes = tuple(dict.fromkeys(n for t in kept for n in cands[t].nodes))
    return {"kept": [cands[t].to_dict() for t in kept], "nodes_to_exclude": list(nodes),
            "passed": bool(current.gate["passed"]), "steps": steps, "final": current.to_dict(), "_final": current,
            "max_keep": max_keep, "strategy": f"greedy over tensor groups by measured top-1 gain, {top} per round"}


def compare_methods(problem: Problem, used: Trial) -> list[dict]:
    """Return every calibration method's full int8 file measured on the held-out images, with McNemar's test
    against ``used`` (the method the file is made with)."""
    rows = []
    for method in CALIB_METHODS:
        try:
            trial = measure(problem, problem.quantize((), method), (), used)
        except ConvkitError as exc:  # one calibrator failing (memory, an op it cannot see) leaves the others
            rows.append({"method": method, "error": one_line(exc, 200)})
            continue
        rows.append({"method": method, "used": method == problem.method, **trial.to_dict()})
    return rows


def strip_private(doc):
    """Return ``doc`` without its "_"-prefixed keys (Trials, protos), recursively: the JSON form."""
    if isinstance(doc, dict):
        return {k: strip_private(v) for k, v in doc.items() if not str(k).startswith("_")}
    if isinstance(doc, list):
        return [strip_private(v) for v in doc]
    return doc


def limits_of(max_acc_drop: dict, max_disagreement: dict) -> dict:
    """Return the int8 gate's limits in the form ``variant_gate`` takes."""
    return {"max_drop_points": max_acc_drop["int8"], "max_disagreement_points": max_disagreement.get("int8")}


DEFAULT_LIMITS = limits_of(gates.MAX_ACC_DROP, gates.MAX_DISAGREEMENT)
