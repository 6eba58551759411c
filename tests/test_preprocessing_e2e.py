"""End to end through `convkit evaluate`: a dynamic-width [N, 3, 48, W] classifier whose preprocessing is BGR,
height 48 keeping the ratio (width min(192, ceil(48·w/h))), /255, (x − 0.5)/0.5 and a zero pad on the right in model
space. Its labels are its own predictions under that preprocessing, computed with PIL + numpy + plain onnxruntime
(never convkit's code), so the right preprocessing scores exactly 1.0 and anything else less."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from convkit.cli import main

H, W_MAX = 48, 192
RIGHT_FLAGS = ["--resize-mode", "height", "--size", "48x192", "--pad", "end", "--pad-value", "0", "--pad-space",
               "model", "--channel-order", "bgr", "--input-range", "1", "--mean", "0.5", "--std", "0.5"]


def _invoke(args):
    result = CliRunner().invoke(main, ["evaluate", *[str(a) for a in args]], catch_exceptions=False)
    return result, result.output + (result.stderr if result.stderr_bytes is not None else "")


def _independent_input(path) -> np.ndarray:
    """The published recipe, in PIL + numpy: [1, 3, 48, 192] float32."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    nw = min(W_MAX, math.ceil(H * w / h))
    arr = np.asarray(im.resize((nw, H), Image.Resampling.BILINEAR), dtype=np.float32)[:, :, ::-1]  # BGR
    x = (arr / 255.0 - 0.5) / 0.5
    out = np.zeros((H, W_MAX, 3), np.float32)  # zero in model space
    out[:, :nw] = x
    return out.transpose(2, 0, 1)[None]


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 5, stride=2, padding=2)
        self.fc = torch.nn.Linear(8, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.3)
            self.conv.bias.zero_()
            self.fc.weight.copy_(torch.randn(self.fc.weight.shape, generator=g))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def _image(rng, h: int, w: int) -> Image.Image:
    """Coloured blocks on a coloured background: regions differ, so crops and pads change the prediction."""
    arr = np.empty((h, w, 3), np.uint8)
    arr[:] = rng.integers(0, 256, 3)
    for _ in range(4):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        arr[y0:y0 + rng.integers(4, h), x0:x0 + rng.integers(4, w)] = rng.integers(0, 256, 3)
    return Image.fromarray(arr)


@pytest.fixture(scope="module")
def ocr_case(tmp_path_factory):
    """Return (model path, folder, classes file): the model exported with a dynamic width, the folder labelled by
    plain onnxruntime's predictions on the independently preprocessed images."""
    root = tmp_path_factory.mktemp("ocr")
    rng = np.random.default_rng(1)
    raw = root / "raw"
    raw.mkdir()
    paths = []
    for i in range(150):
        h = int(rng.integers(20, 70))
        w = int(h * rng.uniform(0.6, 7.0))
        p = raw / f"{i:03d}.png"
        _image(rng, h, w).save(p)
        paths.append(p)
    net = _Net().eval()
    xs = np.concatenate([_independent_input(p) for p in paths])
    with torch.no_grad():
        d = (net(torch.from_numpy(xs))[:, 1] - net(torch.from_numpy(xs))[:, 0]).numpy()
        net.fc.bias[1] -= float(np.median(d))  # balanced labels
    model = root / "cls.onnx"
    torch.onnx.export(net, (torch.zeros(2, 3, H, W_MAX),), str(model), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n", 3: "w"}, "y": {0: "n"}}, opset_version=17)
    logits = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": xs})[0]
    margin = np.abs(logits[:, 1] - logits[:, 0])
    data = root / "data"
    for name in ("neg", "pos"):
        (data / name).mkdir(parents=True)
    kept = 0
    for p, lab, m in zip(paths, logits.argmax(1), margin):
        if m > 1e-3:  # no near-ties: one ulp must not flip a label
            p.rename(data / ("neg", "pos")[lab] / p.name)
            kept += 1
    classes = root / "classes.txt"
    classes.write_text("neg\npos\n")
    assert kept > 120 and 0.3 < logits.argmax(1).mean() < 0.7
    assert onnx.load(str(model)).graph.input[0].type.tensor_type.shape.dim[3].dim_param == "w"
    return model, data, classes


def test_right_flags_give_true_accuracy_and_eval_md_states_geometry(ocr_case, tmp_path):
    model, data, classes = ocr_case
    out = tmp_path / "flags"
    res, text = _invoke([model, "--data", data, "--classes", classes, *RIGHT_FLAGS, "--no-latency", "--threads", 2,
                         "--out", out])
    assert res.exit_code == 0, text
    doc = json.loads((out / "eval.json").read_text())
    assert doc["accuracy"][0]["accuracy"] == 1.0
    head = (out / "eval.md").read_text().split("## ")[0].replace("\\[", "[").replace("\\]", "]")
    assert "height 48, keep ratio, width ≤ 192; pad end 0 (model space)" in head
    assert "channels bgr [flag]" in head
    assert doc["dataset"]["resize_mode"] == "height" and doc["dataset"]["size"] == [48, 192]


def test_defaults_exit_4_with_the_right_flags(ocr_case, tmp_path):
    model, data, classes = ocr_case
    res, text = _invoke([model, "--data", data, "--classes", classes, "--no-latency", "--threads", 2,
                         "--out", tmp_path / "defaults"])
    assert res.exit_code == 4, text
    err = [line for line in text.splitlines() if line.startswith("error:")][0]
    for flag in ("--channel-order bgr", "--mean 0.5 --std 0.5", "--input-range 1", "--resize-mode height",
                 "--pad end --pad-value 0 --pad-space model", "--size 48x192"):
        assert flag in err, err
    doc = json.loads((tmp_path / "defaults" / "eval.json").read_text())
    assert doc["preprocessing"]["verdict"] == "unverified"
    assert doc["preprocessing"]["probe"]["better"]["accuracy"] == 1.0
    assert doc["accuracy"][0]["accuracy"] < 0.9  # what the defaults measured, flagged, never exit 0


def test_saved_preprocessing_needs_no_flags(ocr_case, tmp_path):
    """--save-preprocessing writes the sidecar and the ONNX metadata key; each alone gives the true accuracy."""
    model, data, classes = ocr_case
    copy = tmp_path / "cls.onnx"
    copy.write_bytes(model.read_bytes())
    res, text = _invoke([copy, "--data", data, "--classes", classes, *RIGHT_FLAGS, "--no-latency", "--threads", 2,
                         "--save-preprocessing", "--out", tmp_path / "a"])
    assert res.exit_code == 0, text
    sidecar = tmp_path / "cls.convkit.json"
    saved = json.loads(sidecar.read_text())
    assert saved["schema"] == "convkit.preprocessing/2" and saved["preprocessing"]["resize_mode"] == "height"
    meta = {p.key: p.value for p in onnx.load(str(copy)).metadata_props}
    assert json.loads(meta["convkit_preprocessing"])["preprocessing"] == saved["preprocessing"]
    for label in ("sidecar", "metadata"):
        res, text = _invoke([copy, "--data", data, "--classes", classes, "--no-latency", "--threads", 2,
                             "--out", tmp_path / label])
        assert res.exit_code == 0, text
        doc = json.loads((tmp_path / label / "eval.json").read_text())
        assert doc["accuracy"][0]["accuracy"] == 1.0
        assert doc["model"]["sources"]["resize_mode"] == ("config: cls.convkit.json" if label == "sidecar"
                                                          else "metadata")
        sidecar.unlink(missing_ok=True)


HASHNET = '''
import hashlib

import torch

SEEN = []


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 3)

    def forward(self, x):
        if not torch.jit.is_tracing():
            SEEN.append(hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest())
        return self.conv(x).mean(dim=(2, 3))


def build():
    torch.manual_seed(0)
    return Net()
'''


def test_onnx_runtime_and_the_pytorch_reference_get_byte_identical_input(tmp_path, monkeypatch):
    """A user model exported with a keep-ratio + model-space pad geometry, then evaluated: every array ONNX Runtime
    is fed in the accuracy pass is one the PyTorch module received, byte for byte (hashed), as Polygraphy feeds one
    buffer to every runner."""
    import hashlib
    import sys

    import onnxruntime

    (tmp_path / "hashnet.py").write_text(HASHNET)
    monkeypatch.syspath_prepend(str(tmp_path))
    rng = np.random.default_rng(3)
    for c in ("a", "b"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(10):
            h = int(rng.integers(10, 30))
            _image(rng, h, int(h * rng.uniform(0.5, 5))).save(tmp_path / "data" / c / f"{i}.png")
    out = tmp_path / "export"
    runner = CliRunner()
    res = runner.invoke(main, ["export", "--model", "hashnet:build", "--data", str(tmp_path / "data"),
                               "--input-size", "3,16,40", "--resize-mode", "height", "--pad", "end",
                               "--pad-space", "model", "--mean", "0.5", "--std", "0.5", "--channel-order", "bgr",
                               "--exporter", "torchscript", "--out", str(out)])
    assert res.exit_code == 0, res.output
    meta = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    saved = json.loads(meta["convkit_preprocessing"])["preprocessing"]
    assert saved["resize_mode"] == "height" and saved["size"] == [16, 40] and saved["pad_space"] == "model"
    seen = sys.modules["hashnet"].SEEN
    seen.clear()
    fed = []
    original = onnxruntime.InferenceSession.run

    def recording(self, names, feed, *args, **kwargs):
        fed.extend(hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest() for v in feed.values())
        return original(self, names, feed, *args, **kwargs)

    monkeypatch.setattr(onnxruntime.InferenceSession, "run", recording)
    res = runner.invoke(main, ["evaluate", str(out), "--provider", "cpu", "--no-latency", "--threads", "1"])
    assert res.exit_code in (0, 4), res.output
    assert seen and fed and set(seen) <= set(fed), (seen, fed)
    assert "height 16, keep ratio, width ≤ 40" in res.output


def _geometry_input(path, mode: str, th: int, tw: int) -> np.ndarray:
    """squash / letterbox (centred, black) / height + right pad (0 in model space), then (x/255 − 0.5)/0.5, in PIL +
    numpy."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    if mode == "squash":
        nh, nw, top, left, pad = th, tw, 0, 0, -1.0
    elif mode == "letterbox":
        r = min(th / h, tw / w)
        nh, nw = round(h * r), round(w * r)
        top, left, pad = (th - nh) // 2, (tw - nw) // 2, -1.0  # a black pixel after normalisation
    else:
        nh, nw, top, left, pad = th, min(tw, math.ceil(th * w / h)), 0, 0, 0.0
    x = (np.asarray(im.resize((nw, nh), Image.Resampling.BILINEAR), np.float32) / 255.0 - 0.5) / 0.5
    out = np.full((th, tw, 3), pad, np.float32)
    out[top:top + nh, left:left + nw] = x
    return out.transpose(2, 0, 1)[None]


GEOMETRY_FLAGS = {"squash": ["--resize-mode", "squash"],
                  "letterbox": ["--resize-mode", "letterbox", "--pad", "center", "--pad-value", "0"],
                  "height": ["--resize-mode", "height", "--pad", "end", "--pad-value", "0", "--pad-space", "model"]}


class _SpatialNet(torch.nn.Module):
    """Position matters (no global pooling): a crop, squash or pad moves what each weight sees."""

    def __init__(self, size):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 5, stride=4, padding=2)
        n = 4 * (-(-size[0] // 4)) * (-(-size[1] // 4))
        self.fc = torch.nn.Linear(n, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.3)
            self.fc.weight.copy_(torch.randn(self.fc.weight.shape, generator=g) / n ** 0.5)
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.mark.parametrize("mode, size", [("squash", (32, 32)), ("letterbox", (32, 32)), ("height", (24, 72))])
def test_each_geometry_right_flags_true_accuracy_defaults_exit_4(tmp_path, mode, size):
    """A fixed-size model labelled by its own predictions under ``mode``: the right flags give 1.0; with the pixels
    stated and the geometry defaulted (a center crop), the probe names ``mode`` and exits 4."""
    rng = np.random.default_rng(5)
    raw = tmp_path / "raw"
    raw.mkdir()
    paths = []
    for i in range(150):
        h = int(rng.integers(20, 60))
        p = raw / f"{i:03d}.png"
        _image(rng, h, int(h * rng.uniform(0.4, 3.5))).save(p)
        paths.append(p)
    net = _SpatialNet(size).eval()
    xs = np.concatenate([_geometry_input(p, mode, *size) for p in paths])
    with torch.no_grad():
        logits = net(torch.from_numpy(xs))
        net.fc.bias[1] -= float(np.median((logits[:, 1] - logits[:, 0]).numpy()))
    model = tmp_path / "m.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, *size),), str(model), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17)
    scores = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": xs})[0]
    for name in ("neg", "pos"):
        (tmp_path / "data" / name).mkdir(parents=True)
    for p, lab, s in zip(paths, scores.argmax(1), scores):
        if abs(s[1] - s[0]) > 1e-3:
            p.rename(tmp_path / "data" / ("neg", "pos")[lab] / p.name)
    (tmp_path / "classes.txt").write_text("neg\npos\n")
    common = [model, "--data", tmp_path / "data", "--classes", tmp_path / "classes.txt", "--mean", "0.5", "--std",
              "0.5", "--input-range", "1", "--channel-order", "rgb", "--no-latency", "--threads", 2]
    res, text = _invoke([*common, *GEOMETRY_FLAGS[mode], "--out", tmp_path / "right"])
    assert res.exit_code == 0, text
    assert json.loads((tmp_path / "right" / "eval.json").read_text())["accuracy"][0]["accuracy"] == 1.0
    res, text = _invoke([*common, "--out", tmp_path / "defaults"])
    assert res.exit_code == 4, text
    err = [line for line in text.splitlines() if line.startswith("error:")][0]
    assert " ".join(GEOMETRY_FLAGS[mode]) in err, err
    doc = json.loads((tmp_path / "defaults" / "eval.json").read_text())
    assert doc["accuracy"][0]["accuracy"] < 1.0 and doc["preprocessing"]["probe"]["better"]["accuracy"] == 1.0
