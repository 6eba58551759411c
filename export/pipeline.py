"""Export one checkpoint end to end: load, export, check, gate, write model files and ``export.json``.

Nothing is written until every input check and the export itself succeeded; every file is written
atomically. A failing gate still writes its report (and the rejected model as ``*.rejected.onnx``), then
raises ConvkitError with exit code 1.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from convkit.errors import EXIT_GATE_FAILED, ConvkitError

EXPORT_JSON = "export.json"
VARIANT_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
DEFAULT_GATES = {  # variant gates: argmax agreement with PyTorch, accuracy drop vs the fp32 ONNX file
    "fp16": {"min_agreement": 0.99, "max_acc_drop": 0.01},
    "int8": {"min_agreement": 0.0, "max_acc_drop": 0.01},  # int8 agreement is reported, not gated
}
CALIB_SEED = 0


def rejected_name(precision: str) -> str:
    """Return the file name a model that failed its gate is kept under (model.rejected.onnx, model.int8.rejected.onnx)."""
    return VARIANT_FILES[precision].replace(".onnx", ".rejected.onnx")


def _read_metrics(run_dir: Path) -> dict | None:
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ConvkitError(f"{path} is corrupt; retrain the run or delete metrics.json") from None


def _save_model(path: Path, model_proto) -> int:
    """Atomically write ``model_proto`` as one self-contained file; returns its size in bytes."""
    import onnx

    from convkit.atomic import atomic_path

    with atomic_path(path) as tmp:
        onnx.save_model(model_proto, str(tmp), save_as_external_data=False)
    return path.stat().st_size


def _check_precisions(precisions) -> list[str]:
    out = []
    for p in precisions or ():
        if p not in ("fp16", "int8"):
            raise ConvkitError(f"unknown precision {p!r}; use fp16 or int8 (fp32 is always exported)")
        if p not in out:
            out.append(p)
    return out


def export_checkpoint(checkpoint, experiment: str | None = None, out_dir=None, precisions=(), atol: float = 1e-4,
                      min_agreement: float = 0.999, n_images: int = 1000, calib_images: int = 512,
                      data_dir=None, gates: dict | None = None) -> dict:
    """Export ``checkpoint`` (a convkit checkpoint.pt) and return the export.json content as a dict.

    ``experiment`` defaults to the one recorded in the checkpoint; ``out_dir`` to the checkpoint's folder.
    Writes ``model.onnx`` (plus ``model.fp16.onnx`` / ``model.int8.onnx`` for ``precisions``) and
    ``export.json`` there. ``data_dir`` overrides where the run's dataset is read from. ``gates`` overrides
    DEFAULT_GATES per variant, e.g. {"int8": {"max_acc_drop": 0.02}}.
    Raises ConvkitError: exit 2 for bad input (nothing written), exit 1 when a gate fails (report written).
    """
    t0 = time.perf_counter()
    precisions = _check_precisions(precisions)
    for name, value in (("n-images", n_images), ("calib-images", calib_images), ("atol", atol)):
        if not value > 0:
            raise ConvkitError(f"--{name} must be positive, got {value}")
    if not 0.0 <= min_agreement <= 1.0:
        raise ConvkitError(f"--min-agreement must be between 0 and 1, got {min_agreement}")
    gates = {p: {**DEFAULT_GATES[p], **((gates or {}).get(p) or {})} for p in DEFAULT_GATES}

    import numpy as np
    import onnx
    import onnxruntime
    import torch

    import convkit
    from convkit.atomic import ensure_writable_dir, write_json
    from convkit.data.load import load_dataset
    from convkit.onnx_meta import build_metadata, file_sha256, set_metadata
    from convkit.export.onnx_export import MAX_BATCH, OPSET, TRACE_BATCH, check_onnx, export_onnx
    from convkit.data.loader import normalize
    from convkit.export.parity import VARIANT_BATCH_SIZES, fp32_gate, run_parity, torch_logits, variant_gate
    from convkit.export.quantize import CALIB_METHOD, calibration_images, to_fp16, to_int8
    from convkit.models import create_model
    from convkit.suite import get_experiment
    from convkit.artifacts import load_checkpoint, load_weights

    # ---- inputs: checkpoint, architecture, output folder, data (nothing written yet) ----------------------------
    checkpoint = Path(checkpoint)
    ckpt = load_checkpoint(checkpoint)
    cfg = ckpt["config"] if isinstance(ckpt["config"], dict) else {}
    exp_name = experiment or cfg.get("experiment")
    if not exp_name:
        raise ConvkitError(f"{checkpoint} records no experiment; pass --experiment NAME")
    exp = get_experiment(exp_name)
    model = create_model(exp.model)
    if not isinstance(ckpt["model"], dict):
        raise ConvkitError(f"{checkpoint} is corrupt (its model entry is not a state_dict); retrain or restore it")
    load_weights(model, ckpt["model"], str(checkpoint)).eval()
    mcfg = model.default_cfg
    out_dir = ensure_writable_dir(Path(out_dir) if out_dir is not None else checkpoint.parent)

    same_dataset = cfg.get("dataset") in (None, exp.dataset)
    sample = bool(cfg.get("sample", False)) if same_dataset else False
    ddir = data_dir if data_dir is not None else (cfg.get("data_dir") if same_dataset else None)
    data = load_dataset(exp.dataset, ddir, sample=sample)
    n = min(int(n_images), len(data.test_images))
    x_t = normalize(data.test_images[:n], mcfg.mean, mcfg.std)
    labels = data.test_labels[:n].numpy()
    x = x_t.numpy()

    metrics = _read_metrics(checkpoint.parent)
    sha = file_sha256(checkpoint)

    # ---- export + validity -----------------------------------------------------------------------------------
    t_exp = time.perf_counter()
    proto = export_onnx(model, tuple(mcfg.input_shape))
    export_s = time.perf_counter() - t_exp

    ref = torch_logits(model, x_t)
    pytorch_acc_n = float((ref.argmax(1) == labels).mean())
    if metrics and isinstance(metrics.get("test_acc"), (int, float)):
        pt_acc, pt_acc_source = float(metrics["test_acc"]), "metrics.json"
    else:
        pt_acc, pt_acc_source = pytorch_acc_n, f"measured here on the first {n} test images (no metrics.json)"

    def meta_for(precision: str) -> dict:
        return build_metadata(experiment=exp.name, model=exp.model, dataset=exp.dataset, class_names=mcfg.classes,
                              mean=mcfg.mean, std=mcfg.std, pytorch_test_acc=pt_acc, opset=OPSET,
                              precision=precision, checkpoint_sha256=sha)

    set_metadata(proto, meta_for("fp32"))
    check_onnx(proto)
    fp32_bytes = proto.SerializeToString()

    # ---- parity gate ------------------------------------------------------------------------------------------
    parity = run_parity(fp32_bytes, x, ref, labels)
    gate = fp32_gate(parity, atol, min_agreement)
    report = {
        "experiment": exp.name,
        "model": exp.model,
        "dataset": exp.dataset,
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": sha,
        "checkpoint_epoch": ckpt.get("epoch"),
        "out_dir": str(out_dir),
        "data_source": data.source,
        "sample": sample,
        "exporter": "torch.onnx.export(dynamo=True, external_data=False, optimize=True) of the eager module in eval()",
        "opset": OPSET,
        "input": {"name": "input", "shape": ["batch", *mcfg.input_shape], "dtype": "float32", "layout": "NCHW",
                  "normalization": "(pixels/255 - mean) / std", "mean": list(mcfg.mean), "std": list(mcfg.std)},
        "output": {"name": "logits", "shape": ["batch", mcfg.num_classes], "dtype": "float32"},
        "dynamic_batch": {"dim": "batch", "min": 1, "max": MAX_BATCH, "trace_batch": TRACE_BATCH},
        "versions": {"convkit": convkit.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "numpy": np.__version__},
        "pytorch_test_acc": pt_acc,
        "pytorch_test_acc_source": pt_acc_source,
        "pytorch_acc_on_parity_images": pytorch_acc_n,
        "export_time_s": export_s,
        "metadata": meta_for("fp32"),
        "precisions": {},
        "files": {},  # precision -> path of each file that passed its gate
        "rejected_files": {},  # precision -> path of each file kept as *.rejected.onnx
        "gate": "pass",
        "failed": [],
    }
    files: dict[str, tuple[Path, object]] = {}  # what to write: precision -> (path, proto)
    report["precisions"]["fp32"] = {"file": None, "size_bytes": len(fp32_bytes), "parity": parity, "gate": gate}
    if gate["pass"]:
        files["fp32"] = (out_dir / VARIANT_FILES["fp32"], proto)
    else:
        report["failed"].append("fp32")
        files["fp32"] = (out_dir / rejected_name("fp32"), proto)

    # ---- variants ---------------------------------------------------------------------------------------------
    for precision in precisions:
        entry: dict = {"gate_settings": gates[precision]}
        report["precisions"][precision] = entry
        if not gate["pass"]:
            entry["skipped"] = "fp32 export failed its parity gate"
            continue
        if precision == "fp16":
            variant = to_fp16(proto)
            entry["conversion"] = "onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)"
        else:
            k = min(int(calib_images), len(data.train_images))
            idx, calib_u8 = calibration_images(data.train_images, k, CALIB_SEED)
            calib = normalize(calib_u8, mcfg.mean, mcfg.std).numpy()
            variant, settings = to_int8(proto, calib)
            entry["quantization"] = {**settings, "calibration_split": "train", "calibration_seed": CALIB_SEED,
                                     "calibration_method": CALIB_METHOD}
        set_metadata(variant, meta_for(precision))
        check_onnx(variant)
        vbytes = variant.SerializeToString()
        vpar = run_parity(vbytes, x, ref, labels, batch_sizes=VARIANT_BATCH_SIZES)
        vgate = variant_gate(precision, vpar, parity["accuracy"], **gates[precision])
        entry.update({"size_bytes": len(vbytes), "fp32_size_bytes": len(fp32_bytes),
                      "size_ratio": len(vbytes) / len(fp32_bytes), "parity": vpar, "gate": vgate,
                      "fp32_onnx_accuracy": parity["accuracy"]})
        if vgate["pass"]:
            files[precision] = (out_dir / VARIANT_FILES[precision], variant)
        else:
            report["failed"].append(precision)
            files[precision] = (out_dir / rejected_name(precision), variant)

    # ---- write: models first, then the report; remove stale model files the new report does not describe -----
    if report["failed"]:
        report["gate"] = "fail"
    for precision, (path, vproto) in files.items():
        size = _save_model(path, vproto)
        report["precisions"][precision]["file"] = str(path)
        report["precisions"][precision]["size_bytes"] = size
        report["files" if path.name == VARIANT_FILES[precision] else "rejected_files"][precision] = str(path)
    # Files of an earlier export that this one did not produce would contradict export.json: remove them.
    produced = {path.name for path, _ in files.values()}
    report["removed_stale_files"] = []
    for precision in VARIANT_FILES:
        for name in (VARIANT_FILES[precision], rejected_name(precision)):
            if name not in produced and (out_dir / name).is_file():
                (out_dir / name).unlink()
                report["removed_stale_files"].append(name)
    report["total_time_s"] = time.perf_counter() - t0
    write_json(out_dir / EXPORT_JSON, report)
    if report["failed"]:
        reasons = [r for p in report["failed"] for r in report["precisions"][p]["gate"]["reasons"]]
        raise ConvkitError(f"{exp.name}: export gate failed: {'; '.join(reasons)} (report in {out_dir / EXPORT_JSON})",
                           EXIT_GATE_FAILED)
    return report


def export_run(run_dir, precisions=(), atol: float = 1e-4, min_agreement: float = 0.999, n_images: int = 1000,
               calib_images: int = 512, data_dir=None, gates: dict | None = None) -> dict:
    """Export the run directory ``run_dir`` (its checkpoint.pt) next to the checkpoint; returns the export.json dict.

    See ``export_checkpoint`` for the arguments and errors (exit 2 bad input, exit 1 gate failed after writing
    the report).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConvkitError(f"run directory {run_dir} not found; pass a folder made by `convkit train`")
    return export_checkpoint(run_dir / "checkpoint.pt", None, run_dir, precisions=precisions, atol=atol,
                             min_agreement=min_agreement, n_images=n_images, calib_images=calib_images,
                             data_dir=data_dir, gates=gates)


def find_runs(suite_dir) -> list[Path]:
    """Return the run directories (folders holding a checkpoint.pt) directly under ``suite_dir``, sorted."""
    suite_dir = Path(suite_dir)
    if not suite_dir.is_dir():
        raise ConvkitError(f"suite directory {suite_dir} not found; pass e.g. runs/seed")
    runs = sorted(p for p in suite_dir.iterdir() if p.is_dir() and (p / "checkpoint.pt").is_file())
    if not runs:
        raise ConvkitError(f"no run directories with a checkpoint.pt under {suite_dir}")
    return runs


def export_all(suite_dir, on_result=None, **kwargs) -> dict:
    """Export every run under ``suite_dir``, continuing past failures.

    Returns {"results": {run_dir: export dict or {"error": message, "exit_code": code}}, "exit_code": worst code
    (0 when all passed)}. ``on_result(run_dir, result)`` is called after each run; ``kwargs`` go to export_run.
    """
    results, worst = {}, 0
    for run in find_runs(suite_dir):
        try:
            res = export_run(run, **kwargs)
        except ConvkitError as exc:
            res = {"error": exc.message, "exit_code": exc.exit_code}
            worst = max(worst, exc.exit_code)
        results[str(run)] = res
        if on_result:
            on_result(run, res)
    return {"results": results, "exit_code": worst}


__all__ = ["export_checkpoint", "export_run", "export_all", "find_runs", "EXPORT_JSON", "VARIANT_FILES",
           "DEFAULT_GATES"]
