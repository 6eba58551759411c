"""Run a test split through an ORT session, compute classification metrics, and gate each file against PyTorch."""

from __future__ import annotations

import sys

import numpy as np
from tqdm import tqdm

from convkit import gates
from convkit.calibration import calibration_bins
from convkit.class_drops import per_class_drops
from convkit.errors import ConvkitError
from convkit.evaluate.predictions import top_k
from convkit.preprocessing import framed
from convkit.reference import tie_mask
from convkit.uncertainty import mcnemar, wilson

MAX_MATRIX_CLASSES = 100  # beyond this many classes a matrix is unreadable (and megabytes of eval.json)
CONFUSED_PAIRS = 20  # the most frequent (true, predicted) mistakes listed in eval.json / eval.md


def ort_scores(session, spec, images_u8: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Return the model's output rows [N, classes] (float32) for all ``images_u8`` [N, C, H, W].

    Runs in chunks of ``batch_size`` — or of the model's fixed batch size, padding the last chunk with copies
    of its first image and dropping the padded rows.
    """
    n = len(images_u8)
    step = spec.fixed_batch or batch_size
    outs = []
    # a progress bar on a terminal only (logs and CI stay clean); decoding a large --data folder takes a while
    for start in tqdm(range(0, n, step), desc=f"{spec.path.name} {spec.precision}", unit="batch", leave=False,
                      disable=not sys.stderr.isatty()):
        chunk = images_u8[start:start + step]
        real = len(chunk)
        if spec.fixed_batch and real < step:
            boxes = getattr(chunk, "boxes", None)  # a folder batch's content boxes (a model-space pad) travel too
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], step - real, axis=0)])
            if boxes is not None:
                chunk = framed(chunk, np.concatenate([boxes, np.repeat(boxes[:1], step - real, axis=0)]))
        y = spec.scores(session.run([spec.output_name], {spec.input_name: spec.prepare(chunk)})[0])
        if y.ndim != 2 or y.shape[0] != len(chunk):
            raise ConvkitError(f"{spec.path}: output {spec.output_name!r} has shape {list(y.shape)} for a batch of "
                               f"{len(chunk)}, expected [N, classes]")
        outs.append(np.asarray(y[:real], dtype=np.float32))
    scores = np.concatenate(outs)
    if scores.shape[1] != len(spec.class_names):
        raise ConvkitError(f"{spec.path}: output has {scores.shape[1]} classes but {spec.dataset} has "
                           f"{len(spec.class_names)}; pass the matching --dataset")
    return scores


def is_probabilities(scores: np.ndarray, atol: float = 1e-3) -> bool:
    """Return True when every row is non-negative and sums to 1 (softmax output), False for logits."""
    if scores.size == 0:
        return False
    return bool(np.all(scores >= -1e-6) and np.allclose(scores.sum(axis=1), 1.0, atol=atol))


ROW_CHUNK_ELEMENTS = 1 << 22  # scores handled at once by _per_image: 32 MB of float64 whatever the class count


def _per_image(scores: np.ndarray, labels: np.ndarray, probs: bool) -> tuple[np.ndarray, np.ndarray]:
    """Return (log-probability of each image's label, whether the label is among its 5 top scores), computed a
    block of rows at a time: the float64 and index copies of a 100,000-class output never exist whole."""
    step = max(1, ROW_CHUNK_ELEMENTS // max(scores.shape[1], 1))
    logp, top5 = np.empty(len(labels)), np.empty(len(labels), dtype=bool)
    for a in range(0, len(labels), step):
        z, y = scores[a:a + step], labels[a:a + step]
        rows = np.log(np.clip(z.astype(np.float64), 1e-12, None)) if probs else _log_softmax(z)
        logp[a:a + step] = rows[np.arange(len(y)), y]
        top5[a:a + step] = (np.argsort(-z, axis=1, kind="stable")[:, :5] == y[:, None]).any(axis=1)
    return logp, top5


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def confusion_cells(labels: np.ndarray, preds: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the non-zero cells of the k×k count matrix (rows = true class, columns = predicted class) as arrays
    (true, predicted, count), ordered by true then predicted class: memory grows with the images, never with k²
    (a dense matrix of a 100,000-class model would be 74.5 GiB)."""
    codes, counts = np.unique(labels.astype(np.int64) * k + preds.astype(np.int64), return_counts=True)
    return codes // k, codes % k, counts


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, k: int) -> np.ndarray:
    """Return the dense k×k count matrix, rows = true class, columns = predicted class (for small k only: see
    ``confusion_cells``)."""
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (labels.astype(np.int64), preds.astype(np.int64)), 1)
    return cm


def _readable_matrix(cells: tuple, row: np.ndarray, present: np.ndarray, class_names: list[str]) -> dict:
    """Return eval.json's confusion keys: the whole k×k matrix up to MAX_MATRIX_CLASSES classes, else the matrix
    of the classes present when they are that few, else None (the confused pairs remain); ``confusion_classes``
    names its rows and columns. Only the kept rows and columns are ever built."""
    if len(class_names) <= MAX_MATRIX_CLASSES:
        keep = np.arange(len(class_names))
    elif len(present) <= MAX_MATRIX_CLASSES:
        keep = present
    else:
        return {"confusion": None, "confusion_normalized": None, "confusion_classes": None}
    where = np.full(len(class_names), -1, dtype=np.int64)
    where[keep] = np.arange(len(keep))
    true, pred, count = cells
    cm = np.zeros((len(keep), len(keep)), dtype=np.int64)
    inside = (where[true] >= 0) & (where[pred] >= 0)
    cm[where[true[inside]], where[pred[inside]]] = count[inside]
    totals = row[keep][:, None]
    norm = np.divide(cm, totals, out=np.zeros(cm.shape), where=totals > 0)
    return {"confusion": cm.tolist(), "confusion_normalized": np.round(norm, 6).tolist(),
            "confusion_classes": [class_names[i] for i in keep]}


def classification_metrics(scores: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
    """Return top-1 and top-5 accuracy (top-5 None with ≤ 5 classes), loss, per-class precision/recall/F1, the
    confusion matrix, the most confused (true, predicted) pairs and calibration of ``scores``.

    ``accuracy_ci``, ``top5_accuracy_ci`` and each class's ``recall_ci`` are 95 % Wilson intervals [low, high]
    (None without images); the calibration carries the ECE's bootstrap interval ``ece_ci``.
    ``scores`` are logits or probabilities (detected with ``is_probabilities``): loss is the cross-entropy of
    the logits, or the NLL of the log-probabilities; ``output_kind`` says which. ``predictions`` is the argmax
    per image (a numpy array, not JSON — callers drop it before serializing). ``calibration`` is
    convkit.calibration.calibration_bins (ECE over 15 confidence bins).
    """
    labels = np.asarray(labels, dtype=np.int64)
    k = len(class_names)
    probs = is_probabilities(scores)
    label_logp, top5 = _per_image(scores, labels, probs)
    loss = float(-label_logp.mean()) if len(labels) else None
    if loss is not None and not np.isfinite(loss):
        loss = None
    preds = scores.argmax(axis=1)
    cells = confusion_cells(labels, preds, k)  # sparse: a 100,000-class model has no dense k×k anywhere
    tp = np.bincount(labels[preds == labels], minlength=k).astype(np.float64)
    col, row = np.bincount(preds, minlength=k), np.bincount(labels, minlength=k)
    precision = np.divide(tp, col, out=np.zeros(k), where=col > 0)
    recall = np.divide(tp, row, out=np.zeros(k), where=row > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    true, pred, count = cells
    mistakes = np.flatnonzero(true != pred)
    # most frequent first; ties in (true, predicted) order, as a stable sort of the flattened matrix gives
    worst = mistakes[np.argsort(-count[mistakes], kind="stable")][:CONFUSED_PAIRS]
    pairs = [{"true": class_names[true[c]], "predicted": class_names[pred[c]], "count": int(count[c]),
              "share_of_true": float(count[c] / row[true[c]])} for c in worst]
    # classes that are true or predicted at least once: a 2000-class model on 50 images has rows for these only
    present = np.flatnonzero((row > 0) | (col > 0))
    per_class = [{"class": class_names[i], "precision": float(precision[i]), "recall": float(recall[i]),
                  "recall_ci": _ci(int(tp[i]), int(row[i])), "f1": float(f1[i]), "support": int(row[i])}
                 for i in present]
    matrix = _readable_matrix(cells, row, present, class_names)
    n = len(labels)
    return {
        "n": int(len(labels)),
        "accuracy": float((preds == labels).mean()) if n else None,
        "accuracy_ci": _ci(int((preds == labels).sum()), n),
        "top5_accuracy": float(top5.mean()) if n and k > 5 else None,
        "top5_accuracy_ci": _ci(int(top5.sum()), n) if k > 5 else None,
        "loss": loss,
        "output_kind": "probabilities" if probs else "logits",
        "loss_kind": "NLL of log-probabilities" if probs else "cross-entropy of logits",
        "macro_f1": float(f1[present].mean()) if len(present) else 0.0,  # over the classes present, as sklearn
        "per_class": per_class,
        **matrix,
        "calibration": calibration_bins(scores, labels),
        "confused_pairs": pairs,
        "predictions": preds,
    }


def _ci(successes: int, n: int) -> list[float] | None:
    interval = wilson(successes, n)
    return interval.to_list() if interval else None


def compare_backends(ort: dict, ref: dict, max_listed: int = 1000) -> dict:
    """Return per-metric deltas ORT − reference and the indices of images whose predicted class differs.

    A differing image where the reference's top two scores are within gates.TIE_GAP (``ref["tie_mask"]``) is a
    tie: counted in ``ties``, not in ``disagreements`` (which the gate uses). ``paired_test`` is McNemar's exact
    test of the accuracy delta on the same images with its 95 % interval (convkit.uncertainty.PairedTest).
    """
    deltas = {"accuracy": ort["accuracy"] - ref["accuracy"],
              "loss": (ort["loss"] - ref["loss"]) if ort["loss"] is not None and ref["loss"] is not None else None,
              "macro_f1": ort["macro_f1"] - ref["macro_f1"]}
    ref_rows = {c["class"]: c for c in ref["per_class"]}  # the classes present may differ between the two
    absent = {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    for key in ("precision", "recall", "f1"):
        deltas[f"per_class_{key}"] = [a[key] - ref_rows.get(a["class"], absent)[key] for a in ort["per_class"]]
    flips = ort["predictions"] != ref["predictions"]
    ties = flips & ref["tie_mask"] if "tie_mask" in ref else np.zeros_like(flips)
    differ = np.nonzero(flips & ~ties)[0]
    labels = ref.get("labels")
    paired = (mcnemar(ref["predictions"] == labels, ort["predictions"] == labels).to_dict()
              if labels is not None else None)
    return {"delta": deltas, "paired_test": paired, "disagreements": int(len(differ)),
            "ties": int(ties.sum()), "tie_gap": gates.TIE_GAP,
            "disagreement_indices": differ[:max_listed].tolist(),
            "disagreement_indices_truncated": bool(len(differ) > max_listed)}


def degenerate_reason(scores: np.ndarray, labels: np.ndarray, output: str) -> str | None:
    """Return why ``scores`` are not usable class scores — NaN/Inf, identical for every image, every score tied,
    one class for every image whatever the label — or None."""
    n = len(scores)
    if n == 0:
        return None
    bad = ~np.isfinite(scores).all(axis=1)
    if bad.any():
        return f"output {output!r} holds NaN or Inf for {int(bad.sum())} of {n} images"
    if n > 1 and np.allclose(scores, scores[:1], rtol=0, atol=1e-7):
        return f"output {output!r} is identical for every image"
    if scores.shape[1] > 1 and np.all(np.ptp(scores, axis=1) <= 1e-7):
        return f"every score of output {output!r} is tied for every image"
    preds = scores.argmax(1)
    if n > 1 and len(np.unique(labels)) > 1 and np.all(preds == preds[0]):
        return f"output {output!r} gives class {int(preds[0])} for every image whatever its label"
    return None


def pytorch_accuracy(scores: np.ndarray, labels: np.ndarray, class_names: list[str], device: str = "cpu") -> dict:
    """Return the classification metrics of the PyTorch reference ``scores`` (computed on ``device``), and
    ``tie_mask``: the images whose top two logits are within gates.TIE_GAP, and ``labels`` (not JSON: dropped with
    "predictions")."""
    return {**classification_metrics(scores, labels, class_names), "device": device, "tie_mask": tie_mask(scores),
            "labels": np.asarray(labels)}


def gate_verdict(precision: str, ort: dict, vs_pytorch: dict, reference: dict, limits: dict) -> dict:
    """Return the accuracy gate of one ORT result against PyTorch as written to eval.json: gates.Verdict's dict
    (accuracy drop ≤ ``limits[precision]`` points, top-1 disagreement ≤ gates.MAX_DISAGREEMENT, ties apart)."""
    agreement = 1.0 - vs_pytorch["disagreements"] / max(ort["n"], 1)
    verdict = gates.judge(gates.Limits.for_precision(precision, limits), accuracy=ort["accuracy"],
                          reference_accuracy=reference["accuracy"], agreement=agreement)
    return verdict.to_dict()


def ort_accuracy(sessions: dict, specs: dict, images_u8: np.ndarray, labels: np.ndarray, reference: dict | None,
                 limits: dict, eval_batch: int) -> tuple[list[dict], list[str]]:
    """Return (one accuracy entry per (precision, provider) session, gate failure messages).

    Each entry holds the classification metrics, and when a PyTorch ``reference`` is at hand the comparison
    with it (``vs_pytorch``) and the gate verdict (``gate``); an fp16/int8 entry holds ``vs_fp32``, McNemar's
    exact test against the fp32 file on the same provider (convkit.uncertainty.PairedTest.to_dict).
    """
    entries, failures, correct = [], [], {}
    for (prec, kind), session in sessions.items():
        spec = specs[prec]
        batch = eval_batch if kind == "cpu" else max(eval_batch, 1024)
        scores = ort_scores(session, spec, images_u8, batch)
        metrics = classification_metrics(scores, labels, spec.class_names)
        entry = {"precision": prec, "provider": kind, "path": str(spec.path), **metrics,
                 "degenerate": degenerate_reason(scores, labels, spec.output_name),
                 "top_k": top_k(scores)}  # not JSON: the predictions file's (dropped before eval.json)
        correct[(prec, kind)] = metrics["predictions"] == np.asarray(labels)
        if reference is not None:
            entry["vs_pytorch"] = compare_backends(metrics, reference)
            entry["vs_pytorch"]["per_class_test"] = per_class_drops(
                reference["predictions"] == np.asarray(labels), correct[(prec, kind)], labels, spec.class_names)
            entry["gate"] = gate_verdict(prec, metrics, entry["vs_pytorch"],
                                         reference, limits)
            failures += [f"{prec} on {kind}: {r}" for r in entry["gate"]["reasons"]]
        entries.append(entry)
    for entry in entries:  # fp16/int8 against fp32 on the same provider and images
        base = correct.get(("fp32", entry["provider"]))
        if entry["precision"] != "fp32" and base is not None:
            entry["vs_fp32"] = mcnemar(base, correct[(entry["precision"], entry["provider"])]).to_dict()
            entry["per_class_vs_fp32"] = per_class_drops(base, correct[(entry["precision"], entry["provider"])],
                                                         labels, specs[entry["precision"]].class_names)
    return entries, failures
