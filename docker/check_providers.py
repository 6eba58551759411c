#!/usr/bin/env python3
"""Check which shared libraries ONNX Runtime's CUDA and TensorRT execution providers would load.

Runs inside the convkit image (``docker run --entrypoint python convkit /opt/convkit/check_providers.py``)
or in any venv with onnxruntime-gpu. For each provider library in ``onnxruntime/capi`` it reads the ELF
``DT_NEEDED`` entries and resolves each one the way the dynamic loader would (the library's RUNPATH,
``LD_LIBRARY_PATH``, the ldconfig cache, the default directories), plus the CUDA / cuDNN libraries that
``onnxruntime.preload_dlls()`` loads from the ``nvidia-*`` wheels that torch installs. It then really
loads them (``preload_dlls()`` and ``ctypes``), which works without a GPU: only ``libcuda.so.1``, the
driver library, needs a driver. It is reported as provided by the host driver (the NVIDIA Container
Toolkit mounts it with ``--gpus``) and is not an error when absent.

Exit status: 0 when every library the CUDA provider needs is present and loads (libcuda.so.1 aside);
1 when one is missing or fails to load; 2 with ``--require-gpu`` when no GPU session can be made.
The TensorRT provider needs TensorRT (libnvinfer), which the image does not ship: reported, not an
error, unless ``--require-tensorrt``.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import importlib.metadata
import importlib.util
import json
import os
import re
import struct
import subprocess
import sys
import sysconfig

DRIVER_LIBS = {"libcuda.so.1", "libnvidia-ml.so.1"}  # come from the host driver, never from a wheel
# glibc and the C++ runtime: part of every base image, not worth listing one by one.
SYSTEM_PREFIXES = ("libc.so", "libm.so", "libdl.so", "librt.so", "libpthread.so", "ld-linux", "libstdc++.so",
                   "libgcc_s.so")


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--require-gpu", action="store_true",
                    help="also require a CUDA session to run on a GPU (exit 2 otherwise)")
    ap.add_argument("--require-tensorrt", action="store_true", help="fail when the TensorRT provider can't load")
    ap.add_argument("--json", metavar="PATH", help="also write the findings as JSON")
    args = ap.parse_args(argv)

    import onnxruntime as ort

    report: dict = {"onnxruntime": ort.__version__, "python": sys.version.split()[0], "providers": {}}
    errors: list[str] = []
    try:
        from onnxruntime.capi import build_and_package_info as bpi
        ort_cuda = getattr(bpi, "cuda_version", None)
    except ImportError:
        ort_cuda = None
    torch_cuda = torch_cuda_version()
    available = ort.get_available_providers()
    report.update(ort_cuda=ort_cuda, torch_cuda=torch_cuda, available=available)
    print(f"onnxruntime {ort.__version__} (package {getattr(ort, 'package_name', '?')}), built for CUDA "
          f"{ort_cuda or 'none'}; torch built for CUDA {torch_cuda or 'none (or no torch)'}")
    print(f"available providers: {', '.join(available)}")
    if ort_cuda is None:
        errors.append("onnxruntime has no CUDA build: install onnxruntime-gpu, not onnxruntime")
    cuda_major = (ort_cuda or "0").split(".")[0]
    if torch_cuda and ort_cuda and torch_cuda.split(".")[0] != cuda_major:
        errors.append(f"torch uses CUDA {torch_cuda} but onnxruntime-gpu was built for CUDA {ort_cuda}: "
                      "one process can't hold both majors' libraries")

    res = Resolver()
    print("nvidia wheel lib dirs:", *(res.nvidia or ["(none)"]), sep="\n  ")
    capi = os.path.join(os.path.dirname(ort.__file__), "capi")

    # 1. What preload_dlls() (or `import torch`) loads from the wheels, and whether it loads.
    runtime = preload_list(ort, cuda_major)
    preload_out = ""
    if hasattr(ort, "preload_dlls"):
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            try:
                ort.preload_dlls()
            except Exception as e:  # noqa: BLE001
                print(f"preload_dlls raised {e!r}")
        preload_out = buf.getvalue().strip()
    report["preload_dlls_output"] = preload_out

    # 2. Each provider's DT_NEEDED, resolved as the loader would, then what's in the wheels.
    for name, lib, extra in (("CUDAExecutionProvider", "libonnxruntime_providers_cuda.so", runtime + CUDNN_SUBLIBS),
                             ("TensorrtExecutionProvider", "libonnxruntime_providers_tensorrt.so", [])):
        path = os.path.join(capi, lib)
        entry: dict = {"library": path, "libs": {}, "missing": [], "failed": []}
        report["providers"][name] = entry
        print(f"\n{name}: {path}")
        if not os.path.isfile(path):
            entry["missing"].append(lib)
            print("  provider library not present")
            continue
        needed, runpath = elf_dynamic(path)
        for soname in list(dict.fromkeys(needed + extra)):
            if soname.startswith(SYSTEM_PREFIXES):
                continue
            how_needed = "DT_NEEDED" if soname in needed else "loaded at run time"
            # preload_dlls() / `import torch` load the wheel copies first; the provider's DT_NEEDED then
            # binds to those already-loaded sonames. Without them, the loader's own search applies.
            found = res.wheel(soname)
            how = "nvidia wheel (preload_dlls / import torch)" if found else ""
            if found is None:
                found, how = res.loader(soname, capi, runpath)
            status = "ok"
            if found is None:
                if soname in DRIVER_LIBS:
                    status = "host driver"
                    how = "provided by the host NVIDIA driver (--gpus / NVIDIA Container Toolkit); not in image"
                elif soname.rsplit(".so", 1)[0] in OPTIONAL_RUNTIME:
                    status = "optional-missing"
                else:
                    status = "missing"
                    entry["missing"].append(soname)
            elif soname not in DRIVER_LIBS:
                try:
                    ctypes.CDLL(found)
                except OSError as e:
                    status = "load failed"
                    entry["failed"].append(soname)
                    how = f"{how}; {e}"
            entry["libs"][soname] = {"path": found, "via": how, "kind": how_needed, "status": status}
            print(f"  {soname:40s} {status:16s} {found or '-'}" + (f"  [{how}]" if how else ""))

    # 3. With a driver present, run a one-node model on the GPU.
    gpu = {"driver": False, "session_providers": None}
    try:
        ctypes.CDLL("libcuda.so.1")
        gpu["driver"] = True
    except OSError:
        pass
    if gpu["driver"]:
        try:
            import numpy as np
            import onnx
            from onnx import TensorProto, helper

            g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
            model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
            model.ir_version = min(model.ir_version, 10)
            sess = ort.InferenceSession(onnx._serialize(model) if hasattr(onnx, "_serialize") else
                                        model.SerializeToString(),
                                        providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
            y = sess.run(None, {"x": np.array([[-1, 0, 1], [2, -2, 3]], dtype=np.float32)})[0]
            gpu["session_providers"] = sess.get_providers()
            gpu["result_ok"] = bool((y == np.maximum([[-1, 0, 1], [2, -2, 3]], 0)).all())
        except Exception as e:  # noqa: BLE001
            gpu["error"] = repr(e)
    report["gpu"] = gpu
    print(f"\nGPU: driver {'found' if gpu['driver'] else 'not found (CPU-only host: expected)'}"
          + (f"; session providers {gpu['session_providers']}" if gpu["session_providers"] else "")
          + (f"; error {gpu['error']}" if "error" in gpu else ""))
    if preload_out:
        print("preload_dlls() said:\n  " + preload_out.replace("\n", "\n  "))

    cuda = report["providers"]["CUDAExecutionProvider"]
    if cuda["missing"] or cuda["failed"]:
        errors.append(f"CUDA provider: missing {cuda['missing']}, failed to load {cuda['failed']}")
    trt = report["providers"]["TensorrtExecutionProvider"]
    if trt["missing"]:
        msg = f"TensorRT provider unavailable: missing {trt['missing']} (install TensorRT to use it)"
        if args.require_tensorrt:
            errors.append(msg)
        else:
            print("note: " + msg)
    status = 0
    if errors:
        status = 1
    elif args.require_gpu and "CUDAExecutionProvider" not in (gpu["session_providers"] or []):
        errors.append("--require-gpu: no CUDA session could be created")
        status = 2
    report["errors"] = errors
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    for e in errors:
        print("ERROR: " + e, file=sys.stderr)
    print("\nresult: " + ("OK: every library the CUDA provider needs is present (libcuda.so.1 comes from the host "
                          "driver)" if status == 0 else f"FAILED ({status})"))
    return status


if __name__ == "__main__":
    sys.exit(main())
