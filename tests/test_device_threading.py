"""One Device value from train-all to the hardware record: a run trained on cuda:1 is exported, evaluated, served,
timed and labelled on cuda:1 (CPU only: torch's CUDA queries are faked with a two-GPU machine)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import convkit.pipeline as pipeline
from convkit.cli import main
from convkit.devices import Device
from convkit.errors import ConvkitError
from convkit.evaluate import latency as lat
from convkit.evaluate.options import ProviderOptions, TimingOptions
from convkit.providers import ProviderConfig, build_session_config
from convkit.train import TrainOverrides


@pytest.fixture
def two_gpus(monkeypatch):
    """Fake a machine with two GPUs; returns the list of device indexes torch.cuda was asked about."""
    asked: list[tuple[str, int]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)

    def name(i=None):
        asked.append(("name", i))
        return f"Fake GPU {i}"

    def capability(i=None):
        asked.append(("capability", i))
        return (9, 0)

    monkeypatch.setattr(torch.cuda, "get_device_name", name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda i=None: asked.append(("synchronize", i)))
    return asked


@pytest.mark.parametrize("text, label, ort_id", [("cpu", "cpu", 0), ("cuda", "cuda:0", 0), ("cuda:1", "cuda:1", 1),
                                                 (" CUDA:3 ", "cuda:3", 3)])
def test_device_parse(text, label, ort_id):
    d = Device.parse(text)
    assert (d.label, d.ort_device_id, str(d.torch_device())) == (label, ort_id, label)


@pytest.mark.parametrize("text", ["gpu", "cuda:-1", "cuda:x", "cpu:1", "", "cuda:99999"])
def test_device_parse_refuses(text):
    with pytest.raises(ConvkitError, match="use cpu, cuda or cuda:N"):
        Device.parse(text)


def test_train_all_run_on_cuda1_is_exported_and_evaluated_on_cuda1(two_gpus, tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(pipeline, "train_experiment", lambda cfg, **kw: seen.setdefault("train", cfg.device))
    monkeypatch.setattr(pipeline, "export_run", lambda run_dir, settings: seen.setdefault("export", settings.device))
    monkeypatch.setattr(pipeline, "evaluate_model", lambda run_dir, options: seen.setdefault("evaluate", options))
    monkeypatch.setattr(pipeline, "gate_error", lambda result: None)
    plan = pipeline.SuitePlan(only=["t1-fcn"], train=TrainOverrides(out=tmp_path, sample=True), quiet=True)

    result = pipeline.run_experiment(plan, "t1-fcn", device="cuda:1")  # what the per-GPU executor calls

    assert result["failed"] is None, result
    assert seen["train"] == "cuda:1"
    assert seen["export"] == "cuda:1"  # export's PyTorch reference
    providers = seen["evaluate"].providers
    assert providers.device_id == 1  # ORT's CUDA/TensorRT provider option and IO binding
    assert providers.reference() == "cuda:1"  # evaluation's PyTorch reference
    (name, cuda_opts), *_ = build_session_config(ProviderConfig("cuda", device_id=providers.device_id))[0]
    assert name == "CUDAExecutionProvider" and cuda_opts["device_id"] == "1"


def test_cpu_run_keeps_its_reference_on_the_cpu(two_gpus, tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(pipeline, "train_experiment", lambda cfg, **kw: None)
    monkeypatch.setattr(pipeline, "export_run", lambda run_dir, settings: seen.setdefault("export", settings.device))
    monkeypatch.setattr(pipeline, "evaluate_model", lambda run_dir, options: seen.setdefault("evaluate", options))
    monkeypatch.setattr(pipeline, "gate_error", lambda result: None)
    plan = pipeline.SuitePlan(only=["t1-fcn"], train=TrainOverrides(out=tmp_path, sample=True), quiet=True)
    pipeline.run_experiment(plan, "t1-fcn", device="cpu")
    assert seen["export"] == "cpu" and seen["evaluate"].providers.reference() == "cpu"


def test_evaluate_device_id_reaches_serving_and_reference(two_gpus, tmp_path, monkeypatch):
    captured = {}
    monkeypatch.setattr("convkit.evaluate.cli.evaluate_each",
                        lambda targets, opts, accept: captured.setdefault("opts", opts) and 0)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    res = CliRunner().invoke(main, ["evaluate", str(model), "--device-id", "1", "--scenario", "single-stream"])
    assert res.exit_code == 0, res.output
    opts = captured["opts"]
    assert opts.providers.device_id == 1 and opts.providers.reference() == "cuda:1"
    assert opts.serving.sut.device_id == 1  # the LoadGen SUT's sessions and IO binding


def test_hardware_record_names_the_gpu_used(two_gpus):
    from convkit.evaluate.run import hardware

    record = hardware(True, 1)
    assert record["gpu"] == "Fake GPU 1" and record["gpu_device"] == "cuda:1"
    assert ("name", 0) not in two_gpus and ("capability", 1) in two_gpus


def test_gpu_timings_bind_and_synchronize_the_run_device(two_gpus, monkeypatch):
    bound = []
    monkeypatch.setattr(lat, "ort_device_latency", lambda session, spec, x, timing, device_id: bound.append(device_id) or {})

    def host(session, spec, x, timing, sync=None):
        sync()  # the end-to-end timing synchronises after each call
        return {}

    monkeypatch.setattr(lat, "ort_host_latency", host)
    spec = SimpleNamespace(prepare=lambda x: x.astype(np.float32), fixed_batch=None)
    rows = lat.ort_rows({("fp32", "cuda"): object()}, {"fp32": spec}, np.zeros((2, 1, 4, 4), np.uint8),
                        TimingOptions(batch_sizes=(1,), cuda_graph=False), ProviderOptions(gpu=Device.gpu(1)).device_id,
                        graph_session=None, notes=[])
    assert [r["backend"] for r in rows] == ["ort", "ort-e2e"]
    assert bound == [1] and ("synchronize", 1) in two_gpus and ("synchronize", None) not in two_gpus
