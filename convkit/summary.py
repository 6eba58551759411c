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
    PLAN,
    SUMMARY_JSON,
    SUMMARY_MD,
    EvalNames,
    read_artifact,
    run_folders,
    write_artifact,
)
from convkit.atomic import write_text
from convkit.errors import ConvkitError
from convkit.provenance import check_run
from convkit.suite import TABLE_TITLES, Experiment, find_experiment, split_seeded
from convkit.text import md_code, md_inline, md_text
from convkit.uncertainty import Spread, as_interval, format_interval, spread, versus_point

# Stage files in the order their columns appear.
STAGE_FILES = ((METRICS, "metrics"), (EXPORT_JSON, "export"), (EvalNames(EVAL_PREFIX).json, "eval"))
# Columns whose cell also shows the study's figure: result key → SeedResult attribute and format.
STUDY_FIGURES = {"test_acc": ("test_acc", ".4f"), "train_time_s": ("time_s", ".0f")}
OTHER_TABLE = 99


def collect(suite_dir: Path) -> list[dict]:
    """Return one row per run folder: {"name", "experiment" (or None), "values", "columns", "failure", "meta",
    "flags" (column key → "stale"/"edited": values held back), "provenance" (one note per held-back file)}."""
    rows = []
    for run in run_folders(suite_dir, allow_empty=True):  # plan.json alone still has rows (planned_rows)
        docs = {kind: read_artifact(run / name, kind) for name, kind in STAGE_FILES}
        prov = check_run(run, docs["metrics"], docs["export"], docs["eval"])
        values, columns, flags = {}, [], {}
        for name, kind in STAGE_FILES:
            doc = docs[kind]
            if doc is None:
                continue
            stage_columns = [tuple(c) for c in doc.get("summary_columns") or []]
            columns += stage_columns
            if prov.usable(name):  # a number whose source changed or was edited is not convkit's number
                values.update(doc.get("summary") or {})
            else:
                flags.update({key: prov.status(name) for _, key, _ in stage_columns})
        meta = {k: (docs["metrics"] or {}).get(k) for k in ("dataset", "data_source", "config", "test_images")}
        rows.append({"name": run.name, "experiment": find_experiment(split_seeded(run.name)[0]), "values": values,
                     "columns": columns, "failure": read_artifact(run / FAILURE, "failure"), "meta": meta,
                     "flags": flags, "provenance": prov.lines()})
    return rows


def planned_rows(suite_dir: Path, rows: list[dict], outcomes: list[dict] | None) -> list[dict]:
    """Return rows for the planned experiments (plan.json, and this train-all's ``outcomes``) that have no run
    folder: failed before it existed (with the reason), or not run."""
    plan = read_artifact(Path(suite_dir) / PLAN, "plan") or {}
    failed = {o["experiment"]: o for o in outcomes or [] if o.get("failed")}
    names = list(dict.fromkeys([*(plan.get("experiments") or []), *(o["experiment"] for o in outcomes or [])]))
    have = {r["name"] for r in rows}
    out = []
    for name in (n for n in names if n not in have):
        o = failed.get(name)
        failure = {"stage": o["failed"], "error": o["error"]} if o else None
        out.append({"name": name, "experiment": find_experiment(split_seeded(name)[0]), "values": {}, "columns": [],
                    "failure": failure, "meta": {}, "flags": {}, "provenance": [], "not_run": o is None})
    return out


def record_plan(suite_dir: Path, suite: str, names: list[str]) -> None:
    """Add ``names`` to the suite folder's plan.json (its planned experiments, for the summary's "not run")."""
    path = Path(suite_dir) / PLAN
    old = (read_artifact(path, "plan") or {}).get("experiments") or []
    write_artifact(path, "plan", {"suite": suite, "experiments": list(dict.fromkeys([*old, *names]))})




def pool_seeds(rows: list[dict]) -> list[dict]:
    """Return ``rows`` with the finished runs of one experiment (several seeds, wherever each was trained) pooled
    into one row whose ``spreads`` hold each numeric column's Spread over the seeds; failed runs stay apart."""
    def poolable(row: dict) -> bool:  # a finished run with nothing held back
        return row["experiment"] is not None and not row["failure"] and not row.get("flags") and not row.get("not_run")

    groups: dict[str, list[dict]] = {}
    for row in filter(poolable, rows):
        groups.setdefault(row["experiment"].name, []).append(row)
    out = [r for r in rows if not poolable(r) or len(groups[r["experiment"].name]) == 1]
    for members in (g for g in groups.values() if len(g) > 1):
        seeds = [(m["meta"].get("config") or {}).get("seed") for m in members]
        keys = {k for m in members for k, v in m["values"].items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}
        spreads = {k: spread([m["values"].get(k) for m in members]) for k in keys}
        cis = [c for c in (as_interval(m["values"].get("test_acc_ci")) for m in members) if c is not None]
        name = f"{members[0]['experiment'].name} × {len(members)} seeds ({', '.join(map(str, seeds))})"
        pooled = {**members[0], "name": name,
                  "spreads": {k: v for k, v in spreads.items() if v is not None}, "runs": [m["name"] for m in members],
                  "columns": list(dict.fromkeys(c for m in members for c in m["columns"])),
                  # the study's single number is compared with the union of the seeds' 95 % intervals
                  "values": {**members[0]["values"], "test_acc_ci": [min(c.low for c in cis), max(c.high for c in cis)]
                             if len(cis) == len(members) else None}}
        out.append(pooled)
    return out


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
        if row["failure"] or row.get("not_run"):
            f = row["failure"] or {}
            text = (f"FAILED in {md_text(f.get('stage'))}: {md_text(f.get('error'))}" if row["failure"]
                    else "not run")
            lines.append(f"{head} {text} |" + " |" * max(len(columns) - 1, 0))
            continue
        cells = [_with_study(row, key, spec) for _, key, spec in columns]
        lines.append(head + " " + " | ".join(cells) + " |")
    return lines


def _title(column: tuple[str, str, str]) -> str:
    title, key, _ = column
    title = md_text(title, 60)  # a label from a run folder's file: foreign text
    return f"{title} (study)" if key in STUDY_FIGURES else title


def _value_cell(row: dict, key: str, spec: str) -> str:
    """Return a cell: mean ± sd (min–max) over seeds, else the value with its 95 % interval and test verdict."""
    try:
        return _uncertain_cell(row, key, spec)
    except (TypeError, ValueError):  # a format from a hand-edited file that does not fit: _cell says so
        return _cell(row["values"].get(key), spec)


def _uncertain_cell(row: dict, key: str, spec: str) -> str:
    pooled: Spread | None = (row.get("spreads") or {}).get(key)
    if pooled is not None and spec not in ("s", ","):
        return pooled.format(spec) if pooled.low != pooled.high else f"{pooled.mean:{spec}} (all {pooled.n} seeds)"
    values = row["values"]
    if values.get(key) is None or spec == "s":
        return _cell(values.get(key), spec)
    if isinstance(values[key], bool) or not isinstance(values[key], (int, float)):
        return _cell(values[key], spec)
    text = format_interval(values[key], as_interval(values.get(f"{key}_ci")), spec)
    if f"{key}_ci" in values and as_interval(values[f"{key}_ci"]) is None:
        text += " (no interval: too few measurements)"
    if isinstance(values.get(f"{key}_p"), (int, float)):
        text += f" (p = {values[f'{key}_p']:.2g}, {'real' if values[f'{key}_p'] < 0.05 else 'within noise'})"
    return text


def _with_study(row: dict, key: str, spec: str) -> str:
    if key in row["flags"]:
        return f"{row['flags'][key].upper()} (see below)"
    text = _value_cell(row, key, spec)
    seed = row["experiment"].seed if row["experiment"] else None
    if key in STUDY_FIGURES and seed is not None:
        attr, fmt = STUDY_FIGURES[key]
        if getattr(seed, attr):
            verdict = versus_point(as_interval(row["values"].get(f"{key}_ci")), getattr(seed, attr))
            text += f" ({getattr(seed, attr):{fmt}}{f': {verdict}' if verdict else ''})"
    if key == "parameters" and seed is not None and seed.params_printed and row["values"].get(key) is not None \
            and seed.params_printed != row["values"][key]:
        text += f" (study printed {seed.params_printed:,})"
    return text


def header_lines(rows: list[dict]) -> list[str]:
    """Return the notes under the title: where each dataset came from, whether it was the embedded sample."""
    lines = ["Study's values in parentheses (its GPU, no seeds), with convkit's figure above, below or within noise",
             "of it (the study's value outside or inside convkit's 95 % Wilson interval; over several seeds, the union",
             "of their intervals). `value [low, high]`: 95 % interval; `mean ± sd (min–max, n seeds)`: a row trained",
             "with several seeds. `time` = train + per-epoch test wall clock; `compile` = torch.compile warm-up,",
             "measured apart. Every accuracy (`test acc`: PyTorch, `ORT acc`: ONNX Runtime) is on the test split of",
             "the run's own data below; evaluations on other data stay in `<run>/eval/<data-key>/` and are not shown",
             "here."]
    sources = sorted({(r["meta"]["dataset"], r["meta"]["data_source"], r["meta"].get("test_images") or 0)
                      for r in rows if r["meta"].get("data_source")})
    for dataset, source, n_test in sources:
        jpeg = dataset == "cifar10" and ("jpeg" in source.lower() or "jpg" in source.lower())
        split = f" (test split: {n_test:,} images)" if n_test else ""
        lines.append(f"Data: {md_text(dataset)} from {md_code(source)}{split}" + (
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


def write_summary(suite_dir: Path, notes: list[str] | None = None, outcomes: list[dict] | None = None) -> dict:
    """Rebuild ``summary.md`` and ``summary.json`` of ``suite_dir`` from its run folders and plan.json (plus a
    train-all's ``outcomes``: run_experiment results); returns {"summary": md path, "json": json path, "results":
    {run: values or {"error"}}, "failed": [run names], "status": {experiment: done / failed / not run}}.

    Runs of one experiment with several seeds (``<experiment>-seed<N>``, however and wherever each was trained)
    make one row of mean ± sd (min–max); summary.json's ``seeds`` holds those spreads per experiment.
    """
    suite_dir = Path(suite_dir)
    runs = collect(suite_dir)  # ConvkitError (exit 2) when suite_dir is not a folder (convkit.artifacts.run_folders)
    runs += planned_rows(suite_dir, runs, outcomes)
    if not runs:
        raise ConvkitError(f"no run folders under {suite_dir}; pass a folder made by `convkit train-all`")
    rows = pool_seeds(runs)
    lines = [f"# convkit — suite {md_code(suite_dir.name)}", "", *(notes or []), *header_lines(rows), ""]
    tables: dict[int, list[dict]] = {}
    for row in rows:
        tables.setdefault(row["experiment"].table if row["experiment"] else OTHER_TABLE, []).append(row)
    for table, members in sorted(tables.items()):
        members.sort(key=lambda r: (r["experiment"].row if r["experiment"] else 0, r["name"]))
        lines += [f"## {TABLE_TITLES.get(table, 'Other runs')}", "", *_table_lines(members), ""]
    lines += provenance_lines(runs)
    results = {r["name"]: ({"error": r["failure"].get("error"), "stage": r["failure"].get("stage")}
                           if r["failure"] else r["values"]) for r in runs if not r.get("not_run")}
    status = {r["name"]: "failed" if r["failure"] else "not run" if r.get("not_run") else "done" for r in runs}
    failed = [n for n, s in status.items() if s == "failed"]
    held_back = {r["name"]: r["provenance"] for r in runs if r["provenance"]}
    seeds = {r["experiment"].name: {"runs": r["runs"], **{k: v.to_dict() for k, v in sorted(r["spreads"].items())}}
             for r in rows if r.get("spreads")}
    md = write_text(suite_dir / SUMMARY_MD, "\n".join(lines))
    js = write_artifact(suite_dir / SUMMARY_JSON, "summary", {
        "suite": suite_dir.name, "failed": failed, "not_run": [n for n, s in status.items() if s == "not run"],
        "status": status, "results": results, "held_back": held_back, "seeds": seeds})
    return {"summary": str(md), "json": str(js), "results": results, "failed": failed, "status": status}


def provenance_lines(rows: list[dict]) -> list[str]:
    """Return the section listing the numbers held back because their source changed or they were edited."""
    held = [(r["name"], line) for r in rows for line in r["provenance"]]
    if not held:
        return []
    return ["## Held back", "", ("These files' numbers are not shown above: the file they were derived from "
                                 "changed, is gone, or their figures differ from what it records."), "",
            *(f"- {md_text(name)}: {md_inline(line)}" for name, line in held), ""]
