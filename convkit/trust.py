"""Whether convkit may import and call the code a user model's ``model_source.json`` names.

A user model's export folder names the code that rebuilds it (``MODULE:FACTORY`` or ``timm:NAME`` with kwargs).
That file travels with the folder: a folder someone sent you can name any callable (``os:system``), so convkit
never imports or calls code because a file names it. The code runs only when the user stated it:

- on the command line of ``convkit export --model …`` on this machine: export records the sha256 of the
  model_source.json it wrote in ``$CONVKIT_CACHE/trusted-model-sources``, and a later ``evaluate`` or ``report``
  of the same, unedited file rebuilds the model as export did;
- or with ``--trust-model-source`` on ``evaluate`` / ``report`` (as Hugging Face's ``trust_remote_code``): the
  code is named on the terminal before it runs.

Anything else is refused before any import: evaluate goes on without the PyTorch reference and says so.
A ``.pt2`` program names no code (its archive is checked for pickles before loading) and needs neither.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import click

from convkit.errors import ConvkitError
from convkit.text import term

TRUST_FLAG = "--trust-model-source"
TRUST_FILE = "trusted-model-sources"  # under $CONVKIT_CACHE: one sha256 of a model_source.json per line
MAX_TRUST_BYTES = 1_000_000

_allowed = {"all": False}


@dataclass(frozen=True)
class SourceFile:
    """A model_source.json and its sha256: what the ONNX files of a user model record as their checkpoint."""

    checkpoint: Path
    checkpoint_sha256: str
    data_checksum: str | None  # the data it was exported on, as model_source.json records it


class UntrustedSource(ConvkitError):
    """model_source.json names code the user did not state: it was not imported. ``source_file``: that file."""

    def __init__(self, message: str, source_file: SourceFile, config: dict):
        super().__init__(message)
        self.source_file = source_file
        self.config = config  # what the file records of the data (dataset, sample): read as data, never run


def trust_file() -> Path:
    """Return the file that lists the sha256 of the model_source.json files export wrote on this machine."""
    return Path(os.environ.get("CONVKIT_CACHE") or Path.home() / ".cache" / "convkit") / TRUST_FILE


def allow_model_code() -> None:
    """Let this process import and call the code any model_source.json names (``--trust-model-source``)."""
    _allowed["all"] = True


def forbid_model_code() -> None:
    """Undo ``allow_model_code`` (the default state; for tests and long-lived processes)."""
    _allowed["all"] = False


def record_trusted(source_sha256: str) -> None:
    """Record that the user stated the code of the model_source.json with ``source_sha256`` (export did); a
    failed write only means a later evaluate needs --trust-model-source."""
    path = trust_file()
    try:
        if path.is_file() and path.stat().st_size > MAX_TRUST_BYTES:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="ascii") as fh:
            fh.write(source_sha256 + "\n")
    except OSError:
        pass


def is_trusted(source_sha256: str) -> bool:
    """Return True when the code of the model_source.json with ``source_sha256`` may run: --trust-model-source,
    or this machine's export wrote exactly that file."""
    if _allowed["all"]:
        return True
    path = trust_file()
    try:
        if not path.is_file() or path.stat().st_size > MAX_TRUST_BYTES:
            return False
        return source_sha256 in path.read_text(encoding="ascii", errors="replace").split()
    except OSError:
        return False


def require_trusted(what: str, path: Path, source_sha256: str, config: dict, data_checksum: str | None) -> None:
    """Raise UntrustedSource (exit 2, carrying the run ``config`` recorded beside it) unless the code ``what``
    named by ``path`` (a model_source.json) may run."""
    if not is_trusted(source_sha256):
        raise UntrustedSource(f"{term(path)} names code ({term(what)}) that was not exported on this machine; "
                              f"convkit never runs code a file names: pass {TRUST_FLAG} to run it, or re-export "
                              f"the model with `convkit export --model …`", SourceFile(Path(path), source_sha256, data_checksum), config)


def _on_trust_flag(ctx, param, value):
    if value:
        allow_model_code()
        click.echo(f"{TRUST_FLAG}: the code named by model_source.json files will be imported and called",
                   err=True)
    return value


def trust_option(func):
    """Return ``func`` (a click command) with the ``--trust-model-source`` flag."""
    return click.option(TRUST_FLAG, is_flag=True, expose_value=False, callback=_on_trust_flag, is_eager=True,
                        help="Import and call the code a user model's model_source.json names (MODULE:FACTORY, "
                             "timm:NAME) to rebuild the PyTorch reference, although this machine did not export "
                             "it. Only for folders you trust: the file can name any code.")(func)
