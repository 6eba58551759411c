"""``convkit export --model … | --program …``: the flags of a user model's export turned into its ModelSource and
DataContract (flags first, then a preprocessing config file, then the dataset's own values), then the export."""

from __future__ import annotations

import math
from pathlib import Path

from convkit.data.catalog import get_dataset_info
from convkit.data.folder import list_labelled
from convkit.errors import ConvkitError
from convkit.export.pipeline import ExportSettings
from convkit.export.user_export import export_user_model
from convkit import preprocessing as P
from convkit.preprocessing_config import read_config
from convkit.preprocessing_flags import geometry_from_cli
from convkit.text import term
from convkit.user_model import DataContract, parse_kwargs, source_from_flags

MAX_SIDE = P.MAX_SIDE  # an input side beyond this is a typo, not an image classifier


def export_user(flags: dict, settings: ExportSettings) -> str:
    """Export the user model the CLI ``flags`` describe; returns the line the terminal prints."""
    if not flags["out"]:
        raise ConvkitError("--model/--program need --out FOLDER: where model.onnx and its run files go")
    source = source_from_flags(flags["model"], flags["program"], parse_kwargs(flags["model_kwargs"]),
                               flags["weights"])
    contract = contract_from_flags(flags)
    report = export_user_model(source, contract, flags["out"], settings, flags["exporter"], bool(flags["sample"]),
                               overwrite=bool(flags.get("overwrite")))
    fp32 = report["precisions"]["fp32"]["parity"]
    parts = [f"{term(source.describe())}: PyTorch acc {report['pytorch_test_acc']:.4f} on {fp32['images']} images, fp32 "
             f"max|Δ| {fp32['max_abs_diff']:.2e}, agreement {fp32['argmax_agreement']:.2%}"]
    for precision in ("fp16", "int8"):
        entry = report["precisions"].get(precision)
        if entry and "parity" in entry:
            parts.append(f"{precision} agreement {entry['parity']['argmax_agreement']:.2%}, acc Δ "
                         f"{entry['gate']['acc_delta'] * 100:+.2f} pts")
    return "; ".join(parts) + f" → {term(report['out_dir'])}"


def contract_from_flags(flags: dict) -> DataContract:
    """Return the DataContract of the flags: the data, the classes, the input size and the preprocessing, resolved
    by convkit.preprocessing.resolve (flags > --preprocessing-config > the dataset's catalog values > defaults)."""
    dataset, data = flags["dataset"], flags["data_path"]
    if bool(dataset) == bool(data):
        raise ConvkitError("state the data the model is measured on: --dataset NAME or --data FOLDER (one of them)")
    info = get_dataset_info(dataset) if dataset else None
    cfg = read_config(Path(flags["preprocessing_config"])) if flags["preprocessing_config"] else None
    classes = _classes(flags["classes_file"], info, data)
    shape = _input_shape(flags["input_size"], cfg, info, flags)
    given = {"mean": _floats(flags["mean"], "--mean"), "std": _floats(flags["std"], "--std"),
             "input_range": flags["input_range"], "channel_order": flags["channel_order"],
             **geometry_from_cli(flags), "size": shape[1:]}
    layers = [("flag", given)] + ([(cfg.source, cfg.values())] if cfg is not None else [])
    if info is not None:
        layers.append((f"catalog: {info.name}", {"mean": info.mean, "std": info.std}))
    pre = P.resolve(layers)
    if "mean" in pre.defaulted() or "std" in pre.defaulted():
        raise ConvkitError("--data needs the model's normalization: pass --mean and --std (e.g. 0.485,0.456,0.406 and "
                           "0.229,0.224,0.225) or --preprocessing-config FILE")
    for values, what in ((pre.mean, "--mean"), (pre.std, "--std")):
        if len(values) not in (1, shape[0]):
            raise ConvkitError(f"{what} gives {len(values)} values for {shape[0]} channels; give 1 or {shape[0]}")
    return DataContract(dataset=dataset, data=str(Path(data).resolve()) if data else None, classes=tuple(classes),
                        input_shape=shape, mean=pre.mean, std=pre.std, input_range=pre.input_range,
                        channel_order=pre.channel_order, resize=pre.resize, interpolation=pre.interpolation,
                        calib_data=str(Path(flags["calib_data"]).resolve()) if flags["calib_data"] else None,
                        preprocessing=pre.to_json())


def _classes(path: str | None, info, data: str | None) -> list[str]:
    if path:
        try:
            names = [ln.strip() for ln in Path(path).read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise ConvkitError(f"--classes {path}: cannot read it ({type(exc).__name__}); one UTF-8 name per line") from None
        if not names or len(set(names)) != len(names):
            raise ConvkitError(f"--classes {path}: give each class name once, one per line")
        return names
    if info is not None:
        return list(info.classes)
    return list(list_labelled(data).classes)


def _input_shape(text: str | None, cfg, info, flags: dict) -> tuple[int, int, int]:
    """Return C, H, W: --input-size (non-square allowed), else --size with 3 channels, else the config's size,
    else the dataset's."""
    if text:
        try:
            shape = tuple(int(v) for v in text.split(","))
        except ValueError:
            shape = ()
        if len(shape) != 3 or not 0 < shape[0] <= 4 or not all(0 < v <= MAX_SIDE for v in shape[1:]):
            raise ConvkitError(f"--input-size must be C,H,W (C 1 to 4, H and W up to {MAX_SIDE}), got {text[:40]!r}")
        return shape
    size = geometry_from_cli(flags).get("size") or (cfg.size if cfg is not None else None)
    if size is not None:
        return (info.input_shape[0] if info is not None else 3, *size)
    if info is not None:
        return tuple(info.input_shape)
    raise ConvkitError("--data needs the model's input size: pass --input-size C,H,W (e.g. 3,224,224) or --size HxW")


def _floats(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) for v in values):
        raise ConvkitError(f"{what} must be comma-separated finite numbers, got {text[:40]!r}")
    return values
