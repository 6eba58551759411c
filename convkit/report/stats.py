"""The numbers the report states, computed from one RunData, and their formatting ("not measured" when absent)."""

from __future__ import annotations

from convkit.artifacts import METRICS
from convkit.gates import PRECISIONS
from convkit.report.collect import EVAL_JSON, NOT_MEASURED, RunData, dig, number
from convkit.uncertainty import Interval, as_interval, format_paired, pair_level, ratio_interval, spread


def run_stats(run: RunData) -> dict:
    """Return the report's figures of merit for ``run``; a value is None where it was not measured.

    Keys: acc, train_acc, gap_pts (train − test, points), params, epochs, train_time_s, provider, ort_acc,
    ort_delta_pts (ORT fp32 − PyTorch on the same images), int8_acc, int8_cost_pts (ORT fp32 − int8),
    fp16_acc, lat_fp32_ms / lat_fp16_ms / lat_int8_ms (batch 1, p50), int8_speedup, ece; with their uncertainty:
    acc_ci (95 % Wilson, metrics.json), ort_delta_test / fp16_test / int8_test (McNemar, convkit.uncertainty's
    PairedTest as JSON: ORT vs PyTorch, fp16 / int8 vs fp32), gate (the fp32 gate's verdict, None when not judged).
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
        "acc_ci": dig(run.metrics, "test_acc_ci"), "ort_delta_test": dig(fp32, "vs_pytorch", "paired_test"),
        "gate": dig(fp32, "gate", "passed"),
    }
    for prec in PRECISIONS:
        entry = run.eval_entry(prec, provider) if provider else None
        if prec != "fp32":
            s[f"{prec}_acc"] = number(dig(entry, "accuracy"))
            s[f"{prec}_test"] = dig(entry, "vs_fp32")
            s[f"{prec}_acc_ci"] = dig(entry, "accuracy_ci")
        s[f"lat_{prec}_ms"] = run.latency_b1(prec, provider) if provider else None
    s["int8_cost_pts"] = (ort_acc - s["int8_acc"]) * 100 if ort_acc is not None and s["int8_acc"] is not None else None
    s["int8_speedup"] = (s["lat_fp32_ms"] / s["lat_int8_ms"]
                         if s["lat_fp32_ms"] and s["lat_int8_ms"] else None)
    s["ort_acc_ci"] = dig(fp32, "accuracy_ci")
    speedup = ratio_interval(*(_pair_interval(run.latency_b1_row(p, provider)) if provider else None
                               for p in ("fp32", "int8")))
    s["int8_speedup_ci"] = speedup.to_list() if speedup else None
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


def _pair_interval(row: dict | None) -> Interval | None:
    return as_interval(dig(row, "p50_ci_pair_ms"), pair_level())


def speedup_cell(s: dict) -> str:
    """Return the int8 batch-1 speed-up with its interval; "(tie)" when the interval holds 1."""
    ci = s.get("int8_speedup_ci")
    if s.get("int8_speedup") is None or as_interval(ci) is None:
        return fmt(s.get("int8_speedup"), ".2f", "×") + (" (no interval)" if s.get("int8_speedup") else "")
    verdict = "faster" if ci[0] > 1 else "slower" if ci[1] < 1 else "tie"
    return f"{s['int8_speedup']:.2f}× [{ci[0]:.2f}, {ci[1]:.2f}] ({verdict})"


def pool_stats(per_seed: list[dict]) -> dict:
    """Return one row's figures over several seeds: each number's mean, ``spread`` {key: Spread} (mean ± sd,
    min–max), ``seeds`` (how many), and ``acc_ci`` the union of the seeds' intervals (None if one lacks it)."""
    keys = {k for s in per_seed for k, v in s.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    spreads = {k: spread([s.get(k) for s in per_seed]) for k in keys}
    pooled = {**per_seed[0], **{k: v.mean for k, v in spreads.items() if v is not None}}
    cis = [as_interval(s.get("acc_ci")) for s in per_seed]
    pooled["acc_ci"] = [min(c.low for c in cis), max(c.high for c in cis)] if all(cis) else None
    for key in ("ort_delta_test", "fp16_test", "int8_test", "gate", "ort_acc_ci", "int8_speedup_ci", "fp16_acc_ci",
                "int8_acc_ci"):
        # paired tests and intervals belong to one seed each: over seeds the spread speaks
        pooled[key] = None
    return {**pooled, "spread": {k: v for k, v in spreads.items() if v is not None}, "seeds": len(per_seed)}


def acc_cell(s: dict, key: str = "acc") -> str:
    """Return an accuracy cell: "mean ± sd % (min–max, n seeds)" over seeds, else "83.49 % [82.75, 84.20]"."""
    pooled = (s.get("spread") or {}).get(key)
    if pooled is not None and pooled.n > 1:
        return (f"{pooled.mean * 100:.2f} ± {pooled.sd * 100:.2f} % ({pooled.low * 100:.2f}–{pooled.high * 100:.2f}, "
                f"{pooled.n} seeds)")
    ci = as_interval(s.get(f"{key}_ci"))
    if s.get(key) is None or ci is None:
        return pct(s.get(key))
    return f"{s[key] * 100:.2f} % [{ci.low * 100:.2f}, {ci.high * 100:.2f}]"


def paired_cell(test: dict | None, fallback_pts: float | None) -> str:
    """Return a paired delta in points with its interval and McNemar verdict, else the bare delta, else n/m."""
    if test:
        return format_paired(test)
    return pts(fallback_pts) + (" (no paired test)" if fallback_pts is not None else "")


def acc_interval(s: dict) -> Interval | None:
    """Return the row's accuracy interval as an Interval, None when absent."""
    return as_interval(s.get("acc_ci"))


def seeds_cell(s: dict, key: str, spec: str, scale: float = 1.0) -> str | None:
    """Return "mean ± sd (min–max, n seeds)" of ``key`` (times ``scale``) for a row over seeds, else None."""
    pooled = (s.get("spread") or {}).get(key)
    if pooled is None or pooled.n < 2:
        return None
    lo, hi = sorted((pooled.low * scale, pooled.high * scale))
    return (f"{pooled.mean * scale:{spec}} ± {pooled.sd * abs(scale):{spec.lstrip('+')}} "
            f"({lo:{spec}}–{hi:{spec}}, {pooled.n} seeds)")
