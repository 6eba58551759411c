"""Export the user's own PyTorch model with the pipeline convkit's runs get: dynamic batch, the parity gate against
the user's module on real images of the stated data, fp16/int8 variants (int8 calibrated on images of the data),
the reference logits cached, export.json — into a run-like folder that evaluate, report and summarize read.

The folder holds ``model_source.json`` (the model's source, its weights' sha256 and the data contract) in the
place a convkit run holds its checkpoint: the ONNX files record its sha256 as their ``checkpoint_sha256``, so
evaluate refuses files exported from another model, and ``model.convkit.json`` (the preprocessing, resize and
crop) so evaluate needs no preprocessing flags.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

import convkit
from convkit import gates
from convkit.artifacts import (
    CHECKPOINT,
    EXPORT_JSON,
    MODEL_SOURCE,
    VARIANT_FILES,
    REFERENCE,
    check_out_name,
    rejected_name,
    run_lock,
    save_reference_logits,
    write_artifact,
)
from convkit.atomic import ensure_writable_dir
from convkit.data.catalog import get_dataset_info
from convkit.data.folder import FolderImages, list_labelled
from convkit.data.load import load_dataset
from convkit.devices import reference_device
from convkit.errors import EXIT_GATE_FAILED, ConvkitError, one_line
from convkit.export import divergence
from convkit.export.onnx_export import INPUT_NAME, OPSET, OUTPUT_NAME, check_onnx, describe_export_failure, export_onnx
from convkit.export.parity import (PARITY_FLOAT_BYTES, VARIANT_BATCH_SIZES, fp32_gate, parity_image_cap, run_parity,
                                   variant_gate)
from convkit.export.pipeline import CALIB_SEED, ExportSettings, keep_fp32_variant, keep_metadata, write_files
from convkit.export.quantize import INT8_OPSET, calibration_images, to_fp16, to_int8
from convkit.onnx_meta import ModelIdentity, build_metadata, file_sha256, set_metadata
from convkit.preprocessing import metadata_entry
from convkit.preprocessing_config import write_sidecar
from convkit.reference import torch_logits
from convkit.text import term
from convkit.trust import record_trusted
from convkit.user_model import DataContract, ModelSource, build_model, source_to_json

SIDECAR = "model.convkit.json"  # evaluate's preprocessing sidecar of model.onnx (convkit/preprocessing_config)


@dataclass
class UserData:
    """The parity images (uint8 NCHW RGB), their labels, where they came from, and the calibration images."""

    images: np.ndarray
    labels: np.ndarray
    source: str
    checksum: str
    calib: np.ndarray | None  # uint8 calibration images (None: no int8 asked, or none available)
    calib_source: str | None


def export_user_model(source: ModelSource, contract: DataContract, out_dir, settings: ExportSettings,
                      exporter: str = "dynamo", sample: bool = False, overwrite: bool = False) -> dict:
    """Export the user's model into ``out_dir`` and return export.json's content; ConvkitError (exit 2) for bad
    input before anything is written (an --out holding an export needs ``overwrite``), exit 1 when a gate fails
    (report written, model kept as *.rejected.onnx). A failure leaves no partial export and no folder it made."""
    settings = settings.check()
    out = Path(out_dir)
    check_out_name(out)
    if (out / CHECKPOINT).is_file():
        raise ConvkitError(f"--out {term(out)} holds a convkit training run ({CHECKPOINT}); choose another --out")
    made = not out.exists()
    try:
        with run_lock(out, f"convkit export {source.describe()}"):
            earlier = export_files(out)
            if earlier and not overwrite:
                raise ConvkitError(f"--out {term(out)} already holds an export ({', '.join(p.name for p in earlier)});"
                                   f" pass --overwrite to replace it, or choose another --out")
            return _export(source, contract, ensure_writable_dir(out), settings, exporter, sample)
    except BaseException:
        if made:
            _remove_if_empty(out)
        raise


def export_files(out: Path) -> list[Path]:
    """Return the files of a user model's export in ``out`` (model_source.json, export.json, the ONNX files, the
    preprocessing sidecar, the reference logits)."""
    names = [MODEL_SOURCE, EXPORT_JSON, SIDECAR, REFERENCE, *VARIANT_FILES.values(),
             *(rejected_name(p) for p in VARIANT_FILES)]
    return [out / n for n in dict.fromkeys(names) if (out / n).is_file()]


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # it holds something (or is gone): kept as it is
        pass


def _export(source, contract, out: Path, settings: ExportSettings, exporter: str, sample: bool) -> dict:
    t0 = time.perf_counter()
    module = build_model(source)
    data = load_user_data(contract, settings, sample)
    x = contract.prepare(data.images)
    settings.device = reference_device(settings.device)
    check_forward(module, x[:1])
    try:
        ref = torch_logits(module, x, device=settings.device)  # x: the model's input already (the contract applied)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 — the user's forward may raise anything on the wrong input
        raise ConvkitError(f"the model failed on a batch of input {list(x.shape)} (N, C, H, W): "
                           f"{one_line(exc, 200)}; check --input-size and the data") from None
    if ref.ndim != 2 or ref.shape[1] != len(contract.classes):
        raise ConvkitError(f"the model returns {list(ref.shape)} for a batch of images, expected [N, "
                           f"{len(contract.classes)}] (one score per class of the data); check --model-kwargs")
    t_exp = time.perf_counter()
    proto = export_model(module, contract.input_shape, exporter)
    export_s = time.perf_counter() - t_exp
    for old in export_files(out):  # --overwrite: the earlier export goes, so no file of it outlives this one
        old.unlink()
    try:
        return _write_export(source, contract, out, (data, x, ref, proto, module), settings, exporter, sample,
                             (t0, export_s))
    except BaseException as exc:  # an export is whole or absent: no model.onnx without its export.json
        if (out / EXPORT_JSON).is_file():  # the gate failed: its report and rejected files are the result
            raise
        for written in export_files(out):
            written.unlink(missing_ok=True)
        if isinstance(exc, (OSError, RuntimeError)) and not isinstance(exc, ConvkitError):
            raise ConvkitError(f"cannot write the export to {term(out)}: {term(one_line(exc, 160))}; free space "
                               f"on that disk or choose another --out (nothing was kept)") from None
        raise


def _write_export(source, contract, out: Path, made: tuple, settings: ExportSettings, exporter: str,
                  sample: bool, times: tuple) -> dict:
    """Write model_source.json, the gated ONNX files, the reference logits and export.json (``made``: the
    UserData, the model input, the reference logits, the ONNX proto and the module, which a failed fp32 gate is
    compared with module by module; ``times``: start, export seconds)."""
    data, x, ref, proto, module = made
    t0, export_s = times
    source_sha = _write_source(out, source, contract, data, sample)
    if source.kind != "program":  # the user named this code on the command line: evaluate may rebuild it here
        record_trusted(source_sha)
    report = _base_report(source, contract, data, ref, out, source_sha, exporter, export_s)
    def meta(precision: str) -> dict:
        return user_metadata(source, contract, out, report["pytorch_test_acc"], precision, source_sha)

    set_metadata(proto, meta("fp32"))
    check_onnx(proto)
    files = {"fp32": _gate_fp32(report, proto, x, ref, data.labels, settings, out, module)}
    for precision in settings.precisions:
        variant = _gate_variant(report, precision, proto, (x, ref, data), contract, settings, out, meta)
        if variant is not None:
            files[precision] = variant
    write_files(report, files, out)
    # keyed apart from the whole data: these are the parity images only (an evenly spread subset)
    save_reference_logits(out, ref, source_sha, f"{data.checksum}:parity-{len(ref)}", settings.device)
    report["total_time_s"] = time.perf_counter() - t0
    write_artifact(out / EXPORT_JSON, "export", report)
    if report["failed"]:
        reasons = [f"{p}: {r}" for p in report["failed"] for r in report["precisions"][p]["gate"]["reasons"]]
        raise ConvkitError(f"{source.describe()}: export gate failed: {'; '.join(reasons)}{divergence.note(report)} "
                           f"(report in {out / EXPORT_JSON})", EXIT_GATE_FAILED)
    return report


def check_forward(module: torch.nn.Module, x: torch.Tensor) -> None:
    """Raise ConvkitError (exit 2) when the module's forward on ``x`` (one image) fails or returns something other
    than one logits tensor (a tuple, a dict: the export needs one output), naming what it returned."""
    try:
        with torch.no_grad():
            out = module(x)
    except SystemExit as exc:
        raise ConvkitError(f"the model's forward called sys.exit({term(exc.code, 40)}); it must return logits") from None
    except Exception as exc:  # noqa: BLE001 — the user's forward may raise anything on the wrong input
        raise ConvkitError(f"the model failed on a batch of input {list(x.shape)} (N, C, H, W): {term(one_line(exc, 200))};"
                           f" check --input-size and the data") from None
    if isinstance(out, torch.Tensor):
        return
    if isinstance(out, dict):
        what = f"a dict (keys {', '.join(term(k, 30) for k in list(out)[:5])})"
    elif isinstance(out, (tuple, list)):
        what = f"a {type(out).__name__} of {len(out)}"
    else:
        what = f"a {type(out).__name__}"
    raise ConvkitError(f"the model's forward returns {what}, not one logits tensor [N, classes]; wrap it so it "
                       f"returns the logits alone (e.g. out[0] or out['logits']) — --input-size is not the cause")


def load_user_data(contract: DataContract, settings: ExportSettings, sample: bool) -> UserData:
    """Return the parity images of the contract's data (at most ``settings.n_images``, evenly spread over it) and,
    when int8 is asked, the calibration images (the train split, or ``contract.calib_data``)."""
    c, h, w = contract.input_shape
    want_calib = "int8" in settings.precisions
    if contract.dataset:
        info = get_dataset_info(contract.dataset)
        if tuple(info.input_shape) != (c, h, w):
            raise ConvkitError(f"--input-size {c},{h},{w} differs from {contract.dataset}'s images "
                               f"{tuple(info.input_shape)}; pass --data FOLDER with --resize/--crop to feed other sizes")
        ds = load_dataset(contract.dataset, settings.data_dir, sample=sample)
        images, labels = ds.test_images.numpy(), ds.test_labels.numpy()
        calib = ds.train_images if want_calib and contract.calib_data is None else None
        source, checksum = ds.source, ds.checksum
    else:
        files = list_labelled(contract.data)
        index = {name: i for i, name in enumerate(contract.classes)}
        unknown = sorted(set(files.labels) - set(index))
        if unknown:
            raise ConvkitError(f"--data has label(s) not among the model's classes: {', '.join(map(repr, unknown[:5]))};"
                               f" pass --classes FILE with the model's class names in output order")
        images = FolderImages(files.paths, c, (h, w), pre=contract.pre)
        labels = np.asarray([index[lab] for lab in files.labels], dtype=np.int64)
        calib, source, checksum = None, files.source, files.checksum
    cap = parity_image_cap((c, h, w))  # bounded before a single image is decoded
    n = min(int(settings.n_images), len(labels), cap)
    if n < min(int(settings.n_images), len(labels)):
        source += (f" (parity on {n} images: as many {c}×{h}×{w} inputs as fit "
                   f"{PARITY_FLOAT_BYTES >> 20} MiB of float32)")
    idx = np.unique(np.linspace(0, len(labels) - 1, n).astype(int))
    calib_images, calib_source = _calibration(contract, calib, settings) if want_calib else (None, None)
    # a folder's images stay framed (each one's content box): a model-space pad is written by the one apply
    return UserData(images[idx], labels[idx], source, checksum, calib_images, calib_source)


def _calibration(contract: DataContract, train, settings: ExportSettings) -> tuple[np.ndarray, str]:
    c, h, w = contract.input_shape
    if contract.calib_data:
        files = list_labelled(contract.calib_data)
        images = FolderImages(files.paths, c, (h, w), pre=contract.pre)
        k = min(len(images), int(settings.calib_images), parity_image_cap((c, h, w)))  # the same memory bound
        idx = np.sort(np.random.default_rng(CALIB_SEED).permutation(len(images))[:k])
        return np.asarray(images[idx]), f"--calib-data {files.source}"
    if train is None:
        raise ConvkitError("--precision int8 needs calibration images the model is not tested on: pass --calib-data "
                           "FOLDER (--data has no train split)")
    _, images = calibration_images(train, min(len(train), int(settings.calib_images)), CALIB_SEED)
    return images.numpy(), "the dataset's train split"


def export_model(module: torch.nn.Module, input_shape: tuple[int, int, int], exporter: str):
    """Return the ONNX proto of ``module``: the dynamo exporter (convkit's default), or the TorchScript one when
    asked; ConvkitError naming the operator or module that failed."""
    if exporter == "dynamo":
        with quiet_torch_logs():  # a failed trace logs the whole FX graph before the one-line error
            return export_onnx(module, input_shape)
    example = torch.zeros(2, *input_shape)
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), (example,), buf, dynamo=False, opset_version=OPSET,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    except Exception as exc:  # noqa: BLE001 — the exporter raises many types; one line naming the culprit
        raise ConvkitError(describe_export_failure(exc, module, example, None)) from None
    return onnx.load_from_string(buf.getvalue())


@contextlib.contextmanager
def quiet_torch_logs():
    """Silence logging at WARNING and below, and stderr, while the block runs (torch logs a failed trace's whole
    graph); the failure itself is raised and reported as one line."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # and prints it
            yield
    finally:
        logging.disable(previous)


def _write_source(out: Path, source: ModelSource, contract: DataContract, data: UserData, sample: bool) -> str:
    """Write model_source.json (what the ONNX files are derived from) and the preprocessing sidecar; returns the
    source file's sha256."""
    doc = {**source_to_json(source, contract), "data_source": data.source, "data_checksum": data.checksum,
           "sample": sample}
    path = write_artifact(out / MODEL_SOURCE, "model_source", doc)
    write_sidecar(out / VARIANT_FILES["fp32"], contract.pre)
    return file_sha256(path)


def user_metadata(source: ModelSource, contract: DataContract, out: Path, acc: float, precision: str,
                  source_sha: str) -> dict:
    """Return the ONNX metadata of one file of a user model: convkit's keys, the preprocessing and the identity."""
    identity = ModelIdentity(out.name, source.describe(), contract.dataset or "", tuple(contract.classes),
                             tuple(contract.mean), tuple(contract.std), source_sha)
    meta = build_metadata(identity, pytorch_test_acc=acc, opset=INT8_OPSET if precision == "int8" else OPSET,
                          precision=precision)
    meta.update(input_range=contract.input_range, channel_order=contract.channel_order,
                model_source=source.describe(), weights_sha256=source.weights_sha256 or source.program_sha256 or "")
    if contract.data:
        meta.update(data=Path(contract.data).name)
    meta.update(metadata_entry(contract.pre))
    return {k: v for k, v in meta.items() if v != ""}


def _base_report(source, contract, data: UserData, ref, out: Path, source_sha: str, exporter: str,
                 export_s: float) -> dict:
    acc = float((ref.argmax(1) == data.labels).mean())
    c, h, w = contract.input_shape
    return {
        "experiment": out.name, "model": source.describe(), "dataset": contract.dataset or Path(contract.data).name,
        "checkpoint": str(out / MODEL_SOURCE), "checkpoint_sha256": source_sha, "model_source": source.describe(),
        "out_dir": str(out), "data_source": data.source, "data_checksum": data.checksum,
        "exporter": f"torch.onnx.export({'dynamo=True' if exporter == 'dynamo' else 'dynamo=False (TorchScript)'}) "
                    "of the user's module in eval()", "opset": OPSET,
        "input": {"name": INPUT_NAME, "shape": ["batch", c, h, w], "dtype": "float32", "layout": "NCHW",
                  "normalization": f"(pixels{'/255' if contract.input_range == '1' else ''} - mean) / std",
                  "mean": list(contract.mean), "std": list(contract.std), "channel_order": contract.channel_order,
                  "preprocessing": contract.pre.to_json()},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(contract.classes)], "dtype": "float32"},
        "versions": {"convkit": convkit.__version__, "torch": torch.__version__, "onnx": onnx.__version__},
        "pytorch_test_acc": acc, "pytorch_test_acc_source": f"measured here on {len(ref)} images of {data.source}",
        "pytorch_acc_on_parity_images": acc, "export_time_s": export_s,
        "gates": {"unit": "percentage points of the parity images", "max_acc_drop": None, "max_disagreement": None},
        "precisions": {}, "files": {}, "rejected_files": {}, "gate": gates.PASSED, "failed": [],
    }


def _gate_fp32(report: dict, proto, x, ref, labels, settings: ExportSettings, out: Path, module=None):
    report["gates"].update(max_acc_drop=settings.max_acc_drop, max_disagreement=settings.max_disagreement)
    fp32_bytes = proto.SerializeToString()
    parity = run_parity(fp32_bytes, x.numpy(), ref, labels, reference_device=settings.device)
    gate = fp32_gate(parity, settings.atol, settings.max_disagreement["fp32"])
    report["precisions"]["fp32"] = {"file": None, "size_bytes": len(fp32_bytes), "parity": parity, "gate": gate}
    if gate["passed"]:
        return out / VARIANT_FILES["fp32"], proto
    report["failed"].append("fp32")
    if module is not None:  # name the first module where the file stops matching the user's module
        report["precisions"]["fp32"]["divergence"] = divergence.locate(proto, module, x.numpy(), settings.device,
                                                                       settings.atol)
    return out / rejected_name("fp32"), proto


def _gate_variant(report: dict, precision: str, proto, measured: tuple, contract: DataContract,
                  settings: ExportSettings, out: Path, meta):
    """Convert, check and gate one fp16/int8 variant into ``report`` (``measured``: parity images, reference
    logits, UserData; ``meta(precision)``: its metadata); returns (path, proto), or None when skipped."""
    x, ref, data = measured
    limits = {"max_drop_points": settings.max_acc_drop[precision],
              "max_disagreement_points": settings.max_disagreement.get(precision)}
    entry: dict = {"gate_settings": limits}
    report["precisions"][precision] = entry
    if not report["precisions"]["fp32"]["gate"]["passed"]:
        entry["skipped"] = "fp32 export failed its parity gate"
        return None
    if precision == "fp16":
        entry["conversion"] = "onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)"
        variant = to_fp16(proto)
    else:
        calib = contract.prepare(data.calib).numpy()
        variant, quant = to_int8(proto, calib, settings.calibration)
        entry["quantization"] = {**quant, "calibration_split": data.calib_source, "calibration_seed": CALIB_SEED,
                                 "calibration_method": settings.calibration}
        if settings.keep_fp32:
            variant = keep_fp32_variant(proto, calib, (x.numpy(), ref, data.labels), settings, entry)
    set_metadata(variant, {**meta(precision), **keep_metadata(entry)})
    check_onnx(variant)
    vbytes = variant.SerializeToString()
    vpar = run_parity(vbytes, x.numpy(), ref, data.labels, batch_sizes=VARIANT_BATCH_SIZES,
                      reference_device=settings.device)
    vgate = variant_gate(precision, vpar, report["pytorch_acc_on_parity_images"], **limits)
    fp32 = report["precisions"]["fp32"]
    entry.update({"size_bytes": len(vbytes), "fp32_size_bytes": fp32["size_bytes"],
                  "size_ratio": len(vbytes) / fp32["size_bytes"], "parity": vpar, "gate": vgate,
                  "fp32_onnx_accuracy": fp32["parity"]["accuracy"]})
    if vgate["passed"]:
        return out / VARIANT_FILES[precision], variant
    report["failed"].append(precision)
    return out / rejected_name(precision), variant
