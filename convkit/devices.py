"""Which device a run uses by default, and the refusal to fall back to the CPU when a GPU is visible but unusable."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Mapping

import torch

from convkit.errors import ConvkitError

# torch's CUDA 13 wheels load only on a driver that supports CUDA 13.0, i.e. NVIDIA driver 580 or newer.
DRIVER_REQUIREMENT = "NVIDIA driver ≥ 580 for CUDA 13"
_NO_GPU_VALUES = {"", "void", "none"}


def gpu_visible(environ: Mapping[str, str] | None = None, nvidiactl: str | Path = "/dev/nvidiactl") -> bool:
    """Return True when the process was given a GPU: NVIDIA_VISIBLE_DEVICES names one, or /dev/nvidiactl exists.

    The NVIDIA Container Toolkit sets NVIDIA_VISIBLE_DEVICES ("void"/"none" mean "no GPU") and mounts the
    driver's device nodes; a bare-metal host with a driver has /dev/nvidiactl.
    """
    environ = os.environ if environ is None else environ
    visible = environ.get("NVIDIA_VISIBLE_DEVICES")
    if visible is not None and visible.strip().lower() not in _NO_GPU_VALUES:
        return True
    return Path(nvidiactl).exists()


def resolve_default_device(cuda_available: bool, visible: bool) -> str:
    """Return "cuda" when CUDA is usable, "cpu" when no GPU is visible; ConvkitError (exit 2) when a GPU is
    visible but CUDA is not usable, which almost always means a driver too old for torch's CUDA build.

    Falling back to the CPU there would silently turn a minutes-long GPU run into an hours-long CPU one.
    """
    if cuda_available:
        return "cuda"
    if visible:
        raise ConvkitError(
            f"a GPU is visible but CUDA is not usable by torch: it needs the {DRIVER_REQUIREMENT} "
            f"(see `nvidia-smi`); pass --device cpu to run on the CPU"
        )
    return "cpu"


def reference_device(requested: str | None = None) -> str:
    """Return the device PyTorch reference logits are computed on: ``requested``, else "cuda" when usable, else "cpu".

    The reference is always computed in fp32 with TF32 off (see ``exact_fp32``), so the device changes only how
    long it takes, not what it says.
    """
    if requested:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def exact_fp32():
    """Run the block with TF32 off for matmuls and convolutions (restored afterwards), for fp32 references."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
