"""Look inside a trained model: its first convolution (filters and pre-activation maps) and per-stage features.

Both run the eager model rebuilt by convkit.artifacts.load_run_model on one fixed test image (the first of
the test split the run was trained with), so repeated reports show the same picture.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from convkit import artifacts as A
from convkit.data.load import load_dataset
from convkit.data.loader import normalize

_NON_SPATIAL = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Linear, nn.Dropout)


@dataclass
class FixedImage:
    """The report's probe image: uint8 [C, H, W], its label and class name."""

    image: np.ndarray
    label: int
    class_name: str


def fixed_test_image(config: dict, dataset: str, classes: tuple[str, ...], cache: dict) -> FixedImage | None:
    """Return test image 0 of the data ``config`` was trained on (memoized in ``cache``), None when unavailable."""
    data_dir, sample, _ = A.data_settings(config, dataset)
    key = (dataset, data_dir, sample)
    if key not in cache:
        try:
            data = load_dataset(dataset, data_dir, sample=sample)
            label = int(data.test_labels[0])
            name = classes[label] if label < len(classes) else str(label)
            cache[key] = FixedImage(data.test_images[0].numpy(), label, name)
        except Exception:  # data not on this machine (a run trained elsewhere): the probe figures say so
            cache[key] = None
    return cache[key]


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """Return (module path, module) of the first nn.Conv2d in registration order, None for conv-free models."""
    return next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def _input(img: FixedImage, mean, std) -> torch.Tensor:
    return normalize(torch.from_numpy(np.ascontiguousarray(img.image))[None], mean, std)


def _capture(model: nn.Module, x: torch.Tensor, modules: list[tuple[str, nn.Module]]) -> dict[str, np.ndarray]:
    """Run ``model`` on ``x`` and return each listed module's output [C, H, W] (cloned before in-place ReLUs)."""
    outs: dict[str, np.ndarray] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: outs.__setitem__(n, out[0].detach().clone().numpy()))
             for n, m in modules]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return outs


def row_kernel(model_name: str | None) -> int | None:
    """Return the kernel size a kernel-size row is about, from its architecture's name: kernel_cnn_k5 → 5,
    kernel_eq_k7 → 7, the 1×1+3×3 rows (…_k1x3) → 1 (the 1×1 convolution they add); None for other models."""
    m = re.fullmatch(r"kernel_(?:cnn|eq)_k(\d+)(?:x\d+)?", model_name or "")
    return int(m.group(1)) if m else None


def row_conv(model: nn.Module, kernel: int | None) -> tuple[str, nn.Conv2d] | None:
    """Return (path, module) of the convolution a row is about: the first k×k convolution after the stem (the
    study's figures 20–23 show the k×k layer the row varies, not the 3×3 stem every row shares), else the stem
    when it is k×k; the first convolution when ``kernel`` is None or no k×k convolution exists."""
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        return None
    if kernel is not None:
        sized = [c for c in convs if tuple(c[1].kernel_size) == (kernel, kernel)]
        after_stem = [c for c in sized if c[0] != convs[0][0]]
        if after_stem or sized:
            return (after_stem or sized)[0]
    return convs[0]


def first_conv_view(model: nn.Module, img: FixedImage, mean, std, kernel: int | None = None,
                    prepare=None) -> dict | None:
    """Return {"layer", "weights" [out, in, k, k], "maps" [out, H, W]} of the row's convolution (``row_conv``: the
    first conv, or the first k×k one for a kernel-size row), None without one.

    ``maps`` are the conv's own outputs for the fixed image, i.e. before any normalization or nonlinearity;
    ``prepare(uint8 NCHW tensor)`` makes the model's input when given (a user model's recorded contract).
    """
    found = row_conv(model, kernel)
    if found is None:
        return None
    name, conv = found
    x = prepare(torch.from_numpy(np.ascontiguousarray(img.image))[None]) if prepare else _input(img, mean, std)
    maps = _capture(model, x, [found])[name]
    return {"layer": name, "weights": conv.weight.detach().float().numpy().copy(), "maps": maps}


def stage_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Return [(path, module)]: the last module of each stage.

    Stages are runs of top-level children, cut where a conv or a block holding one starts, up to the head.
    """
    children = list(model.named_children())
    stages: list[list[tuple[str, nn.Module]]] = []
    for name, m in children:
        if isinstance(m, _NON_SPATIAL):
            break  # the head: nothing after it is a feature map
        has_conv = isinstance(m, nn.Conv2d) or any(isinstance(c, nn.Conv2d) for c in m.modules())
        if has_conv or not stages:
            stages.append([])
        stages[-1].append((name, m))
    return [s[-1] for s in stages if s]


def stage_maps(model: nn.Module, img: FixedImage, mean, std) -> list[tuple[str, np.ndarray]]:
    """Return [("path (Type)", feature maps [C, H, W])] after each stage for the fixed image, in depth order."""
    mods = stage_modules(model)
    outs = _capture(model, _input(img, mean, std), mods)
    return [(f"{n} ({type(m).__name__})", outs[n]) for n, m in mods if n in outs and outs[n].ndim == 3]
