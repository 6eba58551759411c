"""Provenance: which file each number of a run folder was derived from, and whether it still is that file.

Every derived artifact records the sha256 of its source (convkit.artifacts names the files):

    metrics.json  → checkpoint.pt   ``checkpoint_sha256``; its figures are also stored in the checkpoint itself
    export.json   → checkpoint.pt   ``checkpoint_sha256``
    eval.json     → model*.onnx     ``variants.<precision>.sha256`` (and the checkpoint of its PyTorch reference)

Readers (``convkit summarize``, ``convkit report``) call ``check_run`` and get, per file and precision, whether
its numbers can be used: a number whose source changed or is gone is *stale*, a metrics.json whose figures
differ from the ones the checkpoint records, or whose summary block, intervals or confusion matrix disagree with
its own per-precision records (convkit.consistency), is *edited*; a file that records no hash of its source is
*unverified* (a swapped file cannot be told from the original); none of them is shown as convkit's number, used in a
comparison or a "best row", and each comes with the command that refreshes it.

Evaluations are keyed by their data: the run's canonical eval.json is the one on the data the run was trained
and tested on (same checksum); any other data gets ``eval/<data-key>/`` beside it (``eval_dir``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from convkit import artifacts as A
from convkit import consistency, data_freshness
from convkit.errors import ConvkitError
from convkit.onnx_meta import file_sha256, read_metadata

# metrics.json figures that the checkpoint records too (its last history row, or its "final" entry).
VERIFIED_FROM_HISTORY = ("train_loss", "train_acc", "test_loss", "test_acc")
VERIFIED_FROM_FINAL = ("test_acc_fp32", "test_loss_fp32", "parameters")
STALE, EDITED, UNVERIFIED = "stale", "edited", "unverified"


# ---- evaluations keyed by their data -------------------------------------------------------------------------
def data_key(name: str, checksum: str) -> str:
    """Return the folder name of an evaluation on other data: the data's name (safe characters) + its checksum."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip(".-")[:40] or "data"
    return f"{slug}-{str(checksum)[:12]}"


def eval_dir(out_dir: Path, run_checkpoint_data: str | None, data_name: str, data_checksum: str) -> Path:
    """Return where an evaluation goes: ``out_dir`` itself when it is not a run folder or the data is the run's
    own (``run_checkpoint_data``: the checksum its checkpoint records), else ``out_dir/eval/<data-key>/``."""
    out_dir = Path(out_dir)
    if not A.is_run_dir(out_dir) or run_checkpoint_data == data_checksum:
        return out_dir
    return out_dir / A.EVAL_DIR / data_key(data_name, data_checksum)


def refuse_foreign_model(onnx_path: Path, out_dir: Path) -> None:
    """Raise ConvkitError (exit 2) when ``out_dir`` is a run folder and ``onnx_path`` was not exported from its
    checkpoint: another model's numbers would take the place of the run's."""
    out_dir = Path(out_dir)
    if not A.is_run_dir(out_dir) or A.run_dir_of(onnx_path) == out_dir.resolve():
        return
    try:
        recorded = read_metadata(onnx_path).get("checkpoint_sha256")
    except Exception:  # not an ONNX file: the evaluation will say so; it is not this run's model either way
        recorded = None
    if recorded != file_sha256(out_dir / A.CHECKPOINT):
        raise ConvkitError(f"--out {out_dir} is a run folder and {Path(onnx_path).name} was not exported from its "
                           f"{A.CHECKPOINT}; its evaluation would replace the run's: choose another --out")


def keyed_evaluations(run_dir: Path) -> list[Path]:
    """Return the eval.json files of ``run_dir``'s evaluations on other data (eval/<data-key>/eval.json), sorted."""
    return sorted(p for p in (Path(run_dir) / A.EVAL_DIR).glob(f"*/{A.EvalNames(A.EVAL_PREFIX).json}") if p.is_file())


def eval_record(model_files: dict[str, tuple[Path, str]], checkpoint_sha256: str | None, data_checksum: str,
                canonical: bool) -> dict:
    """Return eval.json's ``provenance``: each model file it measured (precision → (path, sha256)), the reference
    checkpoint's sha256, the data's checksum and whether it is the run's own data."""
    return {"derived_from": {p: {"file": Path(f).name, "sha256": sha} for p, (f, sha) in model_files.items()},
            "checkpoint_sha256": checkpoint_sha256, "data_checksum": data_checksum, "runs_own_data": canonical}


# ---- the checkpoint's own record ------------------------------------------------------------------------------
def checkpoint_record(path: Path) -> dict | None:
    """Return {"history": [...], "final": {...}} recorded in the checkpoint at ``path`` (memory-mapped: the weights
    are not read), None when it is absent or unreadable."""
    ckpt = _load(path, mmap=True)  # mmap needs torch's zip format; an older file is read whole
    if ckpt is None:
        ckpt = _load(path, mmap=False)
    if not isinstance(ckpt, dict):
        return None
    return {"history": ckpt.get("history") or [], "final": ckpt.get("final") or {}}


def _load(path: Path, mmap: bool):
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception:  # absent or damaged: every number derived from it is stale
        return None


def _same(a, b) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return a == b


def edited_fields(metrics: dict, record: dict) -> list[str]:
    """Return "key value (checkpoint: value)" for each metrics.json figure that differs from the checkpoint's."""
    last = record["history"][-1] if record["history"] else {}
    expected = {k: last[k] for k in VERIFIED_FROM_HISTORY if k in last}
    expected.update({k: record["final"][k] for k in VERIFIED_FROM_FINAL if k in record["final"]})
    if record["history"]:
        expected["epochs"] = len(record["history"])
        if all("epoch_time_s" in r for r in record["history"]):
            expected["train_time_s"] = sum(r["epoch_time_s"] for r in record["history"])
    return [f"{k} {metrics.get(k)!r} (checkpoint: {v!r})" for k, v in expected.items()
            if not _same(metrics.get(k), v)]


# ---- the chain check -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    """A file (and precision) whose numbers must not be used: why, and the command that refreshes them."""

    file: str
    precision: str | None
    status: str  # STALE or EDITED
    reason: str
    refresh: str

    def line(self) -> str:
        """Return the one-line note shown where the numbers would have been."""
        what = f"{self.file} ({self.precision})" if self.precision else self.file
        return f"{what} {self.status.upper()}: {self.reason}; refresh: `{self.refresh}`"


@dataclass
class RunProvenance:
    """The outcome of checking one run folder's chain: the findings, and whether a file's numbers are usable."""

    run_dir: Path
    findings: list[Finding] = field(default_factory=list)

    def status(self, file: str, precision: str | None = None) -> str | None:
        """Return STALE / EDITED for ``file`` (a precision of eval.json: its own or the whole file's), else None."""
        for f in self.findings:
            if f.file == file and f.precision in (None, precision):
                return f.status
        return None

    def usable(self, file: str, precision: str | None = None) -> bool:
        """Return True when ``file``'s numbers (for ``precision``) are backed by their source as it is now."""
        return self.status(file, precision) is None

    def lines(self) -> list[str]:
        """Return one note per finding."""
        return [f.line() for f in self.findings]


class _Checkpoint:
    """The run's checkpoint, hashed and read at most once per check."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / A.CHECKPOINT
        if not self.path.is_file() and (Path(run_dir) / A.MODEL_SOURCE).is_file():
            self.path = Path(run_dir) / A.MODEL_SOURCE  # a user model's folder: it stands for the checkpoint

    @cached_property
    def sha256(self) -> str | None:
        return file_sha256(self.path) if self.path.is_file() else None

    @cached_property
    def record(self) -> dict | None:
        return checkpoint_record(self.path) if self.path.name == A.CHECKPOINT and self.path.is_file() else None


def check_run(run_dir: Path, metrics: dict | None, export: dict | None, evaluation: dict | None) -> RunProvenance:
    """Return the RunProvenance of ``run_dir``: each of metrics.json, export.json and eval.json (documents as
    read, None when absent) checked against the file it was derived from as it is now."""
    run_dir = Path(run_dir)
    out = RunProvenance(run_dir)
    ckpt = _Checkpoint(run_dir)
    if metrics is not None:
        out.findings += _check_metrics(run_dir, metrics, ckpt)
    if export is not None:
        refresh = f"convkit export {run_dir}"
        out.findings += (_check_against_checkpoint(run_dir, A.EXPORT_JSON, export.get("checkpoint_sha256"), ckpt,
                                                   refresh, required=True)
                         or _inconsistent(A.EXPORT_JSON, consistency.export_problems(export), refresh))
    if evaluation is not None:
        out.findings += _check_eval(run_dir, evaluation, ckpt)
    return out


def _check_metrics(run_dir: Path, metrics: dict, ckpt: _Checkpoint) -> list[Finding]:
    refresh = f"convkit train {metrics.get('experiment') or run_dir.name} --resume"
    stale = _check_against_checkpoint(run_dir, A.METRICS, metrics.get("checkpoint_sha256"), ckpt, refresh,
                                      required=True)
    if stale:
        return stale
    if ckpt.record is None:
        return [Finding(A.METRICS, None, STALE, f"{A.CHECKPOINT} is gone or unreadable", refresh)]
    edited = edited_fields(metrics, ckpt.record)
    if edited:
        return [Finding(A.METRICS, None, EDITED, "its figures differ from the ones the checkpoint records: "
                        + ", ".join(edited[:3]), refresh)]
    return _inconsistent(A.METRICS, consistency.metrics_problems(metrics), refresh)


def _inconsistent(name: str, problems: list[str], refresh: str) -> list[Finding]:
    """Return an EDITED finding when ``name``'s figures disagree with its own records (convkit.consistency)."""
    if not problems:
        return []
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return [Finding(name, None, EDITED, "its figures disagree with its own records: " + "; ".join(problems[:3])
                    + more, refresh)]


def _check_against_checkpoint(run_dir: Path, name: str, recorded: str | None, ckpt: _Checkpoint,
                              refresh: str, required: bool = False) -> list[Finding]:
    """Return a STALE finding when the checkpoint is gone or differs from ``recorded``; UNVERIFIED when
    ``required`` and nothing is recorded (a hash deleted from the file: its source cannot be checked)."""
    if ckpt.sha256 is None:
        return [Finding(name, None, STALE, f"{A.CHECKPOINT} it was derived from is gone", refresh)]
    if required and not isinstance(recorded, str):
        return [Finding(name, None, UNVERIFIED, f"it records no sha256 of the {ckpt.path.name} it was derived "
                        "from, so it cannot be checked against it", refresh)]
    if recorded is not None and recorded != ckpt.sha256:
        return [Finding(name, None, STALE, f"{A.CHECKPOINT} changed since it was written (sha256 "
                        f"{str(recorded)[:12]}…, now {ckpt.sha256[:12]}…)", refresh)]
    return []


def _check_eval(run_dir: Path, evaluation: dict, ckpt: _Checkpoint) -> list[Finding]:
    refresh = f"convkit evaluate {run_dir}"
    recorded_ckpt = (evaluation.get("provenance") or {}).get("checkpoint_sha256")
    found = _check_against_checkpoint(run_dir, A.EvalNames(A.EVAL_PREFIX).json, recorded_ckpt, ckpt, refresh)
    if found:
        return found
    variants = evaluation.get("variants") if isinstance(evaluation.get("variants"), dict) else {}
    if not variants:
        return [Finding(A.EvalNames(A.EVAL_PREFIX).json, None, UNVERIFIED, "it names no model file it measured",
                        refresh)]
    out = []
    for precision, v in variants.items():
        v = v if isinstance(v, dict) else {}
        name = Path(str(v.get("path") or A.VARIANT_FILES.get(precision, ""))).name
        path, recorded, status = run_dir / name, v.get("sha256"), STALE
        if not path.is_file():
            why = f"{name} it measured is gone (re-exported without {precision}?)"
        elif not isinstance(recorded, str):  # a deleted hash: the file there may not be the one measured
            why, status = f"it records no sha256 of the {name} it measured, so it cannot be checked against it", \
                UNVERIFIED
        elif file_sha256(path) != recorded:
            why = f"{name} changed since it was evaluated"
        else:
            continue
        whole = precision == "fp32"  # the fp32 file is the eval's primary: every summary number comes from it
        out.append(Finding(A.EvalNames(A.EVAL_PREFIX).json, None if whole else precision, status, why, refresh))
    if not any(f.precision is None for f in out):
        out += _inconsistent(A.EvalNames(A.EVAL_PREFIX).json, consistency.eval_problems(evaluation), refresh)
    if not any(f.precision is None for f in out):
        changed = data_freshness.changed_data(evaluation)
        if changed:
            where = data_freshness.folder_of(evaluation)
            out.append(Finding(A.EvalNames(A.EVAL_PREFIX).json, None, STALE, changed,
                               f"{refresh} --data {where}" if where else refresh))
    return out
