"""torch.compile for one model at a time, without dynamo's silent fall-back to eager."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn as nn

# Inductor compiles one model's kernels in parallel worker processes. Each worker costs a few hundred MB and
# one model has tens of kernels, so beyond 8 workers compile time barely drops while memory keeps growing.
MAX_COMPILE_THREADS = 8


def cgroup_cpu_limit(root: str | Path = "/sys/fs/cgroup") -> float | None:
    """Return the CPU quota of this process's cgroup in CPUs (``--cpus`` of docker), None when unlimited/unknown.

    Inductor sizes its worker pool from the CPU affinity, which does not see a container's CPU quota: a
    ``--cpus 4`` container on a 64-core host would start 32 compile workers.
    """
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # cgroup v2: "max 100000" or "400000 100000"
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def compile_threads(environ=None, cpus: int | None = None, quota: float | None = None) -> int:
    """Return the number of Inductor compile workers: $TORCHINDUCTOR_COMPILE_THREADS when set, else
    min(MAX_COMPILE_THREADS, usable CPUs), where usable CPUs honours the affinity mask and the cgroup quota."""
    environ = os.environ if environ is None else environ
    if environ.get("TORCHINDUCTOR_COMPILE_THREADS", "").strip():
        return max(1, int(environ["TORCHINDUCTOR_COMPILE_THREADS"]))
    cpus = cpus if cpus is not None else len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, min(MAX_COMPILE_THREADS, cpus))


def compile_model(model: nn.Module, **kwargs) -> nn.Module:
    """Return ``torch.compile(model, dynamic=False, **kwargs)`` compiled against a fresh dynamo cache.

    Dynamo caches compiled frames per Python code object and, after ``cache_size_limit`` (8) recompiles of one
    code object, silently runs it eagerly. Every ``nn.Sequential`` model shares ``Sequential.forward``, so in a
    ``train-all`` the ninth Sequential model would train uncompiled while being reported as compiled.
    Resetting before each model's compile keeps every model compiled; models are compiled one after another,
    never interleaved, so nothing still in use is dropped.
    """
    torch._dynamo.reset()
    import torch._inductor.config as inductor_config  # inductor loads only for runs that compile (seconds)

    inductor_config.compile_threads = compile_threads(quota=cgroup_cpu_limit())
    return torch.compile(model, **{"dynamic": False, **kwargs})
