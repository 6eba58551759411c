"""Decode a located dataset into uint8 tensors ``[N, C, H, W]`` and int64 labels ``[N]``."""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import warnings
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torchvision import datasets
from torchvision.io import ImageReadMode, decode_image

from convkit.data.catalog import get_dataset_info
from convkit.data.sources import MNIST_FILES, Source, find_source, fresh_dir, remove_if_empty, writable_cache
from convkit.errors import DataError, first_line

Split = tuple[torch.Tensor, torch.Tensor]

# What torchvision.io.decode_image reads; other files in a class folder are not images of the dataset.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif")


def read_idx(path: Path) -> np.ndarray:
    """Return the array stored in an IDX file (gzipped or not); DataError when it is truncated or malformed."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except PermissionError:
        raise  # load_dataset reports it as "permission denied", with the fix
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {first_line(exc)}; replace the file with an intact copy") from None
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
    """Return both splits of torchvision's cifar-10-batches-py folder; DataError when it is not the original."""

    out = {}
    for split in ("train", "test"):
        try:
            # torchvision checks each file's md5 before unpickling it: only the original batches are loaded
            ds = datasets.CIFAR10(str(src.path.parent), train=split == "train", download=False)
        except PermissionError:
            raise
        except Exception as exc:  # RuntimeError for a failed md5 check, pickle errors otherwise
            # torchvision's own text suggests `download=True`, an argument convkit users never see
            raise DataError(f"cannot read {src.path}: not an intact cifar-10-batches-py (md5 check or unpickling "
                            f"failed: {type(exc).__name__}); replace it with the original files, or point "
                            "--data-dir at an ImageFolder tree or its .tar.gz") from None
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        out[split] = (x, torch.tensor(ds.targets, dtype=torch.int64))
    return out


def _class_folders(split_dir: Path, classes: tuple[str, ...]) -> list[Path]:
    """Return ``split_dir``/<class> for every class, in catalog order; DataError naming missing or extra ones."""
    if not split_dir.is_dir():
        raise DataError(f"{split_dir} does not exist; the data needs train/ and test/ with one folder per class")
    # hidden folders (.ipynb_checkpoints, .Trash-1000) are tool leftovers, not classes
    present = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not present:
        raise DataError(f"{split_dir} holds no class folders; it needs one folder per class: {', '.join(classes)}")
    missing = [c for c in classes if c not in present]
    if missing:
        raise DataError(f"{split_dir}: missing class folder(s) {', '.join(missing)}; "
                        f"it needs one folder per class: {', '.join(classes)}")
    extra = [c for c in present if c not in classes]
    if extra:
        raise DataError(f"{split_dir}: unexpected folder(s) {', '.join(extra)}; the classes are "
                        f"{', '.join(classes)} (remove or rename the others)")
    return [split_dir / c for c in classes]


def _image_files(class_dir: Path) -> list[Path]:
    """Return the image files under ``class_dir`` in ImageFolder's order; DataError when there are none."""
    def fail(exc: OSError) -> None:  # os.walk skips unreadable folders silently
        raise exc

    files = [Path(root) / name
             for root, _, names in sorted(os.walk(class_dir, followlinks=True, onerror=fail))
             for name in sorted(names) if name.lower().endswith(IMAGE_SUFFIXES)]
    if not files:
        raise DataError(f"{class_dir} holds no images ({'/'.join(IMAGE_SUFFIXES)}); add the class's images "
                        "or remove the dataset folder")
    return files


def _read_image(path: Path, mode, shape: tuple[int, int, int]) -> torch.Tensor:
    """Return the image at ``path`` as uint8 [C, H, W]; DataError naming the file when it is not usable."""

    data = path.read_bytes()  # in Python, so an unreadable file raises PermissionError with its name
    if not data:
        raise DataError(f"image {path} is empty (0 bytes); remove or replace it")
    try:
        # EXIF orientation applied, as convkit.data.folder reads evaluation images: an image is used as it is shown
        image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode,
                             apply_exif_orientation=True)
    except (RuntimeError, ValueError) as exc:
        raise DataError(f"cannot decode image {path} ({first_line(exc)}); remove or replace it") from None
    if tuple(image.shape) != shape:
        raise DataError(f"image {path} is {image.shape[2]}x{image.shape[1]}, the dataset's are "
                        f"{shape[2]}x{shape[1]}; resize or remove it")
    return image


def _decode_folder(src: Source, shape: tuple[int, int, int], classes: tuple[str, ...]) -> dict[str, Split]:
    """Return both splits of an ImageFolder tree (``train/<class>/``, ``test/<class>/``) as uint8 tensors."""

    mode = ImageReadMode.GRAY if shape[0] == 1 else ImageReadMode.RGB
    out = {}
    for split in ("train", "test"):
        images, labels = [], []
        with warnings.catch_warnings():
            # torchvision 0.29 flags its image codecs as deprecated in favour of torchcodec; they still work and
            # are what the pinned versions ship, so silence the per-image warning.
            warnings.simplefilter("ignore", DeprecationWarning)
            for label, class_dir in enumerate(_class_folders(src.path / split, classes)):
                for path in _image_files(class_dir):
                    images.append(_read_image(path, mode, shape))
                    labels.append(label)
        out[split] = (torch.stack(images), torch.tensor(labels, dtype=torch.int64))
    return out


def _member_problem(member: tarfile.TarInfo) -> str | None:
    """Return why ``member`` may not be extracted (None when it is a safe regular file or folder)."""
    if member.issym():
        return f"is a symlink (to {_short(member.linkname)})"
    if member.islnk():
        return f"is a hardlink (to {_short(member.linkname)})"
    if member.ischr() or member.isblk():
        return "is a device"
    if member.isfifo():
        return "is a fifo"
    if not (member.isfile() or member.isdir()):
        return f"has unsupported type {member.type!r}"
    name = PurePosixPath(member.name)
    if name.is_absolute():
        return "has an absolute path"
    if ".." in name.parts:
        return "has a '..' component"
    return None


def _short(name: str, keep: int = 60) -> str:
    """Return ``name`` quoted, its middle elided when longer than ``keep`` characters."""
    return repr(name if len(name) <= keep else f"{name[: keep // 2]}...{name[-keep // 2:]}")


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    """Write one checked file or folder member at ``target``; permissions come from the umask, not the archive."""
    if member.isdir():
        os.makedirs(target, exist_ok=True)
        return
    os.makedirs(target.parent, exist_ok=True)
    source = tar.extractfile(member)
    # O_NOFOLLOW: belt and braces, nothing in the folder can be a link since links are never extracted
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)


def safe_extractall(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract ``tar`` into the new folder ``dest``; returns None.

    Only regular files and folders with relative names free of ``..`` are accepted, on every Python version:
    tarfile's own ``filter="data"`` still lets a chain of nested symlinks escape on Python < 3.11.13
    (CVE-2025-4517). Every member is checked before anything is written (DataError naming the first bad one);
    the tree is built in a fresh folder beside ``dest`` and renamed onto it only when complete, so a failure
    leaves nothing half-extracted. Folders get 0777 and files 0666, minus the umask.
    """
    dest = Path(dest)
    members = tar.getmembers()
    for member in members:
        problem = _member_problem(member)
        if problem:
            raise DataError(f"refusing tarball {tar.name}: member {_short(member.name)} {problem}; convkit "
                            "extracts only regular files and folders inside the cache, repack it without links")
    made_parent = not dest.parent.exists()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = fresh_dir(dest.parent, ".unpack-")
    root = tmp.resolve()
    try:
        for member in members:
            target = root.joinpath(*PurePosixPath(member.name).parts)
            if target != root and root not in target.parents:  # unreachable after the checks above: defence
                raise DataError(f"refusing tarball {tar.name}: member {_short(member.name)} leaves the destination")
            if target != root:
                _write_member(tar, member, target)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if made_parent:
            remove_if_empty(dest.parent)
        raise


def _open_tarball(path: Path) -> tarfile.TarFile:
    """Return ``path`` opened for reading (gzip or plain by its suffix); DataError with one line otherwise."""
    if path.stat().st_size == 0:
        raise DataError(f"broken tarball {path}: it is empty (0 bytes); download it again")
    mode = "r:" if path.name.endswith(".tar") else "r:gz"
    try:
        return tarfile.open(path, mode)
    except PermissionError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        what = "a gzip-compressed tar archive" if mode == "r:gz" else "a tar archive"
        raise DataError(f"broken tarball {path}: not {what} ({first_line(exc)}); download it again") from None


def _unpack_tarball(src: Source) -> Source:
    """Unpack a tarball once into the cache (temp dir, then rename) and return the tree inside as a Source."""
    extracted = writable_cache() / "extracted"
    dest = extracted / f"{src.dataset}-{src.checksum[:16]}"
    if not dest.is_dir():
        made = not extracted.exists()
        try:
            with _open_tarball(src.path) as tar:
                safe_extractall(tar, dest)
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise DataError(f"broken tarball {src.path} ({first_line(exc)}); download it again") from None
        except PermissionError:
            raise
        except OSError as exc:
            if not dest.is_dir():  # else a concurrent run unpacked the same archive first: use its copy
                raise DataError(f"broken tarball {src.path} ({first_line(exc)}); download it again") from None
        finally:
            if made:
                remove_if_empty(extracted)
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
        splits = _decode_folder(src, info.input_shape, info.classes)
    for split, (x, y) in splits.items():
        if tuple(x.shape[1:]) != info.input_shape:
            raise DataError(
                f"{src.describe()} {split} images are {tuple(x.shape[1:])}, {src.dataset} needs {info.input_shape}"
            )
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= info.num_classes):
            raise DataError(f"{src.describe()} {split} labels outside 0..{info.num_classes - 1}")
    return splits
