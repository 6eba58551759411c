"""The export step of ``train-all``: export each freshly trained run and report summary fields."""

from __future__ import annotations

from pathlib import Path
from typing import Callable


def summary_fields(report: dict) -> dict:
    """Return the flat summary fields (onnx path, fp32 parity, variant accuracy deltas, gate) of an export report."""
    fp32 = report["precisions"]["fp32"]
    out = {
        "onnx": fp32["file"],
        "export_parity_max_abs": fp32["parity"]["max_abs_diff"],
        "export_agreement": fp32["parity"]["argmax_agreement"],
        "export_gate": report["gate"],
    }
    for precision in ("fp16", "int8"):
        entry = report["precisions"].get(precision)
        if entry and "parity" in entry:
            out[f"onnx_{precision}"] = entry["file"]
            out[f"{precision}_acc_delta"] = entry["gate"]["acc_delta"]
            out[f"{precision}_agreement"] = entry["parity"]["argmax_agreement"]
    return out


def export_stage(precisions=(), **export_kwargs) -> Callable[[object, Path, dict], dict]:
    """Return a train-all post stage ``(experiment, run_dir, metrics) -> dict`` of summary fields.

    The stage runs ``export_run(run_dir, precisions, **export_kwargs)``; a failed gate or bad input raises
    ConvkitError (train-all records the experiment as failed and continues).
    """
    precisions = tuple(precisions)

    def stage(exp, run_dir: Path, metrics: dict) -> dict:
        from convkit.export.pipeline import export_run

        return summary_fields(export_run(run_dir, precisions=precisions, **export_kwargs))

    return stage
