"""A ``torch.export.save``d program (.pt2) checked to hold data only, then loaded.

``torch.export.load`` unpickles in several places: weights or constants marked ``use_pickle`` (``torch.load`` with
``weights_only=False``), custom and opaque objects among the constants, the sample inputs when a safe load of
them fails, the legacy layouts, and a pytree context may import a module it names. A .pt2 is a zip archive, so
all of that is visible before loading: ``check_program`` reads the archive's directory and its JSON configs,
loads each pickled entry torch would load with ``torch.load(weights_only=True)`` (which creates no objects but
tensors and containers), and refuses anything else. Only then does ``load_program`` call ``torch.export.load``.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path

import torch

from convkit.errors import ConvkitError, first_line
from convkit.text import term

MAX_CONFIG_BYTES = 64 << 20  # one JSON config or sample-inputs entry; a model's graph is a few MB
# Strings in a program's JSON that make torch import a module it names (pytree defaultdict contexts, enums).
IMPORTING_KEYS = (b"default_factory_module", b"__enum__")
FIX = "save it again with torch.export.save from a plain nn.Module (tensors only)"


def _entries(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Return {name below the archive's root folder: entry}, as torch's reader resolves them."""
    infos = archive.infolist()
    roots = {i.filename.split("/", 1)[0] for i in infos}
    root = next(iter(roots)) + "/" if len(roots) == 1 and all("/" in i.filename for i in infos) else ""
    return {i.filename[len(root):]: i for i in infos}


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> bytes:
    if info.file_size > MAX_CONFIG_BYTES:
        raise ConvkitError(f"{term(path)}: {info.filename} is {info.file_size:,} bytes, more than a program's "
                           f"configuration holds; {FIX}")
    return archive.read(info)


def _check_payload_config(archive, entries: dict, name: str, path: Path) -> None:
    """Refuse a weights/constants config that asks torch to unpickle an entry (use_pickle, custom or opaque
    objects)."""
    try:
        config = json.loads(_read(archive, entries[name], path)).get("config") or {}
        items = list(config.items())
    except (ValueError, AttributeError, RecursionError):
        raise ConvkitError(f"{term(path)}: {name} is not a torch.export payload config; {FIX}") from None
    for fqn, meta in items:
        pickled = not isinstance(meta, dict) or meta.get("use_pickle") is not False
        kind_ok = not name.endswith("_constants_config.json") or str(meta.get("path_name", "")).startswith("tensor_")
        if pickled or not kind_ok:
            raise ConvkitError(f"{term(path)} stores {term(fqn, 80)} as a pickle, which can run code: it was not "
                               f"loaded; {FIX}")


def check_program(path: Path) -> None:
    """Raise ConvkitError (exit 2) unless ``path`` is a torch.export archive whose every entry loads as data:
    no pickled weight or constant, no custom/opaque object, no legacy layout, no module named for import, and
    sample inputs that load with ``weights_only=True``. Nothing in the archive is executed."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ConvkitError(f"{term(path)} is not a torch.export program (not a zip archive: "
                           f"{first_line(exc, 80)}; truncated?); write it with torch.export.save") from None
    with archive:
        entries = _entries(archive)
        if "archive_format" not in entries or _read(archive, entries["archive_format"], path).strip() != b"pt2":
            raise ConvkitError(f"{term(path)} is not a torch.export program of this torch's format (no "
                               f"archive_format 'pt2': an older layout that torch unpickles); {FIX}")
        for name, info in entries.items():
            if name.startswith("data/aotinductor/") or name.startswith("xl_model_weights/"):
                raise ConvkitError(f"{term(path)} holds compiled code ({term(name, 80)}); pass a plain "
                                   f"torch.export.save program")
            if name.endswith(("_weights_config.json", "_constants_config.json")):
                _check_payload_config(archive, entries, name, path)
            elif name.startswith("models/") and name.endswith(".json"):
                body = _read(archive, info, path)
                if any(key in body for key in IMPORTING_KEYS):
                    raise ConvkitError(f"{term(path)}: {term(name, 80)} names a Python module to import, which "
                                       f"convkit never does; {FIX}")
            elif name.startswith(("data/weights/", "data/constants/")) and name.endswith(".pt"):
                raise ConvkitError(f"{term(path)} holds a pickled legacy {term(name, 80)}; it was not loaded; {FIX}")
            elif name.startswith("data/sample_inputs/"):
                _check_safe_pickle(_read(archive, info, path), name, path)


def _check_safe_pickle(data: bytes, name: str, path: Path) -> None:
    """Raise ConvkitError unless ``data`` loads with torch.load(weights_only=True): torch retries a failed safe
    load of sample inputs without it."""
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 — any failure means torch would fall back to a full unpickle
        raise ConvkitError(f"{term(path)}: {term(name, 80)} asks to create Python objects beyond tensors, which "
                           f"can run code: it was not loaded; {FIX}") from None


def load_program(path: Path) -> torch.nn.Module:
    """Return the graph module of the torch.export program at ``path`` after ``check_program``; ConvkitError (one
    line, torch's own log of the failure silenced) when torch cannot deserialize it."""
    check_program(path)
    loggers = [logging.getLogger(name) for name in ("torch.export", "torch._export")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)  # torch logs a failed load with its traceback before raising
    try:
        return torch.export.load(str(path)).module()
    except Exception as exc:  # noqa: BLE001 — any load failure is a bad input file
        raise ConvkitError(f"{term(path)} is not a torch.export program torch {torch.__version__} can load "
                           f"({first_line(exc, 120)}); write it with torch.export.save") from None
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
