"""The ``metadata_props`` every convkit ONNX file carries, and reading them back.

The evaluate stage reads these keys; values are strings in the ONNX file, lists are JSON-encoded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

import convkit
from convkit.gates import PRECISIONS

# Exactly these keys, in this order, are written into every exported file.
METADATA_KEYS = (
    "convkit_version", "experiment", "model", "dataset", "class_names", "mean", "std", "input_layout",
    "input_range", "pytorch_test_acc", "torch_version", "onnx_version", "opset", "precision", "checkpoint_sha256",
)
_JSON_KEYS = ("class_names", "mean", "std")
# What is read of a file's metadata_props: a file made elsewhere may hold anything (a 10 MB string took minutes and
# gigabytes to render). 256 KiB fits the class names of a 10,000-class model.
MAX_METADATA_ENTRIES = 64
MAX_METADATA_KEY = 128
MAX_METADATA_VALUE = 256 * 1024
TRUNCATED = "…[truncated]"


@dataclass(frozen=True)
class ModelIdentity:
    """What an exported file is: the experiment (or user model folder), architecture, dataset, classes, the
    normalization its input expects, and the sha256 of the checkpoint (or model_source.json) it came from."""

    experiment: str
    model: str
    dataset: str
    class_names: tuple
    mean: tuple
    std: tuple
    checkpoint_sha256: str


def build_metadata(identity: ModelIdentity, *, pytorch_test_acc: float, opset: int, precision: str) -> dict[str, str]:
    """Return the metadata dict (every key of METADATA_KEYS, every value a string) for one exported file."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    meta = {
        "convkit_version": convkit.__version__,
        "experiment": identity.experiment,
        "model": identity.model,
        "dataset": identity.dataset,
        "class_names": json.dumps(list(identity.class_names)),
        "mean": json.dumps([float(v) for v in identity.mean]),
        "std": json.dumps([float(v) for v in identity.std]),
        "input_layout": "NCHW",
        "input_range": "1",  # pixels scaled to 0..1, then (x - mean) / std, as in training
        "pytorch_test_acc": repr(float(pytorch_test_acc)),
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "opset": str(int(opset)),
        "precision": precision,
        "checkpoint_sha256": identity.checkpoint_sha256,
    }
    assert tuple(meta) == METADATA_KEYS
    return meta


def set_metadata(model_proto, meta: dict[str, str]):
    """Replace ``model_proto.metadata_props`` with ``meta`` (string values); returns the same proto."""
    del model_proto.metadata_props[:]
    for key, value in meta.items():
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    return model_proto


def read_metadata(model, decode: bool = False) -> dict:
    """Return the metadata_props of ``model`` (a path or ModelProto) as a dict of strings.

    With ``decode=True``, JSON lists (class_names, mean, std) become lists, pytorch_test_acc a float and
    opset an int.
    """

    if isinstance(model, (str, Path)):
        model = onnx.load(str(model), load_external_data=False)
    meta = capped_metadata(model.metadata_props)
    if decode:
        for key in _JSON_KEYS:
            if key in meta:
                meta[key] = json.loads(meta[key])
        if "pytorch_test_acc" in meta:
            meta["pytorch_test_acc"] = float(meta["pytorch_test_acc"])
        if "opset" in meta:
            meta["opset"] = int(meta["opset"])
    return meta


def capped_metadata(props) -> dict[str, str]:
    """Return the first MAX_METADATA_ENTRIES ``metadata_props`` entries as a dict: keys longer than
    MAX_METADATA_KEY are skipped, values longer than MAX_METADATA_VALUE cut and marked TRUNCATED (a cut JSON list
    no longer parses, so it is ignored as malformed metadata is)."""
    meta = {}
    for entry in list(props)[:MAX_METADATA_ENTRIES]:
        if len(entry.key) > MAX_METADATA_KEY:
            continue
        value = entry.value
        meta[entry.key] = value if len(value) <= MAX_METADATA_VALUE else value[:MAX_METADATA_VALUE] + TRUNCATED
    return meta


def file_sha256(path: Path) -> str:
    """Return the hex SHA-256 of the file at ``path``."""

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_preprocessing_metadata(path: Path, pre) -> None:
    """Put the whole preprocessing ``pre`` (convkit.preprocessing) into the ONNX file at ``path`` under its one
    metadata key, the other entries kept; written to a temporary file, then renamed over it."""
    from convkit import preprocessing as P
    from convkit.atomic import atomic_path

    model = onnx.load(str(path), load_external_data=False)
    meta = {e.key: e.value for e in model.metadata_props}
    meta.update(P.metadata_entry(pre))
    set_metadata(model, meta)
    with atomic_path(Path(path)) as tmp:
        onnx.save(model, str(tmp))
