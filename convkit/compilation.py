"""torch.compile for one model at a time, without dynamo's silent fall-back to eager."""

from __future__ import annotations

import torch
import torch.nn as nn


def compile_model(model: nn.Module, **kwargs) -> nn.Module:
    """Return ``torch.compile(model, dynamic=False, **kwargs)`` compiled against a fresh dynamo cache.

    Dynamo caches compiled frames per Python code object and, after ``cache_size_limit`` (8) recompiles of one
    code object, silently runs it eagerly. Every ``nn.Sequential`` model shares ``Sequential.forward``, so in a
    ``train-all`` the ninth Sequential model would train uncompiled while being reported as compiled.
    Resetting before each model's compile keeps every model compiled; models are compiled one after another,
    never interleaved, so nothing still in use is dropped.
    """
    torch._dynamo.reset()
    return torch.compile(model, **{"dynamic": False, **kwargs})
