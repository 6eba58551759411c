"""Evaluation stage: ONNX Runtime accuracy/confusion/latency on exported runs and on foreign-style models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from convkit.cli import main
from convkit.evaluate.options import EvalOptions, ProviderOptions, TimingOptions, quick_options
from convkit.export import export_run

FAST = ["--warmup", "1", "--runs", "3", "--min-seconds", "0", "--batch-sizes", "1,16", "--threads", "2"]


# ---------------------------------------------------------------------------------------------- helpers


def _save(graph_nodes, inputs, outputs, initializers, path: Path) -> Path:
    import onnx
    from onnx import helper

    graph = helper.make_graph(graph_nodes, "g", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def centroid_classifier(path: Path, images: np.ndarray, labels: np.ndarray, batch: int = 3):
    """A foreign-style MNIST classifier: NHWC [batch,28,28,1] raw 0..255 input named ``image:0``, softmax output
    named ``probs/Softmax:0``, nearest-centroid weights. Returns (path, W, b) so the test can recompute it."""
    from onnx import TensorProto, helper, numpy_helper

    x = images.reshape(len(images), -1).astype(np.float64) / 255.0
    cents = np.stack([x[labels == k].mean(axis=0) for k in range(10)])  # [10, 784]
    w = (0.1 * cents.T / 255.0).astype(np.float32)  # raw pixels in
    b = (-0.05 * (cents ** 2).sum(axis=1)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B"),
             numpy_helper.from_array(np.array([batch, 784], np.int64), "shape")]
    nodes = [helper.make_node("Reshape", ["image:0", "shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "W"], ["mm"]),
             helper.make_node("Add", ["mm", "B"], ["z"]),
             helper.make_node("Softmax", ["z"], ["probs/Softmax:0"], axis=1)]
    inp = helper.make_tensor_value_info("image:0", TensorProto.FLOAT, [batch, 28, 28, 1])
    out = helper.make_tensor_value_info("probs/Softmax:0", TensorProto.FLOAT, [batch, 10])
    return _save(nodes, [inp], [out], inits, path), w, b


def _linear_model(path: Path, in_shape, out_shape, classes: int = 10, input_name: str = "x") -> Path:
    """A tiny model with a given input shape and an output of ``out_shape`` (for bad-input cases)."""
    from onnx import TensorProto, helper

    inp = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, in_shape)
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)
    if len(out_shape) == 2:
        from onnx import numpy_helper

        inits = [numpy_helper.from_array(np.ones((int(np.prod(in_shape[1:])), classes), np.float32), "W"),
                 numpy_helper.from_array(np.array([0, -1], np.int64), "s")]
        nodes = [helper.make_node("Reshape", [input_name, "s"], ["f"]), helper.make_node("MatMul", ["f", "W"], ["y"])]
        return _save(nodes, [inp], [out], inits, path)
    return _save([helper.make_node("Relu", [input_name], ["y"])], [inp], [out], [], path)


def two_head_classifier(path: Path, images: np.ndarray, labels: np.ndarray) -> tuple[Path, np.ndarray]:
    """An MNIST model with two outputs: ``aux`` [N, 10] (a reversed-class head, wrong on purpose) first, then
    ``scores`` [N, 10] (nearest-centroid logits on 0..1 pixels). Returns (path, the scores head's weights)."""
    from onnx import TensorProto, helper, numpy_helper

    x = images.reshape(len(images), -1).astype(np.float64) / 255.0
    cents = np.stack([x[labels == k].mean(axis=0) for k in range(10)])
    w = cents.T.astype(np.float32)  # [784, 10]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(w[:, ::-1].copy(), "W_aux"),
             numpy_helper.from_array(np.array([0, -1], np.int64), "shape")]
    nodes = [helper.make_node("Reshape", ["pixels", "shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "W_aux"], ["aux"]),
             helper.make_node("MatMul", ["flat", "W"], ["scores"])]
    inp = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 1, 28, 28])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 10]) for n in ("aux", "scores")]
    return _save(nodes, [inp], outs, inits, path), w


def _invoke(args: list[str]):
    result = CliRunner().invoke(main, ["evaluate", *[str(a) for a in args]], catch_exceptions=False)
    return result, result.output + (result.stderr if result.stderr_bytes is not None else "")


@pytest.fixture(scope="module")
def exported(sample_runs, tmp_path_factory) -> dict[str, Path]:
    """Copies of the sample runs exported by the export stage itself: {experiment: run_dir}."""
    root = tmp_path_factory.mktemp("eval_runs")
    out = {}
    for name, run_dir in sample_runs.items():
        dst = root / name
        dst.mkdir()
        for f in ("checkpoint.pt", "config.json", "metrics.json"):
            shutil.copy2(run_dir / f, dst / f)
        export_run(dst, n_images=200)
        out[name] = dst
    return out


@pytest.fixture(scope="module")
def mnist_sample():
    from convkit.data.load import load_dataset

    return load_dataset("mnist", sample=True)


# ---------------------------------------------------------------------------------------------- seed models


@pytest.mark.parametrize("name", ["t1-fcn", "t5-custom-conv"])
def test_exported_run_matches_pytorch(exported, name):
    from convkit.evaluate.run import evaluate_model

    run_dir = exported[name]
    opts = EvalOptions(providers=ProviderOptions(provider="cpu", threads=2),
                       timing=TimingOptions(warmup=1, runs=3, min_seconds=0.0, batch_sizes=(1, 32)))
    res = evaluate_model(run_dir, opts).to_json()
    acc = res["accuracy"][0]
    n = res["dataset"]["n"]
    assert acc["precision"] == "fp32" and acc["provider"] == "cpu"
    assert acc["output_kind"] == "logits" and acc["loss"] is not None
    # ORT fp32 reproduces the checkpoint: same accuracy, same predictions, near-identical loss
    assert acc["accuracy"] == pytest.approx(res["pytorch"]["accuracy"])
    assert acc["vs_pytorch"]["disagreements"] == 0 and acc["vs_pytorch"]["disagreement_indices"] == []
    assert abs(acc["vs_pytorch"]["delta"]["loss"]) < 1e-4
    assert res["gate"]["passed"] is True
    # the metadata contract between export and evaluate: what export wrote is what evaluate used
    assert res["model"]["sources"]["mean"] == "metadata" and res["model"]["metadata"]["experiment"] == name
    # the checkpoint's own test accuracy (metrics.json, same sample split) is what PyTorch gives here
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert res["pytorch"]["accuracy"] == pytest.approx(metrics["test_acc"], abs=2.5 / n)
    # confusion matrix: counts sum to N, rows normalized
    cm = np.asarray(acc["confusion"])
    assert cm.shape == (10, 10) and cm.sum() == n
    assert np.trace(cm) == round(acc["accuracy"] * n)
    norm = np.asarray(acc["confusion_normalized"])
    assert np.allclose(norm.sum(axis=1)[cm.sum(axis=1) > 0], 1.0, atol=1e-5)
    assert sum(c["support"] for c in acc["per_class"]) == n
    # latency: every ORT figure has a PyTorch figure and a ratio beside it
    ort_rows = [r for r in res["latency"] if r["backend"] == "ort"]
    assert sorted(r["batch"] for r in ort_rows) == [1, 32]
    for r in res["latency"]:
        for k in ("first_run_ms", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "images_per_s"):
            assert r[k] > 0, (k, r)
        assert r["std_ms"] >= 0 and r["n"] >= 3 and r["p50_ms"] <= r["p99_ms"]
    for r in ort_rows:
        assert r["pytorch_eager_p50_ms"] > 0
        # a ratio, or (3 timed calls on a busy machine) the reason it was not formed
        assert (r["ratio_to_pytorch_eager"] or 0) > 0 or "unstable" in r["ratio_to_pytorch_eager_note"]
    assert {"torch-eager"} <= {r["backend"] for r in res["latency"]}
    assert res["summary"]["ort_cpu_b1_p50_ms"] > 0 and res["summary"]["ort_max_batch_ips"] > 0
    assert res["summary"]["ort_acc_delta"] == pytest.approx(0.0)
    # outputs land in the run directory
    for f in ("eval.json", "eval.md", "latency.png", "confusion.png", "confusion.csv"):
        assert (run_dir / f).is_file(), f
    doc = json.loads((run_dir / "eval.json").read_text())
    assert doc["summary"] == res["summary"] and "hardware" in doc and "method" in doc
    assert doc["schema"] == "convkit.eval/1"
    md = (run_dir / "eval.md").read_text()
    assert "## Latency" in md and "perf_counter" in md
    csv_lines = (run_dir / "confusion.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 2 * 10


def test_int8_variant_and_pipeline_options(exported):
    """A run with model.int8.onnx (made by the export stage) evaluates both variants; a wrong preprocessing fails
    the gate on top-1 agreement; train-all's quick options fill the summary columns."""
    from convkit.evaluate.run import SUMMARY_COLUMNS, evaluate_model

    run_dir = exported["t5-custom-conv"]
    export_run(run_dir, precisions=("int8",), n_images=200, max_acc_drop={"fp32": 0.1, "fp16": 0.3, "int8": 100.0})
    res, out = _invoke([run_dir, "--provider", "cpu", "--no-latency", "--max-accuracy-drop", "fp32=0.1,int8=100"])
    assert res.exit_code == 0, out
    doc = json.loads((run_dir / "eval.json").read_text())
    assert [a["precision"] for a in doc["accuracy"]] == ["fp32", "int8"]
    assert (run_dir / "confusion.int8.png").is_file()
    assert "warmup" not in doc["method"] and "not measured" in doc["method"]["latency"]
    # fp32 only now: the int8 figures of the evaluation before must not stay beside an eval.md without them
    res, out = _invoke([run_dir, "--provider", "cpu", "--no-latency", "--precision", "fp32"])
    assert res.exit_code == 0, out
    assert not (run_dir / "confusion.int8.png").exists() and not (run_dir / "confusion.int8.csv").exists()
    # a preprocessing other than training's changes most predictions: the gate fails (exit 1), whatever accuracy says
    res, out = _invoke([run_dir, "--provider", "cpu", "--no-latency", "--precision", "fp32",
                        "--mean", "0.9,0.9,0.9", "--std", "0.05,0.05,0.05"])
    assert res.exit_code == 1, out
    gate = json.loads((run_dir / "eval.json").read_text())["gate"]
    assert gate["passed"] is False and any("another class than PyTorch" in f for f in gate["failures"])
    (run_dir / "model.int8.onnx").unlink()

    res = evaluate_model(run_dir, quick_options()).to_json()
    keys = {key for _, key, _ in SUMMARY_COLUMNS}
    # beside a column's value: its 95 % interval (<key>_ci) and, for the ORT − PyTorch delta, McNemar's p-value
    companions = {f"{k}_ci" for k in keys} | {"ort_acc_delta_p"}
    assert {"ort_test_acc", "ort_acc_delta", "ort_cpu_b1_p50_ms", "ort_max_batch_ips"} <= set(res["summary"])
    assert set(res["summary"]) <= keys | companions
    assert {"ort_test_acc_ci", "ort_acc_delta_ci", "ort_acc_delta_p"} <= set(res["summary"])
    assert res["summary"]["ort_cpu_b1_p50_ms"] > 0
    assert json.loads((run_dir / "eval.json").read_text())["summary_columns"] == [list(c) for c in SUMMARY_COLUMNS]


def test_real_mnist_test_split(exported, shared_data):
    """The sample-trained MLP on the real 10,000-image MNIST test split, accuracy only."""
    run_dir = exported["t1-fcn"]
    res, out = _invoke([run_dir / "model.onnx", "--provider", "cpu", "--data-dir", shared_data, "--no-sample",
                        "--no-latency"])
    assert res.exit_code == 0, out
    # other data than the run's own (the full split, not the sample): beside the run's eval.json, never over it
    keyed = sorted((run_dir / "eval").glob("mnist-*/eval.json"))
    own = run_dir / "eval.json"  # the run's own evaluation, when an earlier test wrote one, is not this one
    assert len(keyed) == 1 and (not own.exists() or json.loads(own.read_text())["dataset"]["n"] != 10000)
    doc = json.loads(keyed[0].read_text())
    assert doc["dataset"]["n"] == 10000 and doc["provenance"]["runs_own_data"] is False
    acc = doc["accuracy"][0]
    assert np.asarray(acc["confusion"]).sum() == 10000
    assert acc["accuracy"] == pytest.approx(doc["pytorch"]["accuracy"], abs=2e-4)


# ---------------------------------------------------------------------------------------------- foreign models


def test_foreign_nhwc_fixed_batch_softmax(tmp_path, mnist_sample):
    """NHWC, fixed batch 3 (last chunk padded), softmax output, odd names: accuracy equals a numpy computation."""
    tr_x, tr_y = mnist_sample.train_images.numpy(), mnist_sample.train_labels.numpy()
    te_x, te_y = mnist_sample.test_images.numpy(), mnist_sample.test_labels.numpy()
    assert len(te_x) % 3 != 0  # the padding path is exercised
    path, w, b = centroid_classifier(tmp_path / "foreign.onnx", tr_x, tr_y, batch=3)
    res, out = _invoke([path, "--dataset", "mnist", "--sample", "--input-range", "255", "--provider", "cpu", *FAST])
    assert res.exit_code == 0, out
    out_dir = tmp_path / "foreign_eval"
    doc = json.loads((out_dir / "eval.json").read_text())
    z = te_x.reshape(len(te_x), -1).astype(np.float64) @ w.astype(np.float64) + b
    expected_acc = float((z.argmax(axis=1) == te_y).mean())
    z -= z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    expected_loss = float(-logp[np.arange(len(te_y)), te_y].mean())
    acc = doc["accuracy"][0]
    assert expected_acc > 0.5  # a real classifier, so the check means something
    assert acc["accuracy"] == pytest.approx(expected_acc, abs=1e-9)
    assert acc["output_kind"] == "probabilities"
    assert acc["loss"] == pytest.approx(expected_loss, rel=1e-3)
    assert np.asarray(acc["confusion"]).sum() == len(te_y)
    assert doc["model"]["layout"] == "NHWC" and doc["model"]["fixed_batch"] == 3
    assert doc["model"]["input"] == "image:0" and doc["pytorch"] is None
    assert doc["gate"]["passed"] is None and "no reference" in doc["gate"]["note"]  # nothing was compared
    assert {r["batch"] for r in doc["latency"]} == {3} and all(r["p50_ms"] > 0 for r in doc["latency"])
    for f in ("eval.md", "latency.png", "confusion.png", "confusion.csv"):
        assert (out_dir / f).is_file()


def test_several_outputs_need_output_flag(tmp_path, mnist_sample):
    """Two outputs: an exit-2 error listing both with their shapes; --output picks the right head."""
    tr_x, tr_y = mnist_sample.train_images.numpy(), mnist_sample.train_labels.numpy()
    te_x, te_y = mnist_sample.test_images.numpy(), mnist_sample.test_labels.numpy()
    path, w = two_head_classifier(tmp_path / "two.onnx", tr_x, tr_y)
    args = [path, "--dataset", "mnist", "--sample", "--mean", "0", "--std", "1", "--no-latency", "--threads", "2"]
    res, out = _invoke(args)
    assert res.exit_code == 2, out
    assert "'aux' ['N', 10]" in out or "'aux' ['?', 10]" in out
    assert "'scores'" in out and "--output" in out
    res, out = _invoke([*args, "--output", "nope"])
    assert res.exit_code == 2 and "no output 'nope'" in out
    res, out = _invoke([*args, "--output", "scores"])
    assert res.exit_code == 0, out
    doc = json.loads((tmp_path / "two_eval" / "eval.json").read_text())
    expected = float((((te_x.reshape(len(te_x), -1) / 255.0) @ w).argmax(axis=1) == te_y).mean())
    assert expected > 0.5 and doc["model"]["output"] == "scores"
    assert doc["accuracy"][0]["accuracy"] == pytest.approx(expected, abs=1e-9)


def test_overrides_change_preprocessing(tmp_path, mnist_sample):
    """--layout/--mean/--std/--input-range reach the input adapter."""
    from convkit.evaluate.model_io import Overrides, inspect_model

    path = _linear_model(tmp_path / "m.onnx", ["N", 1, 28, 28], ["N", 10])
    spec = inspect_model(path, Overrides(dataset="mnist", mean=(0.5,), std=(0.25,)))
    x = spec.prepare(mnist_sample.test_images[:2].numpy())
    raw = mnist_sample.test_images[:2].numpy().astype(np.float32)
    assert np.allclose(x, (raw / 255 - 0.5) / 0.25, atol=1e-6)
    spec = inspect_model(path, Overrides(dataset="mnist", input_range="255"))
    assert np.allclose(spec.prepare(mnist_sample.test_images[:2].numpy()), raw)
    assert spec.sources["dataset"] == "flag"


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_inputs_exit_2(tmp_path, exported, monkeypatch):
    import convkit.data.sources as sources
    from convkit.errors import DataError

    def offline(dataset, tried):
        raise DataError(f"{dataset} not found (tried {', '.join(tried)}); point --data-dir at it")

    monkeypatch.setattr(sources, "download_source", offline)
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n" * 20)
    good = (exported["t1-fcn"] / "model.onnx").read_bytes()
    trunc = tmp_path / "truncated.onnx"
    trunc.write_bytes(good[: len(good) // 2])
    flat = _linear_model(tmp_path / "flat.onnx", ["N", 700], ["N", 10])
    two_inputs = tmp_path / "two.onnx"
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 1, 28, 28])
    b_ = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 1, 28, 28])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 28, 28])
    _save([helper.make_node("Add", ["a", "b"], ["y"])], [a, b_], [y], [], two_inputs)
    spatial = _linear_model(tmp_path / "spatial.onnx", ["N", 1, 28, 28], ["N", 1, 28, 28])
    seven = _linear_model(tmp_path / "seven.onnx", ["N", 1, 28, 28], ["N", 7], classes=7)
    ok = _linear_model(tmp_path / "ok.onnx", ["N", 1, 28, 28], ["N", 10])
    cases = {
        "not onnx": ([text, "--dataset", "mnist"], "not"),
        "truncated": ([trunc], "truncated"),
        "missing file": ([tmp_path / "nope.onnx"], "not found"),
        "flattened input of another size": ([flat, "--dataset", "mnist"], "--input-shape"),
        "two image inputs": ([two_inputs, "--dataset", "mnist"], "image-like"),
        "output not [N, classes]": ([spatial, "--dataset", "mnist"], "[N, classes]"),
        "classes differ": ([seven, "--dataset", "mnist"], "7 classes"),
        "wrong channels": ([ok, "--dataset", "cifar10", "--sample"], "channels"),
        "no metadata, no --dataset": ([ok], "--dataset"),
        "unknown dataset": ([ok, "--dataset", "imagenet"], "unknown dataset"),
        "dataset not there": ([ok, "--dataset", "mnist", "--data-dir", tmp_path / "empty", "--no-sample"], "not found"),
        "run dir without model.onnx": ([tmp_path], "model.onnx"),
        "bad batch sizes": ([ok, "--dataset", "mnist", "--batch-sizes", "1,x"], "--batch-sizes"),
        "bad mean": ([ok, "--dataset", "mnist", "--mean", "a,b"], "--mean"),
        "bad gate": ([ok, "--dataset", "mnist", "--max-accuracy-drop", "int4=1"], "unknown precision"),
        "no path": ([], "no model"),
    }
    (tmp_path / "empty").mkdir()
    for what, (args, needle) in cases.items():
        res, out = _invoke([*args, "--provider", "cpu", "--no-latency"])
        assert res.exit_code == 2, (what, out)
        lines = [ln for ln in out.strip().splitlines() if ln.strip()]
        assert lines and lines[-1].startswith("error: ") and needle in lines[-1], (what, out)
        assert "Traceback" not in out, (what, out)


def test_unavailable_cuda_is_an_error_not_a_cpu_figure(exported):
    """Asked explicitly for CUDA where it cannot load: exit 2 naming why; by default it is skipped with a note."""
    from convkit.providers import provider_error

    if provider_error("cuda") is None:
        pytest.skip("CUDA works here")
    res, out = _invoke([exported["t1-fcn"], "--provider", "cuda", "--no-latency"])
    assert res.exit_code == 2 and "CUDAExecutionProvider" in out and "not found" in out, out
    res, out = _invoke([exported["t1-fcn"], "--no-latency"])
    assert res.exit_code == 0, out
    assert "cuda skipped" in out


# ---------------------------------------------------------------------------------------------- latency stability


def test_unstable_latency_is_flagged_and_not_used_for_ratios():
    import time

    from convkit.evaluate import latency as lat
    from convkit.evaluate.cli import _summary_line
    from convkit.evaluate.result import EvalResult
    from convkit.evaluate.markdown import latency_lines

    calls = iter(range(10_000))

    def jittery():  # every fourth call is 20 ms late: p90 ≫ p50
        if next(calls) % 4 == 0:
            time.sleep(0.02)

    timing = lat.Timing(warmup=1, runs=24, min_seconds=0.0)
    noisy = lat.measure(jittery, 1, timing)
    figures = {"p50_ms": 1.0, "p90_ms": 1.4, "mean_ms": 1.1, "std_ms": 0.5}  # a hand-made stable figure
    steady = {**noisy, **figures, "unstable": lat.stability(1.0, 1.4, 1.1, 0.5)}
    assert lat.stability(1.0, 1.6, 1.1, 0.1) and lat.stability(1.0, 1.1, 1.0, 0.6)  # either threshold flags
    assert noisy["unstable"] and "p90/p50" in noisy["unstable"]
    assert steady["unstable"] is None
    assert noisy["images_per_s_basis"] == "batch ÷ mean latency"
    base = {"precision": "fp32", "provider": "cpu", "batch": 1}
    rows = lat.attach_ratios([{**base, "backend": "ort", **noisy}, {**base, "backend": "torch-eager", **steady},
                              {**base, "batch": 2, "backend": "ort", **steady},
                              {**base, "batch": 2, "backend": "torch-eager", **steady}])
    assert rows[0]["ratio_to_pytorch_eager"] is None and "unstable ORT" in rows[0]["ratio_to_pytorch_eager_note"]
    assert rows[2]["ratio_to_pytorch_eager"] == pytest.approx(1.0)
    md = "\n".join(latency_lines(rows))
    assert md.count("**UNSTABLE**") == 1 and "— (unstable)" in md and "batch ÷ mean latency" in md
    res = EvalResult.from_json({"accuracy": [], "latency": rows, "notes": [], "files": {},
                                "summary": {"ort_cpu_b1_p50_ms": noisy["p50_ms"]}})
    line = _summary_line("m.onnx", res)
    assert "UNSTABLE" in line and "1 of 4 latency figures are unstable" in line


# ---------------------------------------------------------------------------------------------- preprocessing


def test_wrong_default_preprocessing_warns_and_probe_finds_the_flags(tmp_path, mnist_sample):
    """A raw 0..255 NHWC model without metadata, evaluated with the defaults (0..1, catalog mean/std): the terminal
    names every value and its source, warns, detects the collapse and the probe finds the model's convention."""
    tr_x, tr_y = mnist_sample.train_images.numpy(), mnist_sample.train_labels.numpy()
    te_x, te_y = mnist_sample.test_images.numpy(), mnist_sample.test_labels.numpy()
    path, w, b = centroid_classifier(tmp_path / "raw.onnx", tr_x, tr_y, batch=4)
    res, out = _invoke([path, "--dataset", "mnist", "--sample", "--no-latency", "--threads", "2"])
    assert res.exit_code == 4, out  # neither the collapsed accuracy nor the defaults can be stood behind
    assert "range 0..1 [default: 0..1]" in out and "layout NHWC [input shape]" in out
    assert "[default: mnist catalog]" in out and "were defaulted or guessed" in out
    assert "PREDICTIONS COLLAPSED" in out and "PREPROCESSING UNVERIFIED" in out and "OUTPUTS DEGENERATE" in out
    assert "`--input-range 255 --mean " in out and "fp32 ORT cpu: acc" not in out
    doc = json.loads((tmp_path / "raw_eval" / "eval.json").read_text())
    found = doc["preprocessing"]["probe"]
    expected = float(((te_x.reshape(len(te_x), -1) @ w + b).argmax(axis=1) == te_y).mean())
    assert doc["accuracy"][0]["accuracy"] < 0.2 < 0.5 < expected and doc["accuracy"][0]["degenerate"]
    # raw 0..255 wins; 0.5/0.5 or none on 0..255 pixels differ by noise for a centroid classifier
    assert found["best"]["flags"] == found["better"]["flags"] and found["better"]["flags"].startswith("--input-range 255")
    assert doc["preprocessing"]["verdict"] == "unverified" and doc["summary"]["preprocessing"] == "unverified"
    assert found["best"]["accuracy"] > 0.5 and found["images"] == 300
    assert "PREDICTIONS COLLAPSED" in (tmp_path / "raw_eval" / "eval.md").read_text()
    # With the model's true flags: no collapse, the independent numpy accuracy, no probe.
    res, out = _invoke([path, "--dataset", "mnist", "--sample", "--no-latency", "--threads", "2",
                        "--input-range", "255", "--mean", "0", "--std", "1"])
    assert res.exit_code == 0 and "COLLAPSED" not in out and "range 0..255 [flag]" in out
    assert "WARNING" not in out and "defaulted" not in out  # every value stated: nothing to warn about
    doc = json.loads((tmp_path / "raw_eval" / "eval.json").read_text())
    assert doc["accuracy"][0]["accuracy"] == pytest.approx(expected, abs=1e-9) and doc["preprocessing"]["probe"] is None
    assert doc["preprocessing"]["verdict"] == "stated" and "preprocessing" not in doc["summary"]


# ---------------------------------------------------------------------------------------------- eval.md at a glance


def test_eval_md_opens_with_identity_and_one_headline_per_precision_and_provider(exported):
    import hashlib

    from convkit.data.catalog import display_name
    from convkit.evaluate.run import evaluate_model

    run_dir = exported["t5-custom-conv"]
    opts = EvalOptions(providers=ProviderOptions(provider="cpu", threads=2),
                       timing=TimingOptions(warmup=1, runs=3, min_seconds=0.0, batch_sizes=(1, 8)))
    res = evaluate_model(run_dir, opts).to_json()
    md = (run_dir / "eval.md").read_text().splitlines()
    head = "\n".join(md[:12])
    sha = hashlib.sha256((run_dir / "model.onnx").read_bytes()).hexdigest()
    label = res["dataset"]["label"]
    assert label.startswith("CIFAR-10") and f"**t5-custom-conv** on **{label}**" in head and sha in head
    params = sum(p.numel() for p in __import__("torch").load(run_dir / "checkpoint.pt")["model"].values())
    line = next(x for x in md[:12] if x.startswith("- **fp32 on ORT cpu**"))
    acc = res["accuracy"][0]
    assert f"accuracy {acc['accuracy']:.4f}" in line and "batch-1 p50" in line and "images/s" in line
    assert "MB" in line or "kB" in line
    assert f"{res['parameters']:,} parameters" in line and 0 < res["parameters"] <= params
    assert "[confusion.png](confusion.png)" in head and "[latency.png](latency.png)" in head
    assert res["variants"]["fp32"]["sha256"] == sha
    assert display_name("cifar10", "ImageFolder tarball cifar10-jpeg.tar.gz") == "CIFAR-10 (JPEG copy)"
    assert display_name("cifar10", "pickle batches") == "CIFAR-10"
    assert label == display_name("cifar10", res["dataset"]["source"])


def test_vs_pytorch_comparison_counts_ties_apart():
    from convkit.evaluate.accuracy import classification_metrics, compare_backends

    labels = np.array([0, 1, 0, 1])
    ref_scores = np.array([[1.0, 1.0], [0.0, 2.0], [3.0, 0.0], [0.0, 1.0]], np.float32)  # image 0: an exact tie
    ort_scores = np.array([[1.0, 1.0 + 1e-7], [0.0, 2.0], [3.0, 0.0], [1.0, 0.0]], np.float32)  # 0: tie, 3: flip
    ref = {**classification_metrics(ref_scores, labels, ["a", "b"]), "tie_mask": np.array([True, False, False, False])}
    ort = classification_metrics(ort_scores, labels, ["a", "b"])
    cmp = compare_backends(ort, ref)
    assert cmp["disagreements"] == 1 and cmp["ties"] == 1 and cmp["disagreement_indices"] == [3]
