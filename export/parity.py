"""Numerical parity between PyTorch and ONNX Runtime on the same real test images, and the gates on it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convkit import gates
from convkit.export.onnx_export import INPUT_NAME, MAX_BATCH, OUTPUT_NAME
from convkit.providers import ProviderConfig, make_session
from convkit.reference import BATCH as REFERENCE_BATCH
from convkit.reference import tie_mask

FP32_BATCH_SIZES = (1, 2, 7, MAX_BATCH)  # the gate runs each of these batch sizes on the exported file
VARIANT_BATCH_SIZES = (7, MAX_BATCH)
BATCH1_IMAGES = 64  # batch size 1 runs on the first 64 images only (one session.run per image is slow)
# The parity images are held at once as float32 model input (and as uint8 beside it): at most this many bytes of
# float32, so a 3×4096×4096 input (201 MB an image) is gated on 5 images, not 1,000 (23.4 GiB before round four).
PARITY_FLOAT_BYTES = 1 << 30


def parity_image_cap(input_shape: tuple[int, ...], budget: int | None = None) -> int:
    """Return how many parity images of ``input_shape`` (C, H, W) fit ``budget`` bytes of float32 (default
    PARITY_FLOAT_BYTES), at least 1."""
    per_image = 4 * int(np.prod([int(v) for v in input_shape]))
    return max(1, (PARITY_FLOAT_BYTES if budget is None else budget) // max(per_image, 1))


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
    session = make_session(model_bytes, ProviderConfig("cpu"))
    batches = {}
    for bs in batch_sizes:
        n = min(BATCH1_IMAGES, len(x)) if bs == 1 else len(x)
        batches[str(bs)] = compare(ort_logits(session, x[:n], bs), ref[:n], labels[:n]).to_dict()
    worst = list(batches.values())
    return {
        "reference": f"PyTorch eager fp32 (TF32 off) on {reference_device}, batches of {REFERENCE_BATCH}",
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
    """Return the fp32 file's gate as written to export.json: gates.Verdict's dict (max |logit diff| ≤ ``atol``,
    top-1 disagreement ≤ ``max_disagreement_points``) plus the parity report's ``ties``."""
    limits = gates.Limits(max_disagreement_points=max_disagreement_points, atol=atol)
    verdict = gates.judge(limits, agreement=report["argmax_agreement"], max_abs_diff=report["max_abs_diff"])
    return {**verdict.to_dict(), "ties": report.get("ties", 0)}


def variant_gate(precision: str, report: dict, reference_accuracy: float, max_drop_points: float,
                 max_disagreement_points: float | None) -> dict:
    """Return an fp16/int8 file's gate against PyTorch on the parity images, as written to export.json:
    gates.Verdict's dict (accuracy drop ≤ ``max_drop_points``, top-1 disagreement ≤ ``max_disagreement_points``,
    None: reported, not gated) plus "acc_delta" (variant − PyTorch, a fraction)."""
    limits = gates.Limits(max_drop_points, max_disagreement_points)
    verdict = gates.judge(limits, accuracy=report["accuracy"], reference_accuracy=reference_accuracy,
                          agreement=report["argmax_agreement"])
    return {**verdict.to_dict(), "acc_delta": report["accuracy"] - reference_accuracy}
