#!/usr/bin/env python3
"""Check that ONNX Runtime's CUDA execution provider can load its libraries the way the image sets them up.

The image puts the CUDA/cuDNN libraries of torch's ``nvidia-*`` wheels on ``LD_LIBRARY_PATH`` so that a
process running ONNX Runtime finds them without ``import torch`` or ``onnxruntime.preload_dlls()`` first.
This script tests exactly that: a fresh subprocess, which imports onnxruntime only (no torch, no preload),
resolves each library the provider needs the way the dynamic loader would (``LD_LIBRARY_PATH``, RUNPATH,
the ldconfig cache, the default directories) and loads it with ``ctypes``. A library found only inside the
wheels is an error: only a process that imports torch first would find it. With a driver present the
subprocess also runs a small convolution model on the CUDA provider alone (no CPU fallback) and compares
it with the CPU provider's result.

Runs inside the image (``docker run --rm --gpus all --entrypoint python convkit /opt/convkit/check_providers.py``)
or in any environment with onnxruntime-gpu. Without a GPU only ``libcuda.so.1`` (the driver, mounted by the
NVIDIA Container Toolkit with ``--gpus``) is absent, and that is not an error.

Exit status: 0 when every library the CUDA provider needs loads (libcuda.so.1 aside); 1 when one is
missing, found only in the wheels, or fails to load; 2 with ``--require-gpu`` when the CUDA provider cannot
run the test model, torch sees no GPU, or the driver is older than the CUDA build needs (≥ 580 for CUDA 13).
The TensorRT provider needs TensorRT (libnvinfer), which the image does not ship: reported, not an error,
unless ``--require-tensorrt``.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import importlib.util
import json
import os
import re
import struct
import subprocess
import sys
import sysconfig
import tempfile

DRIVER_LIBS = {"libcuda.so.1", "libnvidia-ml.so.1"}  # come from the host driver, never from a wheel
# glibc and the C++ runtime: part of every base image, not worth listing one by one.
SYSTEM_PREFIXES = ("libc.so", "libm.so", "libdl.so", "librt.so", "libpthread.so", "ld-linux", "libstdc++.so",
                   "libgcc_s.so")
# The oldest driver each CUDA major runs on (NVIDIA's CUDA Toolkit release notes, "minimum driver").
MIN_DRIVER = {13: 580, 12: 525}


# ----------------------------------------------------------------------------------------------- ELF
def elf_dynamic(path: str) -> tuple[list[str], list[str]]:
    """Return (DT_NEEDED sonames, DT_RUNPATH/DT_RPATH entries) of a 64-bit little-endian ELF file."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: not a 64-bit little-endian ELF file")
    e_phoff, = struct.unpack_from("<Q", data, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 0x36)
    loads, dynamic = [], None
    for i in range(e_phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz, _memsz, _align = struct.unpack_from(
            "<IIQQQQQQ", data, e_phoff + i * e_phentsize)
        if p_type == 1:  # PT_LOAD
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == 2:  # PT_DYNAMIC
            dynamic = (p_offset, p_filesz)
    if dynamic is None:
        return [], []

    def vaddr_to_offset(addr: int) -> int:
        for vaddr, off, size in loads:
            if vaddr <= addr < vaddr + size:
                return addr - vaddr + off
        raise ValueError(f"{path}: address {addr:#x} outside PT_LOAD segments")

    entries, strtab = [], None
    off, end = dynamic[0], dynamic[0] + dynamic[1]
    while off + 16 <= end:
        tag, val = struct.unpack_from("<qQ", data, off)
        off += 16
        if tag == 0:
            break
        if tag == 5:  # DT_STRTAB
            strtab = vaddr_to_offset(val)
        entries.append((tag, val))

    def string(idx: int) -> str:
        start = strtab + idx
        return data[start:data.index(b"\0", start)].decode()

    needed = [string(v) for t, v in entries if t == 1]
    runpath = [p for t, v in entries if t in (15, 29) for p in string(v).split(":") if p]
    return needed, runpath


# ------------------------------------------------------------------------------------ library lookup
def ldconfig_cache() -> dict[str, str]:
    """soname -> path from the ldconfig cache (x86-64 entries), empty if ldconfig is unavailable."""
    for exe in ("/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"):
        try:
            out = subprocess.run([exe, "-p"], capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            continue
        cache = {}
        for line in out.splitlines():
            m = re.match(r"\s*(\S+) \(([^)]*)\) => (\S+)", line)
            if m and ("x86-64" in m.group(2) or "64bit" in m.group(2)):
                cache.setdefault(m.group(1), m.group(3))
        return cache
    return {}


DEFAULT_DIRS = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib",
                "/usr/local/lib"]


def site_dirs() -> list[str]:
    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    dirs += [p for p in sys.path if p.endswith("site-packages")]
    return list(dict.fromkeys(d for d in dirs if os.path.isdir(d)))


def nvidia_lib_dirs() -> list[str]:
    """lib folders of the nvidia-* wheels (nvidia/cu13/lib, nvidia/cudnn/lib, ...)."""
    out = []
    for site in site_dirs():
        out += sorted(glob.glob(os.path.join(site, "nvidia", "*", "lib")))
    return out


class Resolver:
    def __init__(self) -> None:
        self.ld_library_path = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
        self.cache = ldconfig_cache()
        self.nvidia = nvidia_lib_dirs()

    def loader(self, soname: str, origin: str, runpath: list[str]) -> tuple[str | None, str]:
        """Where the dynamic loader would find soname for a library in origin: (path, how)."""
        rp = [p.replace("$ORIGIN", origin).replace("${ORIGIN}", origin) for p in runpath]
        for how, dirs in (("LD_LIBRARY_PATH", self.ld_library_path), ("RUNPATH", rp)):
            for d in dirs:
                if os.path.isfile(os.path.join(d, soname)):
                    return os.path.realpath(os.path.join(d, soname)), how
        if soname in self.cache:
            return self.cache[soname], "ldconfig cache"
        for d in DEFAULT_DIRS:
            if os.path.isfile(os.path.join(d, soname)):
                return os.path.join(d, soname), "default dir"
        return None, ""

    def wheel(self, soname: str) -> str | None:
        """Where the nvidia-* wheels hold soname (what preload_dlls / `import torch` would load)."""
        for d in self.nvidia:
            if os.path.isfile(os.path.join(d, soname)):
                return os.path.join(d, soname)
        return None


# ------------------------------------------------------------------------------------------- checks
def torch_cuda_version() -> str | None:
    """torch.version.cuda without importing torch (an import would load CUDA libraries itself)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    version_py = os.path.join(list(spec.submodule_search_locations)[0], "version.py")
    try:
        text = open(version_py, encoding="utf-8").read()
    except OSError:
        return None
    m = re.search(r"^cuda\s*(?::\s*\S+\s*)?=\s*['\"]([^'\"]+)['\"]", text, re.M)
    return m.group(1) if m else None


def preload_list(ort, cuda_major: str) -> list[str]:
    """The sonames onnxruntime.preload_dlls() loads on Linux (from onnxruntime itself where it can)."""
    fn = getattr(ort, "_get_nvidia_dll_paths", None)
    if fn is not None:
        try:
            return [p[-1] for p in fn(False, True, True)]
        except Exception:  # noqa: BLE001 - private API, fall back below
            pass
    return [f"libcublasLt.so.{cuda_major}", f"libcublas.so.{cuda_major}", f"libnvrtc.so.{cuda_major}",
            "libcurand.so.10", "libcufft.so.12" if cuda_major == "13" else "libcufft.so.11",
            f"libcudart.so.{cuda_major}", "libcudnn.so.9"]


# cuDNN 9 loads these sub-libraries from its own folder when the CUDA provider runs convolutions.
CUDNN_SUBLIBS = ["libcudnn_graph.so.9", "libcudnn_ops.so.9", "libcudnn_cnn.so.9", "libcudnn_adv.so.9",
                 "libcudnn_engines_precompiled.so.9", "libcudnn_engines_runtime_compiled.so.9",
                 "libcudnn_heuristic.so.9"]
OPTIONAL_RUNTIME = {"libnvrtc", "libcufft"}  # preload_dlls treats these as optional too


# -------------------------------------------------------------------------- the probe (a fresh process)
def resolve_libs(res: Resolver, capi: str, lib: str, extra: list[str], driver_loads: bool) -> dict:
    """Return {"library", "libs": {soname: {path, via, kind, status}}, "missing", "wheel_only", "failed"} for one
    provider library, resolving each soname with the loader's own search only and loading what it finds."""
    path = os.path.join(capi, lib)
    entry: dict = {"library": path, "libs": {}, "missing": [], "wheel_only": [], "failed": []}
    if not os.path.isfile(path):
        entry["missing"].append(lib)
        return entry
    needed, runpath = elf_dynamic(path)
    for soname in dict.fromkeys(needed + extra):
        if soname.startswith(SYSTEM_PREFIXES):
            continue
        found, how = res.loader(soname, capi, runpath)
        status = "ok"
        if soname in DRIVER_LIBS:
            status = "host driver" if driver_loads else "no driver"
            how = how or "the host NVIDIA driver (--gpus / NVIDIA Container Toolkit); not in the image"
        elif found is None:
            wheel = res.wheel(soname)
            if soname.rsplit(".so", 1)[0] in OPTIONAL_RUNTIME:
                status = "optional-missing"
            elif wheel:
                status, found = "wheel only", wheel
                how = "only in an nvidia-* wheel: found after `import torch`/preload_dlls(), not by the loader"
                entry["wheel_only"].append(soname)
            else:
                status = "missing"
                entry["missing"].append(soname)
        else:
            try:
                ctypes.CDLL(found)
            except OSError as e:
                status, how = "load failed", f"{how}; {e}"
                entry["failed"].append(soname)
        entry["libs"][soname] = {"path": found, "via": how, "kind": "DT_NEEDED" if soname in needed else
                                 "loaded at run time", "status": status}
    return entry


def conv_model_bytes() -> bytes:
    """Return a serialized ONNX model Y = Relu(Conv(X[1,3,8,8], W[4,3,3,3], B, pads 1)) built with onnx.helper."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "B")
    nodes = [helper.make_node("Conv", ["X", "W", "B"], ["C"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["C"], ["Y"])]
    graph = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4, 8, 8])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)  # readable by every onnxruntime convkit supports
    return model.SerializeToString()


def run_conv(ort, providers: list[str]) -> tuple[list[str], "object"]:
    """Return (the session's providers, output) of the conv model on ``providers`` with no CPU fallback."""
    import numpy as np

    opts = ort.SessionOptions()
    if "CPUExecutionProvider" not in providers:  # a CUDA session must run every node on CUDA, or fail
        opts.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    sess = ort.InferenceSession(conv_model_bytes(), opts, providers=providers)
    x = np.linspace(-1, 1, 3 * 8 * 8, dtype=np.float32).reshape(1, 3, 8, 8)
    return sess.get_providers(), sess.run(None, {"X": x})[0]


def probe() -> dict:
    """Return what a process that imports onnxruntime alone finds: versions, providers, libraries, conv runs.

    Meant to run in a fresh interpreter (see run_probe): nothing here imports torch or calls preload_dlls().
    """
    import numpy as np
    import onnxruntime as ort

    try:
        from onnxruntime.capi import build_and_package_info as bpi
        ort_cuda = getattr(bpi, "cuda_version", None)
    except ImportError:
        ort_cuda = None
    report: dict = {"onnxruntime": ort.__version__, "package": getattr(ort, "package_name", None),
                    "ort_cuda": ort_cuda, "torch_cuda": torch_cuda_version(),
                    "available": ort.get_available_providers(), "ld_library_path": os.environ.get("LD_LIBRARY_PATH"),
                    "providers": {}}
    try:
        ctypes.CDLL("libcuda.so.1")
        report["driver_loads"] = True
    except OSError:
        report["driver_loads"] = False
    res = Resolver()
    capi = os.path.join(os.path.dirname(ort.__file__), "capi")
    runtime = preload_list(ort, (ort_cuda or "0").split(".")[0]) + CUDNN_SUBLIBS
    for name, lib, extra in (("CUDAExecutionProvider", "libonnxruntime_providers_cuda.so", runtime),
                             ("TensorrtExecutionProvider", "libonnxruntime_providers_tensorrt.so", [])):
        report["providers"][name] = resolve_libs(res, capi, lib, extra, report["driver_loads"])
    cpu_providers, ref = run_conv(ort, ["CPUExecutionProvider"])
    report["cpu_conv"] = {"providers": cpu_providers, "ok": bool(np.isfinite(ref).all() and (ref >= 0).all())}
    gpu: dict = {"session_providers": None}
    if report["driver_loads"] and "CUDAExecutionProvider" in report["available"]:
        try:
            gpu["session_providers"], y = run_conv(ort, ["CUDAExecutionProvider"])
            gpu["max_abs_diff"] = float(np.abs(y - ref).max())
            gpu["result_ok"] = gpu["max_abs_diff"] < 1e-3  # TF32 convolutions differ from fp32 in ~1e-4
        except Exception as e:  # noqa: BLE001 - any failure to build or run the session is the finding
            gpu["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:500]
    report["gpu"] = gpu
    return report


def run_probe(env: dict | None = None, timeout: float = 300) -> dict:
    """Return probe() as run by a fresh interpreter with ``env`` (default: this process's environment).

    A fresh process is what makes the check honest: LD_LIBRARY_PATH is read once at process start, and a
    library this process already loaded (through torch, say) would hide a missing one.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "probe.json")
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--probe", out], env=env,
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not os.path.isfile(out):
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {"probe_error": f"probe process exited {proc.returncode}: {' | '.join(tail)}"}
        with open(out, encoding="utf-8") as f:
            return json.load(f)


# ------------------------------------------------------------------------------------ GPU requirements
def parse_nvidia_smi(text: str) -> list[dict]:
    """Return [{"name", "driver"}] from ``nvidia-smi --query-gpu=name,driver_version --format=csv,noheader``."""
    gpus = []
    for line in text.strip().splitlines():
        name, _, driver = line.rpartition(",")
        if name.strip() and driver.strip():
            gpus.append({"name": name.strip(), "driver": driver.strip()})
    return gpus


def nvidia_smi() -> list[dict] | None:
    """Return the GPUs nvidia-smi lists, None when nvidia-smi is absent or fails."""
    try:
        proc = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_nvidia_smi(proc.stdout) if proc.returncode == 0 else None


def driver_problem(driver: str, cuda_version: str | None) -> str | None:
    """Return why ``driver`` (e.g. "580.65.06") cannot run CUDA ``cuda_version``, None when it can."""
    if not cuda_version:
        return None
    cuda_major = int(cuda_version.split(".")[0])
    need = MIN_DRIVER.get(cuda_major)
    try:
        major = int(driver.split(".")[0])
    except ValueError:
        return f"unreadable driver version {driver!r}"
    if need is not None and major < need:
        return f"NVIDIA driver {driver} is too old for CUDA {cuda_version}: it needs driver ≥ {need}"
    return None


def torch_cuda_state() -> dict:
    """Return {"available", "version", "device"} from torch, imported in a separate process; {} without torch."""
    code = ("import json, torch; ok = torch.cuda.is_available(); print(json.dumps({'available': ok, "
            "'version': torch.version.cuda, 'device': torch.cuda.get_device_name(0) if ok else None}))")
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"available": False, "error": repr(e)}
    if proc.returncode != 0:
        return {} if "No module named 'torch'" in proc.stderr else {"available": False, "error": proc.stderr[-300:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------------------------------- verdict
def verdict(report: dict, require_gpu: bool = False,
            require_tensorrt: bool = False) -> tuple[int, list[str], list[str]]:
    """Return (exit status, errors, notes) for a report of probe() plus, with --require-gpu, "torch" and "gpus"."""
    if "probe_error" in report:
        return 1, [report["probe_error"]], []
    errors, notes = [], []
    ort_cuda, torch_cuda = report.get("ort_cuda"), report.get("torch_cuda")
    if ort_cuda is None or "CUDAExecutionProvider" not in report.get("available", []):
        errors.append("onnxruntime has no CUDA provider: install onnxruntime-gpu, not onnxruntime")
    if torch_cuda and ort_cuda and torch_cuda.split(".")[0] != ort_cuda.split(".")[0]:
        errors.append(f"torch uses CUDA {torch_cuda} but onnxruntime-gpu was built for CUDA {ort_cuda}: "
                      "one process can't hold both majors' libraries")
    cuda = report["providers"]["CUDAExecutionProvider"]
    if cuda["wheel_only"]:
        errors.append(f"CUDA provider: {', '.join(cuda['wheel_only'])} not found by the loader, only in the nvidia-* "
                      "wheels: add their lib folders to LD_LIBRARY_PATH (a process that imports torch first "
                      "hides this)")
    if cuda["missing"] or cuda["failed"]:
        errors.append(f"CUDA provider: missing {cuda['missing']}, failed to load {cuda['failed']}")
    trt = report["providers"]["TensorrtExecutionProvider"]
    trt_missing = trt["missing"] + trt["wheel_only"] + trt["failed"]
    if trt_missing:
        msg = f"TensorRT provider unavailable: {trt_missing} do not load (install TensorRT to use it)"
        (errors if require_tensorrt else notes).append(msg)
    if errors:
        return 1, errors, notes
    if require_gpu:
        gpu, torch_state, gpus = report.get("gpu", {}), report.get("torch", {}), report.get("gpus")
        if "CUDAExecutionProvider" not in (gpu.get("session_providers") or []) or not gpu.get("result_ok"):
            errors.append("--require-gpu: the CUDA provider did not run the test convolution"
                          + (f" ({gpu['error']})" if gpu.get("error") else
                             "" if report.get("driver_loads") else " (no driver: libcuda.so.1 does not load; "
                             "run with --gpus all)"))
        if torch_state and not torch_state.get("available"):
            errors.append("--require-gpu: torch.cuda.is_available() is False")
        if not gpus:
            errors.append("--require-gpu: nvidia-smi lists no GPU")
        for g in gpus or []:
            problem = driver_problem(g["driver"], torch_cuda or ort_cuda)
            if problem:
                errors.append(f"--require-gpu: {g['name']}: {problem}")
    return (2 if errors else 0), errors, notes


def print_report(report: dict) -> None:
    """Print the probe's findings, one line per library."""
    if "probe_error" in report:
        print(report["probe_error"])
        return
    print(f"onnxruntime {report['onnxruntime']} (package {report['package'] or '?'}), built for CUDA "
          f"{report['ort_cuda'] or 'none'}; torch built for CUDA {report['torch_cuda'] or 'none (or no torch)'}")
    print(f"available providers: {', '.join(report['available'])}")
    print(f"LD_LIBRARY_PATH: {report['ld_library_path'] or '(unset)'}")
    for name, entry in report["providers"].items():
        print(f"\n{name}: {entry['library']}")
        for soname, lib in entry["libs"].items():
            via = f"  [{lib['via']}]" if lib["via"] else ""
            print(f"  {soname:40s} {lib['status']:16s} {lib['path'] or '-'}{via}")
        for lib in entry["missing"]:
            if lib not in entry["libs"]:
                print(f"  {lib:40s} {'missing':16s} -")
    gpu = report.get("gpu", {})
    print(f"\nCPU provider conv: {'ok' if report['cpu_conv']['ok'] else 'WRONG'}; driver "
          f"{'loads' if report['driver_loads'] else 'absent (CPU-only host: expected)'}"
          + (f"; CUDA session {gpu['session_providers']}, max |Δ| vs CPU {gpu['max_abs_diff']:.1e}"
             if gpu.get("session_providers") else "") + (f"; error {gpu['error']}" if gpu.get("error") else ""))
    if "torch" in report:
        print(f"torch: {report['torch']}")
    if "gpus" in report:
        print(f"nvidia-smi: {report['gpus'] if report['gpus'] is not None else 'not available'}")


def main(argv: list[str] | None = None) -> int:
    """Run the check; returns the exit status (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--require-gpu", action="store_true",
                    help="also require the CUDA provider to run a model, torch to see the GPU and a new enough "
                         "driver (exit 2 otherwise)")
    ap.add_argument("--require-tensorrt", action="store_true", help="fail when the TensorRT provider can't load")
    ap.add_argument("--json", metavar="PATH", help="also write the findings as JSON")
    ap.add_argument("--probe", metavar="OUT", help=argparse.SUPPRESS)  # internal: the fresh-process half
    args = ap.parse_args(argv)
    if args.probe:
        with open(args.probe, "w", encoding="utf-8") as f:
            json.dump(probe(), f)
        return 0

    report = run_probe()
    if args.require_gpu:
        report["torch"] = torch_cuda_state()
        report["gpus"] = nvidia_smi()
    status, errors, notes = verdict(report, args.require_gpu, args.require_tensorrt)
    report.update(errors=errors, notes=notes, status=status)
    print_report(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    for note in notes:
        print("note: " + note)
    for e in errors:
        print("ERROR: " + e, file=sys.stderr)
    print("\nresult: " + ("OK: every library the CUDA provider needs loads from the loader's own search path "
                          "(libcuda.so.1 comes from the host driver)" if status == 0 else f"FAILED ({status})"))
    return status


if __name__ == "__main__":
    sys.exit(main())
