"""Experiments several at a time: local processes per device slot, and Ray tasks whose run folders come back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from convkit.distribute import balance, local_executor, parse_devices
from convkit.errors import ConvkitError
from convkit.pipeline import SuitePlan, train_all
from convkit.train import TrainOverrides

TRAIN = {"epochs": 1, "batch_size": 256, "device": "cpu", "sample": True, "compile": False}


def _plan(tmp_path: Path, only: list[str], **kw) -> SuitePlan:
    return SuitePlan(only=only, train=TrainOverrides(**TRAIN, out=str(tmp_path)), evaluate=False, quiet=True,
                     export_images=32, **kw)


def test_balance_puts_the_longest_first_and_evens_the_load():
    groups = balance(["t1-fcn", "t6-bottleneck", "t6-wide", "t2-fcn"], 2)
    assert groups[0][0] == "t6-bottleneck"  # the study's longest row starts first
    assert sorted(sum(groups, [])) == sorted(["t1-fcn", "t6-bottleneck", "t6-wide", "t2-fcn"])
    assert all(groups)


def test_parse_devices():
    assert parse_devices("cpu, cpu") == ["cpu", "cpu"]
    with pytest.raises(ConvkitError):
        parse_devices("gpu0")


@pytest.mark.slow
def test_local_processes_give_the_same_summary_as_one_process(tmp_path):
    one = train_all(_plan(tmp_path / "one", ["t1-fcn", "t5-custom-conv"]), echo=lambda s: None)
    two = train_all(_plan(tmp_path / "two", ["t1-fcn", "t5-custom-conv"]), echo=lambda s: None,
                    executor=local_executor(["cpu", "cpu"]))
    assert one["failed"] == two["failed"] == []
    a = json.loads(Path(one["json"]).read_text())["results"]
    b = json.loads(Path(two["json"]).read_text())["results"]
    assert set(a) == set(b) == {"t1-fcn", "t5-custom-conv"}
    for name in a:  # seeded CPU training: the same numbers whichever process ran it
        assert a[name]["test_acc"] == b[name]["test_acc"] and a[name]["parameters"] == b[name]["parameters"]


@pytest.mark.slow
def test_ray_tasks_ship_run_folders_back_and_report_failures(tmp_path):
    ray = pytest.importorskip("ray")
    from convkit.distribute import ray_executor

    marker = tmp_path / "killed-once"

    def sabotage(name: str) -> None:  # runs inside the Ray worker
        if name == "t1-simple-cnn":
            raise RuntimeError("synthetic failure before training")
        if name == "t5-custom-conv":
            os._exit(1)  # the worker dies: Ray retries once, then reports it
        if name == "t1-fcn" and not marker.exists():
            marker.touch()
            os._exit(1)  # dies on the first attempt only: the retry succeeds

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        plan = _plan(tmp_path / "runs", ["t1-fcn", "t1-simple-cnn", "t5-custom-conv", "t1-residual-cnn"],
                     on_start=sabotage)
        result = train_all(plan, echo=print, executor=ray_executor(None))
    finally:
        ray.shutdown()
    suite = tmp_path / "runs" / "seed-sample"
    assert sorted(result["failed"]) == ["t1-simple-cnn", "t5-custom-conv"]
    for name in ("t1-fcn", "t1-residual-cnn"):  # trained on a worker, shipped back as files
        assert (suite / name / "checkpoint.pt").is_file() and (suite / name / "model.onnx").is_file()
    summary = (suite / "summary.md").read_text()
    assert "RuntimeError: synthetic failure before training" in summary
    failure = json.loads((suite / "t5-custom-conv" / "failure.json").read_text())
    assert failure["stage"] == "worker" and "Error" in failure["error"]
