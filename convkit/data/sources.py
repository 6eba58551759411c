"""Find a dataset on disk (or download it) and describe where it came from.

Search order, for ``--data-dir`` (default ``$CONVKIT_DATA``, else ``~/.cache/convkit``):
1. torchvision's own layouts: ``MNIST/raw`` idx files (gzipped or not), ``cifar-10-batches-py``;
2. an ImageFolder tree with ``train/`` and ``test/`` (``<dataset>``, ``<dataset>-jpeg``, ``<dataset>-png``
   or the data dir itself);
3. a ``.tar.gz`` holding such a tree (``<dataset>*.tar.gz`` or the data dir itself when it is a file);
4. torchvision's download into the cache (fails cleanly when offline).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from torchvision import datasets

from convkit.errors import DataError

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CIFAR_BATCHES = "cifar-10-batches-py"


@dataclass(frozen=True)
class Source:
    """A located dataset: its kind (idx, cifar-py, folder, tarball), its path and a checksum of its content."""

    dataset: str
    kind: str
    path: Path
    checksum: str

    def describe(self) -> str:
        return f"{self.kind}:{self.path}"


def default_data_dir() -> Path:
    """Return ``$CONVKIT_DATA`` or ``~/.cache/convkit``: where datasets are looked for by default."""
    return Path(os.environ.get("CONVKIT_DATA") or Path.home() / ".cache" / "convkit")


def cache_dir() -> Path:
    """Return ``$CONVKIT_CACHE`` or ``~/.cache/convkit``: where decoded tensors and unpacked archives go."""
    return Path(os.environ.get("CONVKIT_CACHE") or Path.home() / ".cache" / "convkit")


def writable_cache() -> Path:
    """Return the cache folder, created if needed; DataError (one line) when it is not a writable folder.

    Checked before any data is read, so a bad ``CONVKIT_CACHE`` is reported as such instead of surfacing
    later as an unpacking or saving failure (the embedded sample's tarball is unpacked there too).
    """
    root = cache_dir()
    fix = "set CONVKIT_CACHE to a folder you can write"
    if root.exists() and not root.is_dir():
        raise DataError(f"cache CONVKIT_CACHE={root} is not a folder (it is a file); {fix}")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise DataError(f"cache CONVKIT_CACHE={root} cannot be created: permission denied; {fix}") from None
    except (FileExistsError, NotADirectoryError):
        raise DataError(f"cache CONVKIT_CACHE={root} is not a folder (a parent is a file); {fix}") from None
    except OSError as exc:
        raise DataError(f"cache CONVKIT_CACHE={root} cannot be created ({exc.strerror}); {fix}") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise DataError(f"cache CONVKIT_CACHE={root} is not writable: permission denied; {fix}")
    return root


def fresh_dir(parent: Path, prefix: str) -> Path:
    """Create and return a new, empty, uniquely named folder in ``parent`` (mode 0777 minus the umask).

    tempfile.mkdtemp would make it 0700, which locks other users out of a shared cache once it is renamed
    into place; os.mkdir applies the umask like any folder the user creates.
    """
    while True:
        path = Path(parent) / f"{prefix}{secrets.token_hex(4)}"
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue


def remove_if_empty(path: Path) -> None:
    """Remove the folder ``path`` when it exists and is empty (what a failed step created); returns None."""
    try:
        path.rmdir()
    except OSError:  # not empty, already gone or not ours to remove: leave it
        pass


def sample_dir() -> Path:
    """Return the folder of the embedded sample shipped inside the package."""
    return Path(__file__).resolve().parent.parent / "sample"


def sha256_files(paths: list[Path]) -> str:
    """Return the sha256 of the concatenated contents of ``paths`` (names included, so order and renames count)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def sha256_tree(root: Path) -> str:
    """Return a sha256 over every file's relative path, size and mtime under ``root`` (cheap for 60k files)."""
    h = hashlib.sha256()

    def fail(exc: OSError) -> None:  # os.walk skips unreadable folders silently: a partial hash would lie
        raise exc

    for dirpath, dirnames, filenames in os.walk(root, onerror=fail):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            st = p.stat()
            h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _mnist_raw(base: Path) -> list[Path] | None:
    files = []
    for stem in MNIST_FILES.values():
        for cand in (base / stem, base / f"{stem}.gz"):
            if cand.is_file():
                files.append(cand)
                break
        else:
            return None
    return files


def _is_image_tree(path: Path) -> bool:
    return (path / "train").is_dir() and (path / "test").is_dir()


def _is_tarball(path: Path) -> bool:
    return path.is_file() and (path.name.endswith(".tar.gz") or path.name.endswith(".tgz") or path.name.endswith(".tar"))


def find_source(dataset: str, data_dir: Path | None) -> tuple[Source | None, list[str]]:
    """Return (the first source found for ``dataset`` under ``data_dir``, the list of places tried)."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    tried: list[str] = []
    if _is_tarball(root):
        return Source(dataset, "tarball", root, sha256_files([root])), tried
    if dataset == "mnist":
        for base in (root / "MNIST" / "raw", root / "raw", root):
            tried.append(str(base / "<idx files>"))
            files = _mnist_raw(base)
            if files:
                return Source(dataset, "idx", base, sha256_files(files)), tried
    if dataset == "cifar10":
        for base in (root / CIFAR_BATCHES, root):
            tried.append(str(base / "data_batch_1"))
            if (base / "data_batch_1").is_file():
                files = sorted(base.glob("*_batch*"))
                return Source(dataset, "cifar-py", base, sha256_files(files)), tried
    for name in (dataset, f"{dataset}-jpeg", f"{dataset}-png", dataset.upper()):
        tree = root / name
        tried.append(str(tree / "{train,test}"))
        if _is_image_tree(tree):
            return Source(dataset, "folder", tree, sha256_tree(tree)), tried
    tried.append(str(root / "{train,test}"))
    if _is_image_tree(root):
        return Source(dataset, "folder", root, sha256_tree(root)), tried
    tried.append(str(root / f"{dataset}*.tar.gz"))
    if root.is_dir():
        for tar in sorted(root.glob(f"{dataset}*.t*gz")) + sorted(root.glob(f"{dataset}*.tar")):
            if _is_tarball(tar):
                return Source(dataset, "tarball", tar, sha256_files([tar])), tried
    return None, tried


def _torchvision_download(dataset: str, root: Path) -> str:
    """Download ``dataset`` with torchvision under ``root``; returns the name of the folder it holds."""

    cls, folder = (datasets.MNIST, "MNIST") if dataset == "mnist" else (datasets.CIFAR10, CIFAR_BATCHES)
    for train in (True, False):
        cls(str(root), train=train, download=True)
    return folder


def download_source(dataset: str, tried: list[str]) -> Source:
    """Return the Source of ``dataset`` downloaded into the cache (once); DataError when offline.

    The download goes to a fresh folder that is renamed into ``<cache>/download`` only when complete, so a
    failed or interrupted download leaves nothing behind (torchvision creates its folders before fetching).
    """
    dest = writable_cache() / "download"
    found, _ = find_source(dataset, dest) if dest.is_dir() else (None, [])
    if found is not None:
        return found
    made_dest = not dest.exists()
    dest.mkdir(exist_ok=True)
    tmp = fresh_dir(dest, ".fetch-")
    try:
        folder = _torchvision_download(dataset, tmp)
        if (dest / folder).exists():  # an incomplete copy from an older convkit: find_source rejected it
            shutil.rmtree(dest / folder)
        os.replace(tmp / folder, dest / folder)
    except Exception as exc:  # network errors come in many types (URLError, OSError, RuntimeError)
        how = ("MNIST/raw with the four idx files" if dataset == "mnist"
               else "cifar-10-batches-py, an ImageFolder tree with train/ and test/, or its .tar.gz")
        raise DataError(
            f"{dataset} not found (tried {', '.join(tried)}) and download failed ({type(exc).__name__}); "
            f"point --data-dir or CONVKIT_DATA at a folder holding {how}, or use --sample"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if made_dest:
            remove_if_empty(dest)
    found, _ = find_source(dataset, dest)
    if found is None:
        raise DataError(f"{dataset} downloaded to {dest} but not in a known layout; delete {dest} and retry")
    return found


def locate(dataset: str, data_dir: Path | None) -> Source:
    """Return the Source for ``dataset``: found under ``data_dir`` or downloaded; DataError otherwise.

    A ``data_dir`` that does not exist is an error, not a reason to download: it is most likely a typo.
    """
    if data_dir is not None and not Path(data_dir).exists():
        raise DataError(f"{dataset} not found: the data folder {data_dir} does not exist; fix --data-dir "
                        "(or CONVKIT_DATA), or use --sample")
    found, tried = find_source(dataset, data_dir)
    return found if found is not None else download_source(dataset, tried)
