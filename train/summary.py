"""``summary.md``: one table per seed table, convkit's figures beside the study's own."""

from __future__ import annotations

from convkit.suite import TABLE_TITLES, Experiment


def _fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def summary_markdown(suite: str, results: list[tuple[Experiment, dict]], header: list[str]) -> str:
    """Return the summary table text; ``results`` pairs each experiment with its result dict (or {"error": msg})."""
    lines = [f"# convkit — suite `{suite}`", "", *header, ""]
    tables: dict[int, list[tuple[Experiment, dict]]] = {}
    for exp, res in results:
        tables.setdefault(exp.table, []).append((exp, res))
    for table, rows in sorted(tables.items()):
        lines += [f"## {TABLE_TITLES.get(table, f'Table {table}')}", ""]
        extra = _extra_columns(rows)
        cols = ["row", "experiment", "params", "test loss", "train loss", "test acc (study)", "train acc",
                "time s (study)", "compile s", *[title for title, _, _ in extra]]
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for exp, res in rows:
            seed = exp.seed
            if "error" in res:
                lines.append(f"| {exp.row} | {exp.name} | FAILED: {res['error']} |" + " |" * (len(cols) - 3))
                continue
            acc = _fmt(res.get("test_acc"), ".4f") + (f" ({seed.test_acc:.4f})" if seed and seed.test_acc else "")
            t = _fmt(res.get("train_time_s"), ".1f") + (f" ({seed.time_s:.0f})" if seed and seed.time_s else "")
            params = f"{res['parameters']:,}"
            if seed and seed.params_printed and seed.params_printed != res["parameters"]:
                params += f" (study printed {seed.params_printed:,})"
            cells = [str(exp.row), exp.name, params, _fmt(res.get("test_loss"), ".4f"),
                     _fmt(res.get("train_loss"), ".4f"), acc, _fmt(res.get("train_acc"), ".4f"), t,
                     _fmt(res.get("compile_time_s"), ".1f"), *[_fmt(res.get(key), spec) for _, key, spec in extra]]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


# Columns added by later stages (ONNX Runtime accuracy, latency): (title, result key, format).
EXTRA_COLUMNS = [
    ("ORT acc", "ort_test_acc", ".4f"),
    ("Δ acc ORT−PT", "ort_acc_delta", "+.4f"),
    ("ORT CPU b1 p50 ms", "ort_cpu_b1_p50_ms", ".3f"),
    ("ORT GPU b1 p50 ms", "ort_cuda_b1_p50_ms", ".3f"),
    ("max-batch img/s", "ort_max_batch_ips", ",.0f"),
]


def _extra_columns(rows: list[tuple[Experiment, dict]]) -> list[tuple[str, str, str]]:
    """Return the EXTRA_COLUMNS that some row of this table has a value for."""
    return [col for col in EXTRA_COLUMNS if any(col[1] in res for _, res in rows)]
