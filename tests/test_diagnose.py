"""convkit diagnose and export --keep-fp32 on planted cases: a CNN whose conv2 output carries a huge outlier channel
(MinMax calibration then rounds every other value of that tensor to zero), an exported graph with one weight altered
after export, and a per-class drop planted in one class of ten. Expected values come from plain onnxruntime, PIL +
numpy, plain PyTorch and scipy."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper
from PIL import Image
from scipy import stats

from convkit.class_drops import holm, per_class_drops
from convkit.cli import main
from convkit.errors import ConvkitError
from convkit.export.divergence import first_divergence
from convkit.export.int8_sensitivity import Candidate, bulk_sqnr
from convkit.export.keep_fp32 import resolve_names
from convkit.export.module_map import ModuleRef
from convkit.export.onnx_export import export_onnx

NET = textwrap.dedent('''
    import torch.nn as nn


    class Planted(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.conv1, self.act1 = nn.Conv2d(3, 16, 3, padding=1), nn.ReLU()
            self.conv2, self.act2, self.pool = nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
            self.conv3, self.act3 = nn.Conv2d(16, 32, 3, padding=1), nn.ReLU()
            self.head = nn.Linear(32, num_classes)

        def forward(self, x):
            x = self.pool(self.act2(self.conv2(self.act1(self.conv1(x)))))
            return self.head(self.act3(self.conv3(x)).mean((2, 3)))


    def build(num_classes=10):
        return Planted(num_classes)
''')
COLORS = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
                   [70, 240, 240], [240, 50, 230], [128, 128, 0], [0, 0, 128]], np.float32)
MEAN, STD = 0.5, 0.25


def _images(n_per: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ten classes of 16×16 textured colour patches (uint8 NCHW) and their labels."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for k in range(10):
        texture = rng.uniform(0.6, 1.0, (n_per, 1, 16, 16)).astype(np.float32)
        img = COLORS[k].reshape(1, 3, 1, 1) * texture + rng.normal(0, 12, (n_per, 3, 16, 16))
        images.append(np.clip(img, 0, 255).astype(np.uint8))
        labels += [k] * n_per
    return np.concatenate(images), np.asarray(labels)


def _folder(root, images, labels):
    for i, (img, label) in enumerate(zip(images, labels)):
        (root / f"c{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.transpose(1, 2, 0)).save(root / f"c{label}" / f"{i:04d}.png")
    return root


def _cli(*args) -> tuple[int, str]:
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """The user's package (planted_pkg.nets:build) on sys.path, weights trained on the colour patches, then planted:
    conv2's channel 0 gets a bias of 1e5 (an outlier channel that sets the MinMax range of conv2's output, the ReLU
    after it and the pool) and conv3 ignores that channel."""
    root = tmp_path_factory.mktemp("planted")
    (root / "planted_pkg").mkdir()
    (root / "planted_pkg" / "__init__.py").write_text("")
    (root / "planted_pkg" / "nets.py").write_text(NET)
    sys.path.insert(0, str(root))
    from planted_pkg.nets import build

    x, y = _images(60, 0)
    xt = torch.from_numpy((x / 255.0 - MEAN) / STD).float()
    torch.manual_seed(0)
    net = build()
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(3):
        for idx in torch.randperm(len(xt)).split(50):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[idx]), torch.from_numpy(y)[idx]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        net.conv2.bias[0] = 1e5
        net.conv3.weight[:, 0] = 0
    torch.save(net.state_dict(), root / "weights.pt")
    test_images, test_labels = _images(30, 1)
    data = _folder(root / "test", test_images, test_labels)
    calib = _folder(root / "calib", *_images(10, 2))
    args = ["--model", "planted_pkg.nets:build", "--weights", root / "weights.pt", "--data", data, "--calib-data",
            calib, "--input-size", "3,16,16", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25",
            "--precision", "int8"]
    yield {"root": root, "net": net, "args": args, "data": data}
    sys.path.remove(str(root))


def _folder_arrays(data) -> tuple[np.ndarray, np.ndarray]:
    """The test folder read back with PIL, normalized with numpy, labels from the folder names."""
    paths = sorted(data.glob("c*/*.png"))
    x = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32).transpose(2, 0, 1) for p in paths])
    labels = np.asarray([int(p.parent.name[1:]) for p in paths])
    return ((x / 255.0 - MEAN) / STD).astype(np.float32), labels


def _ort_accuracy(path, x, labels) -> float:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return float((sess.run(None, {sess.get_inputs()[0].name: x})[0].argmax(1) == labels).mean())


def _conv_output(path, weight: str) -> str:
    """The output tensor of the Conv node whose weight initializer is ``weight`` (read from the graph)."""
    graph = onnx.load(str(path)).graph
    return next(n.output[0] for n in graph.node if n.op_type == "Conv" and weight in n.input)


@pytest.mark.slow
def test_diagnose_names_the_planted_layer_and_keep_fp32_auto_repairs_it(tmp_path, planted):
    x, labels = _folder_arrays(planted["data"])
    with torch.inference_mode():
        torch_acc = float((planted["net"](torch.from_numpy(x)).argmax(1).numpy() == labels).mean())

    out = tmp_path / "int8"
    code, text = _cli("export", *planted["args"], "--out", out)
    assert code == 1 and "int8" in text  # the int8 gate fails: MinMax's range is set by the outlier channel
    assert torch_acc - _ort_accuracy(out / "model.int8.rejected.onnx", x, labels) > 0.2

    code, text = _cli("diagnose", out)
    assert code == 0, text
    doc = json.loads((out / "diagnose.json").read_text())
    assert doc["schema"] == "convkit.diagnose/1"
    top = doc["sections"]["int8"]["measured"][0]
    assert top["module"]["path"] == "conv2" and top["module"]["class"] == "Conv2d"
    assert top["tensor"] == _conv_output(out / "model.onnx", "conv2.weight")
    assert top["vs_full_int8"]["distinguishable"] and top["gain_points"] > 20
    assert "conv2" in text.splitlines()[1]  # the short answer comes first and names the module
    assert (out / "diagnose.md").read_text().startswith("# Diagnosis")
    from convkit.report.diagnosis import diagnosed_current

    assert diagnosed_current(out)  # the report links it as current, until model.onnx changes
    changed = onnx.load(str(out / "model.onnx"))
    changed.doc_string = "re-exported"
    onnx.save_model(changed, str(out / "model.onnx"))
    assert not diagnosed_current(out)

    fixed = tmp_path / "fixed"
    code, text = _cli("export", *planted["args"], "--out", fixed, "--keep-fp32", "auto")
    assert code == 0, text
    section = json.loads((fixed / "export.json").read_text())["precisions"]["int8"]["keep_fp32"]
    assert section["verdict"] == "repaired"
    assert [k["module"]["path"] for k in section["kept"]] == ["conv2"]  # exactly the planted layer
    assert section["latency"]["kept"]["1"]["speedup_vs_fp32"] > 0 and section["latency"]["full_int8"]["1"]
    assert {m["method"] for m in section["calibration_methods"]} == {"MinMax", "Entropy", "Percentile"}
    meta = {p.key: p.value for p in onnx.load(str(fixed / "model.int8.onnx")).metadata_props}
    assert json.loads(meta["int8_keep_fp32"])[0]["module"] == "conv2"
    assert torch_acc - _ort_accuracy(fixed / "model.int8.onnx", x, labels) <= 0.01  # within the 1-point gate


def test_an_altered_node_is_named_as_the_first_diverging_module():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                              torch.nn.ReLU(inplace=True),  # in place: overwrites the BatchNorm's output tensor
                              torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(inplace=True),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1), net[1].running_var.uniform_(0.5, 2)
    proto = export_onnx(net, (3, 16, 16))
    x = np.random.default_rng(0).normal(size=(16, 3, 16, 16)).astype(np.float32)
    assert first_divergence(proto, net, x)["first"] is None
    weight = next(t for t in proto.graph.initializer if t.name == "3.weight")
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.01, weight.name))
    result = first_divergence(proto, net, x)
    assert result["first"]["module"] == "3" and result["first"]["class"] == "Conv2d"
    assert "Conv" in result["first"]["op_types"] and result["first"]["max_abs_diff"] > 1e-3
    assert result["compared"] >= 5


def test_holm_matches_the_step_down_formula():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 → monotone 0.02, 0.03, 0.06, 0.06
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_a_planted_per_class_drop_is_found_and_a_null_finds_nothing():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 60)
    base = rng.random(600) < 0.9
    cand = base.copy()
    lost = np.flatnonzero((labels == 3) & base)[:15]
    cand[lost] = False
    result = per_class_drops(base, cand, labels, [f"c{k}" for k in range(10)])
    assert result["significant"] == ["c3"] and "Holm" in result["correction"]
    row = next(r for r in result["rows"] if r["class"] == "c3")
    p = stats.binomtest(0, 15, 0.5).pvalue
    assert row["p_value"] == pytest.approx(p) and row["p_holm"] == pytest.approx(min(1.0, 10 * p))
    assert row["delta_points"] == pytest.approx(-15 / 60 * 100)

    null = base.copy()
    for k in range(10):  # two images each way per class: changes, none beyond noise
        right, wrong = np.flatnonzero((labels == k) & base)[:2], np.flatnonzero((labels == k) & ~base)[:2]
        null[right], null[wrong] = False, True
    assert per_class_drops(base, null, labels, [f"c{k}" for k in range(10)])["significant"] == []


def test_bulk_sqnr_sees_what_an_outlier_hides_from_whole_tensor_sqnr():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 20_000).astype(np.float32)
    x[:5] = 1e4
    scale = (x.max() - min(x.min(), 0)) / 255  # uint8 MinMax quantization
    zero = np.round(-min(x.min(), 0) / scale)
    y = (np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale
    whole = 20 * np.log10(np.linalg.norm(x) / np.linalg.norm(x - y))
    assert whole > 20  # looks healthy
    assert bulk_sqnr([x], [y]) < 1  # every ordinary value was rounded to zero


def test_keep_fp32_names_resolve_by_tensor_or_module_and_unknown_is_one_line():
    cands = {"t1": Candidate("t1", ("t1",), ("n1",), ("Conv",), ModuleRef("layer1.conv", "Conv2d")),
             "t2": Candidate("t2", ("t2",), ("n2",), ("Conv",), ModuleRef("layer2.conv", "Conv2d"))}
    assert resolve_names(("layer2.conv", "t1"), cands) == ["t2", "t1"]
    with pytest.raises(ConvkitError) as err:
        resolve_names(("nosuch",), cands)
    assert err.value.exit_code == 2 and "nosuch" in err.value.message and "layer1.conv" in err.value.message


def test_eval_md_lines_name_the_changed_class_escaped():
    from convkit.class_drops import markdown_lines

    labels = np.repeat(np.arange(3), 40)
    base = np.ones(120, bool)
    cand = base.copy()
    cand[40:60] = False  # class 1 loses 20 of its 40 images
    names = ["a", "b|<x>", "c"]
    entry = {"precision": "int8", "provider": "cpu", "per_class_vs_fp32": per_class_drops(base, cand, labels, names)}
    text = "\n".join(markdown_lines([entry]))
    assert "b\\|&lt;x&gt; -50.0 pts" in text and "Holm" in text


def test_diagnose_without_an_export_is_one_line_exit_2(tmp_path):
    code, text = _cli("diagnose", tmp_path)
    assert code == 2 and "convkit export" in text and "Traceback" not in text


def test_keep_fp32_without_int8_and_an_unknown_calibration_are_refused():
    from convkit.export.pipeline import ExportSettings

    with pytest.raises(ConvkitError, match="--precision int8") as err:
        ExportSettings(keep_fp32="auto").check()
    assert err.value.exit_code == 2
    with pytest.raises(ConvkitError, match="calibration"):
        ExportSettings(precisions=("int8",), calibration="Histogram").check()
    code, text = _cli("export", "--help")
    assert "--keep-fp32" in text and "--calibration" in text


def test_an_fp16_overflow_is_named_at_its_module():
    from convkit.export.quantize import to_fp16

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 1),
                              torch.nn.Conv2d(8, 8, 1), torch.nn.Flatten(), torch.nn.Linear(8 * 64, 10)).eval()
    with torch.no_grad():  # module 2 scales up past fp16's 65504, module 3 scales back: fp32 is unchanged
        net[2].weight.mul_(1e6)
        net[3].weight.mul_(1e-6)
    fp32 = export_onnx(net, (3, 8, 8))
    x = np.random.default_rng(0).normal(size=(8, 3, 8, 8)).astype(np.float32)
    with torch.inference_mode():
        assert np.abs(net[:3](torch.from_numpy(x)).numpy()).max() > 65504  # independent: the overflow is real
    from convkit.export.divergence import FP16_RTOL

    result = first_divergence(to_fp16(fp32), net, x, rtol=FP16_RTOL, metadata_from=fp32)
    assert result["first"]["module"] == "2" and result["first"]["non_finite"]
