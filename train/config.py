"""The resolved configuration of one training run: experiment + recipe + command-line overrides."""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from convkit.devices import gpu_visible, resolve_default_device
from convkit.errors import ConvkitError
from convkit.recipes import Recipe, get_recipe
from convkit.suite import get_experiment

# Gradient norms are sampled on every Nth training step (see GradNormTracker).
GRAD_NORM_EVERY = 10


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run's result; saved with every checkpoint and result file."""

    experiment: str
    suite: str
    model: str
    dataset: str
    recipe: Recipe
    epochs: int
    device: str
    compile: bool
    amp: str  # "bf16" or "none"
    channels_last: bool
    seed: int
    sample: bool
    data_dir: str | None
    run_dir: str
    grad_norm_every: int = GRAD_NORM_EVERY  # grad_norms.csv: mean over every Nth step of each epoch
    max_images: int | None = None  # at most this many images per split (evenly spaced), e.g. for a quick demo

    def to_dict(self) -> dict:
        """Return the config as a JSON-able dict; ``augmentation`` is what training applied (the recipe's crop and
        flip adjusted per dataset), next to the recipe's own values."""
        return {**asdict(self), "augmentation": {"crop_pad": self.crop_pad, "flip": self.flip}}

    @property
    def crop_pad(self) -> int:
        # 4 pixels of a 28×28 digit can push strokes out of frame; 2 is the usual MNIST translation.
        return min(self.recipe.crop_pad, 2) if self.dataset == "mnist" else self.recipe.crop_pad

    @property
    def flip(self) -> bool:
        return self.recipe.flip and self.dataset != "mnist"


def default_device() -> str:
    """Return "cuda" when a CUDA device is usable, "cpu" when there is no GPU; ConvkitError when a GPU is
    visible but CUDA is unusable (old driver), rather than a silent CPU run."""
    return resolve_default_device(torch.cuda.is_available(), gpu_visible())


def check_device(device: str) -> torch.device:
    """Return ``torch.device(device)``; ConvkitError when it is malformed or not available here."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConvkitError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConvkitError(f"device {device!r} requested but CUDA is not available here (torch's CUDA 13 build needs "
                          f"NVIDIA driver ≥ 580); use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ConvkitError(f"device type {dev.type!r} is not supported; use cpu or cuda")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConvkitError(f"device {device!r} requested but this machine has {torch.cuda.device_count()} GPU(s) "
                           f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}); pick one of them")
    return dev


# Upper bounds on command-line numbers, each with why a larger value is never meaningful.
LIMITS = {
    "epochs": (10_000, "the seed study trains at most a few hundred"),
    "batch-size": (65_536, "larger batches do not fit one device and leave too few steps per epoch"),
    "lr": (10.0, "SGD and AdamW diverge long before that"),
}
SEED_MAX = 2**32 - 1  # each epoch seeds torch with seed * 100003 + epoch, which must fit torch's 64-bit seed


def _check_number(name: str, value) -> None:
    """Raise ConvkitError (exit 2) unless ``value`` (None = not given) is finite, positive and within LIMITS."""
    if value is None:
        return
    if not math.isfinite(value):
        raise ConvkitError(f"--{name} must be a finite number, got {value}")
    if not value > 0:
        raise ConvkitError(f"--{name} must be positive, got {value}")
    upper, why = LIMITS[name]
    if value > upper:
        raise ConvkitError(f"--{name} must be at most {upper:g}, got {value:g}: {why}")


def _check_seed(seed: int) -> None:
    """Raise ConvkitError (exit 2) unless ``seed`` is an integer in 0..SEED_MAX."""
    if not 0 <= seed <= SEED_MAX:
        raise ConvkitError(f"--seed must be between 0 and {SEED_MAX}, got {seed}: each epoch's seed is derived "
                           "from it and must fit torch's 64-bit generator")


@dataclass(frozen=True)
class TrainOverrides:
    """The training options a run takes from the command line (or a caller): each None keeps the recipe's or the
    experiment's value. Frozen and picklable: train-all passes it unchanged to worker processes and Ray tasks.

    ``max_images`` caps the images of each split: a number, or (experiment glob, number) pairs of which the
    first that matches applies (e.g. ``[("t6-*", 256)]`` for the two large models of a demo).
    """

    recipe: str = "fast"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    device: str | None = None
    compile: bool | None = None  # None: compile on CUDA only
    seed: int = 0
    sample: bool = False
    data_dir: str | Path | None = None
    out: str | Path = "runs"
    max_images: int | list[tuple[str, int]] | None = None


def resolve_config(experiment: str, overrides: TrainOverrides | None = None,
                   run_name: str | None = None) -> TrainConfig:
    """Return the TrainConfig for ``experiment`` with the recipe's values and ``overrides`` applied (None: none).

    ``run_name`` names the run folder (default: the experiment's name; train-all --seeds uses <experiment>-seed<N>).
    """
    overrides = overrides or TrainOverrides()
    for name, value in (("epochs", overrides.epochs), ("batch-size", overrides.batch_size), ("lr", overrides.lr)):
        _check_number(name, value)
    _check_seed(overrides.seed)
    exp = get_experiment(experiment)
    base = get_recipe(overrides.recipe)
    changed = {k: v for k, v in (("batch_size", overrides.batch_size), ("lr", overrides.lr)) if v is not None}
    rec = dataclasses.replace(base, **changed)
    dev = check_device(overrides.device or default_device())
    on_cuda = dev.type == "cuda"
    suite_dir = f"{exp.suite}-sample" if overrides.sample else exp.suite
    return TrainConfig(
        experiment=exp.name,
        suite=exp.suite,
        model=exp.model,
        dataset=exp.dataset,
        recipe=rec,
        epochs=overrides.epochs or rec.epochs or exp.seed_epochs,
        device=str(dev),
        compile=on_cuda if overrides.compile is None else overrides.compile,  # compile by default on CUDA only
        amp="bf16" if on_cuda else "none",
        channels_last=on_cuda,
        seed=overrides.seed,
        sample=overrides.sample,
        data_dir=str(overrides.data_dir) if overrides.data_dir else None,
        run_dir=str(Path(overrides.out) / suite_dir / (run_name or exp.name)),
        max_images=_images_for(exp.name, overrides.max_images),
    )


def _images_for(experiment: str, max_images) -> int | None:
    """Return the image cap that applies to ``experiment`` (see TrainOverrides); ConvkitError when not positive."""
    if isinstance(max_images, (list, tuple)):
        max_images = next((n for pattern, n in max_images if fnmatch.fnmatch(experiment, pattern)), None)
    if max_images is not None and not 0 < int(max_images) <= 10_000_000:
        raise ConvkitError(f"--max-images must be a positive number of images, got {max_images}")
    return int(max_images) if max_images is not None else None
