"""Per-image predictions of one evaluation, beside its eval.json: ``<prefix>.predictions.npz``.

Written by every evaluation and read by ``convkit compare``, so two evaluations of the same images — on other
machines, ONNX Runtime versions or execution providers — can be paired image by image later. This module owns the
file: its name, its schema, writing (atomic) and reading (bounded, no pickles).

Layout (a NumPy .npz, i.e. a zip of .npy arrays, read with ``allow_pickle=False``):

- ``header``: UTF-8 JSON as uint8 — schema tag, data checksum and name, class list, preprocessing record, how
  images are identified ("path" relative to the --data folder, or "index" into a catalog test split), the
  evaluation's ``created`` stamp (pairs the file with its eval.json) and the variants held, primary first;
- ``labels``: the true class per image (uint16, int32 beyond 65,535 classes);
- ``ids``: UTF-8 JSON list of image paths as uint8 (folder data only; catalog data is identified by index);
- per variant ``<precision>/<provider>``: ``top_ids`` [N, 5] (uint16 / int32) and ``top_probs`` [N, 5] float16,
  the five most probable classes and their softmax probabilities (the output itself when it is probabilities).

Size: 20 bytes per image per variant before compression, plus the paths; 50,000 images of one variant measured
0.62 MB (10 classes), 0.89 MB (1,000 classes) and 1.3 MB (1,000 classes, ImageNet-style paths) compressed.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convkit.atomic import atomic_path
from convkit.errors import ConvkitError

SCHEMA = "convkit.predictions/1"
TOP_K = 5
SUFFIX = ".predictions.npz"
MAX_FILE_BYTES = 1 << 30  # a predictions file of 10 variants × 10M images stays below; anything larger is not ours
MAX_MEMBER_BYTES = 2 << 30  # uncompressed size of one array: a zip bomb is refused before it is inflated
MAX_HEADER_BYTES = 16 << 20
PREPROCESSING_KEYS = ("layout", "image_shape_chw", "mean", "std", "input_range", "channel_order", "flattened_input")
READING_KEYS = ("resize", "crop", "interpolation")


def file_name(eval_prefix: str) -> str:
    """Return the predictions file name beside ``<eval_prefix>.json``: eval.predictions.npz,
    eval.int8.predictions.npz."""
    return eval_prefix + SUFFIX


@dataclass
class VariantPredictions:
    """One model file on one provider: the top-5 classes of every image and their probabilities."""

    top_ids: np.ndarray  # [N, k] int
    top_probs: np.ndarray  # [N, k] float16

    @property
    def predicted(self) -> np.ndarray:
        """Return the top-1 class per image."""
        return self.top_ids[:, 0].astype(np.int64)

    @property
    def confidence(self) -> np.ndarray:
        """Return the top-1 probability per image (float64)."""
        return self.top_probs[:, 0].astype(np.float64)

    def correct(self, labels: np.ndarray) -> np.ndarray:
        """Return whether the top-1 class is the label, per image."""
        return self.predicted == np.asarray(labels, dtype=np.int64)

    def top5_correct(self, labels: np.ndarray) -> np.ndarray:
        """Return whether the label is among the top-5 classes, per image."""
        return (self.top_ids.astype(np.int64) == np.asarray(labels, dtype=np.int64)[:, None]).any(axis=1)


@dataclass
class Predictions:
    """The per-image predictions of one evaluation (see the module docstring for the file)."""

    labels: np.ndarray
    class_names: list[str]
    data_checksum: str
    dataset: str
    preprocessing: dict
    variants: dict[str, VariantPredictions]  # "<precision>/<provider>" → predictions, primary first
    image_paths: list[str] | None = None  # relative paths (folder data); None: images are catalog indices
    created: str = ""  # the eval.json it belongs to
    schema: str = SCHEMA
    extra: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(len(self.labels))

    def image_name(self, i: int) -> str:
        """Return how image ``i`` is named to a user: its path in the folder, else "<dataset> test #i"."""
        return self.image_paths[i] if self.image_paths is not None else f"{self.dataset} test #{i}"

    def variant(self, key: str | None = None) -> tuple[str, VariantPredictions]:
        """Return (key, predictions) of the variant ``key`` ("fp32", "int8/cpu", …; None: the primary); ConvkitError
        (exit 2) naming those held when none matches."""
        if key is None:
            return next(iter(self.variants.items()))
        for k, v in self.variants.items():
            if k == key or k.split("/")[0] == key:
                return k, v
        raise ConvkitError(f"no predictions of {key!r} in this evaluation; it holds {', '.join(self.variants)}")


def top_k(scores: np.ndarray, k: int = TOP_K, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Return (class ids [N, k], probabilities [N, k] float16) of the ``k`` highest scores per row, best first (ties:
    the lower class id first).

    Probabilities are the softmax of the scores, or the scores themselves when every row already is a
    probability distribution (convkit.calibration's rule), so ECE can be recomputed from the top-1 column. Rows
    are taken ``chunk`` at a time: 50,000 × 1,000 scores need no second full-size float64 copy.
    """
    scores = np.asarray(scores)
    n, classes = scores.shape
    k = min(k, classes)
    # convkit.calibration's rule, over all rows: non-negative rows summing to 1 are probabilities already
    as_probs = n > 0 and bool(np.all(scores >= -1e-6) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3))
    ids = np.empty((n, k), dtype=id_dtype(classes))
    probs = np.empty((n, k), dtype=np.float16)
    for start in range(0, n, chunk):
        rows = scores[start:start + chunk].astype(np.float64)
        if not as_probs:  # softmax of the logits
            rows = np.exp(rows - rows.max(axis=1, keepdims=True))
            rows /= rows.sum(axis=1, keepdims=True)
        p = rows
        top = np.argpartition(-p, k - 1, axis=1)[:, :k] if k < classes else np.tile(np.arange(classes), (len(p), 1))
        picked = np.take_along_axis(p, top, axis=1)
        order = np.lexsort((top, -picked), axis=1)  # by probability, then class id
        ids[start:start + chunk] = np.take_along_axis(top, order, axis=1)
        probs[start:start + chunk] = np.take_along_axis(picked, order, axis=1)
    return ids, probs


def id_dtype(num_classes: int):
    """Return the smallest integer type that holds every class id."""
    return np.uint16 if num_classes <= np.iinfo(np.uint16).max + 1 else np.int32


def preprocessing_record(spec_description: dict, dataset: dict) -> dict:
    """Return what decides the pixels a model sees: the model's input conventions and (--data) how images were
    resized and cropped; two evaluations compared image by image must agree on it."""
    rec = {k: spec_description.get(k) for k in PREPROCESSING_KEYS}
    rec.update({k: dataset.get(k) for k in READING_KEYS if dataset.get(k) is not None})
    value = spec_description.get("preprocessing_value")  # convkit.preprocessing's one value: geometry and pixels
    if isinstance(value, dict):  # the input dtype follows the file's precision, not the pixels: left out
        rec.update({k: v for k, v in value.items() if k != "dtype"})
    for key in ("mean", "std"):
        if isinstance(rec.get(key), list):
            rec[key] = [round(float(v), 6) for v in rec[key]]
    return rec


def from_evaluation(data, class_names: list[str], preprocessing: dict, accuracy: list[dict], created: str,
                    dataset_name: str) -> Predictions:
    """Return the Predictions of an evaluation: ``data`` its TestData, ``accuracy`` its entries, each carrying the
    non-JSON ``top_k`` (ids, probabilities) of its scores (evaluate/accuracy.ort_accuracy)."""
    paths = getattr(data.images, "paths", None)
    root = _common_root(paths) if paths else None
    names = [Path(p).relative_to(root).as_posix() if root else str(p) for p in paths] if paths else None
    variants = {f"{a['precision']}/{a['provider']}": VariantPredictions(*a["top_k"]) for a in accuracy if "top_k" in a}
    return Predictions(np.asarray(data.labels), list(class_names), data.checksum, dataset_name, preprocessing,
                       variants, names, created, extra={"data_root": str(root)} if root else {})


def _common_root(paths) -> Path | None:
    """Return the folder the image paths are named relative to: the --data folder (ImageFolder: above the class
    folders), i.e. the deepest folder holding them all."""
    import os

    try:
        return Path(os.path.commonpath([str(Path(p).parent) for p in paths]))
    except ValueError:
        return None


def write(path: Path, preds: Predictions) -> Path:
    """Atomically write ``preds`` to ``path``; returns ``path``."""
    n = preds.n
    header = {"schema": SCHEMA, "created": preds.created, "n": n, "dataset": preds.dataset,
              "data_checksum": preds.data_checksum, "class_names": preds.class_names,
              "preprocessing": preds.preprocessing, "image_ids": "path" if preds.image_paths is not None else "index",
              "variants": list(preds.variants), "top_k": TOP_K, "data_root": preds.extra.get("data_root")}
    arrays = {"header": _as_bytes(header),
              "labels": np.asarray(preds.labels).astype(id_dtype(len(preds.class_names)))}
    if preds.image_paths is not None:
        arrays["ids"] = _as_bytes(preds.image_paths)
    for i, v in enumerate(preds.variants.values()):
        arrays[f"v{i}_top_ids"] = np.ascontiguousarray(v.top_ids)
        arrays[f"v{i}_top_probs"] = np.ascontiguousarray(v.top_probs, dtype=np.float16)
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to the temporary name
            np.savez_compressed(fh, **arrays)
    return Path(path)


def _as_bytes(obj) -> np.ndarray:
    return np.frombuffer(json.dumps(obj, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)


def read(path: Path) -> Predictions:
    """Return the Predictions in ``path``; ConvkitError (exit 2) for a missing, oversized, foreign or damaged file
    (sizes are checked before anything is inflated; nothing is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise ConvkitError(f"{path} not found: evaluations before per-image predictions were stored have none; "
                           f"re-run `convkit evaluate` on that model")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ConvkitError(f"{path} is larger than any predictions file convkit writes; re-create it")
    try:
        with zipfile.ZipFile(path) as zf:
            if any(info.file_size > MAX_MEMBER_BYTES for info in zf.infolist()):
                raise ConvkitError(f"{path} holds an oversized array; re-create it with `convkit evaluate`")
        with np.load(path, allow_pickle=False) as npz:
            return _parse(path, {k: npz[k] for k in npz.files})
    except ConvkitError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, KeyError, EOFError) as exc:
        raise ConvkitError(f"{path} is damaged ({type(exc).__name__}); re-create it with `convkit evaluate`") from None


def _parse(path: Path, arrays: dict) -> Predictions:
    bad = ConvkitError(f"{path} is not a convkit predictions file of schema {SCHEMA}; re-create it with this "
                       f"convkit's `convkit evaluate`")
    header = _json_member(arrays, "header", bad)
    if not isinstance(header, dict) or header.get("schema") != SCHEMA:
        raise bad
    n, classes, variants = header.get("n"), header.get("class_names"), header.get("variants")
    if not (isinstance(n, int) and isinstance(classes, list) and isinstance(variants, list) and variants
            and all(isinstance(c, str) for c in classes) and all(isinstance(v, str) for v in variants)):
        raise bad
    labels = arrays.get("labels")
    if labels is None or labels.shape != (n,) or labels.dtype.kind not in "ui" or (n and labels.max() >= len(classes)):
        raise bad
    paths = None
    if header.get("image_ids") == "path":
        paths = _json_member(arrays, "ids", bad)
        if not isinstance(paths, list) or len(paths) != n or not all(isinstance(p, str) for p in paths):
            raise bad
    out = {}
    for i, key in enumerate(variants):
        ids, probs = arrays.get(f"v{i}_top_ids"), arrays.get(f"v{i}_top_probs")
        if (ids is None or probs is None or ids.ndim != 2 or ids.shape[0] != n or probs.shape != ids.shape
                or ids.dtype.kind not in "ui" or probs.dtype != np.float16 or (n and ids.max() >= len(classes))):
            raise bad
        out[key] = VariantPredictions(ids, probs)
    pre = header.get("preprocessing") if isinstance(header.get("preprocessing"), dict) else {}
    return Predictions(labels.astype(np.int64), classes, str(header.get("data_checksum") or ""),
                       str(header.get("dataset") or ""), pre, out, paths, str(header.get("created") or ""),
                       extra={"data_root": header["data_root"]} if isinstance(header.get("data_root"), str) else {})


def _json_member(arrays: dict, name: str, bad: ConvkitError):
    raw = arrays.get(name)
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1 or raw.size > MAX_HEADER_BYTES * 64:
        raise bad
    try:
        return json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise bad from None


def write_evaluation(target, data, result, accuracy: list[dict]) -> dict[str, str]:
    """Write the predictions of one evaluation beside its eval.json (``target``: evaluate/target.Target, ``result``
    its EvalResult, ``accuracy`` the measured entries with ``top_k``); returns {"predictions": path}, the entry of
    eval.json's ``files``, or {} when no entry carries predictions."""
    primary = next(iter(result.variants.values()), {})
    preds = from_evaluation(data, primary.get("class_names") or [], preprocessing_record(primary, result.dataset),
                            accuracy, result.created, result.dataset.get("name") or "")
    if not preds.variants:
        return {}
    path = Path(target.out_dir) / file_name(target.names.prefix)
    return {"predictions": str(write(path, preds))}
