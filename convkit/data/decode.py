"""Decode a located dataset into uint8 tensors ``[N, C, H, W]`` and int64 labels ``[N]``."""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets
from torchvision.datasets import ImageFolder
from torchvision.io import ImageReadMode, decode_image, read_file

from convkit.data.catalog import get_dataset_info
from convkit.data.sources import MNIST_FILES, Source, cache_dir, find_source
from convkit.errors import DataError

Split = tuple[torch.Tensor, torch.Tensor]


def read_idx(path: Path) -> np.ndarray:
    """Return the array stored in an IDX file (gzipped or not); DataError when it is truncated or malformed."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}; replace the file with an intact copy") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file; replace it with the original MNIST file")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated (header incomplete); replace it with an intact copy")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise DataError(
            f"{path} is truncated or padded ({len(data)} bytes, header says {expected}); replace it with an intact copy"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _decode_idx(src: Source) -> dict[str, Split]:
    arrays = {}
    for key, stem in MNIST_FILES.items():
        path = src.path / stem if (src.path / stem).is_file() else src.path / f"{stem}.gz"
        arrays[key] = read_idx(path)
    out = {}
    for split in ("train", "test"):
        x = torch.from_numpy(arrays[f"{split}_images"].copy()).unsqueeze(1)
        y = torch.from_numpy(arrays[f"{split}_labels"].astype(np.int64))
        if len(x) != len(y):
            raise DataError(f"MNIST {split}: {len(x)} images but {len(y)} labels in {src.path}; the files do not match")
        out[split] = (x, y)
    return out


def _decode_cifar_py(src: Source) -> dict[str, Split]:

    out = {}
    for split in ("train", "test"):
        try:
            ds = datasets.CIFAR10(str(src.path.parent), train=split == "train", download=False)
        except Exception as exc:  # torchvision raises RuntimeError for a failed integrity check, pickle errors otherwise
            raise DataError(f"cannot read {src.path}: {exc}; replace it with an intact cifar-10-batches-py") from None
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        out[split] = (x, torch.tensor(ds.targets, dtype=torch.int64))
    return out


def _decode_folder(src: Source, channels: int, classes: tuple[str, ...]) -> dict[str, Split]:

    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    out = {}
    for split in ("train", "test"):
        folder = ImageFolder(str(src.path / split), loader=lambda p: p)
        if tuple(folder.classes) != tuple(classes):
            raise DataError(
                f"{src.path / split} has classes {folder.classes}, expected {list(classes)}; "
                "use one folder per class named as the dataset's classes"
            )
        images = []
        with warnings.catch_warnings():
            # torchvision 0.29 flags its image codecs as deprecated in favour of torchcodec; they still work and
            # are what the pinned versions ship, so silence the per-image warning.
            warnings.simplefilter("ignore", DeprecationWarning)
            for path, _ in folder.samples:
                try:
                    images.append(decode_image(read_file(path), mode=mode))
                except RuntimeError as exc:
                    raise DataError(f"cannot decode image {path}: {exc}; remove or replace it") from None
        try:
            x = torch.stack(images)
        except RuntimeError:
            raise DataError(f"images under {src.path / split} differ in size; all must be the dataset's size") from None
        out[split] = (x, torch.tensor(folder.targets, dtype=torch.int64))
    return out


def safe_extractall(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract ``tar`` into ``dest`` refusing absolute paths, ``..``, links and devices; returns None."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    # Python < 3.11.4 (Debian bookworm's 3.11.2) has no extraction filters: check members ourselves.
    for member in tar.getmembers():
        parts = Path(member.name).parts
        if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
            raise tarfile.TarError(f"unsafe member {member.name!r}")
    tar.extractall(dest)


def _unpack_tarball(src: Source) -> Source:
    """Unpack a tarball once into the cache (temp dir, then rename) and return the tree inside as a Source."""
    dest = cache_dir() / "extracted" / f"{src.dataset}-{src.checksum[:16]}"
    if not dest.is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest.parent))
        try:
            with tarfile.open(src.path) as tar:
                safe_extractall(tar, tmp)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DataError(f"broken tarball {src.path} ({exc}); download it again") from None
        os.replace(tmp, dest)
    for cand in [dest, *sorted(p for p in dest.iterdir() if p.is_dir())]:
        found, _ = find_source(src.dataset, cand)
        if found is not None and found.kind != "tarball":
            return Source(src.dataset, found.kind, found.path, src.checksum)
    raise DataError(f"tarball {src.path} holds no {src.dataset} train/ and test/ tree; check its contents")


def decode(src: Source) -> dict[str, Split]:
    """Return {"train": (x, y), "test": (x, y)} with x uint8 [N, C, H, W] and y int64 [N], checked against the catalog."""
    info = get_dataset_info(src.dataset)
    if src.kind == "tarball":
        src = _unpack_tarball(src)
    if src.kind == "idx":
        splits = _decode_idx(src)
    elif src.kind == "cifar-py":
        splits = _decode_cifar_py(src)
    else:
        splits = _decode_folder(src, info.input_shape[0], info.classes)
    for split, (x, y) in splits.items():
        if tuple(x.shape[1:]) != info.input_shape:
            raise DataError(
                f"{src.describe()} {split} images are {tuple(x.shape[1:])}, {src.dataset} needs {info.input_shape}"
            )
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= info.num_classes):
            raise DataError(f"{src.describe()} {split} labels outside 0..{info.num_classes - 1}")
    return splits
