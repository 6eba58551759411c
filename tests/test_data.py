"""Dataset discovery, decoding, caching, the embedded sample and the device-side loader."""

from __future__ import annotations

import dataclasses
import gzip
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from convkit.data.decode import read_idx, safe_extractall
from convkit.data.load import load_dataset
from convkit.data.loader import DeviceLoader, LoaderOptions, make_generator, random_crop, random_flip
from convkit.data.sources import find_source, sample_dir
from convkit.errors import DataError


def test_real_mnist_idx(shared_data):
    d = load_dataset("mnist", shared_data)
    assert d.train_images.shape == (60000, 1, 28, 28) and d.train_images.dtype == torch.uint8
    assert d.test_images.shape == (10000, 1, 28, 28)
    # first labels as documented in the data's README
    assert d.train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert d.test_labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert d.source.startswith("idx:")


def test_real_cifar_jpeg_tarball(shared_data):
    d = load_dataset("cifar10", shared_data)
    assert d.train_images.shape == (50000, 3, 32, 32) and d.test_images.shape == (10000, 3, 32, 32)
    assert torch.bincount(d.test_labels).tolist() == [1000] * 10
    assert d.source.startswith("tarball:")
    # decoded once: a second load comes from the tensor cache and is identical
    again = load_dataset("cifar10", shared_data)
    assert torch.equal(again.test_images, d.test_images) and again.checksum == d.checksum


def test_embedded_sample_is_real_and_balanced():
    for name, shape in (("mnist", (1, 28, 28)), ("cifar10", (3, 32, 32))):
        d = load_dataset(name, sample=True)
        assert d.train_images.shape[1:] == shape
        assert torch.bincount(d.train_labels).tolist() == [100] * 10
        assert torch.bincount(d.test_labels).tolist() == [50] * 10
        assert d.train_images.float().std() > 20  # real pixels, not a constant fill
    assert sum(f.stat().st_size for f in sample_dir().rglob("*") if f.is_file()) < 5_000_000


def _write_idx(path: Path, arr: np.ndarray, gz: bool = True, truncate: int = 0) -> None:
    data = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()
    data = data[: len(data) - truncate]
    if gz:
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)


def _fake_mnist(root: Path, gz: bool = True, truncate: int = 0) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    _write_idx(raw / f"train-images-idx3-ubyte{sfx}", rng.integers(0, 255, (20, 28, 28), dtype=np.uint8), gz, truncate)
    _write_idx(raw / f"train-labels-idx1-ubyte{sfx}", rng.integers(0, 10, (20,), dtype=np.uint8), gz)
    _write_idx(raw / f"t10k-images-idx3-ubyte{sfx}", rng.integers(0, 255, (10, 28, 28), dtype=np.uint8), gz)
    _write_idx(raw / f"t10k-labels-idx1-ubyte{sfx}", rng.integers(0, 10, (10,), dtype=np.uint8), gz)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_gzipped_or_not(tmp_path, gz):
    _fake_mnist(tmp_path, gz=gz)
    d = load_dataset("mnist", tmp_path)
    assert d.train_images.shape == (20, 1, 28, 28) and d.test_labels.shape == (10,)


def test_truncated_idx_is_a_clear_error(tmp_path):
    _fake_mnist(tmp_path, truncate=100)
    with pytest.raises(DataError, match="truncated"):
        load_dataset("mnist", tmp_path)


def test_read_idx_rejects_non_idx(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"hello world")
    with pytest.raises(DataError, match="not an unsigned-byte IDX"):
        read_idx(p)


def test_broken_tarball_is_a_clear_error(tmp_path):
    good = sample_dir() / "cifar10-jpeg-sample.tar.gz"
    bad = tmp_path / "cifar10-jpeg.tar.gz"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match="broken tarball"):
        load_dataset("cifar10", tmp_path)


def test_image_folder_tree_and_cifar_py_layouts(tmp_path):
    # unpack the sample tarball into a plain ImageFolder tree: same images, same labels
    with tarfile.open(sample_dir() / "cifar10-jpeg-sample.tar.gz") as tar:
        safe_extractall(tar, tmp_path / "unpacked")
    tree = tmp_path / "unpacked" / "cifar10-sample"
    shutil.move(tree, tmp_path / "cifar10")
    from_tree = load_dataset("cifar10", tmp_path)
    from_tar = load_dataset("cifar10", sample=True)
    assert from_tree.source.startswith("folder:")
    assert torch.equal(from_tree.test_images, from_tar.test_images)
    # torchvision's cifar-10-batches-py layout is read too
    import pickle

    py = tmp_path / "py" / "cifar-10-batches-py"
    py.mkdir(parents=True)
    x = from_tar.train_images.permute(0, 2, 3, 1).reshape(len(from_tar.train_images), -1).numpy()
    for i in range(1, 6):
        with open(py / f"data_batch_{i}", "wb") as fh:
            pickle.dump({"data": x[:10], "labels": from_tar.train_labels[:10].tolist()}, fh)
    with open(py / "test_batch", "wb") as fh:
        pickle.dump({"data": x[:7], "labels": from_tar.train_labels[:7].tolist()}, fh)
    src, _ = find_source("cifar10", tmp_path / "py")
    assert src is not None and src.kind == "cifar-py"


def test_missing_dataset_names_paths_tried(tmp_path, monkeypatch):
    import convkit.data.sources as sources

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr("torchvision.datasets.MNIST.download", offline)
    monkeypatch.setenv("CONVKIT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path / "nowhere")
    msg = info.value.message
    assert "nowhere" in msg and "--data-dir" in msg and "\n" not in msg
    assert sources  # module imported for monkeypatch target resolution


def test_loader_batches_cover_split_and_are_normalized():
    x = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(50) % 10
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.2, 0.2)
    test = DeviceLoader(x, y, 16, mean, std, torch.device("cpu"), LoaderOptions(train=False))
    batches = list(test.epoch())
    assert [len(b[1]) for b in batches] == [16, 16, 16, 2]
    expected = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(torch.cat([b[0] for b in batches]), expected)
    train = DeviceLoader(x, y, 16, mean, std, torch.device("cpu"), LoaderOptions(train=True))
    labels = torch.cat([b[1] for b in train.epoch(make_generator(torch.device("cpu"), 1))])
    assert len(labels) == 48  # last partial batch dropped: static shapes for torch.compile


def test_loader_permutation_is_seeded():
    x = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1).expand(40, 1, 4, 4).contiguous()
    y = torch.arange(40)
    ld = DeviceLoader(x, y, 8, (0.0,), (1.0,), torch.device("cpu"), LoaderOptions(train=True))
    a = torch.cat([b[1] for b in ld.epoch(make_generator(torch.device("cpu"), 3))])
    b = torch.cat([b[1] for b in ld.epoch(make_generator(torch.device("cpu"), 3))])
    c = torch.cat([b[1] for b in ld.epoch(make_generator(torch.device("cpu"), 4))])
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(set(a.tolist())) == 40


def test_crop_and_flip_are_batched_and_correct():
    gen = make_generator(torch.device("cpu"), 0)
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    cropped = random_crop(x, 2, gen)
    assert cropped.shape == x.shape
    # every crop is a window of the reflect-padded image
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    for i in range(2):
        found = any(torch.equal(cropped[i], padded[i, :, dy:dy + 6, dx:dx + 6]) for dy in range(5) for dx in range(5))
        assert found
    flipped = random_flip(x.repeat(32, 1, 1, 1), gen)
    is_flipped = [torch.equal(f, x[i % 2].flip(-1)) for i, f in enumerate(flipped)]
    is_same = [torch.equal(f, x[i % 2]) for i, f in enumerate(flipped)]
    assert all(a or b for a, b in zip(is_flipped, is_same)) and any(is_flipped) and any(is_same)


def test_channels_last_survives_augmentation():
    # cuDNN/Inductor pick NHWC kernels only for channels-last inputs; crop and flip return NCHW tensors.
    x = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(40) % 10
    cpu = torch.device("cpu")
    kw = {"mean": (0.5, 0.4, 0.3), "std": (0.2, 0.2, 0.2), "device": cpu}
    augment = LoaderOptions(train=True, crop_pad=2, flip=True)
    cl = DeviceLoader(x, y, 16, options=dataclasses.replace(augment, channels_last=True), **kw)
    nchw = DeviceLoader(x, y, 16, options=augment, **kw)
    batches = list(cl.epoch(make_generator(cpu, 5)))
    reference = list(nchw.epoch(make_generator(cpu, 5)))
    assert len(batches) == 2
    for (xb, yb), (xr, yr) in zip(batches, reference):
        assert xb.is_contiguous(memory_format=torch.channels_last) and not xb.is_contiguous()
        assert xb.stride() == (8 * 8 * 3, 1, 8 * 3, 3)  # N, C, H, W strides of NHWC storage
        assert torch.equal(xb, xr) and torch.equal(yb, yr)  # same values, only the layout differs
    assert reference[0][0].is_contiguous()
    in_order = dataclasses.replace(augment, train=False, channels_last=True)
    test_batch = next(DeviceLoader(x, y, 16, options=in_order, **kw).epoch())[0]
    assert test_batch.is_contiguous(memory_format=torch.channels_last)
