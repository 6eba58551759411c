"""`convkit evaluate --data`: any labelled image folder or CSV, checked against independent PIL + numpy + ORT code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from convkit.cli import main
from convkit.data.load import load_dataset

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def _invoke(args):
    result = CliRunner().invoke(main, ["evaluate", *[str(a) for a in args]], catch_exceptions=False)
    return result, result.output + (result.stderr if result.stderr_bytes is not None else "")


@pytest.fixture(scope="module")
def cifar():
    return load_dataset("cifar10", sample=True)


def _folder(root: Path, images: np.ndarray, labels: np.ndarray, names: list[str], size=(48, 40)) -> Path:
    """Real test images re-encoded at ``size`` (W, H), every 5th grayscale, PNG and JPEG alternating."""
    for i, (x, y) in enumerate(zip(images, labels)):
        im = Image.fromarray(x.transpose(1, 2, 0)).resize(size, Image.Resampling.BICUBIC)
        if i % 5 == 0:
            im = im.convert("L")
        (root / names[y]).mkdir(parents=True, exist_ok=True)
        im.save(root / names[y] / (f"{i:04d}.png" if i % 2 else f"{i:04d}.jpg"), quality=95)
    return root


def _centroid_model(path: Path, images: np.ndarray, labels: np.ndarray, k: int, name_in="img", name_out="logits"):
    """A nearest-centroid classifier over normalized [N, 3, 32, 32] inputs, built with onnx.helper (no convkit)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = ((images / 255.0 - np.reshape(MEAN, (1, 3, 1, 1))) / np.reshape(STD, (1, 3, 1, 1))).reshape(len(images), -1)
    cents = np.stack([x[labels == c].mean(axis=0) for c in range(k)])
    w, b = cents.T.astype(np.float32), (-0.5 * (cents ** 2).sum(axis=1)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B"),
             numpy_helper.from_array(np.array([0, -1], np.int64), "s")]
    nodes = [helper.make_node("Reshape", [name_in, "s"], ["f"]), helper.make_node("MatMul", ["f", "W"], ["m"]),
             helper.make_node("Add", ["m", "B"], [name_out])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(name_in, TensorProto.FLOAT, ["N", 3, 32, 32])],
                              [helper.make_tensor_value_info(name_out, TensorProto.FLOAT, ["N", k])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _independent_accuracy(model: Path, root: Path, resize: int, crop: int, resample) -> float:
    """PIL (RGB, shorter side to ``resize``, truncated as torchvision does) + numpy center crop + ORT."""
    import onnxruntime as ort

    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    xs, ys = [], []
    for y, c in enumerate(classes):
        for f in sorted((root / c).iterdir()):
            im = Image.open(f).convert("RGB")
            w, h = im.size
            size = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
            a = np.asarray(im.resize(size, resample), dtype=np.float32) / 255.0
            top, left = int(round((a.shape[0] - crop) / 2)), int(round((a.shape[1] - crop) / 2))
            a = a[top:top + crop, left:left + crop]
            xs.append(((a - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)).transpose(2, 0, 1))
            ys.append(y)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {sess.get_inputs()[0].name: np.stack(xs).astype(np.float32)})[0]
    return float((logits.argmax(1) == np.asarray(ys)).mean())


def test_image_folder_with_resize_and_crop_matches_independent_computation(tmp_path, cifar):
    # the model's output i is CIFAR-10 label i, named so that the folder's sorted order is another one
    names = ["truck", "ship", "horse", "frog", "dog", "deer", "cat", "bird", "automobile", "airplane"]
    pick = np.random.default_rng(0).permutation(len(cifar.test_labels))[:200]  # the split is ordered by class
    te_x, te_y = cifar.test_images.numpy()[pick], cifar.test_labels.numpy()[pick]
    root = _folder(tmp_path / "pics", te_x, te_y, names)
    model = _centroid_model(tmp_path / "m.onnx", cifar.train_images.numpy(), cifar.train_labels.numpy(), 10)
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(names) + "\n")  # the model's output order (the folder's sorted order differs)
    args = [model, "--data", root, "--classes", classes, "--resize", 36, "--crop", 32, "--interpolation", "bicubic",
            "--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD)), "--no-latency", "--threads", 2]
    res, out = _invoke(args)
    assert res.exit_code == 0, out
    doc = json.loads((tmp_path / "m_eval" / "eval.json").read_text())
    # independent computation, with labels in the model's order
    order = {n: i for i, n in enumerate(names)}
    remap_root = tmp_path / "remap"
    remap_root.mkdir()
    for c in sorted(order, key=order.get):  # folders named 00_airplane…: sorted order = model order
        (remap_root / f"{order[c]:02d}_{c}").symlink_to(root / c, target_is_directory=True)
    expected = _independent_accuracy(model, remap_root, 36, 32, Image.Resampling.BICUBIC)
    assert expected > 0.2  # better than chance, so agreement means something
    assert doc["accuracy"][0]["accuracy"] == pytest.approx(expected, abs=1e-9)
    assert doc["dataset"]["n"] == 200 and doc["dataset"]["resize"] == 36 and doc["dataset"]["size"] == [32, 32]
    assert "geometry: shorter side → 36, center crop 32×32" in out and "[mode flag; size flag]" in out
    assert doc["model"]["sources"]["classes"] == "flag"
    # a CSV of path,label gives the same result
    rows = ["path,label"] + [f"{p.relative_to(tmp_path)},{p.parent.name}" for p in sorted(root.rglob("*.*"))]
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    res, out = _invoke([*args[:1], "--data", tmp_path / "list.csv", *args[3:]])
    assert res.exit_code == 0, out
    assert json.loads((tmp_path / "m_eval" / "eval.json").read_text())["accuracy"][0]["accuracy"] == pytest.approx(
        expected, abs=1e-9)
    # a label the model does not know is an exit-2 error naming it
    (root / "zebra").mkdir()
    Image.new("RGB", (40, 40)).save(root / "zebra" / "z.png")
    res, out = _invoke(args)
    assert res.exit_code == 2 and "'zebra'" in out and "--classes" in out


def test_folder_images_decode_in_bounded_batches(tmp_path, cifar):
    """The streaming path never holds more than one evaluation batch of decoded images, however many there are."""
    import onnxruntime as ort

    from convkit.data.folder import FolderImages, list_labelled
    from convkit.evaluate.accuracy import ort_scores
    from convkit.evaluate.model_io import Overrides, inspect_model

    names = [str(i) for i in range(10)]
    pick = np.random.default_rng(1).permutation(len(cifar.test_labels))[:300]
    root = _folder(tmp_path / "pics", cifar.test_images.numpy()[pick], cifar.test_labels.numpy()[pick], names)
    files = list_labelled(root)
    model = _centroid_model(tmp_path / "m.onnx", cifar.train_images.numpy(), cifar.train_labels.numpy(), 10)
    spec = inspect_model(model, Overrides(folder="pics", folder_classes=files.classes, mean=MEAN, std=STD))
    images = FolderImages(files.paths, 3, (32, 32), 32)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    scores = ort_scores(sess, spec, images, batch_size=64)
    assert scores.shape == (300, 10) and images.max_decoded == 64
    assert np.asarray(images[[5, 7]]).shape == (2, 3, 32, 32) and images.max_decoded == 64


def test_hundred_classes_top5_and_confused_pairs(tmp_path):
    """100 classes: top-5 accuracy as numpy computes it, no confusion PNG, a table of the most confused pairs."""
    rng = np.random.default_rng(0)
    k, per = 100, 3
    protos = rng.integers(124, 132, size=(k, 3, 32, 32), dtype=np.uint8)  # close prototypes: some confusion
    labels = np.repeat(np.arange(k), per)
    imgs = np.clip(protos[labels].astype(np.int16) + rng.integers(-90, 90, size=(len(labels), 3, 32, 32)), 0, 255)
    imgs = imgs.astype(np.uint8)
    names = [f"c{i:03d}" for i in range(k)]
    root = tmp_path / "pics"
    for i, (x, y) in enumerate(zip(imgs, labels)):
        (root / names[y]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(x.transpose(1, 2, 0)).save(root / names[y] / f"{i}.png")
    model = _centroid_model(tmp_path / "m.onnx", protos.repeat(2, axis=0), np.repeat(np.arange(k), 2), k)
    res, out = _invoke([model, "--data", root, "--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD)),
                        "--no-latency", "--threads", 2])
    assert res.exit_code == 0, out
    out_dir = tmp_path / "m_eval"
    doc = json.loads((out_dir / "eval.json").read_text())
    import onnxruntime as ort

    x = ((imgs / 255.0 - np.reshape(MEAN, (1, 3, 1, 1))) / np.reshape(STD, (1, 3, 1, 1))).astype(np.float32)
    logits = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"img": x})[0]
    top5 = float((np.argsort(-logits, axis=1)[:, :5] == labels[:, None]).any(axis=1).mean())
    acc = doc["accuracy"][0]
    assert acc["top5_accuracy"] == pytest.approx(top5, abs=1e-9) and acc["top5_accuracy"] >= acc["accuracy"]
    assert acc["accuracy"] < 1.0 and acc["confused_pairs"]  # there are mistakes to list
    off = np.asarray(acc["confusion"])
    np.fill_diagonal(off, 0)
    assert acc["confused_pairs"][0]["count"] == off.max()
    assert not (out_dir / "confusion.png").exists() and (out_dir / "confusion.csv").is_file()
    md = (out_dir / "eval.md").read_text()
    assert "Most confused pairs" in md and "top-5" in md
