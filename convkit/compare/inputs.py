"""What ``convkit compare`` compares: two stored evaluations (their eval.json and per-image predictions), or two
ONNX files evaluated here on the same images — each chunk of images decoded once and fed to both — with their
latency timed in interleaved blocks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convkit.errors import EXIT_UNVERIFIED, ConvkitError
from convkit.evaluate import predictions as pred_file
from convkit.evaluate.result import EvalResult, read_eval
from convkit.text import cap

EVAL_JSON = "eval.json"


@dataclass
class Side:
    """One side of the comparison: what it is called, its per-image predictions, its stored evaluation (None for a
    file evaluated here) and, when at hand, the images (uint8 [N, C, H, W], indexable) for the contact sheet."""

    name: str
    predictions: pred_file.Predictions
    evaluation: EvalResult | None = None
    images: object | None = None
    variant: str = ""
    notes: list[str] = field(default_factory=list)


def is_onnx(path: str | Path) -> bool:
    """Return True when ``path`` names an ONNX file (compared by evaluating it here)."""
    return Path(path).suffix.lower() == ".onnx" and Path(path).is_file()


def find_eval_json(path: Path) -> Path:
    """Return the eval.json that ``path`` names: the file itself, the one in an evaluation or run folder, or a run
    folder's only evaluation on other data (eval/<data-key>/); ConvkitError (exit 2) naming what to pass."""
    if path.is_file() and path.suffix == ".json":
        return path
    if not path.is_dir():
        raise ConvkitError(f"{path} not found; pass an evaluation folder, a run folder, an eval.json, or two .onnx "
                           f"files with --data/--dataset")
    if (path / EVAL_JSON).is_file():
        return path / EVAL_JSON
    others = sorted(path.glob(f"eval/*/{EVAL_JSON}"))
    if len(others) == 1:
        return others[0]
    if others:
        names = ", ".join(p.parent.name for p in others[:5])
        raise ConvkitError(f"{path} holds {len(others)} evaluations on other data ({names}); pass the one to "
                           f"compare, e.g. {others[0]}")
    raise ConvkitError(f"{path} holds no {EVAL_JSON}; run `convkit evaluate {path}` first")


def load_stored(path: str | Path, variant: str | None) -> Side:
    """Return the Side of a stored evaluation: eval.json and the predictions file beside it (the one it lists, by
    name only: a path inside a file never leads elsewhere); ConvkitError (exit 2) when either is missing, or when
    they belong to different evaluations."""
    json_path = find_eval_json(Path(path))
    evaluation = read_eval(json_path)
    if evaluation is None:
        raise ConvkitError(f"{json_path} not found")
    listed = Path(str(evaluation.files.get("predictions") or "")).name
    prefix = json_path.name[:-len(".json")]
    name = listed if listed.endswith(pred_file.SUFFIX) else pred_file.file_name(prefix)
    preds = pred_file.read(json_path.parent / name)
    if preds.created != evaluation.created:
        raise ConvkitError(f"{json_path.parent / name} belongs to another evaluation than {json_path} (created "
                           f"{cap(preds.created, 40)} vs {cap(evaluation.created, 40)}); re-run `convkit evaluate`")
    key, _ = preds.variant(variant)
    prec, _, provider = key.partition("/")
    entry = next((a for a in evaluation.accuracy if (a.get("precision"), a.get("provider")) == (prec, provider)), {})
    if entry.get("degenerate"):
        raise ConvkitError(f"{json_path}: {key} outputs degenerate ({cap(entry['degenerate'])}): nothing to compare",
                           EXIT_UNVERIFIED)
    notes = []
    if (evaluation.preprocessing or {}).get("verdict") == "unverified":
        notes.append(f"{path}: its preprocessing was unverified (a probe found better values): both sides are "
                     f"compared as evaluated")
    return Side(str(path), preds, evaluation, stored_images(preds), key, notes)


def stored_images(preds: pred_file.Predictions):
    """Return the images of a stored evaluation for the contact sheet when they can be read here: the --data
    folder's files where they still are (None otherwise; catalog data are loaded by the sheet only on demand)."""
    root = preds.extra.get("data_root")
    if preds.image_paths is None or not root or not Path(root).is_dir():
        return None
    return [Path(root) / p for p in preds.image_paths]


def catalog_images(preds: pred_file.Predictions):
    """Return the test images of a stored evaluation on a catalog dataset, found where `convkit evaluate` finds it
    (the embedded sample, else $CONVKIT_DATA) and checked against the recorded checksum; None when not found here."""
    from convkit.evaluate.images import catalog_data

    spread = re.search(r":first-(\d+)-spread$", preds.data_checksum)
    for sample in (True, False):
        try:
            data = catalog_data(preds.dataset, None, sample, int(spread.group(1)) if spread else None)
        except (ConvkitError, ValueError, KeyError):
            continue
        if data.checksum == preds.data_checksum and len(data.labels) == preds.n:
            return data.images
    return None


def refuse_mismatch(base: pred_file.Predictions, new: pred_file.Predictions, allow_preprocessing_change: bool
                    ) -> list[str]:
    """Raise ConvkitError (exit 2, one line) when the two evaluations cannot be paired image by image: other data
    (checksum or image count), other class lists, or other preprocessing (unless allowed); returns the notes to
    print (the preprocessing change when allowed)."""
    if base.data_checksum != new.data_checksum or base.n != new.n:
        raise ConvkitError(f"different data: base has {base.n} images (checksum {base.data_checksum[:12]}), new has "
                           f"{new.n} (checksum {new.data_checksum[:12]}); evaluate both on the same --data/--dataset")
    if not np.array_equal(base.labels, new.labels):
        raise ConvkitError("the two evaluations label the same images differently; re-evaluate both with this convkit")
    if base.class_names != new.class_names:
        diff = next((i for i, (a, b) in enumerate(zip(base.class_names, new.class_names)) if a != b),
                    min(len(base.class_names), len(new.class_names)))
        raise ConvkitError(f"different class lists ({len(base.class_names)} vs {len(new.class_names)} classes, first "
                           f"difference at index {diff}); compare models with the same classes in the same order "
                           f"(pass --classes when evaluating)")
    changed = {k: (base.preprocessing.get(k), new.preprocessing.get(k))
               for k in sorted(set(base.preprocessing) | set(new.preprocessing))
               if base.preprocessing.get(k) != new.preprocessing.get(k)}
    if not changed:
        return []
    words = "; ".join(f"{k}: {cap(a, 60)} → {cap(b, 60)}" for k, (a, b) in changed.items())
    if not allow_preprocessing_change:
        raise ConvkitError(f"different preprocessing ({words}); compare models fed the same pixels, or pass "
                           f"--allow-preprocessing-change if the change is the point")
    return [f"preprocessing changed (allowed by --allow-preprocessing-change): {words}"]
