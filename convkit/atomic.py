"""Atomic file writes: write to a temporary file in the same folder, then rename over the target."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch

from convkit.errors import ConvkitError


def writable_hint() -> str:
    """Return how to write elsewhere in the running command: "choose a writable --out" where it has --out, else
    "make that folder writable" (export, summarize and report write into the folders they are given)."""
    import click  # light; the CLI has already imported it

    ctx = click.get_current_context(silent=True)
    if ctx is None or any(getattr(p, "name", None) == "out" for p in ctx.command.params):
        return "choose a writable --out"
    return "make that folder writable"


def ensure_writable_dir(path: Path) -> Path:
    """Create ``path`` if needed and return it; raise ConvkitError when it cannot be written."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConvkitError(f"cannot create output directory {path}: {exc.strerror}; {writable_hint()}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConvkitError(f"output directory {path} is not writable; {writable_hint()}")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success rename it onto ``target``, on failure delete it."""
    target = Path(target)
    ensure_writable_dir(target.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise write_error(target, exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions a plain open() would (umask applies).
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    except OSError as exc:  # disk full, quota, permission: the target keeps its old content
        tmp_path.unlink(missing_ok=True)
        raise write_error(target, exc) from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_error(target: Path, exc: BaseException) -> ConvkitError:
    """Return the one-line error for a failed write of ``target`` (the old file, if any, is left as it was)."""
    why = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[-1][:200] or type(exc).__name__
    return ConvkitError(f"cannot write {target}: {why}; free space on that disk or "
                        f"{writable_hint().replace('choose a writable', 'choose another')} (nothing was replaced)")


def write_text(target: Path, text: str) -> Path:
    """Atomically write ``text`` to ``target``; returns ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_json(target: Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON; returns ``target``."""
    return write_text(target, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_csv(target: Path, rows: list[dict]) -> Path:
    """Atomically write a list of dicts as CSV (columns from the union of keys, in first-seen order)."""
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    with atomic_path(target) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    return Path(target)


def save_torch(target: Path, obj: Any) -> Path:
    """Atomically ``torch.save`` ``obj`` to ``target``; returns ``target``."""

    with atomic_path(target) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as exc:  # torch reports a full disk as RuntimeError("... file write failed")
            if "write" not in str(exc).lower():
                raise
            raise OSError(str(exc).strip().splitlines()[-1]) from None
    return Path(target)


def save_figure(fig, target: Path, dpi: int = 100) -> Path:
    """Atomically save a matplotlib figure as PNG (tight layout), then close it; returns ``target``."""
    import matplotlib.pyplot as plt  # only the figure-writing code pays for pyplot

    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return Path(target)
