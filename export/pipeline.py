"""Export one checkpoint end to end: load, export, check, gate, write model files and ``export.json``.

Nothing is written until every input check and the export itself succeeded; every file is written
atomically. A failing gate still writes its report (and the rejected model as ``*.rejected.onnx``), then
raises ConvkitError with exit code 1. Gates are those of convkit.gates, in percentage points.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch

import convkit
from convkit import gates
from convkit.artifacts import (
    CHECKPOINT,
    CONFIG,
    EXPORT_JSON,
    METRICS,
    VARIANT_FILES,
    RunModel,
    data_settings,
    ensure_same_experiment,
    load_run_model,
    read_artifact,
    rejected_name,
    run_folders,
    run_lock,
    write_artifact,
)
from convkit.atomic import atomic_path, ensure_writable_dir
from convkit.data.load import LoadedDataset, load_dataset
from convkit.data.loader import normalize
from convkit.devices import reference_device
from convkit.errors import EXIT_GATE_FAILED, ConvkitError, failure_of
from convkit.export import divergence
from convkit.export.onnx_export import MAX_BATCH, OPSET, TRACE_BATCH, check_onnx, export_onnx
from convkit.export.parity import VARIANT_BATCH_SIZES, fp32_gate, run_parity, variant_gate
from convkit.export.quantize import CALIB_METHOD, CALIB_METHODS, INT8_OPSET, calibration_images, to_fp16, to_int8
from convkit.onnx_meta import ModelIdentity, build_metadata, set_metadata
from convkit.reference import reference_logits
from convkit.suite import get_experiment

CALIB_SEED = 0
# The columns this stage adds to the suite summary (none shown; its values are kept in summary.json).
SUMMARY_COLUMNS: tuple = ()


@dataclass
class ExportSettings:
    """How to export and gate: variants, parity images, calibration images, data folder, gates in points."""

    precisions: tuple[str, ...] = ()
    atol: float = gates.FP32_ATOL
    max_acc_drop: dict = field(default_factory=lambda: dict(gates.MAX_ACC_DROP))
    max_disagreement: dict = field(default_factory=lambda: dict(gates.MAX_DISAGREEMENT))
    n_images: int = 1000
    calib_images: int = 512
    data_dir: str | None = None
    device: str | None = None  # where the PyTorch reference runs (fp32, TF32 off); None: cuda when usable
    keep_fp32: str | tuple | None = None  # int8: "auto" or tensor/module names kept fp32 (convkit.export.keep_fp32)
    calibration: str = CALIB_METHOD  # int8 calibration method: MinMax, Entropy or Percentile

    def check(self) -> "ExportSettings":
        """Return self after validating every value; ConvkitError (exit 2) naming the bad option."""
        for p in self.precisions:
            if p not in gates.VARIANTS:
                raise ConvkitError(f"unknown precision {p!r}; use fp16 or int8 (fp32 is always exported)")
        self.precisions = tuple(dict.fromkeys(self.precisions))
        if self.calibration not in CALIB_METHODS:
            raise ConvkitError(f"unknown calibration method {self.calibration!r}; use {', '.join(CALIB_METHODS)}")
        if self.keep_fp32 and "int8" not in self.precisions:
            raise ConvkitError("--keep-fp32 keeps parts of the int8 file in fp32: add --precision int8")
        for name, value in (("n-images", self.n_images), ("calib-images", self.calib_images), ("atol", self.atol)):
            if not value > 0:
                raise ConvkitError(f"--{name} must be positive, got {value}")
        return self


@dataclass
class Inputs:
    """A checked checkpoint, its experiment, where outputs go, and the test images the gate runs on."""

    run: RunModel
    experiment: object  # convkit.suite.Experiment
    out_dir: Path
    data: LoadedDataset
    sample: bool
    x: torch.Tensor  # normalized test images [n, C, H, W]
    labels: np.ndarray
    metrics: dict | None
    sha256: str


def load_inputs(checkpoint: Path, experiment: str | None, out_dir, settings: ExportSettings) -> Inputs:
    """Return the Inputs of an export; ConvkitError (exit 2) for any bad input, before anything is written."""
    run = load_run_model(checkpoint, model_name=get_experiment(experiment).model if experiment else None)
    name_in_ckpt = run.config.get("experiment")
    exp = get_experiment(experiment or name_in_ckpt or _missing_experiment(checkpoint))
    folder = checkpoint.parent
    metrics = read_artifact(folder / METRICS, "metrics")
    config_doc = read_artifact(folder / CONFIG, "config")
    ensure_same_experiment(folder, exp.name, checkpoint=name_in_ckpt, metrics=metrics, config=config_doc)
    out = ensure_writable_dir(Path(out_dir) if out_dir is not None else folder)
    ddir, sample, max_images = data_settings(run.config, exp.dataset)
    data = load_dataset(exp.dataset, settings.data_dir if settings.data_dir is not None else ddir, sample=sample,
                        max_images=max_images)
    n = min(int(settings.n_images), len(data.test_images))
    x = normalize(data.test_images[:n], run.mean, run.std)
    return Inputs(run, exp, out, data, sample, x, data.test_labels[:n].numpy(), metrics, run.checkpoint_sha256)


def _missing_experiment(checkpoint: Path) -> str:
    raise ConvkitError(f"{checkpoint} records no experiment; pass --experiment NAME")


def export_checkpoint(checkpoint, experiment: str | None = None, out_dir=None,
                      settings: ExportSettings | None = None, **kwargs) -> dict:
    """Export ``checkpoint`` (a convkit checkpoint.pt) and return the export.json content as a dict.

    ``experiment`` defaults to the one recorded in the checkpoint; ``out_dir`` to the checkpoint's folder.
    Writes ``model.onnx`` (plus ``model.fp16.onnx`` / ``model.int8.onnx`` for the settings' precisions) and
    ``export.json`` there; ``kwargs`` are ExportSettings fields when no ``settings`` are given. Raises
    ConvkitError: exit 2 for bad input (nothing written), exit 1 when a gate fails (report written).
    """
    settings = (settings or ExportSettings(**kwargs)).check()
    folder = Path(out_dir) if out_dir is not None else Path(checkpoint).parent
    with run_lock(folder, f"convkit export {checkpoint}"):
        return _export(Path(checkpoint), experiment, out_dir, settings)


def _export(checkpoint: Path, experiment: str | None, out_dir, settings: ExportSettings) -> dict:
    t0 = time.perf_counter()
    inputs = load_inputs(checkpoint, experiment, out_dir, settings)
    t_exp = time.perf_counter()
    proto = export_onnx(inputs.run.model, tuple(inputs.run.default_cfg.input_shape))
    export_s = time.perf_counter() - t_exp
    settings.device = reference_device(settings.device)
    ref = reference_for(inputs, settings.device)
    report = base_report(inputs, ref, export_s)
    set_metadata(proto, metadata_for(inputs, report["pytorch_test_acc"], "fp32"))
    check_onnx(proto)
    files = {"fp32": gate_fp32(report, proto, inputs, ref, settings)}
    for precision in settings.precisions:
        variant = gate_variant(report, precision, proto, inputs, ref, settings)
        if variant is not None:
            files[precision] = variant
    write_files(report, files, inputs.out_dir)
    report["total_time_s"] = time.perf_counter() - t0
    write_artifact(inputs.out_dir / EXPORT_JSON, "export", report)
    if report["failed"]:
        reasons = [f"{p}: {r}" for p in report["failed"] for r in report["precisions"][p]["gate"]["reasons"]]
        raise ConvkitError(f"{inputs.experiment.name}: export gate failed: {'; '.join(reasons)}"
                           f"{divergence.note(report)} (report in {inputs.out_dir / EXPORT_JSON})", EXIT_GATE_FAILED)
    return report


def reference_for(inputs: Inputs, device: str) -> np.ndarray:
    """Return the PyTorch fp32 logits of the parity images. They come from the logits of the whole test split,
    read from the run's cache or computed on ``device`` and cached (convkit.reference), so train-all's
    evaluation of this checkpoint on this data reuses them."""
    logits = reference_logits(inputs.run, inputs.data.test_images, inputs.data.checksum, device)
    return logits[:len(inputs.x)]


def metadata_for(inputs: Inputs, pytorch_acc: float, precision: str) -> dict:
    """Return the ONNX metadata of one exported file (see convkit.onnx_meta)."""
    exp, mcfg = inputs.experiment, inputs.run.default_cfg
    identity = ModelIdentity(exp.name, exp.model, exp.dataset, tuple(mcfg.classes), tuple(mcfg.mean),
                             tuple(mcfg.std), inputs.sha256)
    return build_metadata(identity, pytorch_test_acc=pytorch_acc, opset=INT8_OPSET if precision == "int8" else OPSET,
                          precision=precision)


def base_report(inputs: Inputs, ref: np.ndarray, export_s: float) -> dict:
    """Return export.json's fields known before any gate ran."""
    exp, mcfg = inputs.experiment, inputs.run.default_cfg
    # Export writes only what it measured (never metrics.json's figure, which may be stale or edited): the
    # checkpoint's fp32 accuracy on the parity images, saying how many of the test split they are.
    pt_acc = float((ref.argmax(1) == inputs.labels).mean())
    n_test = len(inputs.data.test_images)
    pt_source = (f"measured by export: the checkpoint in fp32 (TF32 off) on the first {len(ref):,} of the "
                 f"{n_test:,} test images of {exp.dataset}" + (" (the whole test split)" if len(ref) == n_test else ""))
    return {
        "experiment": exp.name, "model": exp.model, "dataset": exp.dataset,
        "checkpoint": str(inputs.run.checkpoint), "checkpoint_sha256": inputs.sha256,
        "checkpoint_epoch": inputs.run.epoch, "out_dir": str(inputs.out_dir),
        "data_source": inputs.data.source, "sample": inputs.sample,
        "exporter": "torch.onnx.export(dynamo=True, external_data=False, optimize=True) of the eager module in eval()",
        "opset": OPSET,
        "input": {"name": "input", "shape": ["batch", *mcfg.input_shape], "dtype": "float32", "layout": "NCHW",
                  "normalization": "(pixels/255 - mean) / std", "mean": list(mcfg.mean), "std": list(mcfg.std)},
        "output": {"name": "logits", "shape": ["batch", mcfg.num_classes], "dtype": "float32"},
        "dynamic_batch": {"dim": "batch", "min": 1, "max": MAX_BATCH, "trace_batch": TRACE_BATCH},
        "versions": {"convkit": convkit.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "numpy": np.__version__},
        "pytorch_test_acc": pt_acc, "pytorch_test_acc_source": pt_source, "pytorch_test_acc_images": len(ref),
        "pytorch_acc_on_parity_images": pt_acc,
        "export_time_s": export_s,
        "metadata": metadata_for(inputs, pt_acc, "fp32"),
        "gates": {"unit": "percentage points of the parity images", "max_acc_drop": None, "max_disagreement": None},
        "precisions": {}, "files": {}, "rejected_files": {}, "gate": gates.PASSED, "failed": [],
    }


def gate_fp32(report: dict, proto, inputs: Inputs, ref: np.ndarray, settings: ExportSettings) -> tuple[Path, object]:
    """Run the fp32 parity gate into ``report``; returns (path to write the model to, proto)."""
    report["gates"].update(max_acc_drop=settings.max_acc_drop, max_disagreement=settings.max_disagreement)
    fp32_bytes = proto.SerializeToString()
    parity = run_parity(fp32_bytes, inputs.x.numpy(), ref, inputs.labels, reference_device=settings.device)
    gate = fp32_gate(parity, settings.atol, settings.max_disagreement["fp32"])
    report["precisions"]["fp32"] = {"file": None, "size_bytes": len(fp32_bytes), "parity": parity, "gate": gate}
    if gate["passed"]:
        return inputs.out_dir / VARIANT_FILES["fp32"], proto
    report["failed"].append("fp32")
    report["precisions"]["fp32"]["divergence"] = divergence.locate(proto, inputs.run.model, inputs.x.numpy(),
                                                                   settings.device, settings.atol)
    return inputs.out_dir / rejected_name("fp32"), proto


def gate_variant(report: dict, precision: str, proto, inputs: Inputs, ref: np.ndarray,
                 settings: ExportSettings) -> tuple[Path, object] | None:
    """Convert, check and gate one fp16/int8 variant into ``report``; returns (path, proto), or None when skipped."""
    limits = {"max_drop_points": settings.max_acc_drop[precision],
              "max_disagreement_points": settings.max_disagreement.get(precision)}
    entry: dict = {"gate_settings": limits}
    report["precisions"][precision] = entry
    fp32 = report["precisions"]["fp32"]
    if not fp32["gate"]["passed"]:
        entry["skipped"] = "fp32 export failed its parity gate"
        return None
    variant = convert(precision, proto, inputs, settings, entry, ref)
    set_metadata(variant, {**metadata_for(inputs, report["pytorch_test_acc"], precision), **keep_metadata(entry)})
    check_onnx(variant)
    vbytes = variant.SerializeToString()
    vpar = run_parity(vbytes, inputs.x.numpy(), ref, inputs.labels, batch_sizes=VARIANT_BATCH_SIZES,
                      reference_device=settings.device)
    vgate = variant_gate(precision, vpar, report["pytorch_acc_on_parity_images"], **limits)
    entry.update({"size_bytes": len(vbytes), "fp32_size_bytes": fp32["size_bytes"],
                  "size_ratio": len(vbytes) / fp32["size_bytes"], "parity": vpar, "gate": vgate,
                  "fp32_onnx_accuracy": fp32["parity"]["accuracy"]})
    if vgate["passed"]:
        return inputs.out_dir / VARIANT_FILES[precision], variant
    report["failed"].append(precision)
    if precision == "fp16":  # name the first module the fp16 file stops matching (int8: convkit diagnose)
        entry["divergence"] = divergence.locate(variant, inputs.run.model, inputs.x.numpy(), settings.device,
                                                divergence.ATOL, divergence.FP16_RTOL, metadata_from=proto)
    return inputs.out_dir / rejected_name(precision), variant


def convert(precision: str, proto, inputs: Inputs, settings: ExportSettings, entry: dict, ref: np.ndarray):
    """Return the fp16 or int8 variant of ``proto`` (int8 calibrated on ``settings.calib_images`` training images,
    parts kept fp32 as ``settings.keep_fp32`` asks, measured against ``ref``); records how it was made in ``entry``."""
    if precision == "fp16":
        entry["conversion"] = "onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)"
        return to_fp16(proto)
    train = inputs.data.train_images
    _, calib_u8 = calibration_images(train, min(len(train), int(settings.calib_images)), CALIB_SEED)
    calib = normalize(calib_u8, inputs.run.mean, inputs.run.std).numpy()
    variant, quant = to_int8(proto, calib, settings.calibration)
    entry["quantization"] = {**quant, "calibration_split": "train", "calibration_seed": CALIB_SEED,
                             "calibration_method": settings.calibration}
    if settings.keep_fp32:
        variant = keep_fp32_variant(proto, calib, (inputs.x.numpy(), ref, inputs.labels), settings, entry)
    return variant


def keep_fp32_variant(proto, calib: np.ndarray, measured: tuple, settings: ExportSettings, entry: dict):
    """Return the int8 variant with ``settings.keep_fp32`` kept in fp32 (``measured``: parity images, PyTorch's
    logits, labels) and record the set, its search and its speed in ``entry["keep_fp32"]``."""
    from convkit.export.keep_fp32 import int8_keeping_fp32

    x, ref, labels = measured
    limits = {"max_drop_points": settings.max_acc_drop["int8"],
              "max_disagreement_points": settings.max_disagreement.get("int8")}
    variant, section = int8_keeping_fp32(proto, calib, x, ref, labels, limits, settings.calibration,
                                         settings.keep_fp32)
    entry["keep_fp32"] = section
    entry["quantization"]["nodes_to_exclude"] = [n for k in section["kept"] for n in k["nodes"]]
    return variant


def keep_metadata(entry: dict) -> dict:
    """Return the ONNX metadata recording the tensor groups kept fp32 ({} when none were asked)."""
    if "keep_fp32" not in entry:
        return {}
    from convkit.export.keep_fp32 import METADATA_KEY, metadata_value

    return {METADATA_KEY: metadata_value(entry["keep_fp32"])}


def write_files(report: dict, files: dict, out_dir: Path) -> None:
    """Write every model file, fill in their paths and sizes, and remove files of an earlier export this one
    did not produce (they would contradict export.json)."""
    for precision, (path, proto) in files.items():
        with atomic_path(path) as tmp:
            onnx.save_model(proto, str(tmp), save_as_external_data=False)
        report["precisions"][precision]["file"] = str(path)
        report["precisions"][precision]["size_bytes"] = path.stat().st_size
        report["files" if path.name == VARIANT_FILES[precision] else "rejected_files"][precision] = str(path)
    produced = {path.name for path, _ in files.values()}
    report["removed_stale_files"] = []
    for precision in VARIANT_FILES:
        for name in (VARIANT_FILES[precision], rejected_name(precision)):
            if name not in produced and (out_dir / name).is_file():
                (out_dir / name).unlink()
                report["removed_stale_files"].append(name)
    if report["failed"]:
        report["gate"] = gates.FAILED
    report["summary"] = summary_fields(report)
    report["summary_columns"] = [list(c) for c in SUMMARY_COLUMNS]


def summary_fields(report: dict) -> dict:
    """Return the flat summary fields (onnx path, fp32 parity, variant accuracy deltas, gate) of an export report."""
    fp32 = report["precisions"]["fp32"]
    out = {"onnx": fp32["file"], "export_parity_max_abs": fp32["parity"]["max_abs_diff"],
           "export_agreement": fp32["parity"]["argmax_agreement"], "export_gate": report["gate"]}
    for precision in gates.VARIANTS:
        entry = report["precisions"].get(precision)
        if entry and "parity" in entry:
            out[f"onnx_{precision}"] = entry["file"]
            out[f"{precision}_acc_delta"] = entry["gate"]["acc_delta"]
            out[f"{precision}_agreement"] = entry["parity"]["argmax_agreement"]
    return out


def export_run(run_dir, settings: ExportSettings | None = None, **kwargs) -> dict:
    """Export the run directory ``run_dir`` (its checkpoint) next to the checkpoint; returns the export.json dict.

    ``kwargs`` are ExportSettings fields, for callers that set one or two. See ``export_checkpoint`` for errors.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConvkitError(f"run directory {run_dir} not found; pass a run folder made by training")
    return export_checkpoint(run_dir / CHECKPOINT, None, run_dir, settings or ExportSettings(**kwargs))


def export_all(suite_dir, on_result=None, settings: ExportSettings | None = None, **kwargs) -> dict:
    """Export every run under ``suite_dir``, continuing past failures.

    Returns {"results": {run_dir: export dict or {"error": message, "exit_code": code}}, "exit_code": worst code
    (0 when all passed)}. ``on_result(run_dir, result)`` is called after each run.
    """
    settings = settings or ExportSettings(**kwargs)
    results, worst = {}, 0
    for run in run_folders(suite_dir, with_checkpoint=True):
        try:
            res = export_run(run, settings)
        except Exception as exc:  # one failed run (a bad checkpoint, an out-of-memory) never stops the others
            exc = failure_of(exc)
            res = {"error": exc.message, "exit_code": exc.exit_code}
            worst = max(worst, exc.exit_code)
        results[str(run)] = res
        if on_result:
            on_result(run, res)
    return {"results": results, "exit_code": worst}
