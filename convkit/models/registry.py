"""A timm-style model registry: ``@register_model``, ``create_model(name, **kw)``, ``list_models(pattern)``.

Each registered factory carries a default config (dataset, input shape, mean/std, classes) that
training, export and evaluation read instead of hard-coding per-model facts.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import asdict, dataclass
from typing import Callable

import torch.nn as nn

from convkit.data.catalog import get_dataset_info
from convkit.errors import ConvkitError


@dataclass(frozen=True)
class ModelConfig:
    """Default config carried by every registered model."""

    name: str
    dataset: str
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]
    description: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict:
        return asdict(self)


_MODELS: dict[str, tuple[Callable[..., nn.Module], ModelConfig]] = {}


def register_model(dataset: str, description: str = "") -> Callable:
    """Decorator registering a model factory under its function name, with the dataset's default config."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        info = get_dataset_info(dataset)
        cfg = ModelConfig(
            name=fn.__name__,
            dataset=dataset,
            input_shape=info.input_shape,
            mean=info.mean,
            std=info.std,
            classes=info.classes,
            description=description or (fn.__doc__ or "").strip().splitlines()[0],
        )
        if fn.__name__ in _MODELS:
            raise ValueError(f"model {fn.__name__} registered twice")
        _MODELS[fn.__name__] = (fn, cfg)
        return fn

    return wrap


def _unknown(kind: str, name: str, known: list[str]) -> ConvkitError:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ConvkitError(f"unknown {kind} {name!r}{hint} (`convkit list` shows all)")


def list_models(pattern: str = "*") -> list[str]:
    """Return the sorted names of registered models matching the glob ``pattern``."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def get_model_config(name: str) -> ModelConfig:
    """Return the default config of model ``name``."""
    if name not in _MODELS:
        raise _unknown("model", name, list(_MODELS))
    return _MODELS[name][1]


def create_model(name: str, **kwargs) -> nn.Module:
    """Build model ``name`` with freshly initialised weights; returns the eager ``nn.Module``."""
    if name not in _MODELS:
        raise _unknown("model", name, list(_MODELS))
    fn, cfg = _MODELS[name]
    model = fn(**kwargs)
    model.default_cfg = cfg  # the timm convention: the config travels with the module
    return model
