"""Any labelled image folder: an ImageFolder tree (one subfolder per class) or a CSV of ``path,label``, decoded
on demand in the torchvision/timm evaluation convention (shorter side resized, center crop), in parallel threads.

``FolderImages`` behaves like a uint8 array [N, C, H, W] that is never held whole: indexing it (a slice or an
index array) decodes just those images, so memory is bounded by the batch a caller asks for, not by N.
"""

from __future__ import annotations

import csv
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from convkit.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# ImageNet's statistics: the torchvision/timm default for a model whose dataset convkit does not know.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Bounds of one image, checked from its header before decoding and again before resizing: a 200000×1 PNG is
# 72 KB on disk and few pixels for Pillow's bomb check, but resizing its short side to 224 makes 45 G pixels.
MAX_SIDE = 16384  # pixels, each side, decoded or resized
MAX_PIXELS = 64 * 2**20  # pixels, decoded or resized (Pillow itself warns at 89 M and refuses at 179 M)


@dataclass
class LabelledFiles:
    """The images of a folder or CSV: paths, label names (as written), the folder's classes (sorted), provenance."""

    paths: list[Path]
    labels: list[str]
    classes: list[str]
    source: str
    checksum: str  # sha256 of the sorted (relative path, size, label) list: which files, not all their bytes


def _checksum(root: Path, paths: list[Path], labels: list[str]) -> str:
    """Return the data key of a folder/CSV (convkit.provenance): a file replaced by one of another size, renamed or
    relabelled changes it; reading every byte of a large folder just to name it would not be bounded."""
    h = hashlib.sha256()
    for p, lab in zip(paths, labels):
        h.update(f"{os.path.relpath(p, root)}\t{p.stat().st_size}\t{lab}\n".encode())
    return h.hexdigest()


def list_labelled(path: Path | str) -> LabelledFiles:
    """Return the LabelledFiles of an ImageFolder directory or a ``path,label`` CSV (header optional, paths relative
    to the CSV's folder); DataError (exit 2) when it is missing, empty or names a file that does not exist."""
    path = Path(path)
    if path.is_dir():
        classes = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
        pairs = [(f, c) for c in classes for f in sorted((path / c).rglob("*"))
                 if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS]
        kind, duplicates = "ImageFolder", 0
    elif path.is_file() and path.suffix.lower() == ".csv":
        pairs, duplicates = _csv_pairs(path)
        classes = sorted({lab for _, lab in pairs})
        kind = "CSV"
    else:
        raise DataError(f"--data {path}: not found; pass an ImageFolder (one subfolder per class) or a path,label CSV")
    if not pairs:
        raise DataError(f"--data {path}: no images found (ImageFolder: <class>/<image>; extensions "
                        f"{', '.join(IMAGE_EXTENSIONS)})")
    paths, labels = [p for p, _ in pairs], [lab for _, lab in pairs]
    root = path if path.is_dir() else path.parent
    dropped = f", {duplicates} duplicate row{'s' * (duplicates > 1)} read once" if duplicates else ""
    return LabelledFiles(paths, labels, classes,
                         f"{kind} {path} ({len(paths)} images, {len(classes)} classes{dropped})",
                         _checksum(root, paths, labels))


def read_text_file(path: Path, what: str) -> str:
    """Return the text of ``path`` read as UTF-8 (a byte-order mark skipped); DataError naming ``what`` and the file
    when it is not UTF-8."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{what} {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def _csv_pairs(path: Path) -> tuple[list[tuple[Path, str]], int]:
    """Return the (image path, label) pairs of a path,label CSV and how many duplicate rows were dropped;
    DataError for a malformed row, a missing image or one image listed with two labels."""
    rows = [r for r in csv.reader(read_text_file(path, "--data").splitlines()) if r and any(v.strip() for v in r)]
    if rows and rows[0][0].strip().lower() in ("path", "file", "filename", "image"):
        rows = rows[1:]
    bad = [r for r in rows if len(r) < 2]
    if bad:
        raise DataError(f"{path}: every row must be path,label; got {bad[0]!r}")
    labels: dict[Path, str] = {}
    for r in rows:
        image, label = Path(os.path.normpath(path.parent / r[0].strip())), r[1].strip()
        if labels.setdefault(image, label) != label:
            raise DataError(f"{path}: {image} is listed with two labels ({labels[image]!r} and {label!r}); "
                            "keep one row per image")
    missing = [p for p in labels if not p.is_file()]
    if missing:
        raise DataError(f"{path}: {len(missing)} listed images do not exist, e.g. {missing[0]}")
    return list(labels.items()), len(rows) - len(labels)


def load_image(path: Path, channels: int, size: tuple[int, int], resize: int | tuple[int, int] | None,
               interpolation: str = "bilinear", pre=None, box: list | None = None) -> np.ndarray:
    """Return one image as uint8 [C, H, W] at ``size``: converted to ``channels`` (1 = L, 3 = RGB), then the
    geometry of ``pre`` (a convkit.preprocessing.Preprocessing) applied by convkit.preprocessing.fit — by default
    the torchvision convention: the shorter side resized to ``resize`` (None: no resize; (h, w): both sides), then
    center-cropped to ``size`` (zero-padded when smaller). ``box`` (a list) receives the content's box."""
    from convkit import preprocessing as P  # the one geometry

    if pre is None:
        pre = legacy_geometry(size, resize, interpolation)
    try:
        with Image.open(path) as im:
            check_size(path, im.size, "is")
            im = to_8bit(path, im).convert("L" if channels == 1 else "RGB")
            nh, nw = P.resized_size(pre, im.size[1], im.size[0])
            if (nw, nh) != im.size:
                to = f"a shorter side of {pre.resize}" if pre.resize_mode == "shorter" and pre.resize else f"{nh}×{nw}"
                check_size(path, (nw, nh), f"would be, resized to {to},")
            arr, content = P.fit(im, pre)
    except Image.DecompressionBombError as exc:  # its header claims more pixels than Pillow opens
        raise DataError(f"{path}: Pillow refuses to decode it ({str(exc).rstrip('.')}); shrink the image or leave "
                        "it out") from None
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"cannot decode {path}: {type(exc).__name__}: {exc}") from None
    if box is not None:
        box[:] = content
    return arr.transpose(2, 0, 1)


def legacy_geometry(size: tuple[int, int], resize, interpolation: str = "bilinear"):
    """Return the Preprocessing geometry of (size, resize, interpolation): a shorter-side resize to ``resize``
    (None: none, i.e. the image's own size) and a center crop; an (h, w) ``resize`` squashes, then crops."""
    from convkit import preprocessing as P

    if isinstance(resize, (tuple, list)):
        if tuple(resize) != tuple(size):
            raise DataError(f"a resize to {resize[0]}×{resize[1]} then a crop to {size[0]}×{size[1]} is not "
                            f"supported; state the geometry with --resize-mode and --size")
        return P.Preprocessing(resize_mode="squash", size=tuple(size), interpolation=interpolation)
    return P.Preprocessing(resize_mode="shorter" if resize else "none", size=tuple(size), resize=resize,
                           interpolation=interpolation)


def check_size(path: Path, size: tuple[int, int], verb: str) -> None:
    """Raise DataError naming ``path`` when an image of ``size`` (W, H) exceeds MAX_SIDE or MAX_PIXELS."""
    w, h = size
    if max(w, h) > MAX_SIDE or w * h > MAX_PIXELS:
        raise DataError(f"{path} {verb} {w}×{h} pixels, more than convkit decodes (each side at most {MAX_SIDE}, "
                        f"{MAX_PIXELS // 2**20} M pixels in all); shrink or crop it, or leave it out")


def to_8bit(path: Path, im: Image.Image) -> Image.Image:
    """Return ``im`` with 8-bit channels: 16-bit grayscale scaled (÷ 257, rounded), float pixels in 0..1 scaled
    (× 255, rounded); DataError naming ``path`` for float pixels outside 0..1 or 32-bit integer pixels, whose
    range convkit cannot know (Pillow's own conversion clips them to white or to 0/1)."""
    if im.mode.startswith("I;16"):
        arr = np.asarray(im).astype(np.float64) / 257.0
    elif im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise DataError(f"{path} has floating-point pixels outside 0..1; save it as 8-bit (or scale it to 0..1)")
        arr = arr * 255.0
    elif im.mode == "I":
        raise DataError(f"{path} has 32-bit integer pixels of unknown range; save it as an 8- or 16-bit image")
    else:
        return im
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")


def center_crop(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Return the center ``size`` (H, W) of an HWC array, torchvision's way (top = round((h - H) / 2)), zero-padded
    first when the image is smaller."""
    th, tw = size
    h, w = arr.shape[:2]
    if h < th or w < tw:
        ph, pw = max(th - h, 0), max(tw - w, 0)
        arr = np.pad(arr, ((ph // 2, (ph + 1) // 2), (pw // 2, (pw + 1) // 2), (0, 0)))
        h, w = arr.shape[:2]
    top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    return arr[top:top + th, left:left + tw]


class FolderImages:
    """The images of a folder as a lazily decoded uint8 array [N, C, H, W]: ``x[a:b]`` or ``x[indices]`` decodes
    those images with a thread pool and returns a numpy array (convkit.preprocessing.Framed: it carries each
    image's content box, for a model-space pad); nothing is cached. ``pre`` (a Preprocessing) sets the geometry;
    without it, ``size``/``resize``/``interpolation`` give torchvision's shorter-side resize + center crop."""

    def __init__(self, paths: list[Path], channels: int, size: tuple[int, int], resize: int | None = None,
                 interpolation: str = "bilinear", workers: int | None = None, pre=None):
        self.paths, self.channels = list(paths), channels
        self.pre = pre if pre is not None else legacy_geometry(size, resize, interpolation)
        self.size = tuple(self.pre.size)
        self.workers = workers or min(8, os.cpu_count() or 1)
        self.shape = (len(self.paths), channels, *self.size)
        self.dtype = np.dtype(np.uint8)
        self.max_decoded = 0  # the most images one indexing call decoded (what memory is bounded by)

    def with_preprocessing(self, pre) -> FolderImages:
        """Return the same files read with the geometry of ``pre``."""
        return FolderImages(self.paths, self.channels, pre.size, workers=self.workers, pre=pre)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key) -> np.ndarray:
        from convkit.preprocessing import framed

        idx = range(len(self.paths))[key] if isinstance(key, slice) else np.asarray(key).reshape(-1).tolist()
        self.max_decoded = max(self.max_decoded, len(idx))
        out = np.empty((len(idx), self.channels, *self.size), dtype=np.uint8)
        boxes = np.zeros((len(idx), 4), dtype=np.int64)

        def one(j_i):
            j, i = j_i
            box: list = [0] * 4
            out[j] = load_image(self.paths[i], self.channels, self.size, None, pre=self.pre, box=box)
            boxes[j] = box

        with ThreadPoolExecutor(self.workers) as pool:
            list(pool.map(one, enumerate(idx)))
        return framed(out, boxes)

    def __array__(self, dtype=None, copy=None):
        arr = np.asarray(self[:])
        return arr if dtype is None else arr.astype(dtype)
