"""Bad input through the command line, as a careless or hostile user gives it: every case is one line on stderr
naming the problem, exit 2, no traceback, and the run folder beside it unchanged (checked by checksum).

New commands and options should add their cases to CASES."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from convkit.cli import main

RUN = "{runs}/seed-sample/t1-fcn"
TRAIN = ["--sample", "--device", "cpu", "--out", "{runs}", "--quiet"]
FRESH = ["--sample", "--device", "cpu", "--out", "{tmp}/fresh", "--quiet"]  # no run there yet

# (what, args, needle in the error line); "{runs}", "{run}", "{tmp}" are filled in per test.
CASES = [
    ("unknown experiment", ["train", "t3-k6", *TRAIN], "did you mean"),
    ("epochs not an integer", ["train", "t1-fcn", "--epochs", "1e20", *TRAIN], "--epochs"),
    ("absurd epochs", ["train", "t1-fcn", "--epochs", "100000", *TRAIN], "--epochs"),
    ("infinite learning rate", ["train", "t1-fcn", "--lr", "inf", *TRAIN], "--lr"),
    ("negative learning rate", ["train", "t1-fcn", "--lr", "-1", *TRAIN], "--lr"),
    ("a run is already there", ["train", "t1-fcn", *TRAIN], "already holds a run"),
    ("resume and overwrite", ["train", "t1-fcn", "--resume", "--overwrite", *TRAIN], "contradict"),
    ("missing data folder", ["train", "t1-fcn", "--device", "cpu", "--data-dir", "{tmp}/nowhere", "--out",
                             "{tmp}/other"], "does not exist"),
    ("bad --max-images", ["train", "t1-fcn", "--max-images", "lots", *TRAIN], "--max-images"),
    ("CUDA asked for, none here", ["train", "t1-fcn", "--sample", "--device", "cuda", "--out", "{tmp}/o"], "cuda"),
    ("unknown suite", ["train-all", "--suite", "nope", *TRAIN], "unknown suite"),
    ("glob matches nothing", ["train-all", "--only", "zzz*", *TRAIN], "matches no experiment"),
    ("suite already trained", ["train-all", "--only", "t1-fcn", *TRAIN], "already holds a run"),
    ("export of a missing folder", ["export", "{tmp}/nope"], "not found"),
    ("export of a garbage checkpoint", ["export", "--checkpoint", "{tmp}/garbage.pt"], "is corrupt"),
    ("export of a malicious pickle", ["export", "--checkpoint", "{tmp}/evil.pt"], "never executes"),
    ("export gate out of range", ["export", "{run}", "--max-disagreement", "fp32=-1"], "--max-disagreement"),
    ("export: nothing given", ["export"], "nothing to export"),
    ("evaluate a text file", ["evaluate", "{tmp}/notes.onnx", "--dataset", "mnist"], "notes.onnx"),
    ("evaluate with a NaN mean", ["evaluate", "{run}", "--mean", "nan", "--no-latency"], "--mean"),
    ("evaluate with an unknown gate", ["evaluate", "{run}", "--max-accuracy-drop", "int4=1"], "unknown precision"),
    ("evaluate with a bad scenario", ["evaluate", "{run}", "--scenario", "bogus"], "--scenario"),
    ("evaluate: no model", ["evaluate"], "no model"),
    ("evaluate: frost (not generated)", ["evaluate", "{run}", "--corruptions", "frost", "--no-latency"],
     "frost is not generated"),
    ("evaluate: bad severities", ["evaluate", "{run}", "--corruptions", "all", "--severities", "0-9"], "--severities"),
    ("train-all: bad severities", ["train-all", "--only", "t1-fcn", "--corruptions", "contrast", "--severities", "x",
                                   *TRAIN], "--severities"),
    # round three: bounds on rates, counts and sizes (memory and time)
    ("evaluate: absurd --server-qps", ["evaluate", "{run}", "--scenario", "server", "--quick", "--server-qps",
                                       "1000000000"], "--server-qps"),
    ("evaluate: --server-qps beyond memory", ["evaluate", "{run}", "--scenario", "server", "--server-qps", "1000000"],
     "pre-generate"),
    ("evaluate: absurd --batch-sizes", ["evaluate", "{run}", "--batch-sizes", "1,100000000"], "--batch-sizes"),
    ("evaluate: absurd --runs", ["evaluate", "{run}", "--runs", "1000000"], "--runs"),
    ("evaluate: absurd --max-batch", ["evaluate", "{run}", "--max-batch", "100000000"], "--max-batch"),
    ("evaluate: absurd --workers", ["evaluate", "{run}", "--workers", "100000"], "--workers"),
    ("evaluate: absurd --resize", ["evaluate", "{tmp}/c3.onnx", "--data", "{tmp}/pics", "--resize", "1000000"],
     "--resize"),
    ("export: absurd --n-images", ["export", "{run}", "--n-images", "100000000"], "--n-images"),
    ("evaluate: extreme aspect ratio", ["evaluate", "{tmp}/c3.onnx", "--data", "{tmp}/wide", "--resize", "224",
                                        "--no-latency"], "200000×1 pixels"),
    ("evaluate: a 20000² PNG", ["evaluate", "{tmp}/c3.onnx", "--data", "{tmp}/huge", "--no-latency"],
     "0.png: Pillow refuses to decode it (Image size (400000000 pixels)"),
    # round three: bad input that was exit 70
    ("evaluate: 2-channel model with --data", ["evaluate", "{tmp}/c2.onnx", "--data", "{tmp}/pics", "--no-latency"],
     "2-channel input"),
    ("evaluate: 4-channel model with --data", ["evaluate", "{tmp}/c4.onnx", "--data", "{tmp}/pics", "--no-latency"],
     "4-channel input"),
    ("evaluate: Latin-1 CSV", ["evaluate", "{tmp}/c3.onnx", "--data", "{tmp}/latin.csv", "--no-latency"],
     "is not UTF-8"),
    ("evaluate: conflicting CSV rows", ["evaluate", "{tmp}/c3.onnx", "--data", "{tmp}/conflict.csv", "--no-latency"],
     "listed with two labels"),
    ("evaluate: external data leaving the model's folder", ["evaluate", "{tmp}/outside/m.onnx", "--data", "{tmp}/pics",
                                                            "--no-latency"], "outside"),
    ("export of a plain pickle", ["export", "--checkpoint", "{tmp}/raw.pt"], "plain pickle"),
    ("train-all on a GPU that is not here", ["train-all", "--only", "t1-fcn", "--devices", "cuda:99", *TRAIN],
     "--devices"),
    ("train-all --ray without a cluster", ["train-all", "--only", "t1-fcn", *FRESH, "--ray"], "no running Ray cluster"),
    ("train-all --ray to a silent address", ["train-all", "--only", "t1-fcn", *FRESH, "--ray", "127.0.0.1:1"],
     "no Ray cluster answers at 127.0.0.1:1"),
    ("train-all --ray ray:// without the client", ["train-all", "--only", "t1-fcn", *FRESH, "--ray",
                                                   "ray://127.0.0.1:1"], "ray[client]"),
    # round four (issue 27): bad input that was exit 70
    ("export: --model with no module", ["export", "--model", ":good", "--dataset", "cifar10", "--sample", "--out",
                                        "{tmp}/u1"], "MODULE:FACTORY"),
    ("export: --model-kwargs nested 4,000 deep", ["export", "--model", "torchvision.models:resnet18", "--model-kwargs",
                                                  "[" * 4000 + "]" * 4000, "--dataset", "cifar10", "--sample",
                                                  "--out", "{tmp}/u2"], "nested too deeply"),
    ("export: a 300-byte --out name", ["export", "--model", "torchvision.models:resnet18", "--dataset", "cifar10",
                                       "--sample", "--out", "{tmp}/" + "x" * 300], "choose a shorter --out"),
    ("evaluate: a 300-byte --out name", ["evaluate", "{run}", "--no-latency", "--out", "{tmp}/" + "y" * 300],
     "choose a shorter --out"),
    ("train-all: unknown corruption, before training", ["train-all", "--only", "t1-fcn", *FRESH, "--corruptions",
                                                         "bogus"], "unknown corruption 'bogus'"),
    ("summarize a missing folder", ["summarize", "{tmp}/nope"], "not found"),
    ("report of an empty folder", ["report", "{tmp}/empty"], "{tmp}/empty"),
    ("unknown command", ["trian", "t1-fcn"], "trian"),
]


class _Evil:
    """Unpickling this would create a file: a checkpoint that asks to run code."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A trained and exported run, a garbage checkpoint, a text file named .onnx and an empty folder."""
    tmp = tmp_path_factory.mktemp("bad")
    runs = tmp / "runs"
    runner = CliRunner()
    r = runner.invoke(main, ["train", "t1-fcn", "--sample", "--epochs", "1", "--device", "cpu", "--out", str(runs),
                             "--quiet", "--batch-size", "256"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["export", RUN.format(runs=runs), "--n-images", "64"])
    assert r.exit_code == 0, r.output
    (tmp / "garbage.pt").write_bytes(b"\x80\x04garbage")
    torch.save({"model": _Evil(tmp / "pwned"), "config": {}}, tmp / "evil.pt")
    (tmp / "notes.onnx").write_text("this is not a model\n" * 10)
    (tmp / "empty").mkdir()
    hostile_files(tmp)
    return {"tmp": str(tmp), "runs": str(runs), "run": RUN.format(runs=runs)}


def tiny_classifier(path: Path, channels: int, classes: int = 3, side: int = 8, metadata: dict | None = None) -> Path:
    """Write an ONNX classifier (Flatten + Gemm) of [N, channels, side, side] images; returns ``path``."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).random((classes, channels * side * side), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "w"], ["y"], transB=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, side, side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def png_claiming(path: Path, width: int, height: int) -> Path:
    """Write a 1×1 PNG whose header claims ``width``×``height`` pixels (a decompression bomb's header)."""
    import struct
    import zlib

    from PIL import Image

    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
    path.write_bytes(bytes(data))
    return path


def hostile_files(tmp: Path) -> None:
    """Round three's inputs: 1-, 2-, 3- and 4-channel models, a small image folder, 16 PNGs of 200000×1 px, a PNG
    claiming 20000² px, a Latin-1 and a conflicting CSV, a plain pickle, external data pointing outside."""
    import pickle

    import numpy as np
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data
    from PIL import Image

    for c in (2, 3, 4):
        tiny_classifier(tmp / f"c{c}.onnx", c)
    for i in range(6):
        (tmp / "pics" / "abc"[i % 3]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((10, 12, 3), 40 * i, np.uint8)).save(tmp / "pics" / "abc"[i % 3] / f"{i}.png")
    for i in range(16):  # 72 KB on disk; 4.8 GB and 40 s resized before round three
        (tmp / "wide" / "abc"[i % 3]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((1, 200_000), i, np.uint8)).save(tmp / "wide" / "abc"[i % 3] / f"{i}.png")
    for c in "abc":
        (tmp / "huge" / c).mkdir(parents=True)
        png_claiming(tmp / "huge" / c / "0.png", 20_000, 20_000)
    (tmp / "latin.csv").write_bytes("path,label\npics/a/0.png,caf\xe9\n".encode("latin-1"))
    (tmp / "conflict.csv").write_text("path,label\npics/a/0.png,a\npics/b/1.png,b\n./pics/a/0.png,b\n")
    with open(tmp / "raw.pt", "wb") as fh:  # the default protocol, no torch.save zip around it
        pickle.dump({"model": {"w": [1.0]}, "config": {}}, fh)
    model = onnx.load(str(tmp / "c3.onnx"))
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    (tmp / "external").mkdir()
    onnx.save(model, str(tmp / "external" / "m.onnx"))  # the weights beside it, in weights.bin
    (tmp / "outside").mkdir()
    (tmp / "weights.bin").write_bytes((tmp / "external" / "weights.bin").read_bytes())
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../weights.bin"
    (tmp / "outside" / "m.onnx").write_bytes(model.SerializeToString())


@pytest.mark.parametrize("what, args, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(world, what, args, needle):
    run = Path(world["run"])
    before = _digests(run.parent)
    r = CliRunner().invoke(main, [a.format(**world) for a in args])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2, (what, r.output)
    assert len(lines) == 1 and lines[0].startswith("error: "), (what, r.output)
    assert needle.format(**world) in lines[0], (what, lines[0])
    assert "Traceback" not in r.output
    assert _digests(run.parent) == before, what
    assert not (Path(world["tmp"]) / "pwned").exists()  # the malicious pickle never ran
