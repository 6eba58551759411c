"""Numerical parity between PyTorch and ONNX Runtime on the same real test images, and the gates on it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convkit.export.onnx_export import INPUT_NAME, MAX_BATCH, OUTPUT_NAME

FP32_BATCH_SIZES = (1, 2, 7, MAX_BATCH)  # the gate runs each of these batch sizes on the exported file
VARIANT_BATCH_SIZES = (7, MAX_BATCH)
BATCH1_IMAGES = 64  # batch size 1 runs on the first 64 images only (one session.run per image is slow)


def torch_logits(model, x, batch_size: int = MAX_BATCH) -> np.ndarray:
    """Return the eager model's float32 logits for ``x`` [N, C, H, W], computed in chunks of ``batch_size``."""
    import torch

    model.eval()
    with torch.inference_mode():
        out = [model(x[i:i + batch_size]).float() for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy()


def ort_session(model_bytes: bytes):
    """Return an ONNX Runtime CPU InferenceSession for a serialized model."""
    import onnxruntime as ort

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
    argmax_agreement: float
    accuracy: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def compare(out: np.ndarray, ref: np.ndarray, labels: np.ndarray) -> Compared:
    """Compare ``out`` with ``ref`` logits [N, classes]; rel diff is |Δ| over the image's largest |ref logit|."""
    diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
    scale = np.maximum(np.abs(ref).max(axis=1, keepdims=True), 1e-6)
    return Compared(
        images=int(len(out)),
        max_abs_diff=float(diff.max()) if diff.size else 0.0,
        max_rel_diff=float((diff / scale).max()) if diff.size else 0.0,
        argmax_agreement=float((out.argmax(1) == ref.argmax(1)).mean()),
        accuracy=float((out.argmax(1) == labels).mean()),
    )


def run_parity(model_bytes: bytes, x: np.ndarray, ref: np.ndarray, labels: np.ndarray,
               batch_sizes=FP32_BATCH_SIZES) -> dict:
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
        "reference": f"PyTorch eager fp32 on CPU, batches of {MAX_BATCH}",
        "batch_sizes": list(batch_sizes),
        "batch1_images": min(BATCH1_IMAGES, len(x)) if 1 in batch_sizes else None,
        "images": int(len(x)),
        "max_abs_diff": max(b["max_abs_diff"] for b in worst),
        "max_rel_diff": max(b["max_rel_diff"] for b in worst),
        "argmax_agreement": min(b["argmax_agreement"] for b in worst),
        "accuracy": batches[str(max(batch_sizes))]["accuracy"],
        "batches": batches,
    }


def fp32_gate(report: dict, atol: float, min_agreement: float) -> dict:
    """Return {"pass": bool, "atol": ..., "min_agreement": ..., "reasons": [...]} for the fp32 file."""
    reasons = []
    if not report["max_abs_diff"] <= atol:  # also fails on NaN
        reasons.append(f"max |logit diff| {report['max_abs_diff']:.3g} > atol {atol:g}")
    if not report["argmax_agreement"] >= min_agreement:
        reasons.append(f"argmax agreement {report['argmax_agreement']:.4%} < {min_agreement:.4%}")
    return {"pass": not reasons, "atol": atol, "min_agreement": min_agreement, "reasons": reasons}


def variant_gate(precision: str, report: dict, fp32_accuracy: float, min_agreement: float,
                 max_acc_drop: float) -> dict:
    """Gate for an fp16/int8 file: agreement with PyTorch ≥ ``min_agreement`` and accuracy drop ≤ ``max_acc_drop``.

    Returns {"pass": bool, "min_agreement", "max_acc_drop", "acc_delta", "reasons"}; acc_delta = variant − fp32.
    """
    delta = report["accuracy"] - fp32_accuracy
    reasons = []
    if not report["argmax_agreement"] >= min_agreement:
        reasons.append(f"{precision} argmax agreement {report['argmax_agreement']:.2%} < {min_agreement:.2%}")
    if not -delta <= max_acc_drop + 1e-12:
        reasons.append(f"{precision} accuracy drop {-delta * 100:.2f} points > {max_acc_drop * 100:.2f}")
    return {"pass": not reasons, "min_agreement": min_agreement, "max_acc_drop": max_acc_drop,
            "acc_delta": delta, "reasons": reasons}
