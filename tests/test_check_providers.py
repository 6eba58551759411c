"""docker/check_providers.py: the verdict on faked findings, and the fresh-process probe against LD_LIBRARY_PATH."""

from __future__ import annotations

import glob
import importlib.util
import os
import sysconfig
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "docker" / "check_providers.py"
spec = importlib.util.spec_from_file_location("check_providers", SCRIPT)
cp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cp)


def _provider(wheel_only=(), missing=(), failed=()):
    return {"library": "x.so", "libs": {}, "wheel_only": list(wheel_only), "missing": list(missing),
            "failed": list(failed)}


def _report(available=("CUDAExecutionProvider", "CPUExecutionProvider"), ort_cuda="13.0", cuda=None, **extra):
    return {"onnxruntime": "1.30.0", "ort_cuda": ort_cuda, "torch_cuda": "13.0", "available": list(available),
            "driver_loads": False, "gpu": {"session_providers": None},
            "providers": {"CUDAExecutionProvider": cuda or _provider(),
                          "TensorrtExecutionProvider": _provider(missing=["libnvinfer.so.10"])}, **extra}


def _gpu_ok(**kw):
    base = {"driver_loads": True, "gpu": {"session_providers": ["CUDAExecutionProvider"], "result_ok": True},
            "torch": {"available": True}, "gpus": [{"name": "NVIDIA H200", "driver": "580.65.06"}]}
    return _report(**{**base, **kw})


def test_verdict_on_a_cpu_host_with_every_library():
    status, errors, notes = cp.verdict(_report())
    assert (status, errors) == (0, [])
    assert "TensorRT" in notes[0]  # reported, not an error
    assert cp.verdict(_report(), require_tensorrt=True)[0] == 1


def test_verdict_cpu_only_onnxruntime():
    # onnxruntime (CPU wheel, as on a bare GPU machine): no CUDA build, CPU provider only
    status, errors, _ = cp.verdict(_report(available=["CPUExecutionProvider"], ort_cuda=None))
    assert status == 1 and "onnxruntime-gpu" in errors[0]


def test_verdict_library_only_in_the_wheels_is_an_error():
    status, errors, _ = cp.verdict(_report(cuda=_provider(wheel_only=["libcublasLt.so.13"])))
    assert status == 1 and "libcublasLt.so.13" in errors[0] and "LD_LIBRARY_PATH" in errors[0]
    status, errors, _ = cp.verdict(_report(cuda=_provider(failed=["libcudnn.so.9"])))
    assert status == 1 and "libcudnn.so.9" in errors[0]
    assert cp.verdict({"probe_error": "probe process exited 1"})[0] == 1


def test_verdict_require_gpu():
    assert cp.verdict(_gpu_ok(), require_gpu=True) == (0, [], [cp.verdict(_gpu_ok())[2][0]])
    status, errors, _ = cp.verdict(_report(), require_gpu=True)  # no driver at all
    assert status == 2 and any("--gpus all" in e for e in errors)
    failed_session = _gpu_ok(gpu={"session_providers": None, "error": "CUDA failure 999"})
    status, errors, _ = cp.verdict(failed_session, require_gpu=True)
    assert status == 2 and "CUDA failure 999" in errors[0]
    status, errors, _ = cp.verdict(_gpu_ok(torch={"available": False}), require_gpu=True)
    assert status == 2 and errors == ["--require-gpu: torch.cuda.is_available() is False"]
    old = _gpu_ok(gpus=[{"name": "NVIDIA A100", "driver": "570.86.15"}])
    status, errors, _ = cp.verdict(old, require_gpu=True)
    assert status == 2 and "driver ≥ 580" in errors[0] and "570.86.15" in errors[0]


def test_nvidia_smi_parsing_and_driver_minimum():
    gpus = cp.parse_nvidia_smi("NVIDIA H200, 580.65.06\nNVIDIA A100-SXM4-80GB, 570.86.15\n")
    assert gpus == [{"name": "NVIDIA H200", "driver": "580.65.06"},
                    {"name": "NVIDIA A100-SXM4-80GB", "driver": "570.86.15"}]
    assert cp.driver_problem("580.65.06", "13.0") is None
    assert "≥ 580" in cp.driver_problem("575.51.03", "13.0")
    assert cp.driver_problem("550.54", "12.4") is None


def test_conv_model_runs_on_the_cpu_provider():
    ort = pytest.importorskip("onnxruntime")
    providers, y = cp.run_conv(ort, ["CPUExecutionProvider"])
    assert providers == ["CPUExecutionProvider"] and y.shape == (1, 4, 8, 8) and (y >= 0).all() and y.max() > 0


def _wheel_lib_dirs():
    site = sysconfig.get_paths()["purelib"]
    return [d for d in (os.path.join(site, "nvidia", "cu13", "lib"), os.path.join(site, "nvidia", "cudnn", "lib"))
            if os.path.isdir(d)]


def test_probe_tests_the_loader_path_not_the_wheels():
    # The image's promise: with LD_LIBRARY_PATH on the wheels' lib folders, a process that never imports torch
    # loads every library the CUDA provider needs. Without it, the same libraries are "wheel only".
    ort_spec = importlib.util.find_spec("onnxruntime")
    capi = Path(ort_spec.origin).parent / "capi"
    if not (capi / "libonnxruntime_providers_cuda.so").is_file() or len(_wheel_lib_dirs()) < 2:
        pytest.skip("needs onnxruntime-gpu and torch's nvidia-* CUDA 13 wheels")
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    bare = cp.run_probe(env)
    assert bare["cpu_conv"]["ok"]
    if not glob.glob("/usr/local/cuda*/lib*/libcublasLt.so.13"):  # a system CUDA toolkit would satisfy the loader
        assert "libcublasLt.so.13" in bare["providers"]["CUDAExecutionProvider"]["wheel_only"]
        assert cp.verdict(bare)[0] == 1
    image_like = cp.run_probe({**env, "LD_LIBRARY_PATH": ":".join(_wheel_lib_dirs())})
    cuda = image_like["providers"]["CUDAExecutionProvider"]
    assert (cuda["wheel_only"], cuda["missing"], cuda["failed"]) == ([], [], [])
    assert cuda["libs"]["libcudnn_cnn.so.9"]["via"] == "LD_LIBRARY_PATH"
    assert cp.verdict(image_like)[0] == 0
