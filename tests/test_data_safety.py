"""Issue 9, data layer and input validation: nothing lost, nothing trusted blindly.

Hostile tarballs never write outside the cache; every data problem is one line naming the file and the fix;
failed downloads and extractions leave nothing behind; numbers from the command line are bounded.
"""

from __future__ import annotations

import builtins
import io
import os
import stat
import tarfile
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from convkit.cli import main
from convkit.data.decode import safe_extractall
from convkit.data.load import load_dataset
from convkit.data.sources import sample_dir
from convkit.errors import ConvkitError, DataError
from convkit.evaluate.model_io import Overrides, inspect_model, parse_floats
from convkit.train.config import TrainOverrides, resolve_config

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# ---------------------------------------------------------------------------------------------- helpers


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh, not yet created CONVKIT_CACHE for this test; CONVKIT_DATA points at an empty folder."""
    path = tmp_path / "cache"
    monkeypatch.setenv("CONVKIT_CACHE", str(path))
    (tmp_path / "no-data").mkdir()
    monkeypatch.setenv("CONVKIT_DATA", str(tmp_path / "no-data"))
    return path


@pytest.fixture
def offline(monkeypatch):
    """Make torchvision's downloads fail the way they do without network (after creating their folders)."""
    from urllib.error import URLError

    def refuse(*args, **kwargs):
        raise URLError("network unreachable")

    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", refuse)
    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", refuse)


def cli(*args: str):
    """Run the real CLI in-process; returns click's Result (stdout and stderr kept apart)."""
    return CliRunner().invoke(main, list(args))


def assert_one_line_exit_2(result, *needles: str) -> str:
    """Assert exit 2 with exactly one `error:` line on stderr holding every needle; returns that line."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def train_args(out: Path, experiment: str = "t5-custom-conv", *extra: str) -> list[str]:
    return ["train", experiment, "--device", "cpu", "--epochs", "1", "--out", str(out), "--quiet", *extra]


def add_member(tar: tarfile.TarFile, name: str, *, kind=tarfile.REGTYPE, data: bytes = b"", link: str = "",
               mode: int = 0o644) -> None:
    """Append one member of any type to ``tar``."""
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    if kind in (tarfile.REGTYPE, tarfile.AREGTYPE):
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)


def jpeg(seed: int, channels: int = 3, size: int = 32) -> bytes:
    """Return the bytes of a small random JPEG."""
    from torchvision.io import encode_jpeg

    gen = torch.Generator().manual_seed(seed)
    with warnings.catch_warnings():  # torchvision 0.29 flags its codecs as deprecated (torchcodec); they work
        warnings.simplefilter("ignore", DeprecationWarning)
        return encode_jpeg(torch.randint(0, 256, (channels, size, size), dtype=torch.uint8, generator=gen)).numpy().tobytes()


def image_tree(root: Path, classes=CIFAR_CLASSES, per_class: int = 2, skip: tuple[str, ...] = ()) -> Path:
    """Write a tiny CIFAR-10-shaped ImageFolder tree (train/ and test/) under ``root``; returns ``root``."""
    for split in ("train", "test"):
        for i, cls in enumerate(classes):
            folder = root / split / cls
            folder.mkdir(parents=True)
            if f"{split}/{cls}" in skip:
                continue
            for k in range(per_class):
                (folder / f"{k}.jpg").write_bytes(jpeg(100 * i + k))
    return root


def tree_listing(root: Path, skip: tuple[Path, ...]) -> dict[str, bytes | None]:
    """Return {relative path: content (None for folders)} of everything under ``root`` outside ``skip``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) not in skip]
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            if p.is_symlink():
                out[str(p.relative_to(root))] = os.readlink(p).encode()
            else:
                out[str(p.relative_to(root))] = None if p.is_dir() else p.read_bytes()
    return out


@pytest.fixture
def deny(monkeypatch):
    """Return deny(path): make ``path`` unreadable (chmod 000) and, since root ignores modes, fail the system
    calls a user would see fail; modes are restored afterwards so the temporary folder can be removed."""
    denied_paths: list[Path] = []

    def inside(p, strict: bool) -> bool:
        if isinstance(p, int):
            return False
        s = os.fsdecode(os.fspath(p))
        return any(s.startswith(str(d) + os.sep) or (not strict and s == str(d)) for d in denied_paths)

    def guard(real, strict: bool):
        def call(p, *args, **kwargs):
            if inside(p, strict):
                raise PermissionError(13, "Permission denied", os.fspath(p))
            return real(p, *args, **kwargs)
        return call

    def deny_path(path: Path) -> None:
        path.chmod(0)
        denied_paths.append(path)
        if os.geteuid() != 0 or len(denied_paths) > 1:
            return
        # a folder without read/execute permission: its own stat works, listing it or reaching inside does not
        monkeypatch.setattr(builtins, "open", guard(builtins.open, strict=False))
        for name in ("open", "listdir", "scandir"):
            monkeypatch.setattr(os, name, guard(getattr(os, name), strict=False))
        for name in ("stat", "lstat"):
            monkeypatch.setattr(os, name, guard(getattr(os, name), strict=True))

    yield deny_path
    for path in denied_paths:
        path.chmod(0o755 if path.is_dir() else 0o644)


# ---------------------------------------------------------------------------------------------- 1. tar extraction


def realpath_limit_tarball(tarball: Path, dest_len: int, ups: int) -> None:
    """Write CPython's CVE-2025-4517 layout (test_realpath_limit_attack): a symlink chain whose expansion
    exceeds PATH_MAX, so os.path.realpath stops checking; ``escape`` then points ``ups`` levels above the
    extraction folder (whose path is ``dest_len`` characters, separator included)."""
    steps = "abcdefghijklmnop"
    component = "d" * ((os.pathconf("/", "PC_PATH_MAX") - dest_len) // (len(steps) + 1))
    with tarfile.open(tarball, "w:gz") as tar:
        path = ""
        for step in steps:
            add_member(tar, os.path.join(path, component), kind=tarfile.DIRTYPE, mode=0o777)
            add_member(tar, os.path.join(path, step), kind=tarfile.SYMTYPE, link=component)
            path = os.path.join(path, component)
        link = os.path.join(*steps, "l" * 254)
        add_member(tar, link, kind=tarfile.SYMTYPE, link=os.path.join(*[".."] * len(steps)))
        add_member(tar, "escape", kind=tarfile.SYMTYPE, link=os.path.join(link, *[".."] * ups))
        add_member(tar, "flaglink", kind=tarfile.LNKTYPE, link="escape/flag")
        add_member(tar, "flaglink", data=b"overwritten")
        add_member(tar, "escape/newfile", data=b"new")


def test_realpath_limit_attack_cannot_escape_the_cache(tmp_path, cache):
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "flag").write_bytes(b"secret")
    # the extraction folder is <cache>/extracted/.unpack-XXXXXXXX; three levels up is tmp_path
    realpath_limit_tarball(data / "cifar10-jpeg.tar.gz", len(str(cache / "extracted" / ".unpack-12345678")) + 1, 3)
    before = tree_listing(tmp_path, skip=(cache, tmp_path / "runs"))
    r = cli(*train_args(tmp_path / "runs", "t5-custom-conv", "--data-dir", str(data)))
    line = assert_one_line_exit_2(r, "cifar10-jpeg.tar.gz", "symlink")
    assert "d" * 50 not in line  # the member name is shortened, the line stays readable
    assert (tmp_path / "flag").read_bytes() == b"secret"
    assert tree_listing(tmp_path, skip=(cache, tmp_path / "runs")) == before
    assert not (cache / "extracted").exists() or not any((cache / "extracted").iterdir())


@pytest.mark.parametrize("member, kind, link, needle", [
    ("cifar10/train/cat/a.jpg", tarfile.SYMTYPE, "b.jpg", "symlink"),
    ("cifar10/train/cat/a.jpg", tarfile.SYMTYPE, "/etc/passwd", "symlink"),
    ("cifar10/train/cat/a.jpg", tarfile.LNKTYPE, "cifar10/train/cat/b.jpg", "hardlink"),
    ("cifar10/train/cat/dev", tarfile.CHRTYPE, "", "device"),
    ("cifar10/train/cat/pipe", tarfile.FIFOTYPE, "", "fifo"),
    ("/tmp/convkit-abs-member", tarfile.REGTYPE, "", "absolute"),
    ("cifar10/../../escaped.jpg", tarfile.REGTYPE, "", ".."),
    ("../escaped.jpg", tarfile.REGTYPE, "", ".."),
])
def test_unsafe_members_are_refused(tmp_path, member, kind, link, needle):
    tarball = tmp_path / "cifar10.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        add_member(tar, "cifar10/train/cat/b.jpg", data=b"jpeg")
        add_member(tar, member, kind=kind, link=link, data=b"jpeg")
    dest = tmp_path / "x" / "unpacked"
    with tarfile.open(tarball) as tar, pytest.raises(DataError) as info:
        safe_extractall(tar, dest)
    assert needle in info.value.message and "\n" not in info.value.message
    assert not dest.exists() and not (tmp_path / "escaped.jpg").exists()
    assert not Path("/tmp/convkit-abs-member").exists()
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())  # nothing half-extracted


def test_unsafe_tarball_via_loader_leaves_cache_clean(tmp_path, cache):
    data = tmp_path / "data"
    data.mkdir()
    with tarfile.open(data / "cifar10.tar.gz", "w:gz") as tar:
        add_member(tar, "cifar10/train/cat/a.jpg", kind=tarfile.SYMTYPE, link="../../../../../etc/passwd")
    with pytest.raises(DataError, match="symlink"):
        load_dataset("cifar10", data)
    assert not (cache / "extracted").exists()


def test_failed_extraction_leaves_nothing_half_extracted(tmp_path, cache):
    good = (sample_dir() / "cifar10-jpeg-sample.tar.gz").read_bytes()
    data = tmp_path / "data"
    data.mkdir()
    # gzip stream cut two thirds in: some members are written before the error
    (data / "cifar10-jpeg.tar.gz").write_bytes(good[: 2 * len(good) // 3])
    with pytest.raises(DataError, match="broken tarball"):
        load_dataset("cifar10", data)
    assert not (cache / "extracted").exists()


def test_extracted_cache_is_readable_by_others(tmp_path, cache):
    old = os.umask(0o022)
    try:
        load_dataset("cifar10", sample=True)
    finally:
        os.umask(old)
    (extracted,) = (cache / "extracted").iterdir()
    modes = {stat.S_IMODE(p.stat().st_mode) for p in [extracted, *extracted.rglob("*")] if p.is_dir()}
    assert modes == {0o755}
    files = {stat.S_IMODE(p.stat().st_mode) for p in extracted.rglob("*") if p.is_file()}
    assert files == {0o644}


def test_extraction_respects_a_stricter_umask(tmp_path, cache):
    old = os.umask(0o077)
    try:
        with tarfile.open(sample_dir() / "cifar10-jpeg-sample.tar.gz") as tar:
            safe_extractall(tar, tmp_path / "out")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").rglob("*.jpg")} == {0o600}


# ---------------------------------------------------------------------------------------------- 2. one-line errors


@pytest.mark.parametrize("content, needle", [(b"", "empty"), (b"this is not gzip at all" * 10, "not a")])
def test_empty_or_non_gzip_tarball_is_one_line(tmp_path, cache, content, needle):
    data = tmp_path / "data"
    data.mkdir()
    (data / "cifar10-jpeg.tar.gz").write_bytes(content)
    r = cli(*train_args(tmp_path / "runs", "t5-custom-conv", "--data-dir", str(data)))
    assert_one_line_exit_2(r, "cifar10-jpeg.tar.gz", needle)


def test_unreadable_idx_file_says_permission_denied(tmp_path, cache, deny):
    from test_data import _fake_mnist

    _fake_mnist(tmp_path / "data")
    victim = tmp_path / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    deny(victim)
    r = cli(*train_args(tmp_path / "runs", "t1-fcn", "--data-dir", str(tmp_path / "data")))
    assert_one_line_exit_2(r, "permission denied", "train-images-idx3-ubyte.gz")


def test_unreadable_class_folder_says_permission_denied(tmp_path, cache, deny):
    image_tree(tmp_path / "data" / "cifar10")
    deny(tmp_path / "data" / "cifar10" / "test" / "cat")
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", tmp_path / "data")
    assert "permission denied" in info.value.message and "cat" in info.value.message
    assert "\n" not in info.value.message


def test_unreadable_tarball_says_permission_denied(tmp_path, cache, deny):
    data = tmp_path / "data"
    data.mkdir()
    (data / "cifar10-jpeg.tar.gz").write_bytes((sample_dir() / "cifar10-jpeg-sample.tar.gz").read_bytes())
    deny(data / "cifar10-jpeg.tar.gz")
    r = cli(*train_args(tmp_path / "runs", "t5-custom-conv", "--data-dir", str(data)))
    assert_one_line_exit_2(r, "permission denied", "cifar10-jpeg.tar.gz")


def test_unreadable_cache_folder_says_permission_denied_and_how_to_fix(cache, deny):
    (cache / "extracted").mkdir(parents=True)
    deny(cache / "extracted")
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", sample=True)
    assert "permission denied" in info.value.message and "CONVKIT_CACHE" in info.value.message


@pytest.mark.parametrize("skip, needles", [
    (("train/cat",), ("train", "cat", "no images")),
    (tuple(f"test/{c}" for c in CIFAR_CLASSES), ("test", "no images")),
])
def test_empty_class_folder_is_named(tmp_path, cache, skip, needles):
    image_tree(tmp_path / "data" / "cifar10", skip=skip)
    r = cli(*train_args(tmp_path / "runs", "t5-custom-conv", "--data-dir", str(tmp_path / "data")))
    assert_one_line_exit_2(r, *needles)


def test_empty_test_folder(tmp_path, cache):
    image_tree(tmp_path / "data" / "cifar10")
    for cls in CIFAR_CLASSES:
        for f in (tmp_path / "data" / "cifar10" / "test" / cls).iterdir():
            f.unlink()
        (tmp_path / "data" / "cifar10" / "test" / cls).rmdir()
    r = cli(*train_args(tmp_path / "runs", "t5-custom-conv", "--data-dir", str(tmp_path / "data")))
    assert_one_line_exit_2(r, "test", "no class folders")


def test_missing_class_folder_is_named(tmp_path, cache):
    image_tree(tmp_path / "data" / "cifar10", classes=tuple(c for c in CIFAR_CLASSES if c != "truck"))
    r = cli(*train_args(tmp_path / "runs", "t5-custom-conv", "--data-dir", str(tmp_path / "data")))
    assert_one_line_exit_2(r, "missing class folder", "truck")


def test_undecodable_image_names_the_file_without_source_paths(tmp_path, cache):
    root = image_tree(tmp_path / "data" / "cifar10")
    bad = root / "train" / "dog" / "1.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    r = cli(*train_args(tmp_path / "runs", "t5-custom-conv", "--data-dir", str(tmp_path / "data")))
    line = assert_one_line_exit_2(r, str(bad))
    assert ".cpp" not in line and "/__w/" not in line and "csrc" not in line


@pytest.mark.parametrize("experiment", ["t1-fcn", "t5-custom-conv"])
def test_cache_that_is_a_file_is_one_line(tmp_path, monkeypatch, experiment):
    (tmp_path / "cachefile").write_text("not a folder")
    monkeypatch.setenv("CONVKIT_CACHE", str(tmp_path / "cachefile"))
    r = cli(*train_args(tmp_path / "runs", experiment, "--sample"))
    assert_one_line_exit_2(r, "CONVKIT_CACHE", "not a folder")


@pytest.mark.parametrize("experiment", ["t1-fcn", "t5-custom-conv"])
def test_unwritable_cache_is_one_line(tmp_path, monkeypatch, experiment):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    monkeypatch.setenv("CONVKIT_CACHE", str(locked / "cache"))
    if os.geteuid() == 0:  # root writes anywhere: report the folder unwritable as access(2) would for a user
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m, **kw: False if str(p) == str(locked) else real(p, m, **kw))
        real_mkdir = os.mkdir

        def mkdir(p, *a, **kw):
            if os.fspath(p).startswith(str(locked) + os.sep):
                raise PermissionError(13, "Permission denied", os.fspath(p))
            return real_mkdir(p, *a, **kw)

        monkeypatch.setattr(os, "mkdir", mkdir)
    r = cli(*train_args(tmp_path / "runs", experiment, "--sample"))
    assert_one_line_exit_2(r, "CONVKIT_CACHE", "permission denied")


def test_cifar_py_error_does_not_suggest_download_true(tmp_path, cache):
    py = tmp_path / "data" / "cifar-10-batches-py"
    py.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (py / name).write_bytes(b"not a pickle")
    r = cli(*train_args(tmp_path / "runs", "t5-custom-conv", "--data-dir", str(tmp_path / "data")))
    line = assert_one_line_exit_2(r, "cifar-10-batches-py")
    assert "download=True" not in line


def test_missing_data_dir_says_it_does_not_exist(tmp_path, cache, offline):
    r = cli(*train_args(tmp_path / "runs", "t1-fcn", "--data-dir", str(tmp_path / "nowhere")))
    assert_one_line_exit_2(r, str(tmp_path / "nowhere"), "does not exist")
    assert not cache.exists() or not (cache / "download").exists()  # no download attempted for a typo


# ---------------------------------------------------------------------------------------------- 3. cleanup


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_failed_download_leaves_nothing_behind(tmp_path, cache, offline, dataset):
    with pytest.raises(DataError) as info:
        load_dataset(dataset)
    assert "download failed" in info.value.message and "\n" not in info.value.message
    leftovers = [str(p.relative_to(cache)) for p in cache.rglob("*")] if cache.exists() else []
    assert not [p for p in leftovers if p.startswith("download")], leftovers


# ---------------------------------------------------------------------------------------------- 4. --mean/--std


@pytest.mark.parametrize("text", ["nan", "0.5,inf", "-inf", "1e999", "[NaN]", "[0.1, Infinity]", "[]", "[true]"])
def test_parse_floats_rejects_non_finite(text):
    with pytest.raises(ConvkitError) as info:
        parse_floats(text, "--mean")
    assert "--mean" in info.value.message and "\n" not in info.value.message


def test_parse_floats_accepts_ordinary_lists():
    assert parse_floats("0.5, 0.25,1", "--std") == (0.5, 0.25, 1.0)
    assert parse_floats("[0.1307]", "--mean") == (0.1307,)


@pytest.mark.parametrize("flag, value", [("--mean", "nan"), ("--std", "0.3,inf,0.2")])
def test_evaluate_cli_rejects_non_finite_normalization(tmp_path, flag, value):
    r = cli("evaluate", str(tmp_path / "model.onnx"), flag, value)
    assert_one_line_exit_2(r, flag, "finite")


def test_non_finite_metadata_normalization_is_rejected(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])
    graph = helper.make_graph([helper.make_node("Flatten", ["x"], ["f"]),
                               helper.make_node("Slice", ["f", "s", "e", "a"], ["y"])], "g", [x], [y],
                              [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in
                               (("s", 0), ("e", 10), ("a", 1))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {"dataset": "mnist", "mean": "[NaN]", "std": "[0.3]"})
    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.raises(ConvkitError, match="finite"):
        inspect_model(tmp_path / "m.onnx")
    assert inspect_model(tmp_path / "m.onnx", Overrides(mean=(0.1,))).mean == (0.1,)


# ---------------------------------------------------------------------------------------------- 5. train numbers


@pytest.mark.parametrize("kwargs, needle", [
    ({"lr": float("inf")}, "--lr"),
    ({"lr": float("nan")}, "--lr"),
    ({"lr": 11.0}, "--lr"),
    ({"epochs": 10**20}, "--epochs"),
    ({"epochs": 10001}, "--epochs"),
    ({"batch_size": 65537}, "--batch-size"),
    ({"seed": -1}, "--seed"),
    ({"seed": 2**64}, "--seed"),
])
def test_resolve_config_bounds_numbers(kwargs, needle):
    with pytest.raises(ConvkitError) as info:
        resolve_config("t1-fcn", TrainOverrides(device="cpu", **kwargs))
    assert needle in info.value.message and info.value.exit_code == 2 and "\n" not in info.value.message


def test_resolve_config_accepts_the_limits():
    cfg = resolve_config("t1-fcn", TrainOverrides(device="cpu", lr=10.0, epochs=10000, batch_size=65536,
                                                    seed=2**32 - 1))
    assert cfg.epochs == 10000 and cfg.recipe.batch_size == 65536 and cfg.recipe.lr == 10.0


@pytest.mark.parametrize("args, needle", [
    (["--lr", "inf"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--epochs", "100000000000000000000"], "--epochs"),
    (["--batch-size", "1000000"], "--batch-size"),
])
def test_train_cli_bad_numbers_exit_2(tmp_path, cache, args, needle):
    # --epochs 1 first: without the bounds the run would be short, never hours long
    r = cli("train", "t1-fcn", "--sample", "--device", "cpu", "--out", str(tmp_path), "--quiet", "--epochs", "1",
            *args)
    assert_one_line_exit_2(r, needle)
