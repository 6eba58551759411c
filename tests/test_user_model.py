"""The user's own PyTorch model through export (parity gate, variants, model_source.json) and evaluate (its PyTorch
reference, no preprocessing flags). Expected accuracies come from plain onnxruntime + numpy, or plain PyTorch."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from convkit.cli import main
from convkit.data.catalog import get_dataset_info
from convkit.data.load import load_dataset

NETS = textwrap.dedent('''
    import torch
    import torch.nn as nn
    import torch.nn.functional as F


    class Net(nn.Module):
        def __init__(self, num_classes=10, always_dropout=False):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4),
                                          nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
            self.head = nn.Linear(128, num_classes)
            self.always_dropout = always_dropout

        def forward(self, x):
            z = self.features(x).flatten(1)
            if self.always_dropout:  # dropout left in training mode: outputs change from call to call
                z = F.dropout(z, 0.5, training=True)
            return self.head(z)


    def build(num_classes=10, always_dropout=False):
        return Net(num_classes, always_dropout)
''')


def _cli(*args) -> tuple[int, str]:
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def cifar():
    return load_dataset("cifar10", sample=True)


@pytest.fixture(scope="module")
def user_pkg(tmp_path_factory, cifar):
    """A package of the user's (my_pkg.nets:build) on sys.path and weights trained a few steps on the sample, saved
    as a training script would: under "model_state_dict", with DataParallel's "module." prefixes."""
    root = tmp_path_factory.mktemp("user")
    (root / "my_pkg").mkdir()
    (root / "my_pkg" / "__init__.py").write_text("")
    (root / "my_pkg" / "nets.py").write_text(NETS)
    import sys

    sys.path.insert(0, str(root))
    from my_pkg.nets import build

    torch.manual_seed(0)
    net = build()
    info = get_dataset_info("cifar10")
    mean, std = torch.tensor(info.mean).view(1, 3, 1, 1), torch.tensor(info.std).view(1, 3, 1, 1)
    x, y = (cifar.train_images.float() / 255 - mean) / std, cifar.train_labels
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(3):
        for idx in torch.randperm(len(x)).split(100):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    weights = root / "weights.pt"
    torch.save({"epoch": 3, "model_state_dict": {f"module.{k}": v for k, v in net.eval().state_dict().items()}},
               weights)
    yield {"root": root, "net": net, "weights": weights, "mean": mean, "std": std}
    sys.path.remove(str(root))


def _onnx_accuracy(model: Path, x: np.ndarray, labels: np.ndarray) -> float:
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    logits = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x[i:i + 100]})[0]
                             for i in range(0, len(x), 100)])
    return float((logits.argmax(1) == labels).mean())


def test_factory_with_weights_exports_and_evaluates_against_its_pytorch_reference(tmp_path, user_pkg, cifar):
    out = tmp_path / "mine"
    code, text = _cli("export", "--model", "my_pkg.nets:build", "--model-kwargs", '{"num_classes": 10}',
                      "--weights", user_pkg["weights"], "--dataset", "cifar10", "--sample", "--out", out,
                      "--precision", "fp16")
    assert code == 0, text
    doc = json.loads((out / "export.json").read_text())
    assert doc["gate"] == "passed" and doc["precisions"]["fp32"]["gate"]["passed"]
    source = json.loads((out / "model_source.json").read_text())
    assert source["source"]["weights_sha256"] and source["contract"]["dataset"] == "cifar10"

    # evaluate needs no preprocessing flag: everything was recorded
    code, text = _cli("evaluate", out, "--provider", "cpu", "--threads", "1", "--batch-sizes", "1", "--runs", "3",
                      "--warmup", "1", "--min-seconds", "0")
    assert code == 0, text
    assert "WARNING" not in text and "Δ vs PyTorch" in text
    ev = json.loads((out / "eval.json").read_text())
    assert ev["pytorch"] is not None and ev["gate"]["passed"] is True
    assert any(r["backend"] == "torch-eager" for r in ev["latency"])  # PyTorch eager latency beside ORT
    images, labels = cifar.test_images.numpy(), cifar.test_labels.numpy()
    x = ((images.astype(np.float32) / 255 - user_pkg["mean"].numpy()) / user_pkg["std"].numpy()).astype(np.float32)
    fp32 = next(a for a in ev["accuracy"] if a["precision"] == "fp32")
    assert fp32["accuracy"] == pytest.approx(_onnx_accuracy(out / "model.onnx", x, labels), abs=1e-12)
    with torch.inference_mode():
        torch_acc = float((user_pkg["net"](torch.from_numpy(x)).argmax(1).numpy() == labels).mean())
    assert ev["pytorch"]["accuracy"] == pytest.approx(torch_acc, abs=1e-12)
    assert fp32["accuracy"] > 0.2  # better than chance: the weights were loaded, prefixes stripped


def test_exported_program_needs_no_source_code(tmp_path, user_pkg, cifar):
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(user_pkg["net"].eval(), (torch.zeros(2, 3, 32, 32),), dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "net.pt2")
    out = tmp_path / "prog"
    code, text = _cli("export", "--program", tmp_path / "net.pt2", "--dataset", "cifar10", "--sample", "--out", out)
    assert code == 0, text
    code, text = _cli("evaluate", out, "--provider", "cpu", "--threads", "1", "--no-latency")
    assert code == 0 and "WARNING" not in text, text
    ev = json.loads((out / "eval.json").read_text())
    assert ev["gate"]["passed"] is True and ev["pytorch"]["accuracy"] == pytest.approx(ev["accuracy"][0]["accuracy"])


def test_folder_data_contract_is_recorded_for_evaluate(tmp_path, user_pkg, cifar):
    names = get_dataset_info("cifar10").classes
    for i, (img, y) in enumerate(zip(cifar.test_images[:200], cifar.test_labels[:200])):
        folder = tmp_path / "pics" / names[int(y)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).resize((40, 36)).save(folder / f"{i}.png")
    (tmp_path / "classes.txt").write_text("\n".join(names) + "\n")
    info = get_dataset_info("cifar10")
    mean, std = ",".join(map(str, info.mean)), ",".join(map(str, info.std))
    out = tmp_path / "folder-run"
    code, text = _cli("export", "--model", "my_pkg.nets:build", "--weights", user_pkg["weights"], "--data",
                      tmp_path / "pics", "--classes", tmp_path / "classes.txt", "--input-size", "3,32,32", "--mean",
                      mean, "--std", std, "--resize", "32", "--out", out)
    assert code == 0, text
    code, text = _cli("evaluate", out, "--provider", "cpu", "--threads", "1", "--no-latency")
    assert code == 0 and "WARNING" not in text and "200 images" in text, text
    assert "geometry: shorter side → 32, center crop 32×32" in text and "[mode config: model.convkit.json" in text
    ev = json.loads((out / "eval.json").read_text())
    assert ev["gate"]["passed"] is True


def test_torchscript_exporter_when_asked_still_runs_the_gate(tmp_path, user_pkg):
    out = tmp_path / "ts"
    code, text = _cli("export", "--model", "my_pkg.nets:build", "--weights", user_pkg["weights"], "--dataset",
                      "cifar10", "--sample", "--out", out, "--exporter", "torchscript", "--n-images", "200")
    assert code == 0, text
    doc = json.loads((out / "export.json").read_text())
    assert "TorchScript" in doc["exporter"] and doc["precisions"]["fp32"]["gate"]["passed"]
    assert doc["precisions"]["fp32"]["parity"]["max_abs_diff"] < 1e-4


def test_a_model_whose_outputs_change_fails_the_gate(tmp_path, user_pkg):
    out = tmp_path / "noisy"
    code, text = _cli("export", "--model", "my_pkg.nets:build", "--model-kwargs", '{"always_dropout": true}',
                      "--dataset", "cifar10", "--sample", "--out", out, "--n-images", "200")
    assert code == 1, text
    assert "gate failed" in text and (out / "model.rejected.onnx").is_file() and not (out / "model.onnx").exists()


def test_weights_whose_pickle_asks_to_run_code_are_refused_and_not_run(tmp_path, user_pkg):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.pt"
    torch.save({"state_dict": Payload()}, bad)
    code, text = _cli("export", "--model", "my_pkg.nets:build", "--weights", bad, "--dataset", "cifar10", "--sample",
                      "--out", tmp_path / "x")
    assert code == 2 and "never executes" in text and "Traceback" not in text, text
    assert not marker.exists()


@pytest.mark.parametrize("args, needle", [
    (["--model", "my_pkg.nets:build", "--dataset", "cifar10"], "--out"),
    (["--model", "my_pkg.nets:build", "--program", "x.pt2", "--dataset", "cifar10", "--out", "o"], "exactly one"),
    (["--model", "my_pkg.nets:build", "--model-kwargs", "{num_classes: 10}", "--dataset", "cifar10", "--out", "o"],
     "not JSON"),
    (["--model", "my_pkg.nets:nope", "--dataset", "cifar10", "--out", "o"], "cannot import"),
    (["--model", "my_pkg.nets:build", "--model-kwargs", '{"num_classes": 7}', "--dataset", "cifar10", "--sample",
      "--out", "o"], "[N, 10]"),
    (["--model", "my_pkg.nets:build", "--dataset", "mnist", "--sample", "--out", "o"], "failed on a batch"),
])
def test_bad_user_model_input_is_one_line_exit_2(tmp_path, user_pkg, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    code, text = _cli("export", *args)
    assert code == 2, text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], text


def test_timm_shorthand(tmp_path, cifar):
    pytest.importorskip("timm")
    out = tmp_path / "timm"
    code, text = _cli("export", "--model", "timm:resnet10t", "--model-kwargs", '{"num_classes": 10}', "--dataset",
                      "cifar10", "--sample", "--out", out, "--n-images", "100")
    assert code == 0, text
    source = json.loads((out / "model_source.json").read_text())["source"]
    assert (source["kind"], source["spec"]) == ("timm", "resnet10t")
