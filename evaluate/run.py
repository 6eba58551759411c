"""``evaluate_model``: accuracy, confusion and latency of one ONNX model (or a run's exported variants) under
ONNX Runtime, beside the run's PyTorch model when its checkpoint is at hand; writes eval.json/eval.md/plots.
"""

from __future__ import annotations

import datetime as _dt
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from convkit.errors import EXIT_GATE_FAILED, ConvkitError

CPU_BATCHES = (1, 8, 64, 256)
GPU_BATCHES = (1, 8, 64, 256, 1024)
VARIANT_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
# Largest tolerated accuracy drop, in percentage points, of ORT vs the PyTorch checkpoint. fp32 must match
# (0.1 point); fp16 rounding flips a few borderline images (0.3); static int8 quantization typically costs
# up to about a point on these small CNNs (1.0).
DEFAULT_MAX_DROP = {"fp32": 0.1, "fp16": 0.3, "int8": 1.0}


@dataclass
class EvalOptions:
    """Every knob of an evaluation; the CLI fills it from its options, ``evaluate_stage`` from its mode."""

    provider: str | None = None  # None = every provider that really works; or cpu|cuda|tensorrt|all
    dataset: str | None = None
    data_dir: str | None = None
    sample: bool | None = None  # None = as the run was trained (run dirs), else False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: str | None = None
    input_range: str | None = None
    warmup: int = 10
    runs: int = 50
    min_seconds: float = 1.0
    batch_sizes: tuple[int, ...] | None = None  # overrides both lists below
    cpu_batches: tuple[int, ...] = CPU_BATCHES
    gpu_batches: tuple[int, ...] = GPU_BATCHES
    threads: int | None = None  # CPU intra-op threads (ORT and PyTorch); None = physical cores
    precisions: tuple[str, ...] | None = None  # None = every variant found
    max_accuracy_drop: dict = field(default_factory=dict)  # points per precision, overriding DEFAULT_MAX_DROP
    out: str | None = None
    cudnn_conv_algo_search: str = "EXHAUSTIVE"
    cuda_graph: bool = True
    torch_compile: bool = True
    pytorch_latency: bool = True
    latency: bool = True
    device_id: int = 0
    eval_batch: int = 256


@dataclass
class Target:
    """What to evaluate: the ONNX files (precision → path), the run directory if any, where outputs go."""

    files: dict[str, Path]
    run_dir: Path | None
    out_dir: Path
    prefix: str


def resolve_target(path: Path, out: str | None = None) -> Target:
    """Return the Target for a run directory or an .onnx file; ConvkitError (exit 2) when neither fits."""
    from convkit.evaluate.reference import find_run_dir

    path = Path(path)
    if path.is_dir():
        if not (path / "model.onnx").is_file():
            hint = "run `convkit export` on it first" if (path / "checkpoint.pt").is_file() else \
                "pass a run directory holding model.onnx or an .onnx file"
            raise ConvkitError(f"{path} has no model.onnx; {hint}")
        files = {p: path / f for p, f in VARIANT_FILES.items() if (path / f).is_file()}
        run_dir = path if (path / "checkpoint.pt").is_file() else None
        return Target(files, run_dir, path, "eval")
    if not path.exists():
        raise ConvkitError(f"{path} not found; pass an .onnx file or a run directory")
    run_dir = find_run_dir(path)
    if run_dir is not None and path.name == "model.onnx":
        return resolve_target(path.parent)
    precision = next((p for p, f in VARIANT_FILES.items() if f == path.name), None)
    if run_dir is not None:
        return Target({precision or "fp32": path}, run_dir, run_dir, f"eval.{precision or path.stem}")
    out_dir = Path(out) if out else path.parent / f"{path.stem}_eval"
    return Target({"model": path}, None, out_dir, "eval")


def parse_max_drop(text: str | None) -> dict:
    """Return {precision: points} from "0.1" (fp32) or "fp32=0.1,fp16=0.5,int8=1"; ConvkitError when malformed."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        key, _, val = part.strip().rpartition("=")
        key = key.strip() or "fp32"
        if key not in DEFAULT_MAX_DROP:
            raise ConvkitError(f"--max-accuracy-drop: unknown precision {key!r}; use fp32, fp16 or int8")
        try:
            out[key] = float(val)
        except ValueError:
            raise ConvkitError(f"--max-accuracy-drop: {val!r} is not a number of percentage points") from None
        if out[key] < 0:
            raise ConvkitError("--max-accuracy-drop must be >= 0")
    return out


def _gpu_info() -> dict:
    info = {}
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    except Exception:
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            info["nvidia_smi"] = out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


def _strip(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "predictions"}


def _provider_batches(kind: str, opts: EvalOptions, spec) -> tuple[list[int], str | None]:
    sizes = list(opts.batch_sizes or (opts.cpu_batches if kind == "cpu" else opts.gpu_batches))
    if spec.fixed_batch:
        note = None
        if sizes != [spec.fixed_batch]:
            note = f"{spec.path.name} has a fixed batch size of {spec.fixed_batch}: latency measured at that size only"
        return [spec.fixed_batch], note
    return sizes, None


def evaluate_model(path: Path | str, options: EvalOptions | None = None, write: bool = True) -> dict:
    """Evaluate the model(s) at ``path`` (a run directory or an .onnx file); returns the eval.json dict.

    The dict holds ``accuracy`` (one entry per precision × provider, each with deltas vs PyTorch and the
    gate verdict when a checkpoint is at hand), ``pytorch`` (reference metrics), ``latency`` (flat rows:
    precision, provider, backend, batch, first_run/p50/p90/p99/mean/std/min ms, images/s, PyTorch p50 and
    ratio), ``summary`` (the train-all fields), ``gate`` ({"passed", "failures"}), ``files`` written,
    ``method``, ``hardware`` and ``notes``. Raises ConvkitError (exit 2) for bad input; a failed gate is
    reported in ``gate`` (the CLI turns it into exit 1).
    """
    import torch

    from convkit.data.load import load_dataset
    from convkit.envinfo import environment, physical_cores
    from convkit.evaluate import accuracy as acc_mod
    from convkit.evaluate import latency as lat
    from convkit.evaluate.model_io import Overrides, inspect_model
    from convkit.evaluate.providers import ProviderConfig, make_session, preload_cuda_libraries, select_providers
    from convkit.evaluate.reference import load_reference

    opts = options or EvalOptions()
    target = resolve_target(Path(path), opts.out)
    notes: list[str] = []
    files = dict(target.files)
    if opts.precisions:
        wanted = set(opts.precisions)
        files = {p: f for p, f in files.items() if p in wanted or p == "model"}
        if not files:
            raise ConvkitError(f"--precision {','.join(opts.precisions)} matches none of "
                               f"{', '.join(target.files)} in {path}")
    overrides = Overrides(dataset=opts.dataset, mean=opts.mean, std=opts.std, layout=opts.layout,
                          input_range=opts.input_range)
    specs = {}
    for prec, f in files.items():
        spec = inspect_model(f, overrides)
        specs[spec.precision if prec == "model" else prec] = spec
    primary_prec, primary = next(iter(specs.items()))

    # Data: as the run was trained unless overridden.
    ref = load_reference(target.run_dir) if target.run_dir is not None else None
    data_dir, sample = opts.data_dir, opts.sample
    if ref is not None and data_dir is None and sample is None:
        data_dir, sample = ref.config.get("data_dir"), bool(ref.config.get("sample"))
    data = load_dataset(primary.dataset, data_dir, sample=bool(sample))
    images = data.test_images.numpy()
    labels = data.test_labels.numpy()
    if ref is not None and (ref.config.get("dataset") != primary.dataset):
        notes.append(f"the checkpoint was trained on {ref.config.get('dataset')}, evaluated on {primary.dataset}")

    kinds, pnotes = select_providers(opts.provider, opts.device_id)
    notes += pnotes
    threads = int(opts.threads or physical_cores())
    cfgs = {k: ProviderConfig(k, threads=threads, device_id=opts.device_id,
                              cudnn_conv_algo_search=opts.cudnn_conv_algo_search) for k in kinds}
    gpu_used = any(k != "cpu" for k in kinds)
    if gpu_used:
        notes.append(preload_cuda_libraries())

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        # --- PyTorch reference accuracy (CPU, fp32 eager: the exact reference) ---
        pt_metrics = None
        if ref is not None:
            pt_scores = acc_mod.torch_scores(ref.model, images, ref.mean, ref.std, "cpu")
            pt_metrics = acc_mod.classification_metrics(pt_scores, labels, primary.class_names)
            pt_metrics["device"] = "cpu"

        # --- ORT accuracy per precision × provider ---
        limits = {**DEFAULT_MAX_DROP, **opts.max_accuracy_drop}
        accuracy, sessions, failures = [], {}, []
        for prec, spec in specs.items():
            for kind in kinds:
                try:
                    sess = make_session(str(spec.path), cfgs[kind])
                except ConvkitError as exc:
                    if prec == primary_prec and kind == kinds[0]:
                        raise
                    notes.append(f"{prec} on {kind} skipped: {exc.message}")
                    continue
                sessions[(prec, kind)] = sess
                batch = opts.eval_batch if kind == "cpu" else max(opts.eval_batch, 1024)
                scores = acc_mod.ort_scores(sess, spec, images, batch)
                m = acc_mod.classification_metrics(scores, labels, spec.class_names)
                entry = {"precision": prec, "provider": kind, "path": str(spec.path), **m}
                if pt_metrics is not None:
                    entry["vs_pytorch"] = acc_mod.compare_backends(m, pt_metrics)
                    drop = (pt_metrics["accuracy"] - m["accuracy"]) * 100
                    limit = limits.get(prec, DEFAULT_MAX_DROP["fp32"])
                    entry["gate"] = {"drop_points": drop, "max_drop_points": limit, "passed": drop <= limit + 1e-9}
                    if not entry["gate"]["passed"]:
                        failures.append(f"{prec} on {kind}: accuracy {m['accuracy']:.4f} is {drop:.2f} points below "
                                        f"PyTorch's {pt_metrics['accuracy']:.4f} (max {limit})")
                accuracy.append(entry)

        # --- Latency ---
        rows: list[dict] = []
        if opts.latency:
            timing = lat.Timing(warmup=opts.warmup, runs=opts.runs, min_seconds=opts.min_seconds)
            pt_cache: dict[tuple[str, str, int], dict] = {}
            for prec, spec in specs.items():
                for kind in kinds:
                    sess = sessions.get((prec, kind))
                    if sess is None:
                        continue
                    batches, note = _provider_batches(kind, opts, spec)
                    if note and note not in notes:
                        notes.append(note)
                    for b in batches:
                        x = spec.prepare(lat.make_batch(images, b))
                        base = {"precision": prec, "provider": kind}
                        if kind == "cpu":
                            rows.append({**base, "backend": "ort", **lat.ort_host_latency(sess, spec, x, timing)})
                        else:
                            rows.append({**base, "backend": "ort",
                                         **lat.ort_device_latency(sess, spec, x, timing, opts.device_id)})
                            sync = (lambda: torch.cuda.synchronize()) if torch.cuda.is_available() else None
                            rows.append({**base, "backend": "ort-e2e",
                                         **lat.ort_host_latency(sess, spec, x, timing, sync)})
                            if kind == "cuda" and opts.cuda_graph:
                                try:
                                    gsess = make_session(str(spec.path), cfgs[kind], cuda_graph=True)
                                    gtiming = replace(timing, warmup=max(timing.warmup, 3))
                                    rows.append({**base, "backend": "ort-cudagraph",
                                                 **lat.ort_device_latency(gsess, spec, x, gtiming, opts.device_id)})
                                    del gsess
                                except Exception as exc:  # graphs need every node on CUDA; report, don't fail
                                    msg = getattr(exc, "message", None) or str(exc).splitlines()[0][:200]
                                    note = f"{prec} CUDA graph at batch {b} not measured: {msg}"
                                    notes.append(note)
                        if ref is not None and opts.pytorch_latency and spec.layout == "NCHW":
                            dev = "cpu" if kind == "cpu" else f"cuda:{opts.device_id}"
                            xt = x.astype(np.float32)
                            modes = ["eager"] + (["compile"] if dev != "cpu" and opts.torch_compile else [])
                            for mode in modes:
                                key = (dev, mode, b)
                                if key not in pt_cache:
                                    try:
                                        pt_cache[key] = lat.torch_latency(ref.model, xt, timing, dev,
                                                                          compile=mode == "compile")
                                    except Exception as exc:  # e.g. torch.compile without a toolchain
                                        pt_cache[key] = {}
                                        notes.append(f"PyTorch {mode} on {dev} at batch {b} not measured: "
                                                     f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                            for r in rows:
                                if r["provider"] == kind and r["batch"] == b and r["precision"] == prec:
                                    for mode in modes:
                                        p = pt_cache[(dev, mode, b)].get("p50_ms")
                                        if p:
                                            r[f"pytorch_{mode}_p50_ms"] = p
                                            r[f"ratio_to_pytorch_{mode}"] = r["p50_ms"] / p
            for (dev, mode, b), st in sorted(pt_cache.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
                if st:
                    rows.append({"precision": "fp32", "provider": "cpu" if dev == "cpu" else "cuda",
                                 "backend": f"torch-{mode}", **st})
            ref.model.to("cpu") if ref is not None else None
    finally:
        torch.set_num_threads(old_threads)
    sessions.clear()

    # --- Summary fields for train-all ---
    def _acc(prec, kind):
        return next((a for a in accuracy if a["precision"] == prec and a["provider"] == kind), None)

    summary = {}
    main_acc = _acc(primary_prec, kinds[0])
    if main_acc:
        summary["ort_test_acc"] = main_acc["accuracy"]
        if pt_metrics is not None:
            summary["ort_acc_delta"] = main_acc["accuracy"] - pt_metrics["accuracy"]
    ort_rows = [r for r in rows if r["precision"] == primary_prec and r["backend"] == "ort"]
    for kind in ("cpu", "cuda"):
        b1 = [r for r in ort_rows if r["provider"] == kind and r["batch"] == 1]
        if b1:
            summary[f"ort_{kind}_b1_p50_ms"] = b1[0]["p50_ms"]
    if ort_rows:
        summary["ort_max_batch_ips"] = max(r["images_per_s"] for r in ort_rows if r["images_per_s"])

    env = environment(f"cuda:{opts.device_id}" if gpu_used and torch.cuda.is_available() else "cpu")
    hardware = {"cpu": env.get("cpu"), "cpu_physical_cores": env.get("cpu_physical_cores"), **_gpu_info(),
                **{k: env.get(k) for k in ("python", "platform", "convkit", "torch", "torchvision", "onnx",
                                          "onnxruntime", "cuda", "cudnn", "git_revision")}}
    result = {
        "schema": "convkit.eval/1",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "input": str(path),
        "run_dir": str(target.run_dir) if target.run_dir else None,
        "model": primary.describe(),
        "variants": {p: s.describe() for p, s in specs.items()},
        "dataset": {"name": primary.dataset, "split": "test", "n": int(len(labels)), "source": data.source,
                    "checksum": data.checksum},
        "providers": {"used": kinds, "options": {k: cfgs[k].describe() for k in kinds}},
        "pytorch": _strip(pt_metrics) if pt_metrics else None,
        "accuracy": [_strip(a) for a in accuracy],
        "latency": rows,
        "summary": summary,
        "gate": {"passed": not failures, "failures": failures, "max_drop_points": limits},
        "method": {
            "warmup": f"{opts.warmup} untimed calls after the first (first call timed separately as first_run_ms)",
            "repetitions": f"at least {opts.runs} timed calls and at least {opts.min_seconds} s",
            "clock": lat.CLOCK,
            "cpu_threads": f"{threads} intra-op threads (ORT) / torch.set_num_threads({threads}) (PyTorch)",
            "graph_optimization": "ORT_ENABLE_ALL",
            "gpu": ("IO binding with input and output on the device; ort-e2e includes host↔device copies; "
                    f"CUDA graphs {'on (separate session per static batch size)' if opts.cuda_graph else 'off'}; "
                    f"cudnn_conv_algo_search={opts.cudnn_conv_algo_search}; torch.compile "
                    f"{'on' if opts.torch_compile else 'off'}") if gpu_used else "not used",
            "inputs": "real test images (cycled to fill the batch), preprocessed once before timing",
            "pytorch_reference": "eager fp32 module rebuilt from checkpoint.pt; accuracy on CPU" if ref else
                                 "no checkpoint at hand: ORT figures only",
            "accuracy_gate": "ORT accuracy may be at most max_drop_points percentage points below PyTorch's",
        },
        "hardware": hardware,
        "notes": notes,
        "files": {},
    }
    if write:
        result["files"] = write_outputs(result, target, primary.class_names)
    return result


def write_outputs(result: dict, target: Target, class_names: list[str]) -> dict:
    """Write eval.json, eval.md, the latency plot and confusion PNG/CSV into ``target.out_dir``; returns their paths."""
    from convkit.atomic import ensure_writable_dir, write_json
    from convkit.evaluate import report

    out = ensure_writable_dir(target.out_dir)
    pre = target.prefix
    files = {}
    stem = "confusion" + pre[len("eval"):]
    for i, acc in enumerate(result["accuracy"]):
        # one confusion per precision, from its first provider
        if any(a["precision"] == acc["precision"] for a in result["accuracy"][:i]):
            continue
        suffix = "" if i == 0 else f".{acc['precision']}"
        title = f"{Path(acc['path']).name} — ORT {acc['provider']}, acc {acc['accuracy']:.4f} (n={acc['n']})"
        files[f"confusion_csv{suffix}"] = str(report.write_confusion_csv(out / f"{stem}{suffix}.csv", acc, class_names))
        files[f"confusion_png{suffix}"] = str(report.write_confusion_png(out / f"{stem}{suffix}.png", acc, class_names,
                                                                         title))
    png = report.write_latency_png(out / f"{pre.replace('eval', 'latency', 1)}.png", result["latency"],
                                   f"{Path(result['model']['path']).name}: p50 latency vs batch size")
    if png:
        files["latency_png"] = str(png)
    files["eval_md"] = str(out / f"{pre}.md")
    files["eval_json"] = str(out / f"{pre}.json")
    result["files"] = files
    report.write_markdown(out / f"{pre}.md", result)
    write_json(out / f"{pre}.json", result)
    return files


def gate_error(result: dict) -> ConvkitError | None:
    """Return a ConvkitError (exit 1) describing the failed accuracy gate(s) of ``result``, or None."""
    if result["gate"]["passed"]:
        return None
    return ConvkitError("accuracy gate failed: " + "; ".join(result["gate"]["failures"]), EXIT_GATE_FAILED)
