"""``summary.md`` / ``summary.json`` of a suite folder, rebuilt from the run folders on disk alone.

Each stage declares its own columns in the file it writes (``summary_columns``: title, key, format, and the
values under ``summary``): metrics.json for training, export.json for export, eval.json for evaluation. This
module renders whatever the stages declared, one table per seed table, with the study's values beside
convkit's where the suite has them. So a suite trained in pieces (other machines, ``--only``, a resumed run)
gets one summary, and a stage's new column needs no change here.
"""

from __future__ import annotations

from pathlib import Path

from convkit.artifacts import (
    EVAL_PREFIX,
    EXPORT_JSON,
    FAILURE,
    METRICS,
    SUMMARY_JSON,
    SUMMARY_MD,
    EvalNames,
    find_run_folders,
    read_artifact,
    write_artifact,
)
from convkit.atomic import write_text
from convkit.errors import ConvkitError
from convkit.suite import TABLE_TITLES, Experiment, find_experiment
from convkit.text import md_code, md_text

# Stage files in the order their columns appear.
STAGE_FILES = ((METRICS, "metrics"), (EXPORT_JSON, "export"), (EvalNames(EVAL_PREFIX).json, "eval"))
# Columns whose cell also shows the study's figure: result key → SeedResult attribute and format.
STUDY_FIGURES = {"test_acc": ("test_acc", ".4f"), "train_time_s": ("time_s", ".0f")}
OTHER_TABLE = 99


def collect(suite_dir: Path) -> list[dict]:
    """Return one row per run folder: {"name", "experiment" (or None), "values", "columns", "failure", "meta"}."""
    rows = []
    for run in find_run_folders(suite_dir):
        values, columns, meta = {}, [], {}
        for name, kind in STAGE_FILES:
            doc = read_artifact(run / name, kind)
            if doc is None:
                continue
            values.update(doc.get("summary") or {})
            columns += [tuple(c) for c in doc.get("summary_columns") or []]
            if kind == "metrics":
                meta = {k: doc.get(k) for k in ("dataset", "data_source", "config")}
        failure = read_artifact(run / FAILURE, "failure")
        rows.append({"name": run.name, "experiment": find_experiment(run.name), "values": values,
                     "columns": columns, "failure": failure, "meta": meta})
    return rows


def _cell(value, spec: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, str) and spec == "s":
        return md_text(value, 40)
    try:  # a value or format from a hand-edited file may not fit: say so rather than stop the summary
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(value)
        return format(value, spec)
    except (TypeError, ValueError):
        return f"unreadable ({md_text(value, 40)})"


def _table_lines(rows: list[dict]) -> list[str]:
    columns: list[tuple[str, str, str]] = []
    for row in rows:
        columns += [c for c in row["columns"] if c not in columns]
    lines = ["| row | experiment | " + " | ".join(_title(c) for c in columns) + " |",
             "|" + "---|" * (len(columns) + 2)]
    for row in rows:
        exp: Experiment | None = row["experiment"]
        head = f"| {exp.row if exp else ''} | {md_text(row['name'])} |"
        if row["failure"]:
            f = row["failure"]
            lines.append(f"{head} FAILED in {md_text(f.get('stage'))}: {md_text(f.get('error'))} |"
                         + " |" * max(len(columns) - 1, 0))
            continue
        cells = [_with_study(row, key, spec) for _, key, spec in columns]
        lines.append(head + " " + " | ".join(cells) + " |")
    return lines


def _title(column: tuple[str, str, str]) -> str:
    title, key, _ = column
    return f"{title} (study)" if key in STUDY_FIGURES else title


def _with_study(row: dict, key: str, spec: str) -> str:
    text = _cell(row["values"].get(key), spec)
    seed = row["experiment"].seed if row["experiment"] else None
    if key in STUDY_FIGURES and seed is not None:
        attr, fmt = STUDY_FIGURES[key]
        if getattr(seed, attr):
            text += f" ({getattr(seed, attr):{fmt}})"
    if key == "parameters" and seed is not None and seed.params_printed and row["values"].get(key) is not None \
            and seed.params_printed != row["values"][key]:
        text += f" (study printed {seed.params_printed:,})"
    return text


def header_lines(rows: list[dict]) -> list[str]:
    """Return the notes under the title: where each dataset came from, whether it was the embedded sample."""
    lines = ["Study's values in parentheses (its GPU, no seeds). `time` = train + per-epoch test wall clock;",
             "`compile` = torch.compile warm-up, measured apart."]
    sources = sorted({(r["meta"]["dataset"], r["meta"]["data_source"]) for r in rows if r["meta"].get("data_source")})
    for dataset, source in sources:
        jpeg = dataset == "cifar10" and ("jpeg" in source.lower() or "jpg" in source.lower())
        lines.append(f"Data: {md_text(dataset)} from {md_code(source)}" + (
            " — **CIFAR-10 (JPEG copy)**: JPEG re-encoded images, accuracy within about a point of the original's."
            if jpeg else "."))
    capped = sorted({(r["name"], (r["meta"].get("config") or {}).get("max_images")) for r in rows
                     if (r["meta"].get("config") or {}).get("max_images")})
    if capped:
        lines.append("**Fewer images** (`--max-images`, for a quick look): " + ", ".join(
            f"{md_text(name)} trained and tested on at most {n:,} images per split" for name, n in capped) + ".")
    if any((r["meta"].get("config") or {}).get("sample") for r in rows):
        lines.append("**Embedded sample** (1,000 train / 500 test images per dataset): accuracies are not "
                     "comparable to the study's.")
    return lines


def write_summary(suite_dir: Path, notes: list[str] | None = None) -> dict:
    """Rebuild ``summary.md`` and ``summary.json`` of ``suite_dir`` from its run folders; returns
    {"summary": md path, "json": json path, "results": {run: values or {"error"}}, "failed": [run names]}."""
    suite_dir = Path(suite_dir)
    if not suite_dir.is_dir():
        raise ConvkitError(f"suite directory {suite_dir} not found; pass e.g. runs/seed")
    rows = collect(suite_dir)
    if not rows:
        raise ConvkitError(f"no run folders under {suite_dir}; pass a folder made by `convkit train-all`")
    lines = [f"# convkit — suite {md_code(suite_dir.name)}", "", *(notes or []), *header_lines(rows), ""]
    tables: dict[int, list[dict]] = {}
    for row in rows:
        tables.setdefault(row["experiment"].table if row["experiment"] else OTHER_TABLE, []).append(row)
    for table, members in sorted(tables.items()):
        members.sort(key=lambda r: (r["experiment"].row if r["experiment"] else 0, r["name"]))
        lines += [f"## {TABLE_TITLES.get(table, 'Other runs')}", "", *_table_lines(members), ""]
    results = {r["name"]: ({"error": r["failure"].get("error"), "stage": r["failure"].get("stage")}
                           if r["failure"] else r["values"]) for r in rows}
    failed = [r["name"] for r in rows if r["failure"]]
    md = write_text(suite_dir / SUMMARY_MD, "\n".join(lines))
    js = write_artifact(suite_dir / SUMMARY_JSON, "summary", {"suite": suite_dir.name, "failed": failed,
                                                              "results": results})
    return {"summary": str(md), "json": str(js), "results": results, "failed": failed}
