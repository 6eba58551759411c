"""airbench-style batching: the whole split lives on the device as uint8; batches are sliced from a
device-side permutation and augmented with batched tensor ops, so there is no per-sample Python."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F


def make_generator(device: torch.device, seed: int) -> torch.Generator:
    """Return a torch.Generator on ``device`` seeded with ``seed`` (device-side randomness, reproducible)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def normalization(mean, std, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (scale, shift), each [1, C, 1, 1] on ``device``, with ``x_u8 * scale + shift == (x_u8/255 - mean)/std``.

    Folding the division and subtraction into one multiply-add keeps the per-batch cost minimal; every stage
    (training, the export parity gate, evaluation's PyTorch reference) normalizes through this one formula.
    """
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device)
    std_t = torch.tensor(std, dtype=torch.float32, device=device)
    return (1.0 / (255.0 * std_t)).view(1, -1, 1, 1), (-mean_t / std_t).view(1, -1, 1, 1)


def normalize(images_u8: torch.Tensor, mean, std) -> torch.Tensor:
    """Return float32 NCHW images ``(x/255 - mean)/std`` from uint8 ones, exactly as the training loader does."""
    scale, shift = normalization(mean, std, images_u8.device)
    return (images_u8.float() * scale + shift).contiguous()


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Return ``x`` [B, C, H, W] reflect-padded by ``pad`` and cropped back at a random offset per image."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (b,), device=x.device, generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), device=x.device, generator=gen)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # B,1,H,1
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # B,1,1,W
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bi, ci, rows, cols]


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Return ``x`` with each image mirrored left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], device=x.device, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


@dataclass(frozen=True)
class LoaderOptions:
    """How a DeviceLoader walks its split: ``train`` (shuffle, drop the last partial batch, augment) or in order;
    the augmentations (a random crop of ``crop_pad`` reflect-padded pixels, a random left-right ``flip``), which
    apply only when training; and the batches' memory layout (``channels_last``)."""

    train: bool
    crop_pad: int = 0
    flip: bool = False
    channels_last: bool = False


class DeviceLoader:
    """Iterates (normalized float images, labels) batches of one split held on ``device``.

    ``options.train`` shuffles with a device-side permutation, drops the last partial batch (static shapes
    keep torch.compile from recompiling) and applies the augmentations; otherwise the loader walks the split in
    order and keeps every image.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device,
        options: LoaderOptions,
    ):
        self.images = images.to(device, non_blocking=True)
        self.labels = labels.to(device, non_blocking=True)
        self.batch_size = batch_size
        self.device = device
        self.options = options
        self.train = options.train
        self.crop_pad = options.crop_pad
        self.flip = options.flip
        self.channels_last = options.channels_last
        self.scale, self.shift = normalization(mean, std, device)

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        """Number of images one pass yields (drops the last partial batch when training)."""
        return len(self) * self.batch_size if self.train else len(self.images)

    def normalize(self, x_u8: torch.Tensor) -> torch.Tensor:
        """Return float32 normalized images from uint8 ones, in the loader's memory layout."""
        return self.layout(x_u8.float() * self.scale + self.shift)

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` channels-last when the loader is, else unchanged (the model's weights share the layout)."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def epoch(self, gen: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield the batches of one pass; ``gen`` drives shuffling and augmentation when training."""
        n = len(self.images)
        order = torch.randperm(n, device=self.device, generator=gen) if self.train else None
        for i in range(len(self)):
            sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
            idx = order[sl] if order is not None else sl
            x, y = self.images[idx], self.labels[idx]
            x = x.float() * self.scale + self.shift
            if self.train and self.crop_pad:
                x = random_crop(x, self.crop_pad, gen)
            if self.train and self.flip:
                x = random_flip(x, gen)
            # Last: the crop's gather and the flip's where() return NCHW-contiguous tensors, which would
            # silently undo an earlier channels-last conversion.
            yield self.layout(x), y
