"""Read one run folder into a RunData, tolerating every missing or damaged file (it becomes "not measured").

All file names come from convkit.artifacts; keys inside eval.json / export.json are read defensively because
their layout may change between convkit versions.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from convkit import artifacts as A
from convkit.errors import ConvkitError
from convkit.provenance import RunProvenance, check_run, keyed_evaluations
from convkit.suite import Experiment, all_experiments, split_seeded

NOT_MEASURED = "not measured"
EVAL_JSON = A.EvalNames(A.EVAL_PREFIX).json


def dig(doc, *keys, default=None):
    """Return doc[k1][k2]... or ``default`` when any level is missing or not a dict/list."""
    for k in keys:
        if isinstance(doc, dict) and k in doc:
            doc = doc[k]
        elif isinstance(doc, list) and isinstance(k, int) and -len(doc) <= k < len(doc):
            doc = doc[k]
        else:
            return default
    return doc


def number(v) -> float | None:
    """Return ``v`` as a finite float, else None (strings, NaN, missing)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


@dataclass
class RunData:
    """Everything the report reads from one run folder; None / empty where a file is absent or unreadable."""

    name: str
    path: Path
    experiment: Experiment | None
    config: dict
    model_name: str | None
    metrics: dict | None
    history: list[dict]
    grad_norms: list[dict]
    export: dict | None
    eval: dict | None
    problems: list[str] = field(default_factory=list)
    provenance: RunProvenance | None = None  # the chain check: numbers whose source changed are held back

    def usable(self, file: str, precision: str | None = None) -> bool:
        """Return True when ``file``'s numbers (for ``precision``) are backed by their source as it is now."""
        return self.provenance is None or self.provenance.usable(file, precision)

    def held_back(self, file: str, precision: str | None = None) -> str | None:
        """Return "stale" / "edited" when ``file``'s numbers (for ``precision``) are held back, else None."""
        return self.provenance.status(file, precision) if self.provenance else None

    @property
    def label(self) -> str:
        """Return the study's row title, or the run's name for a run outside the suites."""
        return self.experiment.title if self.experiment else self.name

    def eval_entries(self) -> list[dict]:
        """Return the ORT accuracy entries of eval.json (one per precision × provider), [] when not evaluated."""
        return [e for e in (dig(self.eval, "accuracy") or []) if isinstance(e, dict)
                and self.usable(EVAL_JSON, e.get("precision"))]

    def eval_entry(self, precision: str = "fp32", provider: str | None = None) -> dict | None:
        """Return the first accuracy entry for ``precision`` (and ``provider`` when given), else None."""
        for e in self.eval_entries():
            if e.get("precision") == precision and provider in (None, e.get("provider")):
                return e
        return None

    def test_acc(self) -> float | None:
        """Return the PyTorch test accuracy (metrics.json, else the last history row), None when unknown."""
        if not self.usable(A.METRICS):  # never the history's figure in place of an edited or stale one
            return None
        acc = number(dig(self.metrics, "test_acc"))
        return acc if acc is not None else number(dig(self.history, -1, "test_acc"))

    def train_acc(self) -> float | None:
        """Return the last epoch's training accuracy, None when unknown."""
        if not self.usable(A.METRICS):
            return None
        acc = number(dig(self.metrics, "train_acc"))
        return acc if acc is not None else number(dig(self.history, -1, "train_acc"))

    def parameters(self) -> int | None:
        """Return the trainable parameter count recorded by training, None when unknown."""
        p = number(dig(self.metrics, "parameters")) if self.usable(A.METRICS) else None
        return int(p) if p is not None else None

    def latency_b1(self, precision: str, provider: str) -> float | None:
        """Return the ORT batch-1 p50 latency (ms) for ``precision`` on ``provider``, None when not measured."""
        return number(dig(self.latency_b1_row(precision, provider), "p50_ms"))

    def latency_b1_row(self, precision: str, provider: str) -> dict | None:
        """Return eval.json's ORT batch-1 latency row for ``precision`` on ``provider``, None when not measured
        or not usable."""
        if not self.usable(EVAL_JSON, precision):
            return None
        for row in dig(self.eval, "latency") or []:
            if (isinstance(row, dict) and row.get("precision") == precision and row.get("provider") == provider
                    and row.get("backend", "ort") == "ort" and row.get("batch") == 1):
                return row
        return None


def read_csv_rows(path: Path) -> list[dict]:
    """Return the rows of a CSV file with numeric fields as floats; [] when the file is absent or unreadable."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    out = []
    for row in rows:
        out.append({k: (number(v) if number(v) is not None else v) for k, v in row.items() if k is not None})
    return out


def confusion_from_csv(path: Path) -> list[list[int]] | None:
    """Return the count matrix of an evaluation's confusion.csv (rows true, columns predicted), None if unusable."""
    rows = [r for r in read_csv_rows(path) if r.get("kind") == "count"]
    if not rows:
        return None
    cols = sorted((k for k in rows[0] if k.startswith("pred_")), key=lambda k: int(k.split("_")[1]))
    try:
        return [[int(r[c]) for c in cols] for r in sorted(rows, key=lambda r: int(r["true"]))]
    except (TypeError, ValueError, KeyError):
        return None


def _read(path: Path, kind: str, problems: list[str]) -> dict | None:
    try:
        return A.read_artifact(path, kind)
    except ConvkitError as exc:
        problems.append(exc.message)
        return None


def load_run(path: Path) -> RunData:
    """Return the RunData of run folder ``path``; unreadable files are recorded in ``problems``, never raised."""
    path = Path(path)
    problems: list[str] = []
    config_doc = _read(path / A.CONFIG, "config", problems) or {}
    config = dig(config_doc, "config") if isinstance(dig(config_doc, "config"), dict) else {}
    metrics = _read(path / A.METRICS, "metrics", problems)
    name = dig(config, "experiment") or dig(metrics, "experiment") or path.name
    if split_seeded(path.name)[1] is not None:  # one seed of several (train-all --seeds): its folder names it
        name = path.name
    experiment = next((e for e in all_experiments() if e.name == split_seeded(str(name))[0]), None)
    model_name = dig(config, "model") or dig(metrics, "model") or (experiment.model if experiment else None)
    export, evaluation = _read(path / A.EXPORT_JSON, "export", problems), _read(path / EVAL_JSON, "eval", problems)
    return RunData(
        name=str(name), path=path, experiment=experiment, config=config, model_name=model_name, metrics=metrics,
        history=read_csv_rows(path / A.HISTORY), grad_norms=read_csv_rows(path / A.GRAD_NORMS),
        export=export, eval=evaluation, problems=problems,
        provenance=check_run(path, metrics, export, evaluation),
    )


def other_evaluations(run: RunData) -> list[str]:
    """Return one line per evaluation of the run's model on other data (eval/<data-key>/): its fp32 accuracy and
    the data it was measured on, or why it is held back; unreadable ones are named."""
    lines = []
    for path in keyed_evaluations(run.path):
        where = path.parent.relative_to(run.path).as_posix()
        try:
            doc = A.read_artifact(path, "eval")
        except ConvkitError as exc:
            lines.append(f"`{where}/`: unreadable ({exc.message})")
            continue
        held = check_run(run.path, None, None, doc).lines()
        entry = next((e for e in dig(doc, "accuracy") or [] if dig(e, "precision") == "fp32"), None)
        acc, data = number(dig(entry, "accuracy")), dig(doc, "dataset", "source") or "unknown data"
        figure = f"ORT fp32 accuracy {acc * 100:.2f} %" if acc is not None and not held else (
            held[0] if held else f"accuracy {NOT_MEASURED}")
        lines.append(f"`{where}/`: {figure} on {data} ({dig(doc, 'dataset', 'n')} images)")
    return lines


def confusion_of(run: RunData) -> list[list[int]] | None:
    """Return the fp32 ORT confusion counts (eval.json, else confusion.csv), None when not evaluated."""
    if not run.usable(EVAL_JSON, "fp32"):  # confusion.csv was written with the stale evaluation
        return None
    entry = run.eval_entry("fp32") or (run.eval_entries() or [None])[0]
    cm = dig(entry, "confusion")
    if isinstance(cm, list) and cm and all(isinstance(r, list) for r in cm):
        return cm
    return confusion_from_csv(run.path / A.EvalNames(A.EVAL_PREFIX).confusion("", "csv"))
