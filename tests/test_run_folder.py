"""Run-folder safety: one writer at a time, no run lost to a new one, resume only on the same data, no stale
exports, no half-written files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from convkit.artifacts import lock_path, run_lock
from convkit.cli import main
from convkit.errors import ConvkitError

TRAIN = ["--sample", "--epochs", "1", "--device", "cpu", "--batch-size", "256", "--quiet"]


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _cli(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    return r, lines


@pytest.fixture()
def trained(tmp_path) -> Path:
    r, _ = _cli("train", "t1-fcn", *TRAIN, "--out", tmp_path)
    assert r.exit_code == 0, r.output
    return tmp_path / "seed-sample" / "t1-fcn"


def test_a_second_writer_is_refused_naming_the_holder(trained, tmp_path):
    r, _ = _cli("export", trained, "--n-images", "64")
    assert r.exit_code == 0, r.output
    before = _digests(trained)
    # a live process holds the lock (this very test process pretends to be the other command)
    lock_path(trained).write_text(f"{os.getppid()}\n{os.uname().nodename}\nconvkit train t1-fcn")
    for args in (["train", "t1-fcn", *TRAIN, "--out", tmp_path, "--resume"], ["export", trained],
                 ["evaluate", trained, "--no-latency"]):
        r, lines = _cli(*args)
        assert r.exit_code == 2 and len(lines) == 1 and "is in use by `convkit train t1-fcn`" in lines[0], r.output
    assert _digests(trained) == before
    # a lock whose process is gone is stale: taken over, and released afterwards
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock_path(trained).write_text(f"{dead.stdout.strip()}\n{os.uname().nodename}\nconvkit train t1-fcn")
    with run_lock(trained, "test"):
        assert lock_path(trained).read_text().startswith(str(os.getpid()))
    assert not lock_path(trained).exists()


def test_a_fresh_run_never_destroys_an_existing_one(trained, tmp_path, monkeypatch):
    before = _digests(trained)
    r, lines = _cli("train", "t1-fcn", *TRAIN, "--out", tmp_path)
    assert r.exit_code == 2 and "already holds a run" in lines[-1] and "--overwrite" in lines[-1]
    assert _digests(trained) == before
    # --overwrite that fails before its first checkpoint leaves the old run whole, and no temporary folder
    import convkit.train.run as run_mod

    def boom(*a, **k):
        raise ConvkitError("synthetic failure in epoch 1")

    monkeypatch.setattr(run_mod, "train_epoch", boom)
    r, lines = _cli("train", "t1-fcn", *TRAIN, "--out", tmp_path, "--overwrite")
    assert r.exit_code == 2 and "synthetic failure" in lines[-1]
    assert _digests(trained) == before
    assert sorted(p.name for p in trained.parent.iterdir()) == ["t1-fcn"]
    monkeypatch.undo()
    r, _ = _cli("train", "t1-fcn", *TRAIN, "--out", tmp_path, "--overwrite", "--seed", "3")
    assert r.exit_code == 0, r.output
    assert json.loads((trained / "config.json").read_text())["config"]["seed"] == 3


def test_resume_refuses_other_data(tmp_path):
    """The same class folders with two classes swapped: the data checksum differs, the resume is refused."""
    from convkit.data.load import load_dataset
    from convkit.data.sources import sample_dir

    data = tmp_path / "data"
    shutil.copytree(sample_dir() / "MNIST", data / "MNIST")
    r, _ = _cli("train", "t1-fcn", *TRAIN[1:], "--data-dir", data, "--out", tmp_path / "runs")
    assert r.exit_code == 0, r.output
    run = tmp_path / "runs" / "seed" / "t1-fcn"
    before = _digests(run)
    raw = data / "MNIST" / "raw"
    for name in ("train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):  # labels relabelled: other data
        import gzip

        blob = bytearray(gzip.decompress((raw / name).read_bytes()))
        blob[8:] = bytes((b + 1) % 10 for b in blob[8:])
        (raw / name).write_bytes(gzip.compress(bytes(blob)))
    assert load_dataset("mnist", data).checksum != json.loads((run / "config.json").read_text())["data_checksum"]
    r, lines = _cli("train", "t1-fcn", *TRAIN[1:], "--data-dir", data, "--out", tmp_path / "runs", "--resume")
    assert r.exit_code == 2 and "trained on other data" in lines[-1], r.output
    assert _digests(run) == before


def test_retraining_removes_stale_exports_and_evaluate_asks_for_a_re_export(tmp_path, monkeypatch):
    import convkit.train.run as run_mod
    from convkit.train import TrainOverrides, resolve_config, train_experiment

    cfg = resolve_config("t1-fcn", TrainOverrides(epochs=2, batch_size=256, device="cpu", sample=True, out=tmp_path))
    real, calls = run_mod.train_epoch, []

    def stop_in_epoch_2(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(run_mod, "train_epoch", stop_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train_experiment(cfg, quiet=True)
    monkeypatch.undo()
    run = Path(cfg.run_dir)
    r, _ = _cli("export", run, "--n-images", "64")
    assert r.exit_code == 0, r.output
    old_export = (run / "model.onnx").read_bytes()
    # resuming changes the checkpoint: the run's export files go, they would describe the old one
    train_experiment(cfg, resume=True, quiet=True)
    assert not (run / "model.onnx").exists() and not (run / "export.json").exists()
    (run / "model.onnx").write_bytes(old_export)  # an export of the old checkpoint, put back by hand
    r, lines = _cli("evaluate", run, "--no-latency", "--provider", "cpu")
    assert r.exit_code == 2 and "re-export" in lines[-1] and "Traceback" not in r.output, r.output


def test_export_refuses_a_folder_mixing_two_experiments(trained, tmp_path):
    metrics = json.loads((trained / "metrics.json").read_text())
    metrics["experiment"] = "t5-custom-conv"
    (trained / "metrics.json").write_text(json.dumps(metrics))
    before = _digests(trained)
    r, lines = _cli("export", trained)
    assert r.exit_code == 2 and "mixes two runs" in lines[-1] and "t5-custom-conv" in lines[-1], r.output
    assert _digests(trained) == before


def test_evaluate_goes_on_past_a_bad_model_and_exits_1(trained, tmp_path):
    r, _ = _cli("export", trained, "--n-images", "64")
    assert r.exit_code == 0, r.output
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    r = CliRunner().invoke(main, ["evaluate", str(bad), str(trained), "--no-latency", "--provider", "cpu"])
    assert r.exit_code == 1, r.output  # one model of several failed, the other was evaluated (README's exit codes)
    assert "bad.onnx" in r.output and "fp32 ORT cpu: acc" in r.output  # the good one was still evaluated
    assert (trained / "eval.json").is_file() and "Traceback" not in r.output


def test_a_full_disk_is_one_line_and_keeps_the_old_file(trained, tmp_path, monkeypatch):
    import torch

    import convkit.atomic as atomic

    before = _digests(trained)

    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(ConvkitError) as info:
        atomic.save_torch(trained / "checkpoint.pt", {"x": 1})
    assert "cannot write" in info.value.message and "file write failed" in info.value.message
    assert _digests(trained) == before and not list(trained.glob(".*.tmp"))

    def enospc(self, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", enospc)
    with pytest.raises(ConvkitError) as info:
        atomic.write_json(trained / "metrics.json", {"x": 1})
    assert "No space left on device" in info.value.message and "\n" not in info.value.message
    monkeypatch.undo()
    assert _digests(trained) == before


def test_a_finite_blow_up_is_flagged(tmp_path):
    from convkit.train.run import divergence_warnings

    rows = [{"train_loss": 2.3, "test_loss": 2.3}, {"train_loss": 9.1e4, "test_loss": 2.6e17}]
    warnings = divergence_warnings(rows)
    assert len(warnings) == 2 and "diverged" in warnings[1] and "2.6e+17" in warnings[1]
    assert divergence_warnings([{"train_loss": 2.3, "test_loss": 2.3}, {"train_loss": 0.4, "test_loss": 0.5}]) == []


def test_reference_logits_are_computed_once_per_checkpoint_and_data(trained, monkeypatch):
    """In train-all's order (export, then evaluate) the PyTorch fp32 logits are computed once: export caches the
    whole test split in the run folder and evaluate reads it; evaluating again and exporting again reuse them; a
    subset of the data (--max-images) is other data and is computed afresh."""
    import convkit.reference as reference
    from convkit.artifacts import REFERENCE

    real, calls = reference.torch_logits, []
    monkeypatch.setattr(reference, "torch_logits", lambda *a, **k: calls.append(1) or real(*a, **k))
    r, _ = _cli("export", trained, "--n-images", "64")
    assert r.exit_code == 0, r.output
    assert (trained / REFERENCE).is_file() and calls == [1]

    def no_pytorch(*a, **k):
        raise AssertionError("the PyTorch reference was recomputed")

    monkeypatch.setattr(reference, "torch_logits", no_pytorch)
    r, _ = _cli("evaluate", trained, "--no-latency", "--provider", "cpu")
    assert r.exit_code == 0, r.output
    first = json.loads((trained / "eval.json").read_text())["pytorch"]["accuracy"]
    r, _ = _cli("evaluate", trained, "--no-latency", "--provider", "cpu")
    assert r.exit_code == 0, r.output
    assert json.loads((trained / "eval.json").read_text())["pytorch"]["accuracy"] == first
    r, _ = _cli("export", trained, "--n-images", "64")
    assert r.exit_code == 0, r.output
    monkeypatch.setattr(reference, "torch_logits", lambda *a, **k: calls.append(1) or real(*a, **k))
    from convkit.evaluate.options import DataOptions, EvalOptions, ProviderOptions, TimingOptions
    from convkit.evaluate.run import evaluate_model

    evaluate_model(trained, EvalOptions(data=DataOptions(max_images=100), providers=ProviderOptions(provider="cpu"),
                                        timing=TimingOptions(latency=False)))
    assert calls == [1, 1]


def test_train_all_resolves_each_experiment_config_once(tmp_path, monkeypatch):
    """train-all resolves an experiment's TrainConfig once (validating every one before any work) and hands it to
    the run; two seeds of one experiment are two runs, each resolved once."""
    import convkit.pipeline as pipeline
    from convkit.train import TrainOverrides

    real, calls = pipeline.resolve_config, []
    monkeypatch.setattr(pipeline, "resolve_config", lambda *a, **k: calls.append(k.get("run_name") or a[0])
                        or real(*a, **k))
    plan = pipeline.SuitePlan(only=["t1-fcn"], seeds=(0, 1), export=False, quiet=True,
                              train=TrainOverrides(epochs=1, batch_size=64, device="cpu", sample=True, out=tmp_path,
                                                   max_images=256))
    result = pipeline.train_all(plan, echo=lambda line: None)
    assert result["failed"] == [] and sorted(calls) == ["t1-fcn-seed0", "t1-fcn-seed1"], calls
    assert (tmp_path / "seed-sample" / "t1-fcn-seed1" / "metrics.json").is_file()
