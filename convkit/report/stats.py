"""The numbers the report states, computed from one RunData, and their formatting ("not measured" when absent)."""

from __future__ import annotations

from convkit.artifacts import METRICS
from convkit.gates import PRECISIONS
from convkit.report.collect import EVAL_JSON, NOT_MEASURED, RunData, dig, number


def run_stats(run: RunData) -> dict:
    """Return the report's figures of merit for ``run``; a value is None where it was not measured.

    Keys: acc, train_acc, gap_pts (train − test, points), params, epochs, train_time_s, provider, ort_acc,
    ort_delta_pts (ORT fp32 − PyTorch on the same images), int8_acc, int8_cost_pts (ORT fp32 − int8),
    fp16_acc, lat_fp32_ms / lat_fp16_ms / lat_int8_ms (batch 1, p50), int8_speedup, ece.
    """
    acc, train_acc = run.test_acc(), run.train_acc()
    metrics = run.metrics if run.usable(METRICS) else None
    fp32 = run.eval_entry("fp32")
    provider = dig(fp32, "provider")
    ort_acc = number(dig(fp32, "accuracy"))
    ref = number(dig(run.eval, "pytorch", "accuracy"))
    delta = number(dig(fp32, "vs_pytorch", "delta", "accuracy"))
    if delta is None and ort_acc is not None and ref is not None:
        delta = ort_acc - ref
    s = {
        "acc": acc, "train_acc": train_acc,
        "gap_pts": (train_acc - acc) * 100 if acc is not None and train_acc is not None else None,
        "params": run.parameters(),
        "epochs": number(dig(metrics, "epochs")) or (len(run.history) or None),
        "train_time_s": number(dig(metrics, "train_time_s")),
        "provider": provider, "ort_acc": ort_acc, "ort_delta_pts": delta * 100 if delta is not None else None,
        "ece": number(dig(fp32, "calibration", "ece")),
    }
    for prec in PRECISIONS:
        entry = run.eval_entry(prec, provider) if provider else None
        if prec != "fp32":
            s[f"{prec}_acc"] = number(dig(entry, "accuracy"))
        s[f"lat_{prec}_ms"] = run.latency_b1(prec, provider) if provider else None
    s["int8_cost_pts"] = (ort_acc - s["int8_acc"]) * 100 if ort_acc is not None and s["int8_acc"] is not None else None
    s["int8_speedup"] = (s["lat_fp32_ms"] / s["lat_int8_ms"]
                         if s["lat_fp32_ms"] and s["lat_int8_ms"] else None)
    s["held"] = held_back(run)
    return s


# The figures each file's numbers feed: held back (shown as STALE / EDITED) when that file is.
HELD_KEYS = {(METRICS, None): ("acc", "gap_pts", "train_time_s", "params"),
             (EVAL_JSON, "fp32"): ("ort_acc", "ort_delta_pts", "lat_fp32_ms", "ece", "fp16_acc", "int8_acc",
                                   "int8_cost_pts", "int8_speedup"),
             (EVAL_JSON, "fp16"): ("fp16_acc",),
             (EVAL_JSON, "int8"): ("int8_acc", "int8_cost_pts", "int8_speedup")}


def held_back(run: RunData) -> dict[str, str]:
    """Return {figure key: "stale" / "edited"} for the figures whose file is held back by the chain check."""
    out: dict[str, str] = {}
    for (file, precision), keys in HELD_KEYS.items():
        status = run.held_back(file, precision)
        if status:
            out.update({k: status for k in keys if k not in out})
    return out


def shown(s: dict, key: str, text: str) -> str:
    """Return ``text`` (the formatted figure ``key``), or "STALE" / "EDITED" when its source is held back."""
    return s["held"][key].upper() if key in s.get("held", {}) else text


def pct(v) -> str:
    """Return an accuracy fraction as "83.49 %", or "not measured"."""
    return f"{v * 100:.2f} %" if v is not None else NOT_MEASURED


def pts(v) -> str:
    """Return a signed difference in percentage points as "+1.23", or "not measured"."""
    return f"{round(v, 2) or 0.0:+.2f}" if v is not None else NOT_MEASURED  # "or 0.0": no "-0.00"


def fmt(v, spec: str = ",.0f", suffix: str = "") -> str:
    """Return ``v`` formatted with ``spec`` plus ``suffix``, or "not measured"."""
    return f"{v:{spec}}{suffix}" if v is not None else NOT_MEASURED
