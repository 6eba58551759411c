"""Numerical parity between PyTorch and ONNX Runtime on the same real test images, and the gates on it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import torch

from convkit import gates
from convkit.devices import exact_fp32
from convkit.export.onnx_export import INPUT_NAME, MAX_BATCH, OUTPUT_NAME

FP32_BATCH_SIZES = (1, 2, 7, MAX_BATCH)  # the gate runs each of these batch sizes on the exported file
VARIANT_BATCH_SIZES = (7, MAX_BATCH)
BATCH1_IMAGES = 64  # batch size 1 runs on the first 64 images only (one session.run per image is slow)


def torch_logits(model, x, batch_size: int = MAX_BATCH, device: str = "cpu") -> np.ndarray:
    """Return the eager model's fp32 logits (TF32 off) for ``x`` [N, C, H, W] on ``device``, in chunks of
    ``batch_size``; the model is moved back to the CPU afterwards."""
    dev = torch.device(device)
    model.to(dev).eval()
    try:
        with torch.inference_mode(), exact_fp32():
            out = [model(x[i:i + batch_size].to(dev)).float().cpu() for i in range(0, len(x), batch_size)]
    finally:
        model.to("cpu")
    return torch.cat(out).numpy()


def ort_session(model_bytes: bytes):
    """Return an ONNX Runtime CPU InferenceSession for a serialized model."""

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def ort_logits(session, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Return the session's logits for ``x`` run in chunks of exactly ``batch_size`` (the last may be smaller)."""
    out = [session.run([OUTPUT_NAME], {INPUT_NAME: x[i:i + batch_size]})[0] for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.float32)


@dataclass
class Compared:
    """Differences between ONNX logits and the PyTorch reference on ``images`` images."""

    images: int
    max_abs_diff: float
    max_rel_diff: float
    argmax_agreement: float  # share of images with PyTorch's top-1 class, ties not counted as disagreements
    accuracy: float
    ties: int = 0  # images whose top-1 class differs only where PyTorch's top-two logits are within gates.TIE_GAP

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def tie_mask(ref: np.ndarray, gap: float = gates.TIE_GAP) -> np.ndarray:
    """Return a bool per row of ``ref`` logits [N, classes]: True where the top two are less than ``gap`` apart."""
    if ref.shape[1] < 2:
        return np.zeros(len(ref), dtype=bool)
    top2 = np.sort(ref.astype(np.float64), axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) < gap


def compare(out: np.ndarray, ref: np.ndarray, labels: np.ndarray) -> Compared:
    """Compare ``out`` with ``ref`` logits [N, classes]; rel diff is |Δ| over the image's largest |ref logit|.

    An image whose top-1 class differs where PyTorch's own top two logits are within gates.TIE_GAP is a tie
    (either answer is PyTorch's, up to rounding): counted in ``ties``, not as a disagreement.
    """
    diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
    scale = np.maximum(np.abs(ref).max(axis=1, keepdims=True), 1e-6)
    flips = out.argmax(1) != ref.argmax(1)
    ties = flips & tie_mask(ref)
    return Compared(
        images=int(len(out)),
        max_abs_diff=float(diff.max()) if diff.size else 0.0,
        max_rel_diff=float((diff / scale).max()) if diff.size else 0.0,
        argmax_agreement=float(1.0 - (flips & ~ties).mean()) if len(out) else 1.0,
        accuracy=float((out.argmax(1) == labels).mean()),
        ties=int(ties.sum()),
    )


def run_parity(model_bytes: bytes, x: np.ndarray, ref: np.ndarray, labels: np.ndarray,
               batch_sizes=FP32_BATCH_SIZES, reference_device: str = "cpu") -> dict:
    """Run the serialized model on ``x`` at each batch size and compare with ``ref``; returns the report dict.

    The report has per-batch-size figures under "batches" and the worst of them at the top level
    (max_abs_diff, max_rel_diff, argmax_agreement) plus "accuracy" at the largest batch size.
    """
    session = ort_session(model_bytes)
    batches = {}
    for bs in batch_sizes:
        n = min(BATCH1_IMAGES, len(x)) if bs == 1 else len(x)
        batches[str(bs)] = compare(ort_logits(session, x[:n], bs), ref[:n], labels[:n]).to_dict()
    worst = list(batches.values())
    return {
        "reference": f"PyTorch eager fp32 (TF32 off) on {reference_device}, batches of {MAX_BATCH}",
        "batch_sizes": list(batch_sizes),
        "batch1_images": min(BATCH1_IMAGES, len(x)) if 1 in batch_sizes else None,
        "images": int(len(x)),
        "max_abs_diff": max(b["max_abs_diff"] for b in worst),
        "max_rel_diff": max(b["max_rel_diff"] for b in worst),
        "argmax_agreement": min(b["argmax_agreement"] for b in worst),
        "ties": max(b["ties"] for b in worst),
        "tie_gap": gates.TIE_GAP,
        "accuracy": batches[str(max(batch_sizes))]["accuracy"],
        "batches": batches,
    }


def fp32_gate(report: dict, atol: float, max_disagreement_points: float) -> dict:
    """Return {"pass": bool, "atol", "max_disagreement_points", "disagreement_points", "reasons"} for the fp32 file."""
    reasons = []
    if not report["max_abs_diff"] <= atol:  # also fails on NaN
        reasons.append(f"max |logit diff| {report['max_abs_diff']:.3g} > atol {atol:g}")
    verdict = gates.disagreement_verdict("fp32", report["argmax_agreement"], {"fp32": max_disagreement_points})
    if not verdict["passed"]:
        reasons.append(f"{verdict['disagreement_points']:.2f} points of images change their top-1 class "
                       f"(max {max_disagreement_points:g})")
    return {"pass": not reasons, "atol": atol, **verdict, "ties": report.get("ties", 0), "reasons": reasons}


def variant_gate(precision: str, report: dict, reference_accuracy: float, max_drop_points: float,
                 max_disagreement_points: float | None) -> dict:
    """Gate for an fp16/int8 file against PyTorch on the parity images: accuracy drop ≤ ``max_drop_points`` and
    top-1 disagreement ≤ ``max_disagreement_points`` (None: reported, not gated).

    Returns {"pass", "acc_delta" (variant − PyTorch, a fraction), the verdicts in points, "reasons"}.
    """
    drop = gates.drop_verdict(precision, report["accuracy"], reference_accuracy, {precision: max_drop_points})
    agree = gates.disagreement_verdict(precision, report["argmax_agreement"], {precision: max_disagreement_points})
    reasons = []
    if not agree["passed"]:
        reasons.append(f"{precision}: {agree['disagreement_points']:.2f} points of images change their top-1 class "
                       f"(max {max_disagreement_points:g})")
    if not drop["passed"]:
        reasons.append(f"{precision} accuracy drop {drop['drop_points']:.2f} points > {max_drop_points:g}")
    return {"pass": not reasons, "acc_delta": report["accuracy"] - reference_accuracy, **drop, **agree,
            "reasons": reasons}
