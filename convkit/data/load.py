"""Load a dataset split as uint8 tensors, decoding once and caching the result keyed by the source's checksum."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from convkit.atomic import save_torch
from convkit.data.decode import decode
from convkit.data.sources import cache_dir, locate, sample_dir, writable_cache
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


def _permission_denied(exc: PermissionError) -> DataError:
    """Return the one-line DataError for a file or folder this user may not read (or, in the cache, write)."""
    what = exc.filename or "a data file"
    if isinstance(exc.filename, str) and Path(exc.filename).is_relative_to(cache_dir()):
        return DataError(f"permission denied on {what} in the cache; fix its owner/permissions (chmod/chown) "
                         "or set CONVKIT_CACHE to a folder you own")
    return DataError(f"permission denied reading {what}; make it readable by this user (chmod/chown) "
                     "or point --data-dir at a copy you can read")


CACHE_KEYS = ("train_images", "train_labels", "test_images", "test_labels")  # a decoded-data cache entry's tensors


def _decode_cached(name: str, src) -> dict[str, torch.Tensor]:
    """Return the decoded tensors of ``src`` from the cache, decoding (and caching) them on a miss."""
    cache_file = cache_dir() / "tensors" / f"{name}-{src.checksum[:16]}.pt"
    if cache_file.is_file():
        try:
            cached = torch.load(cache_file, weights_only=True)
            if isinstance(cached, dict) and set(cached) == set(CACHE_KEYS) and all(
                    isinstance(v, torch.Tensor) for v in cached.values()):
                return cached
        except Exception:  # a damaged cache entry is rebuilt, never fatal
            pass  # (as is one with other keys: a foreign or older file)
    decoded = decode(src)
    splits = {f"{s}_{k}": v for s, (x, y) in decoded.items() for k, v in (("images", x), ("labels", y))}
    try:
        save_torch(cache_file, splits)
    except Exception:  # the cache was checked writable; a full disk only costs the decode next time
        pass
    return splits


def load_dataset(name: str, data_dir: Path | str | None = None, sample: bool = False,
                 max_images: int | None = None) -> LoadedDataset:
    """Return both splits of ``name`` from ``data_dir`` (or the embedded sample), decoding at most once per source.

    ``max_images`` keeps at most that many images of each split, evenly spaced through it (so a split stored
    class by class keeps every class). Every failure is a one-line DataError: an unusable cache, a missing or
    unreadable file, a corrupt one.
    """
    writable_cache()
    try:
        src = locate(name, sample_dir() if sample else (Path(data_dir) if data_dir else None))
        splits = _decode_cached(name, src)
    except PermissionError as exc:
        raise _permission_denied(exc) from None
    if len(splits["train_images"]) == 0 or len(splits["test_images"]) == 0:
        raise DataError(f"{src.describe()} has an empty split; check the dataset")
    checksum = src.checksum
    if max_images:  # a subset is other data: its checksum says so (resume, reference caches and reports compare it)
        splits = {k: _spread(v, max_images) for k, v in splits.items()}
        checksum = f"{src.checksum}:first-{max_images}-spread"
    return LoadedDataset(name=name, source=src.describe(), checksum=checksum, **splits)


def _spread(t: torch.Tensor, n: int) -> torch.Tensor:
    """Return at most ``n`` rows of ``t``, evenly spaced from first to last."""
    if len(t) <= n:
        return t
    return t[torch.linspace(0, len(t) - 1, n).round().long()]
