"""Preprocessing from the config files models ship with, read into convkit.preprocessing's fields: Hugging Face
``preprocessor_config.json``, timm's ``config.json`` / ``pretrained_cfg``, torchvision weights' transforms (a small
JSON form, docs/preprocessing.md), and convkit's own sidecar ``<model>.convkit.json`` (written by ``write_sidecar``,
the one writer, with convkit.preprocessing.SCHEMA).

Each reader follows its library exactly where convkit can, and refuses in one line (exit 2) what it cannot do —
never an approximation: timm's eval transform is ``scale = floor(crop / crop_pct)``, the shorter side resized to
``scale``, then a center crop (crop_mode "center"; "squash" with crop_pct 1 squashes); Hugging Face's
``size: {"height", "width"}`` resizes both sides, ``shortest_edge`` the shorter one, ``longest_edge`` the longer.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from convkit import preprocessing as P
from convkit.atomic import write_json
from convkit.errors import ConvkitError

SIDECAR_SUFFIX = ".convkit.json"
SIDECAR_SCHEMA = P.SCHEMA
OLD_SIDECAR_SCHEMA = "convkit.preprocessing/1"
HF_NAME, TIMM_NAME = "preprocessor_config.json", "config.json"
MAX_CONFIG_BYTES = 1 << 20  # a preprocessing config is a few hundred bytes; anything this large is not one
MAX_DEPTH = 32  # nesting a config may have: json's recursion on 50,000-deep arrays must never be reached
# PIL's resampling numbers, which Hugging Face's processors store as ``resample``
PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "area"}


@dataclass(frozen=True)
class ConfigPreprocessing:
    """The preprocessing fields a config file states (convkit.preprocessing names), and where from."""

    source: str  # "config: <file name>"
    fields: dict = field(default_factory=dict)
    class_names: tuple[str, ...] | None = None

    def values(self) -> dict:
        """Return the stated fields."""
        return dict(self.fields)

    def __getattr__(self, key):  # cfg.mean etc.: the stated value or None
        if key in P.FIELDS:
            return self.fields.get(key)
        raise AttributeError(key)


def find_config(model_path: Path, given: str | None) -> Path | None:
    """Return the config file to read: ``given`` (--preprocessing-config), else ``<model>.convkit.json``, else a
    ``preprocessor_config.json`` or timm ``config.json`` beside the model; None when there is none."""
    if given:
        path = Path(given)
        if not path.is_file():
            raise ConvkitError(f"--preprocessing-config {given}: not found; pass a preprocessor_config.json, a timm "
                               f"config.json, a torchvision transforms JSON or a {SIDECAR_SUFFIX} file")
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


def _depth_ok(text: str) -> bool:
    """Return True when the JSON text nests at most MAX_DEPTH deep (counted on brackets outside strings)."""
    depth, in_str, escape = 0, False, False
    for ch in text:
        if in_str:
            escape, in_str = (not escape and ch == "\\"), (in_str if escape or ch != '"' else False)
            continue
        if ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def load_json(path: Path, what: str) -> dict:
    """Return the JSON object in ``path`` (bounded in size and depth); ConvkitError (exit 2) otherwise."""
    path = Path(path)
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConvkitError(f"{path} is {path.stat().st_size:,} bytes, too large for a {what}")
    try:
        text = path.read_text(encoding="utf-8-sig")
        if not _depth_ok(text):
            raise ConvkitError(f"{path} nests deeper than {MAX_DEPTH} levels; not a {what}")
        doc = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ConvkitError(f"{path} is not readable JSON ({type(exc).__name__}); fix it or pass the flags") from None
    if not isinstance(doc, dict):
        raise ConvkitError(f"{path} holds no JSON object; pass a preprocessor_config.json, a timm config.json or a "
                           f"{SIDECAR_SUFFIX}")
    return doc


def read_config(path: Path) -> ConfigPreprocessing | None:
    """Return the preprocessing stated by the config at ``path`` (None for a config.json that is not timm's, e.g.
    a Hugging Face model config); ConvkitError (exit 2), one line naming the key, for a value it cannot use."""
    path = Path(path)
    doc = load_json(path, "preprocessing config")
    source = f"config: {path.name}"
    where = f"{path}"
    if doc.get("schema") in (SIDECAR_SCHEMA, OLD_SIDECAR_SCHEMA):
        fields = _old_sidecar(doc, where) if doc["schema"] == OLD_SIDECAR_SCHEMA else P.from_document(doc, where)
        return ConfigPreprocessing(source, fields)
    if doc.get("format") == "torchvision":
        return ConfigPreprocessing(source, _torchvision(doc, where))
    if "image_mean" in doc or "image_processor_type" in doc or "feature_extractor_type" in doc:
        return ConfigPreprocessing(source, _hugging_face(doc, where))
    cfg = doc.get("pretrained_cfg") if isinstance(doc.get("pretrained_cfg"), dict) else doc
    if "input_size" in cfg or ("mean" in cfg and "std" in cfg):
        return ConfigPreprocessing(source, _timm(cfg, where))
    return None


def _int(value, key: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConvkitError(f"{where}: {key} must be a whole number of pixels, got {str(value)[:40]!r}")
    return P.check_side(value, key, where)


def _hw(value, key: str, where: str) -> tuple[int, int]:
    """Return (height, width) of an int, a [h, w] list or a {"height", "width"} mapping."""
    if isinstance(value, dict) and {"height", "width"} <= set(value):
        return _int(value["height"], f"{key}.height", where), _int(value["width"], f"{key}.width", where)
    if isinstance(value, list) and len(value) == 2:
        return _int(value[0], key, where), _int(value[1], key, where)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    side = _int(value, key, where)
    return side, side


def _old_sidecar(doc: dict, where: str) -> dict:
    """Return the fields of a convkit.preprocessing/1 sidecar (resize: shorter side or [h, w]; crop: square)."""
    p = doc.get("preprocessing")
    if not isinstance(p, dict):
        raise ConvkitError(f"{where}: no \"preprocessing\" object")
    out = {k: P.check_field(k, p[k], where) for k in ("mean", "std", "input_range", "channel_order", "layout",
                                                      "interpolation") if p.get(k) is not None}
    resize, crop = p.get("resize"), p.get("crop")
    if isinstance(resize, list):
        out.update(resize_mode="squash", size=_hw(resize, "resize", where))
    elif resize is not None:
        out.update(resize_mode="shorter", resize=_int(resize, "resize", where))
    if crop is not None and not isinstance(resize, list):
        out["size"] = _hw(crop, "crop", where)
    return out


def _number(doc: dict, key: str, where: str, default: float) -> float:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConvkitError(f"{where}: {key} must be a number, got {str(value)[:40]!r}")
    return float(value)


def _flag(doc: dict, key: str, where: str, default: bool) -> bool:
    value = doc.get(key, default)
    if not isinstance(value, bool):
        raise ConvkitError(f"{where}: {key} must be true or false, got {str(value)[:40]!r}")
    return value


def _hugging_face(doc: dict, where: str) -> dict:
    out: dict = {"input_range": "1", "channel_order": "rgb", "layout": "nchw"}
    factor = _number(doc, "rescale_factor", where, 1 / 255)
    if _flag(doc, "do_rescale", where, True):
        if not math.isclose(factor, 1 / 255, rel_tol=1e-6):
            raise ConvkitError(f"{where}: rescale_factor {factor:g} is neither 1/255 nor off; convkit feeds 0..1 or "
                               f"0..255")
    else:
        out["input_range"] = "255"
    if _flag(doc, "do_normalize", where, True):
        for key, ours in (("image_mean", "mean"), ("image_std", "std")):
            if key in doc:
                out[ours] = P.check_field(ours, doc[key], f"{where}: {key}")
    else:
        out.update(mean=(0.0,), std=(1.0,))
    if "resample" in doc:
        if not isinstance(doc["resample"], int) or isinstance(doc["resample"], bool) or \
                doc["resample"] not in PIL_RESAMPLE:
            raise ConvkitError(f"{where}: resample {str(doc['resample'])[:20]!r} is not one of PIL's "
                               f"{', '.join(f'{k} ({v})' for k, v in PIL_RESAMPLE.items())}")
        out["interpolation"] = PIL_RESAMPLE[doc["resample"]]
    out.update(_hf_geometry(doc, where))
    return out


def _hf_geometry(doc: dict, where: str) -> dict:
    size, crop = doc.get("size"), doc.get("crop_size")
    resize = _flag(doc, "do_resize", where, True) and size is not None
    center = _flag(doc, "do_center_crop", where, crop is not None) and crop is not None
    out: dict = {}
    if resize:
        if isinstance(size, dict) and {"shortest_edge", "longest_edge"} <= set(size):
            raise ConvkitError(f"{where}: size with both shortest_edge and longest_edge (a capped shorter-side "
                               f"resize) is not supported; pass --resize-mode and --size")
        if isinstance(size, dict) and "shortest_edge" in size:
            out.update(resize_mode="shorter", resize=_int(size["shortest_edge"], "size.shortest_edge", where))
        elif isinstance(size, dict) and "longest_edge" in size:
            out.update(resize_mode="longer", resize=_int(size["longest_edge"], "size.longest_edge", where))
        elif isinstance(size, int) and not isinstance(size, bool):
            out.update(resize_mode="shorter", resize=_int(size, "size", where))
        else:
            out.update(resize_mode="squash", size=_hw(size, "size", where))
    if center:
        hw = _hw(crop, "crop_size", where)
        if out.get("resize_mode") == "squash" and out["size"] != hw:
            raise ConvkitError(f"{where}: size {out['size']} then a center crop of {hw} (squash, then crop) is not "
                               f"supported; pass --resize-mode and --size")
        out.update(size=hw, crop="center")
    elif resize and out.get("resize_mode") in ("shorter", "longer"):
        out["crop"] = "none"
    if _flag(doc, "do_pad", where, False):
        pad_size = doc.get("pad_size")
        if pad_size is None:
            raise ConvkitError(f"{where}: do_pad without pad_size pads each batch to its largest image, which "
                               f"convkit does not do; give pad_size or pass --size and --pad")
        # image processors pad after rescaling and normalising, at the bottom/right, with 0
        out.update(size=_hw(pad_size, "pad_size", where), pad="end", pad_value=0.0, pad_space="model")
        if out.get("resize_mode") == "longer":
            out["crop"] = "center"
    return out


TIMM_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")


def _timm(cfg: dict, where: str) -> dict:
    out: dict = {"input_range": "1", "channel_order": "rgb", "layout": "nchw"}
    for key in ("mean", "std"):
        if key in cfg:
            out[key] = P.check_field(key, cfg[key], where)
    interp = cfg.get("interpolation")
    if interp is not None:
        if interp not in TIMM_INTERPOLATIONS:
            raise ConvkitError(f"{where}: interpolation {str(interp)[:20]!r} is not one of "
                               f"{', '.join(TIMM_INTERPOLATIONS)}; pass --interpolation")
        out["interpolation"] = interp
    size = cfg.get("input_size") or cfg.get("test_input_size")
    if size is None:
        return out
    if not (isinstance(size, list) and len(size) == 3):
        raise ConvkitError(f"{where}: input_size {str(size)[:40]} is not [C, H, W]")
    h, w = _int(size[1], "input_size", where), _int(size[2], "input_size", where)
    crop_pct = _number(cfg, "crop_pct", where, 0.875) if cfg.get("crop_pct") is not None else 0.875
    if not 0 < crop_pct <= 1:
        raise ConvkitError(f"{where}: crop_pct must be in (0, 1], got {crop_pct:g}")
    mode = cfg.get("crop_mode", "center")
    if mode == "squash" and crop_pct == 1:
        return {**out, "resize_mode": "squash", "size": (h, w)}
    if mode == "center" and h == w:
        resize = math.floor(h / crop_pct)  # timm: scale_size = floor(img_size / crop_pct)
        return {**out, "resize_mode": "shorter", "size": (h, w), "resize": P.check_field("resize", resize, where),
                "crop": "center"}
    why = {"center": "a non-square center crop (timm's ResizeKeepRatio)",
           "squash": f"squash then a center crop (crop_pct {crop_pct:g})",
           "border": "border (padded with the per-channel mean colour)"}.get(mode, f"unknown crop_mode {str(mode)[:20]!r}")
    raise ConvkitError(f"{where}: timm crop_mode {str(mode)[:20]!r}: {why} is not supported; pass --resize-mode and "
                       f"--size to say the geometry")


def _torchvision(doc: dict, where: str) -> dict:
    """Return the fields of convkit's torchvision weights form: {"format": "torchvision", "resize_size",
    "crop_size", "interpolation", "antialias", "mean", "std"} (ImageClassification's eval transform)."""
    out: dict = {"input_range": "1", "channel_order": "rgb", "layout": "nchw", "resize_mode": "shorter",
                 "crop": "center"}
    for key in ("mean", "std", "interpolation", "antialias"):
        if doc.get(key) is not None:
            out[key] = P.check_field(key, doc[key], where)
    resize = doc.get("resize_size")
    if isinstance(resize, list) and len(resize) == 2:
        out.update(resize_mode="squash", size=_hw(resize, "resize_size", where))
    elif resize is not None:
        out["resize"] = _hw(resize, "resize_size", where)[0]
    if doc.get("crop_size") is not None:
        hw = _hw(doc["crop_size"], "crop_size", where)
        if out["resize_mode"] == "squash" and out["size"] != hw:
            raise ConvkitError(f"{where}: resize_size [h, w] then a different crop_size is not supported")
        out["size"] = hw
    return out


def write_sidecar(model_path: Path, pre: P.Preprocessing) -> Path:
    """Write ``<model>.convkit.json`` holding the whole preprocessing ``pre`` (convkit.preprocessing.to_document)
    so the next evaluation needs no flags; returns its path. The one sidecar writer (evaluate and export)."""
    path = sidecar_path(model_path)
    return write_json(path, P.to_document(pre, Path(model_path).name))
