"""The run-folder contract: what a run folder holds, under which names and schema tags, and how to read it.

A run folder ``runs/<suite>/<experiment>/`` is the only channel between the stages:

================  ==================  ==========================  ======================================
file              schema tag          written by                  read by
================  ==================  ==========================  ======================================
config.json       convkit.config/1    train                       train (--resume), report
checkpoint.pt     convkit.checkpoint/1 train                      train (--resume), export, evaluate, report
history.csv       (CSV, one row/epoch) train                      report
grad_norms.csv    (CSV)               train                       report
metrics.json      convkit.metrics/1   train                       summary, report (checked: convkit.provenance)
model*.onnx       ONNX metadata keys  export                      evaluate (see convkit.onnx_meta)
export.json       convkit.export/2    export                      summary, report
eval.json/.md     convkit.eval/1      evaluate (run's own data)   summary, report
eval/<key>/       convkit.eval/1      evaluate (any other data)   people (keyed by the data: convkit.provenance)
reference_logits.pt convkit.reference/1 export, evaluate         export, evaluate (PyTorch fp32 logits, cached)
diagnose.json/.md convkit.diagnose/1  diagnose                    report (linked; stale when model.onnx changed)
failure.json      convkit.failure/1   train-all (pipeline)        summary
confusion*.png/csv, latency.png       evaluate                    report
================  ==================  ==========================  ======================================

The suite folder ``runs/<suite>/`` holds ``summary.md`` / ``summary.json`` (convkit.summary/1), rebuilt from
the files above (and ``plan.json``, train-all's planned experiments) by ``convkit summarize``, and ``report.md`` / ``report.html`` with their figures in
``report/``, written by ``convkit report`` from the same files. No stage imports another: each reads what the others wrote,
through this module. Which file each one is derived from, and the sha256 that ties them, is convkit.provenance's.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickletools
import shutil
import socket
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterator

import torch

from convkit.atomic import ensure_writable_dir, save_torch, writable_hint, write_json
from convkit.data.loader import normalize
from convkit.errors import ConvkitError
from convkit.gates import FAILED, PASSED, PRECISIONS
from convkit.models import create_model
from convkit.onnx_meta import file_sha256
from convkit.text import term

# ---- names ------------------------------------------------------------------------------------------------------
CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
HISTORY = "history.csv"
GRAD_NORMS = "grad_norms.csv"
METRICS = "metrics.json"
EXPORT_JSON = "export.json"
VARIANT_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}  # keys: PRECISIONS
EVAL_PREFIX = "eval"  # eval.json / eval.md for a run; eval.<precision>.* when one variant file is evaluated
EVAL_DIR = "eval"  # eval/<data-key>/eval.json: an evaluation of the run's model on other data (convkit.provenance)
LOADGEN_DIR = "loadgen"  # evaluate --scenario: LoadGen's logs, one <precision>-<provider>-<scenario>/ folder each
MODEL_SOURCE = "model_source.json"  # a user model's source + data contract: its export folder's "checkpoint"
DIAGNOSE_JSON = "diagnose.json"  # convkit diagnose: why a number moved (convkit.export.diagnose owns its layout)
DIAGNOSE_MD = "diagnose.md"
REFERENCE = "reference_logits.pt"  # the PyTorch model's fp32 test-split logits, reused by export and evaluate
FAILURE = "failure.json"  # train-all: why this experiment failed, and in which stage; removed on success
PLAN = "plan.json"  # train-all: the suite's planned experiments, so the summary can list those never run
SUMMARY_MD = "summary.md"
SUMMARY_JSON = "summary.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
REPORT_DIR = "report"  # the report's figures (PNG), beside report.md in the suite folder

# ---- schema tags: bump the number when a reader could misread a file of the older layout -----------------------
SCHEMAS = {
    "config": "convkit.config/1",
    "checkpoint": "convkit.checkpoint/1",
    "metrics": "convkit.metrics/1",
    "export": "convkit.export/2",
    "eval": "convkit.eval/1",
    "summary": "convkit.summary/1",
    "failure": "convkit.failure/1",
    "reference": "convkit.reference/1",
    "plan": "convkit.plan/1",
    "model_source": "convkit.model_source/1",
    "diagnose": "convkit.diagnose/1",  # diagnose.json, written by convkit diagnose (convkit.export.diagnose)
    "compare": "convkit.compare/1",
}


def rejected_name(precision: str) -> str:
    """Return the file name a model that failed its gate is kept under (model.rejected.onnx, model.int8.rejected.onnx)."""
    return VARIANT_FILES[precision].replace(".onnx", ".rejected.onnx")


def precision_of(onnx_name: str) -> str | None:
    """Return the precision whose variant file is named ``onnx_name``, else None."""
    return next((p for p, f in VARIANT_FILES.items() if f == onnx_name), None)


@dataclass(frozen=True)
class EvalNames:
    """The file names one evaluation writes, all derived from one prefix ("eval" or "eval.<variant>")."""

    prefix: str

    @property
    def json(self) -> str:
        return f"{self.prefix}.json"

    @property
    def md(self) -> str:
        return f"{self.prefix}.md"

    @property
    def latency_png(self) -> str:
        return "latency" + self.prefix[len(EVAL_PREFIX):] + ".png"

    def confusion(self, suffix: str, ext: str) -> str:
        """Return e.g. confusion.csv, confusion.int8.png (``suffix`` "" or ".int8", ``ext`` "csv" or "png")."""
        return "confusion" + self.prefix[len(EVAL_PREFIX):] + suffix + "." + ext


# ---- reading and writing tagged JSON -----------------------------------------------------------------------------
def _export_v1(doc: dict) -> dict:
    """Return a convkit.export/1 document in the /2 layout: each precision's gate says "passed" (overall), where
    /1 said "pass" (overall) beside a "passed" that covered the disagreement check only, and the overall verdict
    reads gates.PASSED / gates.FAILED where /1 wrote "pass" / "fail"."""
    for entry in (doc.get("precisions") or {}).values():
        gate = entry.get("gate") if isinstance(entry, dict) else None
        if isinstance(gate, dict) and "pass" in gate:
            gate["passed"] = gate.pop("pass")
    verdicts = {"pass": PASSED, "fail": FAILED}
    summary = doc.get("summary")
    if isinstance(summary, dict) and summary.get("export_gate") in verdicts:
        doc["summary"] = {**summary, "export_gate": verdicts[summary["export_gate"]]}
    return {**doc, "gate": verdicts.get(doc.get("gate"), doc.get("gate")), "schema": SCHEMAS["export"]}


# older tags still read, each with the function that brings a document of that layout to the current one
UPGRADES = {"convkit.export/1": _export_v1}


def check_schema(doc: dict, kind: str, path: Path) -> dict:
    """Return ``doc`` (an older layout brought to the current one, see UPGRADES) when its schema tag is one this
    convkit reads for ``kind``; ConvkitError (exit 2) if not.

    A document without a tag predates the tags (same layout as version 1) and is read as version 1.
    """
    want = SCHEMAS[kind]
    tag = doc.get("schema") if isinstance(doc, dict) else None
    if tag is None and want.endswith("/2"):
        tag = want[:-1] + "1"
    if tag in UPGRADES and tag.rpartition("/")[0] == want.rpartition("/")[0]:
        return UPGRADES[tag](doc)
    if tag is not None and tag != want:
        raise ConvkitError(f"{path} has schema {tag!r}, this convkit reads {want!r}; "
                           f"re-create it with this version or use the convkit that wrote it")
    return doc


def write_artifact(path: Path, kind: str, doc: dict) -> Path:
    """Atomically write ``doc`` as JSON with its schema tag first; returns ``path``."""
    return write_json(Path(path), {"schema": SCHEMAS[kind], **{k: v for k, v in doc.items() if k != "schema"}})


def read_artifact(path: Path, kind: str) -> dict | None:
    """Return the JSON document at ``path`` after its schema check; None when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except PermissionError:
        raise ConvkitError(f"{path}: permission denied; make it readable") from None
    except (OSError, ValueError):
        raise ConvkitError(f"{path} is corrupt (not JSON); re-create it by rerunning its stage") from None
    if not isinstance(doc, dict):
        raise ConvkitError(f"{path} is not a convkit {kind} file (not a JSON object); re-create it")
    return check_schema(doc, kind, path)


# ---- run folders -------------------------------------------------------------------------------------------------
def is_run_dir(path: Path) -> bool:
    """Return True when ``path`` is a folder holding a checkpoint, or a user model's model_source.json."""
    return (Path(path) / CHECKPOINT).is_file() or (Path(path) / MODEL_SOURCE).is_file()


# any of these makes a folder a run folder: a run that failed before its first checkpoint still has a config
RUN_MARKERS = (CONFIG, CHECKPOINT, METRICS, HISTORY, FAILURE, MODEL_SOURCE)


def run_folders(suite_dir: Path, with_checkpoint: bool = False, allow_empty: bool = False) -> list[Path]:
    """Return the run folders directly under ``suite_dir``, sorted: every folder holding any run file (RUN_MARKERS,
    even a failed or partial run), or with ``with_checkpoint`` only those holding a checkpoint.pt or a user
    model's model_source.json (what export starts from).

    ConvkitError (exit 2) when ``suite_dir`` is not a folder, or holds no such folder and not ``allow_empty``.
    """
    suite_dir = Path(suite_dir)
    if not suite_dir.is_dir():
        raise ConvkitError(f"suite directory {suite_dir} not found; pass e.g. runs/seed")
    markers = (CHECKPOINT, MODEL_SOURCE) if with_checkpoint else RUN_MARKERS
    found = sorted(p for p in suite_dir.iterdir() if p.is_dir() and any((p / m).is_file() for m in markers))
    if not found and not allow_empty:
        held = f"{CHECKPOINT} or {MODEL_SOURCE}" if with_checkpoint else f"{CHECKPOINT}, {CONFIG} or {MODEL_SOURCE}"
        raise ConvkitError(f"no run directories under {suite_dir} (none holds a {held}); "
                           f"pass a folder made by `convkit train-all`")
    return found


def run_dir_of(onnx_path: Path) -> Path | None:
    """Return the run directory an .onnx file belongs to (its folder holds checkpoint.pt), else None."""
    folder = Path(onnx_path).resolve().parent
    return folder if is_run_dir(folder) else None


def data_settings(config: dict, dataset: str | None = None) -> tuple[str | None, bool, int | None]:
    """Return (data_dir, sample, max_images) a run was trained with, to read the same data again.

    When ``dataset`` differs from the run's, the run's settings do not apply: (None, False, None).
    """
    if dataset is not None and config.get("dataset") not in (None, dataset):
        return None, False, None
    return config.get("data_dir"), bool(config.get("sample", False)), config.get("max_images")


def ensure_same_experiment(folder: Path, experiment: str, **recorded) -> None:
    """Raise ConvkitError (exit 2) when a file of ``folder`` records another experiment than ``experiment``.

    ``recorded`` maps a file's role to what it says: an experiment name, a metrics.json document or a
    config.json document (None: absent, not checked).
    """
    for role, value in recorded.items():
        if isinstance(value, dict):
            value = value.get("experiment") or (value.get("config") or {}).get("experiment")
        if value is not None and value != experiment:
            raise ConvkitError(f"{folder}: the {role} is of experiment {value!r}, not {experiment!r}; the folder "
                               f"mixes two runs: retrain it, or export the checkpoint on its own with --checkpoint")


# ---- run-folder safety ---------------------------------------------------------------------------------------
def check_out_name(out: Path, flag: str = "--out") -> None:
    """Raise ConvkitError (exit 2) when ``out``'s last name is longer than its file system takes once its lock
    and temporary names (a few characters more) are made from it."""
    out = Path(out)
    limit = _name_max(out)
    size = len(out.name.encode("utf-8", "surrogateescape"))
    if size + NAME_MARGIN > limit:
        raise ConvkitError(f"{flag} name {term(out.name, 60)} is {size} bytes; this file system takes names of at "
                           f"most {limit - NAME_MARGIN} bytes here: choose a shorter {flag}")


NAME_MARGIN = 24  # bytes a lock or temporary name adds to a folder's name (".NAME.new-PID", ".NAME.lock")


def _name_max(out: Path) -> int:
    folder = next((p for p in [out.parent, *out.parent.parents] if p.is_dir()), Path("."))
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def lock_path(folder: Path) -> Path:
    """Return the lock file of ``folder``: beside it, so it survives the folder being replaced."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}.lock"


def _holder(lock: Path) -> tuple[int, str, str] | None:
    """Return (pid, host, command) recorded in ``lock``, or None when it is unreadable."""
    try:
        pid, host, command = lock.read_text(encoding="utf-8").split("\n", 2)
        return int(pid), host, command.strip()
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


@contextlib.contextmanager
def run_lock(folder: Path, command: str) -> Iterator[None]:
    """Hold ``folder``'s lock while the block runs, so two commands never write one run folder at once.

    A lock left by a process that no longer runs (on this host) is stale and taken over. A live holder makes
    this raise ConvkitError (exit 2) naming it.
    """
    lock = lock_path(folder)
    created = _missing_folders(lock.parent)  # removed again if the command leaves them empty (it failed early)
    ensure_writable_dir(lock.parent)
    me = f"{os.getpid()}\n{socket.gethostname()}\n{command}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            if holder and holder[1] != socket.gethostname():
                raise ConvkitError(f"{folder} is locked by `{holder[2]}` (pid {holder[0]} on host {holder[1]}); a "
                                   f"lock from another host is never taken over automatically: once that process "
                                   f"has ended, delete {lock}") from None
            if holder and _alive(holder[0]):
                raise ConvkitError(f"{folder} is in use by `{holder[2]}` (pid {holder[0]} on {holder[1]}, lock "
                                   f"{lock}); wait for it to finish, or stop it") from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        except OSError as exc:
            raise ConvkitError(f"cannot lock {folder}: {exc.strerror}; {writable_hint()}") from None
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(me)
        except OSError as exc:  # a full disk: no empty lock is left to puzzle the next command
            lock.unlink(missing_ok=True)
            raise ConvkitError(f"cannot lock {term(folder)}: {exc.strerror or type(exc).__name__}; free space on "
                               f"that disk or {writable_hint().replace('choose a writable', 'choose another')}") from None
        break
    else:
        raise ConvkitError(f"cannot lock {folder}: another process keeps taking the lock; try again")
    try:
        yield
    finally:
        holder = _holder(lock)
        if holder and holder[0] == os.getpid():  # never remove a lock another process took over
            lock.unlink(missing_ok=True)
        for made in created:  # deepest first; a folder holding anything stays
            try:
                made.rmdir()
            except OSError:
                break


def _missing_folders(path: Path) -> list[Path]:
    """Return ``path`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    path = Path(path)
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def holds_run(folder: Path) -> bool:
    """Return True when ``folder`` holds (part of) a training run: a checkpoint, a config or metrics."""
    return any((Path(folder) / name).is_file() for name in (CHECKPOINT, CONFIG, METRICS))


def downstream_files(folder: Path) -> list[Path]:
    """Return the files of ``folder`` derived from its checkpoint (exports, evaluations, a failure record)."""
    folder = Path(folder)
    names = {EXPORT_JSON, FAILURE, REFERENCE, DIAGNOSE_JSON, DIAGNOSE_MD, *VARIANT_FILES.values(),
             *(rejected_name(p) for p in PRECISIONS)}
    out = [folder / n for n in sorted(names) if (folder / n).is_file()]
    for pattern in (f"{EVAL_PREFIX}.*", "confusion*", "latency*.png"):
        out += sorted(p for p in folder.glob(pattern) if p.is_file())
    return out


def remove_downstream(folder: Path) -> list[str]:
    """Delete the files derived from ``folder``'s checkpoint (stale once it changes); returns their names."""
    removed = []
    for path in downstream_files(folder):
        path.unlink(missing_ok=True)
        removed.append(path.name)
    if (Path(folder) / EVAL_DIR).is_dir():  # evaluations on other data: derived from the checkpoint too
        shutil.rmtree(Path(folder) / EVAL_DIR)
        removed.append(EVAL_DIR + "/")
    return removed


def fresh_run_folder(folder: Path) -> Path:
    """Return a new, empty temporary folder beside ``folder`` for a fresh run (see ``promote_run_folder``)."""
    folder = Path(folder)
    tmp = folder.parent / f".{folder.name}.new-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def promote_run_folder(tmp: Path, folder: Path) -> Path:
    """Replace ``folder`` (if any) by ``tmp``, with renames only; returns ``folder``.

    Called once the fresh run's first checkpoint exists, so an old run is never lost to a run that failed early.
    """
    tmp, folder = Path(tmp), Path(folder)
    old = folder.parent / f".{folder.name}.old-{os.getpid()}"
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


# ---- reference logits ------------------------------------------------------------------------------------------
def load_reference_logits(run_dir: Path, checkpoint_sha256: str, data_checksum: str, n: int):
    """Return the first ``n`` rows of the cached fp32 PyTorch logits of ``run_dir`` (a float32 numpy array), or
    None when there is no cache for this checkpoint and this data, or it holds fewer rows."""
    path = Path(run_dir) / REFERENCE
    if not path.is_file():
        return None
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged cache is recomputed, never fatal
        return None
    if (not isinstance(doc, dict) or doc.get("schema") != SCHEMAS["reference"]
            or doc.get("checkpoint_sha256") != checkpoint_sha256 or doc.get("data_checksum") != data_checksum
            or len(doc.get("logits", ())) < n):
        return None
    return doc["logits"][:n].numpy()


def save_reference_logits(run_dir: Path, logits, checkpoint_sha256: str, data_checksum: str, device: str) -> None:
    """Cache the fp32 PyTorch logits of the test split (rows in the split's order) for this checkpoint and data,
    unless a cache of at least as many rows is already there; a failed write only costs a recomputation."""
    if load_reference_logits(run_dir, checkpoint_sha256, data_checksum, len(logits)) is not None:
        return
    doc = {"schema": SCHEMAS["reference"], "checkpoint_sha256": checkpoint_sha256, "data_checksum": data_checksum,
           "device": device, "precision": "fp32, TF32 off", "logits": torch.as_tensor(logits, dtype=torch.float32)}
    try:
        save_torch(Path(run_dir) / REFERENCE, doc)
    except ConvkitError:
        pass


# ---- checkpoints -------------------------------------------------------------------------------------------------
@dataclass
class CheckpointRecord:
    """What a checkpoint keeps beside the weights and the optimizer state: ``epoch`` completed epochs, the run's
    config dict, its history and gradient-norm rows so far, environment and data checksum; ``final``: the final
    model's figures (after the last epoch), which metrics.json repeats and readers verify."""

    epoch: int
    config: dict
    history: list
    grad_norms: list
    environment: dict
    data_checksum: str
    final: dict | None = None


def save_checkpoint(run_dir: Path, *, model, optimizer, scheduler, record: CheckpointRecord) -> Path:
    """Atomically write ``run_dir/checkpoint.pt`` (weights, optimizer and scheduler state, and ``record``) for
    ``record.epoch`` completed epochs; returns its path."""
    state = {
        "schema": SCHEMAS["checkpoint"],
        "model": model.state_dict(),  # the eager module: no torch.compile "_orig_mod." prefixes
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": record.epoch,
        "config": record.config,
        "history": record.history,
        "grad_norms": record.grad_norms,
        "environment": record.environment,
        "data_checksum": record.data_checksum,
        "final": record.final or {},
    }
    return save_torch(Path(run_dir) / CHECKPOINT, state)


def _is_plain_pickle(path: Path) -> bool:
    """Return True when the file is one whole pickle stream (parsed opcode by opcode, never executed)."""
    try:
        with open(path, "rb") as fh:
            for _ in pickletools.genops(fh):
                pass
            return fh.read(1) == b""
    except Exception:  # any parse failure (pickletools raises several types): not a plain pickle
        return False


def _require_zip_checkpoint(path: Path) -> None:
    """Raise ConvkitError unless ``path`` is in torch.save's zip format, which every convkit checkpoint is: a plain
    pickle is named as such (and never loaded), anything else is corrupt."""
    try:
        if zipfile.is_zipfile(path):
            return
    except PermissionError:
        raise ConvkitError(f"checkpoint {path}: permission denied; make it readable") from None
    if _is_plain_pickle(path):
        raise ConvkitError(f"{path} is not a convkit checkpoint: it is a plain pickle, not torch.save's format, and "
                           f"was not loaded; pass a run's {CHECKPOINT}")
    raise ConvkitError(f"checkpoint {path} is corrupt (not torch.save's zip format: truncated?); retrain or "
                       "restore it")


def load_checkpoint(path: Path) -> dict:
    """Return the checkpoint dict at ``path``; ConvkitError when it is missing, unreadable or not convkit's."""
    path = Path(path)
    if not path.is_file():
        raise ConvkitError(f"checkpoint {path} not found; train first (`convkit train EXPERIMENT`)")
    _require_zip_checkpoint(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise ConvkitError(f"checkpoint {path}: permission denied; make it readable") from None
    except Exception as exc:  # torch raises many types for damaged zips/pickles
        if "unsupported global" in str(exc).lower():  # a pickle asking to create objects (run code): never run
            raise ConvkitError(f"{path} is not a convkit checkpoint: it asks to create Python objects beyond "
                               f"tensors, which convkit never executes (it was not loaded); pass a run's "
                               f"{CHECKPOINT}") from None
        raise ConvkitError(f"checkpoint {path} is corrupt ({type(exc).__name__}); retrain or restore it") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ConvkitError(f"{path} is not a convkit checkpoint (no model/config entries); pass a run's checkpoint.pt")
    if not isinstance(ckpt["model"], dict):
        raise ConvkitError(f"{path} is corrupt (its model entry is not a state_dict); retrain or restore it")
    return check_schema(ckpt, "checkpoint", path)


def load_weights(model: torch.nn.Module, state: dict, source: str) -> torch.nn.Module:
    """Load ``state`` into ``model`` after check_state_dict (a one-line ConvkitError on mismatch); returns ``model``."""
    check_state_dict(model, state, source)
    model.load_state_dict(state)
    return model


def check_state_dict(model: torch.nn.Module, state: dict, source: str) -> None:
    """Raise ConvkitError naming the first differing keys or shapes when ``state`` does not fit ``model``."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:3]}")
        if shapes:
            k = shapes[0]
            parts.append(f"shape of {k} is {tuple(state[k].shape)}, model needs {tuple(own[k].shape)}")
        raise ConvkitError(f"{source} does not match this architecture: {'; '.join(parts)}; pick the matching experiment")


@dataclass
class RunModel:
    """A trained model rebuilt from a checkpoint: the eager module (eval mode, CPU) and what it was trained with."""

    checkpoint: Path
    model: torch.nn.Module
    model_name: str
    config: dict  # the training config recorded in the checkpoint
    epoch: int | None
    data_checksum: str | None = None  # the checksum of the data it was trained and tested on
    contract: object = None  # a user model's convkit.user_model.DataContract (its preprocessing); None for a run

    @cached_property
    def checkpoint_sha256(self) -> str:
        """Return the checkpoint file's sha256 (hashed once: a ResNet-50 checkpoint is about 280 MB)."""
        return file_sha256(self.checkpoint)

    @property
    def default_cfg(self):
        return self.model.default_cfg

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(self.contract.mean if self.contract is not None else self.model.default_cfg.mean)

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.contract.std if self.contract is not None else self.model.default_cfg.std)

    def model_input(self, images_u8: torch.Tensor) -> torch.Tensor:
        """Return the float32 NCHW input of the model for uint8 NCHW images: a user model's contract (range,
        channel order, mean/std), else the training loader's normalization."""
        if self.contract is not None:
            return self.contract.prepare(images_u8)
        return normalize(images_u8, self.mean, self.std)


def load_run_model(source: Path, model_name: str | None = None) -> RunModel:
    """Return the RunModel of ``source`` (a run directory or a checkpoint.pt file).

    ``model_name`` overrides the registered architecture recorded in the checkpoint's config.
    """
    source = Path(source)
    if source.is_dir() and (source / MODEL_SOURCE).is_file() and not (source / CHECKPOINT).is_file():
        from convkit.user_model import load_user_run  # user_model imports this module: imported when needed

        return load_user_run(source)
    path = source / CHECKPOINT if source.is_dir() else source
    ckpt = load_checkpoint(path)
    cfg = ckpt["config"] if isinstance(ckpt["config"], dict) else {}
    name = model_name or cfg.get("model")
    if not name:
        raise ConvkitError(f"{path} records no model; pass --experiment NAME")
    model = create_model(name)
    load_weights(model, ckpt["model"], str(path)).eval()
    return RunModel(checkpoint=path, model=model, model_name=name, config=cfg, epoch=ckpt.get("epoch"),
                    data_checksum=ckpt.get("data_checksum"))
