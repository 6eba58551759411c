"""What to evaluate: a run directory's exported variants, one variant of a run, or a foreign .onnx file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from convkit.artifacts import EVAL_PREFIX, VARIANT_FILES, EvalNames, is_run_dir, precision_of, run_dir_of
from convkit.errors import ConvkitError
from convkit.provenance import refuse_foreign_model


@dataclass
class Target:
    """The ONNX files (precision → path; "model" for a foreign file), the run directory if any, the outputs."""

    files: dict[str, Path]
    run_dir: Path | None
    out_dir: Path
    names: EvalNames


def resolve_target(path: Path, out: str | None = None) -> Target:
    """Return the Target for a run directory or an .onnx file, writing into ``out`` when given (else the run
    directory, or <stem>_eval beside a foreign file); ConvkitError (exit 2) when neither fits, or when ``out`` is
    a run folder the model was not exported from."""
    target = _resolve(Path(path), out)
    if out:
        target.out_dir = Path(out)
        for f in target.files.values():
            refuse_foreign_model(f, target.out_dir)
    return target


def _resolve(path: Path, out: str | None) -> Target:
    if path.is_dir():
        return _run_dir_target(path)
    if not path.exists():
        raise ConvkitError(f"{path} not found; pass an .onnx file or a run directory")
    run_dir = run_dir_of(path)
    if run_dir is not None and path.name == VARIANT_FILES["fp32"]:
        return _run_dir_target(path.parent)
    if run_dir is not None:
        precision = precision_of(path.name)
        return Target({precision or "fp32": path}, run_dir, run_dir,
                      EvalNames(f"{EVAL_PREFIX}.{precision or path.stem}"))
    out_dir = Path(out) if out else path.parent / f"{path.stem}_eval"
    return Target({"model": path}, None, out_dir, EvalNames(EVAL_PREFIX))


def _run_dir_target(path: Path) -> Target:
    """Return the Target of every exported variant in the run directory ``path``."""
    if not (path / VARIANT_FILES["fp32"]).is_file():
        hint = ("run `convkit export` on it first" if is_run_dir(path)
                else f"pass a run directory holding {VARIANT_FILES['fp32']} or an .onnx file")
        raise ConvkitError(f"{path} has no {VARIANT_FILES['fp32']}; {hint}")
    files = {p: path / f for p, f in VARIANT_FILES.items() if (path / f).is_file()}
    return Target(files, path if is_run_dir(path) else None, path, EvalNames(EVAL_PREFIX))
