"""Preprocessing from the config files models ship with: Hugging Face ``preprocessor_config.json``, timm's
``config.json`` / ``pretrained_cfg``, and convkit's own sidecar ``<model>.convkit.json``.

A value read here is printed with its source (``config: <file>``), between a flag (which wins) and the model's
convkit metadata. timm's eval transform is followed exactly: ``scale = floor(crop / crop_pct)``, the shorter side
resized to ``scale``, then a center crop of ``crop`` (timm.data.transforms_factory.transforms_imagenet_eval,
crop_mode "center"). Hugging Face's ``size: {"height", "width"}`` without a center crop resizes both sides (the
aspect ratio is not kept), as its image processors do.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from convkit.atomic import write_json
from convkit.errors import ConvkitError

SIDECAR_SUFFIX = ".convkit.json"
SIDECAR_SCHEMA = "convkit.preprocessing/1"
HF_NAME, TIMM_NAME = "preprocessor_config.json", "config.json"
MAX_CONFIG_BYTES = 1 << 20  # a preprocessing config is a few hundred bytes; anything this large is not one
# PIL's resampling numbers, which Hugging Face's processors store as ``resample``
PIL_RESAMPLE = {2: "bilinear", 3: "bicubic"}


@dataclass(frozen=True)
class ConfigPreprocessing:
    """The preprocessing a config file states; None where it says nothing."""

    source: str  # "config: <file name>"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_range: str | None = None  # "1" | "255"
    channel_order: str | None = None
    layout: str | None = None
    resize: int | tuple[int, int] | None = None  # shorter side, or (height, width) for a resize without crop
    crop: int | None = None
    interpolation: str | None = None

    def values(self) -> dict:
        """Return the stated values (those not None), without the source."""
        return {k: v for k, v in asdict(self).items() if k != "source" and v is not None}


def find_config(model_path: Path, given: str | None) -> Path | None:
    """Return the config file to read: ``given`` (--preprocessing-config), else ``<model>.convkit.json``, else a
    ``preprocessor_config.json`` or timm ``config.json`` beside the model; None when there is none."""
    if given:
        path = Path(given)
        if not path.is_file():
            raise ConvkitError(f"--preprocessing-config {given}: not found; pass a preprocessor_config.json, a timm "
                               f"config.json or a {SIDECAR_SUFFIX} file")
        return path
    model_path = Path(model_path)
    for candidate in (sidecar_path(model_path), model_path.parent / HF_NAME, model_path.parent / TIMM_NAME):
        if candidate.is_file():
            return candidate
    return None


def sidecar_path(model_path: Path) -> Path:
    """Return where the convkit sidecar of ``model_path`` lives: ``<stem>.convkit.json`` beside it."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + SIDECAR_SUFFIX)


def read_config(path: Path) -> ConfigPreprocessing | None:
    """Return the preprocessing stated by the config at ``path`` (None for a config.json that is not timm's, e.g.
    a Hugging Face model config); ConvkitError (exit 2) for a file that cannot be read as one."""
    path = Path(path)
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConvkitError(f"{path} is {path.stat().st_size:,} bytes, too large for a preprocessing config")
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConvkitError(f"{path} is not readable JSON ({type(exc).__name__}); fix it or pass the flags") from None
    if not isinstance(doc, dict):
        raise ConvkitError(f"{path} holds no JSON object; pass a preprocessor_config.json, a timm config.json or a "
                           f"{SIDECAR_SUFFIX}")
    source = f"config: {path.name}"
    if doc.get("schema") == SIDECAR_SCHEMA:
        return _sidecar(doc, source, path)
    if "image_mean" in doc or "image_processor_type" in doc or "feature_extractor_type" in doc:
        return _hugging_face(doc, source, path)
    cfg = doc.get("pretrained_cfg") if isinstance(doc.get("pretrained_cfg"), dict) else doc
    if "input_size" in cfg or ("mean" in cfg and "std" in cfg):
        return _timm(cfg, source, path)
    return None


def _numbers(value, what: str, path: Path) -> tuple[float, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if (not isinstance(value, list) or not value or
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
        raise ConvkitError(f"{path}: {what} must be a list of finite numbers, got {str(value)[:60]!r}")
    return tuple(float(v) for v in value)


def _sidecar(doc: dict, source: str, path: Path) -> ConfigPreprocessing:
    p = doc.get("preprocessing") or {}
    resize = p.get("resize")
    return ConfigPreprocessing(
        source, mean=_numbers(p["mean"], "mean", path) if "mean" in p else None,
        std=_numbers(p["std"], "std", path) if "std" in p else None, input_range=_choice(p, "input_range", path),
        channel_order=_choice(p, "channel_order", path), layout=_choice(p, "layout", path),
        resize=tuple(resize) if isinstance(resize, list) else resize, crop=p.get("crop"),
        interpolation=_choice(p, "interpolation", path))


_CHOICES = {"input_range": ("1", "255"), "channel_order": ("rgb", "bgr"), "layout": ("nchw", "nhwc"),
            "interpolation": ("bilinear", "bicubic")}


def _choice(p: dict, key: str, path: Path) -> str | None:
    value = p.get(key)
    if value is None:
        return None
    value = str(value).lower()
    if value not in _CHOICES[key]:
        raise ConvkitError(f"{path}: {key} must be one of {', '.join(_CHOICES[key])}, got {value[:40]!r}")
    return value


def _hugging_face(doc: dict, source: str, path: Path) -> ConfigPreprocessing:
    rescale = doc.get("do_rescale", True)
    factor = float(doc.get("rescale_factor", 1 / 255))
    if rescale and not math.isclose(factor, 1 / 255, rel_tol=1e-6):
        raise ConvkitError(f"{path}: rescale_factor {factor:g} is neither 1/255 nor off; convkit feeds 0..1 or 0..255")
    normalize = doc.get("do_normalize", True)
    mean = _numbers(doc["image_mean"], "image_mean", path) if normalize and "image_mean" in doc else (0.0,)
    std = _numbers(doc["image_std"], "image_std", path) if normalize and "image_std" in doc else (1.0,)
    size, crop = doc.get("size"), doc.get("crop_size")
    resize = crop_side = None
    if doc.get("do_resize", True) and size is not None:
        if isinstance(size, int):
            resize = size
        elif isinstance(size, dict) and "shortest_edge" in size:
            resize = int(size["shortest_edge"])
        elif isinstance(size, dict) and {"height", "width"} <= set(size):
            resize = (int(size["height"]), int(size["width"]))
    if doc.get("do_center_crop", crop is not None) and crop is not None:
        crop_side = int(crop) if isinstance(crop, int) else int(crop.get("height", 0)) or None
        if isinstance(crop, dict) and crop.get("height") != crop.get("width"):
            raise ConvkitError(f"{path}: crop_size {crop} is not square; pass --crop and --resize instead")
    elif isinstance(resize, tuple):
        crop_side = resize[0] if resize[0] == resize[1] else None
    interpolation = PIL_RESAMPLE.get(doc.get("resample")) if "resample" in doc else None
    if "resample" in doc and interpolation is None:
        raise ConvkitError(f"{path}: resample {doc['resample']!r} is not bilinear (2) or bicubic (3); pass "
                           f"--interpolation")
    return ConfigPreprocessing(source, mean=mean, std=std, input_range="1" if rescale else "255",
                               resize=resize, crop=crop_side, interpolation=interpolation)


def _timm(cfg: dict, source: str, path: Path) -> ConfigPreprocessing:
    size = cfg.get("input_size") or cfg.get("test_input_size")
    crop = resize = None
    if size is not None:
        if not (isinstance(size, list) and len(size) == 3 and size[1] == size[2]):
            raise ConvkitError(f"{path}: input_size {str(size)[:40]} is not [C, S, S]; pass --crop and --resize")
        crop = int(size[1])
        mode = cfg.get("crop_mode", "center")
        if mode != "center":
            raise ConvkitError(f"{path}: crop_mode {mode!r} is not supported (only timm's default 'center'); pass "
                               f"--resize and --crop")
        crop_pct = float(cfg.get("crop_pct") or 0.875)  # timm's DEFAULT_CROP_PCT
        resize = math.floor(crop / crop_pct)
    interp = cfg.get("interpolation")
    if interp is not None and interp not in ("bilinear", "bicubic"):
        raise ConvkitError(f"{path}: interpolation {str(interp)[:20]!r} is not bilinear or bicubic; pass --interpolation")
    return ConfigPreprocessing(source, mean=_numbers(cfg["mean"], "mean", path) if "mean" in cfg else None,
                               std=_numbers(cfg["std"], "std", path) if "std" in cfg else None,
                               input_range="1", resize=resize, crop=crop, interpolation=interp)


def write_sidecar(model_path: Path, spec, reading: dict) -> Path:
    """Write ``<model>.convkit.json`` with the preprocessing ``spec`` used (and the folder ``reading``: resize,
    crop, interpolation) so the next evaluation needs no flags; returns its path."""
    pre = {"mean": list(spec.mean), "std": list(spec.std), "input_range": spec.input_range,
           "channel_order": spec.channel_order, "layout": spec.layout.lower()}
    if reading.get("resize"):
        pre.update(resize=reading["resize"], crop=reading["crop"][0], interpolation=reading["interpolation"])
    path = sidecar_path(model_path)
    return write_json(path, {"schema": SIDECAR_SCHEMA, "model": Path(model_path).name, "preprocessing": pre})
