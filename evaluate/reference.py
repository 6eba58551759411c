"""The PyTorch reference for an exported model: its run directory's checkpoint, rebuilt as an eager module."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RUN_MARKERS = ("checkpoint.pt",)


@dataclass
class Reference:
    """A run's eager PyTorch model and the training config it came from."""

    run_dir: Path
    model: object  # torch.nn.Module (eval mode, CPU)
    config: dict
    mean: tuple[float, ...]
    std: tuple[float, ...]


def find_run_dir(onnx_path: Path) -> Path | None:
    """Return the run directory an .onnx file belongs to (its folder holds checkpoint.pt), else None."""
    folder = Path(onnx_path).resolve().parent
    return folder if (folder / "checkpoint.pt").is_file() else None


def load_reference(run_dir: Path) -> Reference:
    """Return the Reference rebuilt from ``run_dir/checkpoint.pt``; ConvkitError when it is missing/corrupt."""
    from convkit.models import create_model
    from convkit.train.checkpoint import load_checkpoint, load_weights

    path = Path(run_dir) / "checkpoint.pt"
    ckpt = load_checkpoint(path)
    cfg = ckpt["config"]
    model = create_model(cfg["model"])
    load_weights(model, ckpt["model"], str(path)).eval()
    mcfg = model.default_cfg
    return Reference(run_dir=Path(run_dir), model=model, config=cfg, mean=tuple(mcfg.mean), std=tuple(mcfg.std))
