"""The report's deployment section of one evaluated folder — a suite run, a user model's folder (`export --model`)
or a foreign file's evaluation: accuracy with intervals, per-precision cost, the latency table, the deployment
recommendation and the latency-vs-batch figure, all read from its eval.json.

eval.json is read defensively (``dig``): a field an older or foreign file lacks becomes "not measured", never an
exception; numbers held back by the provenance check (a variant file changed since) are left out.
"""

from __future__ import annotations

from pathlib import Path

from convkit.report import figures as F
from convkit.report.collect import EVAL_JSON, NOT_MEASURED, RunData, dig, number
from convkit.uncertainty import Interval, as_interval, format_interval, format_paired, pair_level, ratio_interval


def _ci(value, ci, spec: str) -> str:
    v = number(value)
    return NOT_MEASURED if v is None else format_interval(v, as_interval(ci), spec)


def latency_rows(run: RunData) -> list[dict]:
    """Return eval.json's ONNX Runtime latency rows whose precision's numbers are usable (PyTorch rows left out)."""
    return [r for r in dig(run.eval, "latency") or [] if isinstance(r, dict) and number(r.get("p50_ms"))
            and isinstance(r.get("batch"), int) and r["batch"] > 0
            and not str(r.get("backend", "")).startswith("torch-") and run.usable(EVAL_JSON, r.get("precision"))]


def throughput(row: dict) -> tuple[float, Interval | None]:
    """Return a latency row's median throughput (images/s, batch ÷ p50) and its interval (from the p50's 97.5 %
    interval), the statistic the recommendation ranks on."""
    ci = as_interval(row.get("p50_ci_pair_ms"), pair_level())
    thr = row["batch"] * 1e3 / row["p50_ms"]
    if ci is None or ci.low <= 0:
        return thr, None
    return thr, Interval(row["batch"] * 1e3 / ci.high, row["batch"] * 1e3 / ci.low, ci.level)


def accuracy_table(run: RunData) -> tuple:
    """Return the table of every precision × provider: top-1 and top-5 with 95 % intervals, the paired differences
    to PyTorch and to fp32 (McNemar), the gate."""
    rows = []
    for e in run.eval_entries():
        gate = dig(e, "gate", "passed")
        rows.append([str(e.get("precision")), str(e.get("provider")),
                     "outputs degenerate" if e.get("degenerate") else _ci(e.get("accuracy"), e.get("accuracy_ci"),
                                                                          ".4f"),
                     _ci(e.get("top5_accuracy"), e.get("top5_accuracy_ci"), ".4f"),
                     _paired(dig(e, "vs_pytorch", "paired_test")), _paired(e.get("vs_fp32")),
                     {True: "passed", False: "**FAILED**"}.get(gate, NOT_MEASURED)])
    return ("table", ["precision", "provider", "top-1 [95 %]", "top-5 [95 %]", "− PyTorch (McNemar)",
                      "− fp32 (McNemar)", "gate"], rows)


def _paired(test) -> str:
    text = format_paired(test) if isinstance(test, dict) else "—"
    return NOT_MEASURED if text == "—" else text


def cost_table(run: RunData) -> tuple:
    """Return per precision × provider: file size, accuracy cost against fp32, batch-1 p50 and its speed against
    fp32's batch-1 p50 (ratio of the 97.5 % intervals; not formed from an UNSTABLE figure)."""
    rows_ = latency_rows(run)
    b1 = {(r.get("precision"), r.get("provider")): r for r in rows_ if r["batch"] == 1 and r.get("backend") == "ort"}
    out = []
    for e in run.eval_entries():
        prec, prov = e.get("precision"), e.get("provider")
        size = number(dig(run.eval, "variants", prec, "size_bytes"))
        row, base = b1.get((prec, prov)), b1.get(("fp32", prov))
        out.append([str(prec), str(prov), f"{size / 1e6:.2f} MB" if size is not None else NOT_MEASURED,
                    "—" if prec == "fp32" else _paired(e.get("vs_fp32")),
                    _ci(dig(row, "p50_ms"), dig(row, "p50_ci_ms"), ".3f") + (" ms" if row else "")
                    + (" UNSTABLE" if dig(row, "unstable") else ""),
                    "—" if prec == "fp32" else _speed(row, base)])
    return ("table", ["precision", "provider", "file size", "top-1 − fp32 (McNemar)", "batch-1 p50 [95 %]",
                      "fp32 p50 ÷ this p50 [interval]"], out)


def _speed(row: dict | None, base: dict | None) -> str:
    if row is None or base is None:
        return NOT_MEASURED
    if row.get("unstable") or base.get("unstable"):
        return "not formed (an UNSTABLE figure)"
    ratio = base["p50_ms"] / row["p50_ms"]
    ci = ratio_interval(as_interval(base.get("p50_ci_pair_ms"), pair_level()),
                        as_interval(row.get("p50_ci_pair_ms"), pair_level()))
    return f"{ratio:.2f}×" + (f" [{ci.low:.2f}, {ci.high:.2f}]" if ci else " (no interval)")


def latency_table(run: RunData) -> tuple:
    """Return every latency row: p50 with its interval, p90, p99 with its interval, median throughput with its
    interval, the number of timed calls and whether the figure is stable."""
    out = []
    for r in latency_rows(run):
        thr, ci = throughput(r)
        out.append([str(r.get("precision")), str(r.get("provider")), str(r.get("backend")), str(r["batch"]),
                    _ci(r["p50_ms"], r.get("p50_ci_ms"), ".3f"), _ci(r.get("p90_ms"), None, ".3f"),
                    _ci(r.get("p99_ms"), r.get("p99_ci_ms"), ".3f"), format_interval(thr, ci, ",.0f"),
                    str(r.get("n", "—")), f"UNSTABLE ({r['unstable']})" if r.get("unstable") else "stable"])
    return ("table", ["precision", "provider", "backend", "batch", "p50 ms [95 %]", "p90 ms", "p99 ms [95 %]",
                      "images/s, batch ÷ p50 [≥ 95 %]", "calls", "stability"], out)


def recommendation_blocks(run: RunData) -> list[tuple]:
    """Return the recommendation as eval.json holds it: the latency bound and its source, the statistic, the text,
    every configuration not chosen with why; "not measured" when eval.json has none."""
    rec = dig(run.eval, "recommendation")
    if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
        return [("p", f"Deployment recommendation: {NOT_MEASURED} (eval.json holds none: latency not measured, or "
                      "an evaluation older than the recommendation).")]
    bound = number(rec.get("latency_bound_ms"))
    blocks = [("p", f"Deployment recommendation — latency bound: "
                    f"{'p99 ≤ ' + format(bound, 'g') + ' ms' if bound is not None else NOT_MEASURED} "
                    f"({rec.get('latency_bound_source') or 'source not recorded'}); ranked on: "
                    f"{rec.get('statistic') or NOT_MEASURED}."), ("p", rec["text"])]
    lines = [f"not chosen: {w}" for w in rec.get("why_not") or [] if isinstance(w, str)]
    lines += [w for w in rec.get("not_ranked") or [] if isinstance(w, str)]
    if lines:
        blocks.append(("ul", lines))
    return blocks


def deployment_blocks(run: RunData, out: Path, rel) -> list[tuple]:
    """Return the deployment section of ``run``: accuracy, cost, latency tables, the figure (PNG under ``out``,
    linked with ``rel(path)``) and the recommendation; one "not measured" line when the folder has no eval.json."""
    if not isinstance(run.eval, dict):
        return [("p", f"Accuracy, latency and deployment: {NOT_MEASURED} (no {EVAL_JSON}).")]
    ds = dig(run.eval, "dataset") or {}
    n = ds.get("n") if isinstance(ds, dict) else None
    where = f"{ds.get('label') or ds.get('name') or 'unknown data'}" + (f", {n:,} images" if isinstance(n, int) else "")
    blocks: list[tuple] = [("p", f"ONNX Runtime accuracy ({where}; 95 % Wilson intervals, paired differences by "
                                 "McNemar's exact test):"), accuracy_table(run),
                           ("p", "Cost of each precision:"), cost_table(run)]
    rows = latency_rows(run)
    if rows:
        blocks += [("p", "Latency (p50 interval: order statistics of the timed calls; throughput: batch ÷ p50, "
                         "the statistic the recommendation ranks on):"), latency_table(run)]
        path = F.throughput_vs_batch(rows, f"{run.name}: throughput and latency per batch size",
                                     out / f"{run.path.name}-batches.png")
        if path:
            blocks.append(("img", rel(path), "Throughput and p50 per batch size (intervals; hollow = UNSTABLE)"))
    else:
        blocks.append(("p", f"Latency: {NOT_MEASURED} (evaluated with --no-latency, or no usable row)."))
    return blocks + recommendation_blocks(run)
