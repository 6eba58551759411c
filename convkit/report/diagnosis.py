"""The report's lines on why a run's numbers moved: the per-class changes its evaluation tested (McNemar per class,
Holm-corrected: convkit.class_drops) and a pointer to ``convkit diagnose``'s diagnose.md when the folder has one."""

from __future__ import annotations

from pathlib import Path

from convkit import artifacts as A
from convkit.class_drops import describe_drops
from convkit.errors import ConvkitError
from convkit.onnx_meta import file_sha256
from convkit.report.collect import RunData


def diagnosis_blocks(run: RunData, suite_dir: Path) -> list[tuple]:
    """Return the blocks of one run's diagnosis: per-class changes beyond noise of every ORT file against PyTorch
    and fp32, and the diagnose.md path; [] when the run has neither."""
    lines = []
    for entry in run.eval_entries():
        if not isinstance(entry, dict):
            continue
        tests = (((entry.get("vs_pytorch") or {}).get("per_class_test"), "PyTorch"),
                 (entry.get("per_class_vs_fp32"), "fp32"))
        for result, base in tests:
            if isinstance(result, dict) and isinstance(result.get("rows"), list) and "classes_tested" in result:
                try:
                    lines.append(f"ORT {entry.get('provider')}: "
                                 + describe_drops(result, str(entry.get("precision")), base))
                except (KeyError, TypeError, ValueError):  # a damaged eval.json: left out, never trusted
                    continue
    blocks: list[tuple] = []
    if lines:
        blocks += [("p", "Per-class changes (McNemar on each class's images, Holm-corrected):"), ("ul", lines)]
    diag = Path(run.path) / A.DIAGNOSE_MD
    if diag.is_file():
        try:
            where = diag.relative_to(suite_dir)
        except ValueError:
            where = diag
        stale = "" if diagnosed_current(Path(run.path)) else " (stale: made from another model.onnx than the one here)"
        blocks.append(("p", f"Why the numbers moved (convkit diagnose): {where}{stale}"))
    return blocks


def diagnosed_current(folder: Path) -> bool:
    """Return True when diagnose.json names the sha256 of the folder's fp32 file as the one it diagnosed."""
    try:
        doc = A.read_artifact(folder / A.DIAGNOSE_JSON, "diagnose")
    except ConvkitError:
        return False
    if not isinstance(doc, dict) or not isinstance(doc.get("fp32_file"), str):
        return False
    path = folder / Path(doc["fp32_file"]).name
    return path.is_file() and file_sha256(path) == doc.get("fp32_sha256")
