"""The default device: CUDA when usable, CPU when no GPU, and a refusal (not a silent CPU run) in between."""

from __future__ import annotations

import pytest

import convkit.train.config as config_mod
from convkit.devices import gpu_visible, resolve_default_device
from convkit.errors import ConvkitError
from convkit.train import TrainOverrides, resolve_config


@pytest.mark.parametrize("env, node, visible", [
    ({"NVIDIA_VISIBLE_DEVICES": "all"}, False, True),
    ({"NVIDIA_VISIBLE_DEVICES": "0,1"}, False, True),
    ({"NVIDIA_VISIBLE_DEVICES": "void"}, False, False),
    ({"NVIDIA_VISIBLE_DEVICES": "none"}, False, False),
    ({"NVIDIA_VISIBLE_DEVICES": ""}, False, False),
    ({}, False, False),
    ({}, True, True),  # bare metal with a driver: the control node exists
    ({"NVIDIA_VISIBLE_DEVICES": "void"}, True, True),
])
def test_gpu_visible(tmp_path, env, node, visible):
    nvidiactl = tmp_path / "nvidiactl"
    if node:
        nvidiactl.touch()
    assert gpu_visible(env, nvidiactl) is visible


def test_default_device_cases():
    assert resolve_default_device(cuda_available=True, visible=True) == "cuda"
    assert resolve_default_device(cuda_available=False, visible=False) == "cpu"
    with pytest.raises(ConvkitError, match="driver ≥ 580 for CUDA 13.*--device cpu") as info:
        resolve_default_device(cuda_available=False, visible=True)
    assert info.value.exit_code == 2


def test_resolve_config_refuses_silent_cpu_run_on_old_driver(tmp_path, monkeypatch):
    monkeypatch.setattr(config_mod.torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "all")
    with pytest.raises(ConvkitError, match="driver ≥ 580"):
        resolve_config("t1-fcn", TrainOverrides(out=tmp_path))
    # an explicit --device cpu is the way out
    assert resolve_config("t1-fcn", TrainOverrides(out=tmp_path, device="cpu")).device == "cpu"
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "void")
    monkeypatch.setattr(config_mod, "gpu_visible", lambda: False)
    assert resolve_config("t1-fcn", TrainOverrides(out=tmp_path)).device == "cpu"


def test_cli_exit_2_with_driver_message(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from convkit.cli import main

    monkeypatch.setattr(config_mod.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(config_mod, "gpu_visible", lambda: True)
    result = CliRunner().invoke(main, ["train", "t1-fcn", "--sample", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "driver ≥ 580" in result.output and "--device cpu" in result.output


def test_compile_threads_honour_env_affinity_and_quota(tmp_path):
    from convkit.compilation import MAX_COMPILE_THREADS, cgroup_cpu_limit, compile_threads

    assert compile_threads({"TORCHINDUCTOR_COMPILE_THREADS": "3"}, cpus=64) == 3
    assert compile_threads({}, cpus=64) == MAX_COMPILE_THREADS
    assert compile_threads({}, cpus=64, quota=4.0) == 4
    assert compile_threads({}, cpus=2, quota=0.5) == 1
    (tmp_path / "cpu.max").write_text("400000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 4.0
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    assert cgroup_cpu_limit(tmp_path / "absent") is None


def test_compile_model_sets_the_compile_workers(monkeypatch):
    import torch
    import torch._inductor.config as inductor_config

    from convkit.compilation import compile_model

    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "3")
    monkeypatch.setattr(inductor_config, "compile_threads", inductor_config.compile_threads)  # restored after
    compile_model(torch.nn.Linear(2, 2), backend="aot_eager")
    assert inductor_config.compile_threads == 3
