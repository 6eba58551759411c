"""Every number traceable to what produced it: evaluations keyed by their data, `--out` honoured, no foreign model
in a run folder, stale and edited files held back by summarize/report, export writing only what it measured, and
every planned experiment of a suite accounted for. All through the CLI, on real 1-epoch runs of the sample."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from convkit.cli import main

TRAIN = ["--sample", "--epochs", "1", "--device", "cpu", "--batch-size", "256", "--quiet"]
EVAL_FAST = ["--provider", "cpu", "--threads", "1", "--batch-sizes", "1", "--warmup", "1", "--runs", "3",
             "--min-seconds", "0"]
LOOSE_INT8 = ["--max-accuracy-drop", "fp32=0.1,int8=100"]  # a 1-epoch model: the int8 gate is not what is tested


def _cli(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r, [ln for ln in r.output.splitlines() if ln.strip()]


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    """A suite folder with t1-fcn trained, exported (fp32 + int8) and evaluated through the CLI."""
    out = tmp_path_factory.mktemp("runs")
    r, _ = _cli("train", "t1-fcn", *TRAIN, "--out", out)
    assert r.exit_code == 0, r.output
    run = out / "seed-sample" / "t1-fcn"
    r, _ = _cli("export", run, "--precision", "int8", "--n-images", "200", "--calib-images", "64", *LOOSE_INT8)
    assert r.exit_code == 0, r.output
    r, _ = _cli("evaluate", run, *EVAL_FAST, *LOOSE_INT8)
    assert r.exit_code == 0, r.output
    return run.parent


@pytest.fixture()
def copy(suite, tmp_path) -> Path:
    """A private copy of the suite folder (tests below edit files)."""
    return Path(shutil.copytree(suite, tmp_path / "seed-sample"))


def _image_folder(root: Path, n: int = 30) -> Path:
    """An ImageFolder of the sample's first ``n`` MNIST test images as PNGs (class folders "0".."9")."""
    from convkit.data.load import load_dataset

    data = load_dataset("mnist", sample=True)
    for i in range(n):
        folder = root / str(int(data.test_labels[i]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.test_images[i, 0].numpy()).save(folder / f"{i}.png")
    return root


def test_an_evaluation_on_other_data_never_replaces_the_runs_own(copy, tmp_path):
    run = copy / "t1-fcn"
    before = _digests(run)
    pics = _image_folder(tmp_path / "pics")
    r, lines = _cli("evaluate", run / "model.onnx", "--data", pics, "--no-latency", "--provider", "cpu", *LOOSE_INT8)
    assert r.exit_code == 0, r.output
    assert _digests(run) == before  # eval.json, eval.md, confusion files and the reference cache byte-identical
    keyed = sorted((run / "eval").glob("*/eval.json"))
    assert len(keyed) == 1 and keyed[0].parent.name.startswith("pics-"), keyed
    doc = json.loads(keyed[0].read_text())
    assert doc["dataset"]["n"] == 30 and doc["provenance"]["runs_own_data"] is False
    assert doc["provenance"]["derived_from"]["fp32"]["sha256"] == hashlib.sha256(
        (run / "model.onnx").read_bytes()).hexdigest()
    assert str(keyed[0].parent / "eval.md") in lines[-1]
    own = json.loads((run / "eval.json").read_text())
    assert own["dataset"]["n"] == 500 and own["provenance"]["runs_own_data"] is True
    # the summary and the report keep the run's own figures, and the report names the other data's apart
    summary_md, summary, report_md = _report_and_summary(copy)
    assert summary["results"]["t1-fcn"]["ort_test_acc"] == own["summary"]["ort_test_acc"]
    other = doc["accuracy"][0]["accuracy"] * 100
    assert f"`eval/{keyed[0].parent.name}/`: ORT fp32 accuracy {other:.2f} % on ImageFolder {pics}" in report_md
    assert "(30 images)" in report_md and "test split of MNIST (500 images)" in report_md


def test_out_is_honoured_in_every_mode(copy, tmp_path):
    run = copy / "t1-fcn"
    before = _digests(run)
    r, _ = _cli("evaluate", run, "--no-latency", "--provider", "cpu", *LOOSE_INT8, "--out", tmp_path / "own")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "own" / "eval.json").read_text())["dataset"]["n"] == 500
    pics = _image_folder(tmp_path / "pics", 20)
    r, _ = _cli("evaluate", run / "model.onnx", "--data", pics, "--no-latency", "--provider", "cpu", *LOOSE_INT8,
                "--out", tmp_path / "folder")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "folder" / "eval.json").read_text())["dataset"]["n"] == 20
    assert _digests(run) == before and not (run / "eval").exists()
    # a subset of the variants without fp32 is not the run's eval.json (whose figures are fp32's)
    r, _ = _cli("evaluate", run, "--precision", "int8", "--no-latency", "--provider", "cpu", *LOOSE_INT8)
    assert r.exit_code == 0, r.output
    assert json.loads((run / "eval.int8.json").read_text())["summary"]["ort_test_acc"] is not None
    assert {k: v for k, v in _digests(run).items() if k in before} == before


def _foreign_mnist_model(path: Path) -> Path:
    """A linear MNIST classifier made with onnx.helper (not exported from any run)."""
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(784, 10)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"])], "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9  # one every onnxruntime of the pinned stack loads
    onnx.save(model, str(path))
    return path


def test_a_foreign_model_cannot_replace_a_runs_evaluation(copy, tmp_path):
    run = copy / "t1-fcn"
    before = _digests(run)
    foreign = _foreign_mnist_model(tmp_path / "linear.onnx")
    r, lines = _cli("evaluate", foreign, "--dataset", "mnist", "--sample", "--no-latency", "--provider", "cpu",
                    "--out", run)
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert "was not exported from" in lines[0] and "--out" in lines[0]
    assert _digests(run) == before


def _report_and_summary(suite: Path) -> tuple[str, dict, str]:
    r, _ = _cli("summarize", suite)
    assert r.exit_code == 0, r.output
    r, _ = _cli("report", suite)
    assert r.exit_code == 0, r.output
    return ((suite / "summary.md").read_text(), json.loads((suite / "summary.json").read_text()),
            (suite / "report.md").read_text())


def test_an_edited_metrics_json_is_flagged_and_never_used(copy):
    run = copy / "t1-fcn"
    metrics = json.loads((run / "metrics.json").read_text())
    true_acc = metrics["test_acc"]
    assert true_acc < 0.99  # one epoch on 1,000 images
    metrics["test_acc"] = 1.0
    (run / "metrics.json").write_text(json.dumps(metrics))
    summary_md, summary, report_md = _report_and_summary(copy)
    assert "EDITED" in summary_md and "1.0000" not in summary_md
    assert "test_acc" not in summary["results"]["t1-fcn"] and summary["held_back"]["t1-fcn"]
    assert "test_acc 1.0 (checkpoint:" in summary["held_back"]["t1-fcn"][0]
    assert "100.00 %" not in report_md and "EDITED" in report_md
    assert "Best row: FCN" not in report_md  # the edited figure is no row's best
    # export measures the checkpoint itself: its metadata never carries metrics.json's 1.0
    r, _ = _cli("export", run, "--n-images", "100")
    assert r.exit_code == 0, r.output
    meta = {p.key: p.value for p in onnx.load(str(run / "model.onnx")).metadata_props}
    from convkit.data.load import load_dataset

    data = load_dataset("mnist", sample=True)
    mean, std = json.loads(meta["mean"])[0], json.loads(meta["std"])[0]
    x = ((data.test_images[:100].numpy().astype(np.float32) / 255 - mean) / std).astype(np.float32)
    logits = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert float(meta["pytorch_test_acc"]) == pytest.approx(float((logits.argmax(1) == data.test_labels[:100].numpy()).mean()))


def test_a_stale_int8_evaluation_is_flagged(copy):
    run = copy / "t1-fcn"
    summary_md, _, report_md = _report_and_summary(copy)
    assert "STALE" not in summary_md and "STALE" not in report_md  # all fresh to begin with
    assert "int8 − fp32 accuracy and batch-1 speed-up: FCN" in report_md
    r, _ = _cli("export", run, "--n-images", "200")  # re-exported without int8: model.int8.onnx goes
    assert r.exit_code == 0, r.output
    assert not (run / "model.int8.onnx").exists()
    summary_md, summary, report_md = _report_and_summary(copy)
    held = " ".join(summary["held_back"]["t1-fcn"])
    assert "eval.json (int8) STALE" in held and "model.int8.onnx" in held and "convkit evaluate" in held
    assert "eval.json (int8) STALE" in summary_md
    assert "int8 cost and speed-up: not measured" in report_md
    row = next(ln for ln in report_md.splitlines() if ln.startswith("| 1. FCN") and "cpu" in ln)
    assert row.count("STALE") == 3  # int8 acc, int8 − fp32, int8 speed-up
    assert "eval.json (int8) STALE" in report_md


def test_a_failure_before_the_run_folder_exists_is_listed(tmp_path, monkeypatch):
    import convkit.train.run as run_mod
    from convkit.errors import ConvkitError

    real = run_mod.load_dataset

    def cifar_missing(name, *a, **k):
        if name == "cifar10":
            raise ConvkitError("cifar10 not found under /nowhere; pass --data-dir")
        return real(name, *a, **k)

    monkeypatch.setattr(run_mod, "load_dataset", cifar_missing)
    r, _ = _cli("train-all", "--only", "t1-fcn", "--only", "t5-custom-conv", *TRAIN, "--no-export", "--out", tmp_path)
    assert r.exit_code == 1, r.output
    suite = tmp_path / "seed-sample"
    summary = json.loads((suite / "summary.json").read_text())
    assert summary["failed"] == ["t5-custom-conv"] and summary["status"] == {"t1-fcn": "done",
                                                                             "t5-custom-conv": "failed"}
    assert "cifar10 not found" in summary["results"]["t5-custom-conv"]["error"]
    assert "t5-custom-conv" in (suite / "summary.md").read_text()
    # a planned experiment with no folder at all (removed, or never reached) is listed as not run
    shutil.rmtree(suite / "t5-custom-conv")
    r, _ = _cli("summarize", suite)
    assert r.exit_code == 0, r.output
    summary = json.loads((suite / "summary.json").read_text())
    assert summary["not_run"] == ["t5-custom-conv"] and "not run" in (suite / "summary.md").read_text()


def test_numbers_of_a_replaced_checkpoint_are_all_stale(copy):
    import torch

    run = copy / "t1-fcn"
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    ckpt["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in ckpt["model"].items()}  # other weights
    torch.save(ckpt, run / "checkpoint.pt")
    summary_md, summary, report_md = _report_and_summary(copy)
    held = " ".join(summary["held_back"]["t1-fcn"])
    for name in ("metrics.json STALE", "export.json STALE", "eval.json STALE"):
        assert name in held and name in summary_md and name in report_md
    assert "checkpoint.pt changed since it was written" in held
    assert summary["results"]["t1-fcn"] == {}  # no figure of this run is convkit's any more
    assert "Best row: FCN" not in report_md and "ORT − PyTorch accuracy: not measured" in report_md


# ---- figures checked against the records they were derived from (issue 27, item 4) ------------------------------
def _edit(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _wilson(k: int, n: int) -> tuple[float, float]:
    """The 95 % Wilson score interval, from its published formula (Wilson 1927)."""
    z, p = 1.959963984540054, k / n
    centre, half = p + z * z / (2 * n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def test_an_edited_summary_block_of_eval_json_is_flagged(copy):
    run = copy / "t1-fcn"
    doc = json.loads((run / "eval.json").read_text())
    low, high = doc["summary"]["ort_test_acc_ci"]
    fp32 = next(e for e in doc["accuracy"] if e["precision"] == "fp32")
    k = round(fp32["accuracy"] * fp32["n"])
    assert (low, high) == pytest.approx(_wilson(k, fp32["n"]), abs=1e-9)  # the file is consistent as written
    assert not low <= 0.987 <= high
    _edit(run / "eval.json", lambda d: d["summary"].update(ort_test_acc=0.987))
    r, lines = _cli("summarize", copy)  # the terminal says what is held back, where the count of runs is printed
    assert r.exit_code == 0 and any(ln.startswith("held back: t1-fcn: eval.json EDITED") for ln in lines), r.output
    summary_md, summary, report_md = _report_and_summary(copy)
    held = " ".join(summary["held_back"]["t1-fcn"])
    assert "eval.json EDITED" in held and "outside its own interval" in held and "ort_test_acc" in held
    assert "0.9870" not in summary_md and "EDITED" in summary_md
    assert "98.70 %" not in report_md and "eval.json EDITED" in report_md
    assert "ort_test_acc" not in summary["results"]["t1-fcn"]


def test_a_summary_figure_inside_its_interval_but_not_its_records_is_flagged(copy):
    run = copy / "t1-fcn"
    doc = json.loads((run / "eval.json").read_text())
    low, high = doc["summary"]["ort_test_acc_ci"]
    inside = round((low + doc["summary"]["ort_test_acc"]) / 2, 6)  # plausible, but no record says so
    _edit(run / "eval.json", lambda d: d["summary"].update(ort_test_acc=inside))
    _, summary, _ = _report_and_summary(copy)
    held = " ".join(summary["held_back"]["t1-fcn"])
    assert "eval.json EDITED" in held and f"ort_test_acc {inside!r} (its records give" in held


def test_an_edited_accuracy_record_of_eval_json_is_flagged(copy):
    run = copy / "t1-fcn"

    def raise_fp32(d):
        entry = next(e for e in d["accuracy"] if e["precision"] == "fp32")
        entry["accuracy"] = min(1.0, entry["accuracy"] + 5 / entry["n"])  # five more right, interval untouched
        d["summary"]["ort_test_acc"] = entry["accuracy"]

    _edit(run / "eval.json", raise_fp32)
    _, summary, report_md = _report_and_summary(copy)
    held = " ".join(summary["held_back"]["t1-fcn"])
    assert "eval.json EDITED" in held and "Wilson interval" in held


def test_an_edited_summary_test_acc_of_metrics_json_is_flagged(copy):
    run = copy / "t1-fcn"
    _edit(run / "metrics.json", lambda d: d["summary"].update(test_acc=0.999))
    summary_md, summary, report_md = _report_and_summary(copy)
    held = " ".join(summary["held_back"]["t1-fcn"])
    assert "metrics.json EDITED" in held and "summary.test_acc 0.999" in held
    assert "0.9990" not in summary_md and "test_acc" not in summary["results"]["t1-fcn"]
    assert "metrics.json EDITED" in report_md


def test_a_swapped_model_whose_hashes_were_deleted_is_unverified(copy):
    run = copy / "t1-fcn"
    shutil.copyfile(run / "model.int8.onnx", run / "model.onnx")  # another model in model.onnx's place

    def drop_hashes(d):
        for v in d["variants"].values():
            v.pop("sha256")

    _edit(run / "eval.json", drop_hashes)
    summary_md, summary, report_md = _report_and_summary(copy)
    held = " ".join(summary["held_back"]["t1-fcn"])
    assert "eval.json UNVERIFIED" in held and "records no sha256 of the model.onnx" in held
    assert "ort_test_acc" not in summary["results"]["t1-fcn"]
    assert "UNVERIFIED" in summary_md and "eval.json UNVERIFIED" in report_md
    _edit(run / "metrics.json", lambda d: d.pop("checkpoint_sha256"))
    _, summary, _ = _report_and_summary(copy)
    assert any("metrics.json UNVERIFIED" in line for line in summary["held_back"]["t1-fcn"])


# ---- data keyed by content; evaluations of changed data are stale (issue 27, item 6) ---------------------------
def _mnist_tree(root: Path, per_class: int = 3) -> Path:
    """An ImageFolder tree mnist/{train,test}/<digit>/ of the sample's images, ``per_class`` of each digit."""
    from convkit.data.load import load_dataset

    data = load_dataset("mnist", sample=True)
    for split, (x, y) in {"train": (data.train_images, data.train_labels),
                          "test": (data.test_images, data.test_labels)}.items():
        for digit in range(10):
            (root / "mnist" / split / str(digit)).mkdir(parents=True, exist_ok=True)
            for i in np.flatnonzero(y.numpy() == digit)[:per_class]:
                Image.fromarray(x[i, 0].numpy()).save(root / "mnist" / split / str(digit) / f"{i}.png")
    return root


@pytest.mark.slow  # trains, exports and evaluates a run of its own on a folder it then changes (~1.5 min here)
def test_an_evaluation_of_data_changed_since_is_stale_until_re_evaluated(tmp_path):
    data = _mnist_tree(tmp_path / "data")
    r, _ = _cli("train", "t1-fcn", "--data-dir", data, "--epochs", "1", "--device", "cpu", "--batch-size", "10",
                "--quiet", "--out", tmp_path / "runs")
    assert r.exit_code == 0, r.output
    [run] = [p.parent for p in (tmp_path / "runs").rglob("metrics.json")]
    r, _ = _cli("export", run, "--n-images", "20")
    assert r.exit_code == 0, r.output
    r, _ = _cli("evaluate", run, *EVAL_FAST, "--max-accuracy-drop", "fp32=100")
    assert r.exit_code == 0, r.output
    suite = run.parent
    _, summary, _ = _report_and_summary(suite)
    assert not summary["held_back"]
    # one more test image: the evaluation (and its figures) no longer describe the data at its location
    extra = data / "mnist" / "test" / "3" / "extra.png"
    shutil.copyfile(next((data / "mnist" / "test" / "5").iterdir()), extra)
    summary_md, summary, report_md = _report_and_summary(suite)
    held = " ".join(summary["held_back"][run.name])
    assert "eval.json STALE" in held and "changed since" in held
    assert "ort_test_acc" not in summary["results"][run.name] and "eval.json STALE" in report_md
    # re-evaluating the run on its own data (at the location it was trained on) replaces its eval.json
    r, _ = _cli("evaluate", run, *EVAL_FAST, "--max-accuracy-drop", "fp32=100")
    assert r.exit_code == 0, r.output
    doc = json.loads((run / "eval.json").read_text())
    assert doc["dataset"]["n"] == 31 and not (run / "eval").exists()
    assert any("changed since training" in n for n in doc["notes"])
    _, summary, _ = _report_and_summary(suite)
    assert not any("eval.json" in line for line in summary["held_back"].get(run.name, []))
    # an evaluation on other data (eval/<key>/) goes stale when an image is rewritten in place, same size
    other = _image_folder(tmp_path / "other", n=12)
    r, _ = _cli("evaluate", run, "--data", other, *EVAL_FAST, "--max-accuracy-drop", "fp32=100")
    assert r.exit_code == 0, r.output
    first = next(other.rglob("*.png"))
    pixels = np.asarray(Image.open(first)).copy()
    pixels[0, 0] ^= 0xFF  # same size, other content
    Image.fromarray(pixels).save(first.with_suffix(".bmp"))
    size = first.with_suffix(".bmp").stat().st_size
    first.unlink()
    r, _ = _cli("evaluate", run, "--data", other, *EVAL_FAST, "--max-accuracy-drop", "fp32=100")
    assert r.exit_code == 0, r.output
    keyed = sorted((run / "eval").iterdir())
    assert len(keyed) == 2  # other data, other key: the earlier evaluation was not overwritten
    bmp = first.with_suffix(".bmp")
    pixels[0, 0] ^= 0x0F
    Image.fromarray(pixels).save(bmp)
    assert bmp.stat().st_size == size
    r, _ = _cli("report", suite)
    assert r.exit_code == 0, r.output
    report_md = (suite / "report.md").read_text()
    stale = [ln for ln in report_md.splitlines() if "eval.json STALE: the data it was measured on" in ln]
    assert len(stale) == 2 and all(ln.startswith("- `eval/") and f"--data {other}" in ln for ln in stale)
