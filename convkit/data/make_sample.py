"""Build the embedded sample shipped in ``convkit/sample`` from the full datasets (a maintainer's tool).

    python -m convkit.data.make_sample DATA_DIR

MNIST: the first images of each class, rewritten as gzipped IDX files in torchvision's ``MNIST/raw`` layout.
CIFAR-10: the original JPEG bytes of the first images of each class, in an ImageFolder ``.tar.gz``.
The sample therefore goes through the same loaders as the full data.
"""

from __future__ import annotations

import gzip
import io
import sys
import tarfile
from pathlib import Path

import numpy as np

from convkit.data.decode import read_idx
from convkit.data.sources import MNIST_FILES

PER_CLASS = {"train": 100, "test": 50}


def _first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
    return np.sort(keep)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.GzipFile(path, "wb", mtime=0) as fh:  # mtime 0: byte-identical rebuilds
        fh.write(header + array.astype(np.uint8).tobytes())


def make_mnist(src: Path, dest: Path) -> None:
    raw = dest / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, prefix in (("train", "train"), ("test", "test")):
        images = read_idx(next((src / "MNIST" / "raw").glob(f"{MNIST_FILES[prefix + '_images']}*")))
        labels = read_idx(next((src / "MNIST" / "raw").glob(f"{MNIST_FILES[prefix + '_labels']}*")))
        keep = _first_per_class(labels, PER_CLASS[split])
        _write_idx(raw / f"{MNIST_FILES[prefix + '_images']}.gz", images[keep])
        _write_idx(raw / f"{MNIST_FILES[prefix + '_labels']}.gz", labels[keep])


def make_cifar(tarball: Path, dest: Path) -> None:
    counts: dict[tuple[str, str], int] = {}
    out = dest / "cifar10-jpeg-sample.tar.gz"
    with tarfile.open(tarball) as src, tarfile.open(out, "w:gz") as dst:
        for member in sorted(src.getmembers(), key=lambda m: m.name):
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 4:
                continue
            split, cls = parts[-3], parts[-2]
            if counts.get((split, cls), 0) >= PER_CLASS[split]:
                continue
            counts[(split, cls)] = counts.get((split, cls), 0) + 1
            data = src.extractfile(member).read()
            info = tarfile.TarInfo(f"cifar10-sample/{split}/{cls}/{parts[-1]}")
            info.size, info.mtime = len(data), 0
            dst.addfile(info, io.BytesIO(data))


def main(argv: list[str]) -> None:
    src = Path(argv[0])
    dest = Path(__file__).resolve().parent.parent / "sample"
    make_mnist(src, dest)
    make_cifar(src / "cifar10-jpeg.tar.gz", dest)
    print(f"sample written to {dest}")


if __name__ == "__main__":
    main(sys.argv[1:])
