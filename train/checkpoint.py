"""Checkpoints: the eager module's state_dict plus everything needed to resume exactly."""

from __future__ import annotations

from pathlib import Path

import torch

from convkit.atomic import save_torch
from convkit.errors import ConvkitError

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(run_dir: Path, *, model, optimizer, scheduler, epoch: int, config: dict, history: list,
                    grad_norms: list, environment: dict, data_checksum: str) -> Path:
    """Atomically write ``run_dir/checkpoint.pt`` for ``epoch`` completed epochs; returns its path."""
    state = {
        "model": model.state_dict(),  # the eager module: no torch.compile "_orig_mod." prefixes
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": epoch,
        "config": config,
        "history": history,
        "grad_norms": grad_norms,
        "environment": environment,
        "data_checksum": data_checksum,
    }
    return save_torch(Path(run_dir) / CHECKPOINT, state)


def load_checkpoint(path: Path) -> dict:
    """Return the checkpoint dict at ``path``; ConvkitError when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise ConvkitError(f"checkpoint {path} not found; train first (`convkit train EXPERIMENT`)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged zips/pickles
        raise ConvkitError(f"checkpoint {path} is corrupt ({type(exc).__name__}); retrain or restore it") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ConvkitError(f"{path} is not a convkit checkpoint (no model/config entries); pass a run's checkpoint.pt")
    return ckpt


def load_weights(model: torch.nn.Module, state: dict, source: str) -> torch.nn.Module:
    """Load ``state`` into ``model`` after check_state_dict (a one-line ConvkitError on mismatch); returns ``model``."""
    check_state_dict(model, state, source)
    model.load_state_dict(state)
    return model


def check_state_dict(model: torch.nn.Module, state: dict, source: str) -> None:
    """Raise ConvkitError naming the first differing keys or shapes when ``state`` does not fit ``model``."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:3]}")
        if shapes:
            k = shapes[0]
            parts.append(f"shape of {k} is {tuple(state[k].shape)}, model needs {tuple(own[k].shape)}")
        raise ConvkitError(f"{source} does not match this architecture: {'; '.join(parts)}; pick the matching experiment")
