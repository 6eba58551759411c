"""The Device value (parsed once, threaded through every stage), which device a run uses by default, and the
refusal to fall back to the CPU when a GPU is visible but unusable. torch is imported where it is used, so the
CLI's options (which hold a Device) load without it."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

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


@dataclass(frozen=True)
class Device:
    """One device, parsed once (``cpu``, ``cuda``, ``cuda:N``); every consumer derives what it needs from it: the
    torch device, ONNX Runtime's ``device_id``, the label recorded beside each figure, the GPU's name.

    ``cuda`` without an index is cuda:0 (what torch and ORT pick), so a figure is never labelled "cuda" alone.
    """

    kind: str  # "cpu" | "cuda"
    index: int = 0  # the GPU's index (0 for the CPU)

    @classmethod
    def parse(cls, text: "str | Device") -> "Device":
        """Return the Device of ``text``; ConvkitError (exit 2) naming the accepted forms for anything else."""
        if isinstance(text, Device):
            return text
        value = str(text).strip().lower()
        kind, _, index = value.partition(":")
        if kind == "cpu" and not index:
            return cls("cpu", 0)
        if kind == "cuda" and (not index or (index.isdigit() and len(index) <= 4)):
            return cls("cuda", int(index or 0))
        raise ConvkitError(f"unknown device {str(text)[:40]!r}; use cpu, cuda or cuda:N")

    @classmethod
    def gpu(cls, index: int) -> "Device":
        """Return the Device of GPU ``index`` (``--device-id``)."""
        return cls("cuda", int(index))

    @property
    def is_cuda(self) -> bool:
        """Return True for a GPU."""
        return self.kind == "cuda"

    @property
    def label(self) -> str:
        """Return the name recorded with each figure: "cpu" or "cuda:N"."""
        return f"cuda:{self.index}" if self.is_cuda else "cpu"

    @property
    def ort_device_id(self) -> int:
        """Return ONNX Runtime's ``device_id`` provider option for this device (0 for the CPU)."""
        return self.index if self.is_cuda else 0

    def torch_device(self):
        """Return the torch.device."""
        import torch

        return torch.device(self.label)

    def synchronize(self) -> None:
        """Wait for this device's queued work (a no-op on the CPU): timings read the clock after it."""
        if self.is_cuda:
            import torch

            torch.cuda.synchronize(self.index)

    def name(self) -> str | None:
        """Return the GPU's name (None on the CPU)."""
        if not self.is_cuda:
            return None
        import torch

        return torch.cuda.get_device_name(self.index)

    def __str__(self) -> str:
        return self.label


def reference_device(requested: "str | Device | None" = None, gpu: Device | None = None) -> str:
    """Return the device label PyTorch reference logits are computed on: ``requested``, else ``gpu`` (cuda:0 when
    not given) when CUDA is usable, else "cpu".

    The reference is always computed in fp32 with TF32 off (see ``exact_fp32``), so the device changes only how
    long it takes, not what it says; it follows the run's device so a job on cuda:1 never lands on GPU 0.
    """
    import torch

    if requested:
        return Device.parse(requested).label
    return (gpu or Device.gpu(0)).label if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def exact_fp32():
    """Run the block with TF32 off for matmuls and convolutions (restored afterwards), for fp32 references."""
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
