"""Load a dataset split as uint8 tensors, decoding once and caching the result keyed by the source's checksum."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from convkit.atomic import save_torch
from convkit.data.decode import decode
from convkit.data.sources import cache_dir, locate, sample_dir
from convkit.errors import DataError


@dataclass
class LoadedDataset:
    """Both splits of a dataset as CPU uint8 images [N, C, H, W] and int64 labels, with provenance."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str
    checksum: str

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (images, labels) of split ``name`` ("train" or "test")."""
        if name == "train":
            return self.train_images, self.train_labels
        return self.test_images, self.test_labels


def load_dataset(name: str, data_dir: Path | str | None = None, sample: bool = False) -> LoadedDataset:
    """Return both splits of ``name`` from ``data_dir`` (or the embedded sample), decoding at most once per source."""
    src = locate(name, sample_dir() if sample else (Path(data_dir) if data_dir else None))
    cache_file = cache_dir() / "tensors" / f"{name}-{src.checksum[:16]}.pt"
    splits = None
    if cache_file.is_file():
        try:
            splits = torch.load(cache_file, weights_only=True)
        except Exception:  # a damaged cache entry is rebuilt, never fatal
            splits = None
    if splits is None:
        decoded = decode(src)
        splits = {f"{s}_{k}": v for s, (x, y) in decoded.items() for k, v in (("images", x), ("labels", y))}
        try:
            save_torch(cache_file, splits)
        except Exception:  # a read-only cache only costs the decode next time
            pass
    if len(splits["train_images"]) == 0 or len(splits["test_images"]) == 0:
        raise DataError(f"{src.describe()} has an empty split; check the dataset")
    return LoadedDataset(name=name, source=src.describe(), checksum=src.checksum, **splits)
