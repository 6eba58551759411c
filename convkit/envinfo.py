"""Describe the software and hardware a result was produced on, for every config and result file."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

import convkit


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    """Return the CPU model name (from /proc/cpuinfo on Linux, platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def physical_cores() -> int:
    """Return the number of physical cores this process may use (falls back to logical CPUs)."""
    try:
        pairs = set()
        block: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines() + [""]:
            if not line.strip():
                if "core id" in block:
                    pairs.add((block.get("physical id"), block["core id"]))
                block = {}
            elif ":" in line:
                k, v = line.split(":", 1)
                block[k.strip()] = v.strip()
        allowed = len(os.sched_getaffinity(0))
        return max(1, min(len(pairs), allowed)) if pairs else allowed
    except (OSError, AttributeError):
        return os.cpu_count() or 1


def git_revision() -> str | None:
    """Return the git commit of the convkit source tree, when it is a git checkout."""
    src = Path(convkit.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def device_name(device: torch.device | str) -> str:
    """Return a human-readable name of ``device`` (GPU model, or CPU model and core count)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} ({physical_cores()} cores)"


def environment(device: torch.device | str | None = None) -> dict:
    """Return versions of python/convkit/torch/torchvision/onnx/onnxruntime/CUDA/cuDNN and the device's name."""
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "convkit": convkit.__version__,
        "torch": str(torch.__version__),
        "torchvision": _version("torchvision"),
        "onnx": _version("onnx"),
        "onnxruntime": _version("onnxruntime-gpu") or _version("onnxruntime"),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "git_revision": git_revision(),
        "cpu": cpu_name(),
        "cpu_physical_cores": physical_cores(),
    }
    if device is not None:
        info["device"] = str(device)
        info["device_name"] = device_name(device)
    return info
