"""Export stage: every seed model exports and passes the parity gate; variants, bad input, metadata, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from convkit.errors import ConvkitError
from convkit.export import export_all, export_checkpoint, export_run
from convkit.export.onnx_export import MAX_BATCH, OPSET, export_onnx
from convkit.models import create_model
from convkit.onnx_meta import METADATA_KEYS, read_metadata
from convkit.suite import select_experiments

N_IMAGES = 64  # parity images per export in these tests (the CLI default is 1000)


def make_fake_run(root: Path, experiment: str, test_acc: float = 0.5, seed: int = 0) -> Path:
    """A run directory with a random-weight checkpoint of ``experiment`` on the embedded sample."""
    exp = next(e for e in select_experiments("seed") if e.name == experiment)
    torch.manual_seed(seed)
    model = create_model(exp.model)
    run_dir = root / experiment
    run_dir.mkdir(parents=True)
    config = {"experiment": exp.name, "suite": "seed", "model": exp.model, "dataset": exp.dataset, "epochs": 1,
              "device": "cpu", "sample": True, "data_dir": None, "run_dir": str(run_dir), "seed": seed}
    torch.save({"model": model.state_dict(), "config": config, "epoch": 1, "environment": {}}, run_dir / "checkpoint.pt")
    (run_dir / "metrics.json").write_text(json.dumps({"test_acc": test_acc}))
    return run_dir


def _unique_model_experiments() -> list:
    seen, out = set(), []
    for exp in select_experiments("seed"):
        if exp.model not in seen:
            seen.add(exp.model)
            out.append(pytest.param(exp.name, marks=pytest.mark.slow) if exp.model == "resnet50_cifar" else exp.name)
    return out


@pytest.mark.parametrize("experiment", _unique_model_experiments())
def test_seed_model_exports_and_passes_gate(tmp_path, experiment):
    run_dir = make_fake_run(tmp_path, experiment)
    report = export_run(run_dir, n_images=N_IMAGES)

    assert report["gate"] == "passed" and report["failed"] == []
    onnx_path = run_dir / "model.onnx"
    assert onnx_path.is_file() and not (run_dir / "model.rejected.onnx").exists()
    assert json.loads((run_dir / "export.json").read_text())["gate"] == "passed"
    parity = report["precisions"]["fp32"]["parity"]
    assert set(parity["batches"]) == {"1", "2", "7", str(MAX_BATCH)}
    assert parity["max_abs_diff"] <= 1e-4 and parity["argmax_agreement"] >= 0.999
    assert parity["batches"]["1"]["images"] == N_IMAGES

    import onnx

    proto = onnx.load(str(onnx_path))
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField("dim_value")  # really dynamic
    assert any(o.domain in ("", "ai.onnx") and o.version == OPSET for o in proto.opset_import)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


def test_metadata_round_trip(tmp_path):
    run_dir = make_fake_run(tmp_path, "t5-custom-conv", test_acc=0.6125)
    report = export_run(run_dir, n_images=16)
    meta = read_metadata(run_dir / "model.onnx", decode=True)
    assert tuple(read_metadata(run_dir / "model.onnx")) == METADATA_KEYS  # exactly these keys, in order
    model = create_model("custom_conv_cnn")
    assert meta["experiment"] == "t5-custom-conv" and meta["model"] == "custom_conv_cnn"
    assert meta["dataset"] == "cifar10"
    assert meta["class_names"] == list(model.default_cfg.classes)
    assert meta["mean"] == pytest.approx(list(model.default_cfg.mean))
    assert meta["std"] == pytest.approx(list(model.default_cfg.std))
    assert meta["input_layout"] == "NCHW" and meta["input_range"] == "1"
    # export writes the accuracy it measured on its 16 parity images, never metrics.json's (0.6125): here the
    # same images through plain onnxruntime (the fp32 file passed its parity gate, so top-1 agrees)
    from convkit.data.load import load_dataset

    data = load_dataset("cifar10", sample=True)
    x = (data.test_images[:16].float() / 255 - torch.tensor(meta["mean"]).view(1, 3, 1, 1)) / torch.tensor(
        meta["std"]).view(1, 3, 1, 1)
    logits = ort.InferenceSession(str(run_dir / "model.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()})[0]
    assert meta["pytorch_test_acc"] == pytest.approx(float((logits.argmax(1) == data.test_labels[:16].numpy()).mean()))
    assert meta["pytorch_test_acc"] != 0.6125 and report["pytorch_test_acc_images"] == 16
    assert meta["opset"] == OPSET and meta["precision"] == "fp32"
    assert meta["torch_version"] == torch.__version__
    import hashlib

    assert meta["checkpoint_sha256"] == hashlib.sha256((run_dir / "checkpoint.pt").read_bytes()).hexdigest()
    assert report["metadata"]["checkpoint_sha256"] == meta["checkpoint_sha256"]


def test_reference_evaluator_matches_pytorch(tmp_path):
    """An independent consumer (onnx.reference) runs the exported file and agrees with PyTorch."""
    from onnx.reference import ReferenceEvaluator

    from convkit.data.load import load_dataset
    from convkit.data.loader import normalize

    run_dir = make_fake_run(tmp_path, "t5-custom-activation")
    export_run(run_dir, n_images=16)
    model = create_model("custom_activation_cnn")
    model.load_state_dict(torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"])
    model.eval()
    data = load_dataset("cifar10", sample=True)
    x = normalize(data.test_images[:5], model.default_cfg.mean, model.default_cfg.std)
    with torch.no_grad():
        ref = model(x).numpy()
    (out,) = ReferenceEvaluator(str(run_dir / "model.onnx")).run(None, {"input": x.numpy()})
    assert out.shape == (5, 10)
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def variant_reports(sample_runs):
    """fp16 + int8 exports of the two trained sample runs (int8 accuracy gate loosened: 1-epoch models are near chance)."""
    drop = {"fp32": 0.1, "fp16": 0.3, "int8": 100.0}
    return {name: export_run(run, precisions=("fp16", "int8"), max_acc_drop=drop) for name, run in sample_runs.items()}


@pytest.mark.parametrize("experiment", ["t1-fcn", "t5-custom-conv"])
def test_fp16_and_int8_variants(sample_runs, variant_reports, experiment):
    import onnx

    run_dir, report = sample_runs[experiment], variant_reports[experiment]
    fp16, int8 = report["precisions"]["fp16"], report["precisions"]["int8"]
    assert (run_dir / "model.fp16.onnx").is_file() and (run_dir / "model.int8.onnx").is_file()
    assert read_metadata(run_dir / "model.fp16.onnx")["precision"] == "fp16"
    assert read_metadata(run_dir / "model.int8.onnx")["precision"] == "int8"

    # fp16: float32 I/O kept, float16 weights, agreement gate passed
    p16 = onnx.load(str(run_dir / "model.fp16.onnx"))
    assert p16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert p16.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in p16.graph.initializer)
    assert fp16["gate"]["passed"] and fp16["parity"]["argmax_agreement"] >= 0.99
    assert 0.45 < fp16["size_ratio"] < 0.6

    # int8: QDQ with per-channel weight scales, calibrated as recorded, about 4x smaller
    p8 = onnx.load(str(run_dir / "model.int8.onnx"))
    ops = {n.op_type for n in p8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    inits = {t.name: t for t in p8.graph.initializer}
    per_channel = [n for n in p8.graph.node if n.op_type == "DequantizeLinear" and n.input[1] in inits
                   and len(inits[n.input[1]].dims) == 1 and inits[n.input[1]].dims[0] > 1]
    assert per_channel, "expected per-channel weight scales"
    q = int8["quantization"]
    assert q["format"] == "QDQ" and q["per_channel"] and q["calibrate_method"] == "MinMax"
    assert q["calibration_images"] == 512 and q["calibration_seed"] == 0
    assert int8["size_ratio"] < 0.35 and int8["fp32_size_bytes"] == report["precisions"]["fp32"]["size_bytes"]
    assert int8["parity"]["argmax_agreement"] > 0.5
    assert "acc_delta" in int8["gate"]


def test_variant_gate_failure_keeps_rejected_file(tmp_path):
    run_dir = make_fake_run(tmp_path, "t1-fcn")
    with pytest.raises(ConvkitError) as info:
        # an int8 file can never gain 100 points over PyTorch: the gate must fail
        export_run(run_dir, precisions=("int8",), n_images=N_IMAGES, calib_images=64,
                   max_acc_drop={"fp32": 0.1, "fp16": 0.3, "int8": -100.0})
    assert info.value.exit_code == 1 and "int8" in info.value.message
    assert (run_dir / "model.onnx").is_file()  # fp32 passed
    assert (run_dir / "model.int8.rejected.onnx").is_file() and not (run_dir / "model.int8.onnx").exists()
    report = json.loads((run_dir / "export.json").read_text())
    assert report["gate"] == "failed" and report["failed"] == ["int8"]


def test_fp32_gate_failure_is_not_written_as_model_onnx(tmp_path):
    run_dir = make_fake_run(tmp_path, "t5-custom-conv")
    export_run(run_dir, n_images=16)  # an earlier, passing export: its model.onnx must not survive the failure
    assert (run_dir / "model.onnx").is_file()
    with pytest.raises(ConvkitError) as info:
        export_run(run_dir, n_images=N_IMAGES, atol=1e-15)
    assert info.value.exit_code == 1 and "atol" in info.value.message
    assert not (run_dir / "model.onnx").exists() and (run_dir / "model.rejected.onnx").is_file()
    report = json.loads((run_dir / "export.json").read_text())
    assert report["failed"] == ["fp32"] and not report["precisions"]["fp32"]["gate"]["passed"]
    assert report["removed_stale_files"] == ["model.onnx"]
    divergence = report["precisions"]["fp32"]["divergence"]  # located at the gate's own tolerance
    assert divergence["atol"] == 1e-15 and divergence["compared"] > 0


def _listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def test_missing_and_corrupt_checkpoint(tmp_path):
    with pytest.raises(ConvkitError) as info:
        export_run(tmp_path / "nope")
    assert info.value.exit_code == 2

    run_dir = make_fake_run(tmp_path, "t1-fcn")
    (run_dir / "checkpoint.pt").unlink()
    with pytest.raises(ConvkitError) as info:
        export_run(run_dir)
    assert info.value.exit_code == 2 and "not found" in info.value.message

    (run_dir / "checkpoint.pt").write_bytes(b"PK\x03\x04 this is not a checkpoint")
    before = _listing(run_dir)
    with pytest.raises(ConvkitError) as info:
        export_run(run_dir)
    assert info.value.exit_code == 2 and "corrupt" in info.value.message
    assert _listing(run_dir) == before  # nothing half-written


def test_checkpoint_of_another_architecture(tmp_path):
    run_dir = make_fake_run(tmp_path, "t1-fcn")
    before = _listing(run_dir)
    with pytest.raises(ConvkitError) as info:
        export_checkpoint(run_dir / "checkpoint.pt", "t1-simple-cnn", n_images=16)
    msg = info.value.message
    assert info.value.exit_code == 2 and "does not match this architecture" in msg
    assert "missing keys" in msg and "unexpected keys" in msg
    assert _listing(run_dir) == before

    # same key names, different shapes: the shape is named
    other = make_fake_run(tmp_path / "o", "t3-k5")
    with pytest.raises(ConvkitError) as info:
        export_checkpoint(other / "checkpoint.pt", "t3-k3", n_images=16)
    assert "shape of" in info.value.message and "(32, 32, 5, 5)" in info.value.message


def test_unwritable_output(tmp_path):
    run_dir = make_fake_run(tmp_path, "t1-fcn")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ConvkitError) as info:
        export_checkpoint(run_dir / "checkpoint.pt", None, blocker / "out", n_images=16)
    assert info.value.exit_code == 2 and "cannot create output directory" in info.value.message
    assert not (run_dir / "model.onnx").exists()


class _KthPool(torch.nn.Module):
    def forward(self, x):
        return torch.kthvalue(x.flatten(2), 3).values


def test_unsupported_operator_names_operator_and_module():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), _KthPool())
    with pytest.raises(ConvkitError) as info:
        export_onnx(model, (3, 8, 8))
    msg = info.value.message
    assert info.value.exit_code == 2 and "\n" not in msg
    assert "aten.kthvalue" in msg and "_KthPool" in msg and "module 1 " in msg


def test_cli_export_and_continue_past_failure(tmp_path):
    from click.testing import CliRunner

    from convkit.cli import main

    suite = tmp_path / "seed"
    good = make_fake_run(suite, "t1-fcn")
    bad = make_fake_run(suite, "t5-custom-conv")
    (bad / "checkpoint.pt").write_bytes(b"garbage")
    runner = CliRunner()

    res = runner.invoke(main, ["export", str(good), "--n-images", "16"])
    assert res.exit_code == 0, res.output
    assert "t1-fcn: fp32 max|Δ|" in res.output and (good / "model.onnx").is_file()

    res = runner.invoke(main, ["export", "--all", str(suite), "--n-images", "16"])
    assert res.exit_code == 1  # one of several failed, the others were exported (README's exit codes)
    assert "t1-fcn: fp32" in res.output and "corrupt" in res.output  # reported both, kept going

    res = runner.invoke(main, ["export", ])
    assert res.exit_code == 2 and "nothing to export" in res.output

    res = runner.invoke(main, ["export", "--checkpoint", str(good / "checkpoint.pt"), "--experiment", "t1-simple-cnn"])
    assert res.exit_code == 2 and "does not match this architecture" in res.output


def test_export_summary_fields_and_export_all(tmp_path):
    run_dir = make_fake_run(tmp_path / "seed", "t1-fcn")
    export_run(run_dir, n_images=16)
    doc = json.loads((run_dir / "export.json").read_text())
    assert doc["schema"] == "convkit.export/2"
    fields = doc["summary"]
    assert fields["export_gate"] == "passed" and Path(fields["onnx"]) == run_dir / "model.onnx"
    assert fields["export_parity_max_abs"] <= 1e-4
    result = export_all(tmp_path / "seed", n_images=16)
    assert result["exit_code"] == 0 and list(result["results"]) == [str(run_dir)]


def test_exact_ties_are_not_disagreements(tmp_path):
    # PyTorch's top two logits are equal up to rounding: ORT picking the other one is a tie, not a flip.
    from onnx import TensorProto, helper

    from convkit import gates
    from convkit.export.onnx_export import INPUT_NAME, OUTPUT_NAME
    from convkit.export.parity import fp32_gate, run_parity

    graph = helper.make_graph([helper.make_node("Identity", [INPUT_NAME], [OUTPUT_NAME])], "g",
                              [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["n", 3])],
                              [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["n", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    eps = gates.TIE_GAP / 20
    ort_out = np.tile(np.array([[1.0, 1.0 + eps, 0.0]], np.float32), (40, 1))
    ort_out[:10] = [3.0, 1.0, 0.0]  # agreeing images
    ref = ort_out.copy()
    ref[10:] = [1.0 + eps, 1.0, 0.0]  # PyTorch: class 0 by a hair; ORT: class 1 by a hair
    labels = np.zeros(40, np.int64)
    report = run_parity(model.SerializeToString(), ort_out, ref, labels, batch_sizes=(7, 40))
    gate = fp32_gate(report, gates.FP32_ATOL, gates.MAX_DISAGREEMENT["fp32"])
    assert report["ties"] == 30 and report["argmax_agreement"] == 1.0
    assert gate["passed"] and gate["ties"] == 30
    # A real flip (gap well above TIE_GAP) still fails the gate.
    ref[10:] = [1.0 + 1e-3, 1.0, 0.0]
    report = run_parity(model.SerializeToString(), ort_out, ref, labels, batch_sizes=(7, 40))
    assert report["ties"] == 0 and report["argmax_agreement"] == 0.25
    assert not fp32_gate(report, 1e-2, gates.MAX_DISAGREEMENT["fp32"])["passed"]


@pytest.mark.parametrize("experiment", ["t1-fcn", "t5-custom-conv"])
def test_reference_evaluator_runs_every_precision(sample_runs, variant_reports, experiment):
    """onnx.reference (an independent ONNX implementation) runs the production fp32, fp16 and int8 files and agrees
    with ONNX Runtime; the files declare only the opset domains they use (int8 at an opset ≥ 19)."""
    import onnx
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    from convkit.data.load import load_dataset
    from convkit.data.loader import normalize

    run_dir = sample_runs[experiment]
    data = load_dataset("mnist" if experiment == "t1-fcn" else "cifar10", sample=True)
    meta = read_metadata(run_dir / "model.onnx")
    x = normalize(data.test_images[:8], json.loads(meta["mean"]), json.loads(meta["std"])).numpy()
    for name, atol in (("model.onnx", 1e-4), ("model.fp16.onnx", 2e-2), ("model.int8.onnx", 1e-3)):
        proto = onnx.load(str(run_dir / name))
        used = {n.domain or "" for n in proto.graph.node}
        declared = {o.domain for o in proto.opset_import}
        assert declared <= used | {"", "ai.onnx"}, f"{name} declares unused domains {declared - used}"
        if name == "model.int8.onnx":
            assert next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 19
        (ref,) = ReferenceEvaluator(proto).run(None, {"input": x})
        sess = ort.InferenceSession(str(run_dir / name), providers=["CPUExecutionProvider"])
        (got,) = sess.run(None, {"input": x})
        assert ref.shape == got.shape == (8, 10)
        # int8: rounding of a requantized activation can differ by one step; compare in logit units
        np.testing.assert_allclose(ref, got, atol=atol * max(1.0, float(np.abs(got).max())), rtol=0)


def test_export_json_of_the_older_layout_is_read_with_one_gate_key(tmp_path):
    # convkit.export/1 said "pass" for a precision's overall gate and "passed" for its disagreement check alone
    from convkit.artifacts import read_artifact
    from convkit.atomic import write_json

    old = {"schema": "convkit.export/1", "gate": "fail", "failed": ["int8"], "summary": {"export_gate": "fail"},
           "precisions": {"fp32": {"gate": {"pass": True, "passed": True}},
                          "int8": {"gate": {"pass": False, "passed": True, "drop_points": 3.0}}}}
    write_json(tmp_path / "export.json", old)
    doc = read_artifact(tmp_path / "export.json", "export")
    assert doc["schema"] == "convkit.export/2" and doc["gate"] == "failed"
    assert doc["summary"]["export_gate"] == "failed"
    gates_read = {p: e["gate"] for p, e in doc["precisions"].items()}
    assert gates_read == {"fp32": {"passed": True}, "int8": {"passed": False, "drop_points": 3.0}}
    write_json(tmp_path / "export.json", {**old, "schema": "convkit.export/9"})
    with pytest.raises(ConvkitError, match="convkit.export/9"):
        read_artifact(tmp_path / "export.json", "export")
