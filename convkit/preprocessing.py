"""Preprocessing as one value: how a uint8 image becomes a model's input, every field with where it came from.

``Preprocessing`` holds the geometry (how the image is resized, cropped and padded to the input's H×W) and the
pixels (range, mean/std, channel order, layout, dtype). ``resolve`` is the one resolver — flag > config file >
model metadata > dataset catalog > default, each field independently, each value checked — and ``fit`` +
``to_model_input`` (``apply`` for one image) are the one application: ONNX Runtime and the PyTorch reference get
the array ``to_model_input`` returns, nothing else. docs/preprocessing.md says what each mode does.

Geometry modes (target H×W = ``size``):
  shorter   the shorter side resized to ``resize`` (default min(H, W)), the other keeping the ratio (truncated, as
            torchvision's Resize(int)); then the H×W center is cropped (torchvision's CenterCrop, padded if smaller)
  longer    the longer side resized to ``resize`` (default max(H, W)), then cropped/padded to H×W
  squash    both sides resized to exactly H×W (aspect ratio not kept)
  letterbox fit inside H×W keeping the ratio (scale min(H/h, W/w), sides rounded), then padded to H×W
  height    height resized to H, width min(W, ceil(H·w/h)) (the ratio kept, at most W), then padded to width W
  none      no resize: the image cropped/padded to H×W as it is
Padding is at the end (right/bottom) or centred, with ``pad_value`` in pixel space (0..255, before the pixel
conversion) or in model space (written into the model input after normalisation: "zero-pad" of a normalised
model is model space). Resampling is Pillow's (its filters antialias when shrinking, as torchvision's PIL path
and ``antialias=True`` do); OpenCV's convention is refused, since it is not in convkit's stack.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from convkit.errors import ConvkitError

MODES = ("shorter", "longer", "squash", "letterbox", "height", "none")
INTERPOLATIONS = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
                  "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
                  "area": Image.Resampling.BOX}
DTYPES = {"float32": np.float32, "float16": np.float16, "float64": np.float64, "uint8": np.uint8}
MAX_SIDE = 4096  # an input side (and a resize) beyond this is not an image classifier's; bounded before allocating
METADATA_KEY = "convkit_preprocessing"  # the ONNX metadata key holding the whole value as JSON
SCHEMA = "convkit.preprocessing/2"  # the sidecar's and the metadata's schema tag (write_value writes both)
GEOMETRY_FIELDS = ("resize_mode", "size", "resize", "crop", "pad", "pad_value", "pad_space", "interpolation",
                   "convention", "antialias")
PIXEL_FIELDS = ("input_range", "mean", "std", "channel_order", "layout", "dtype")
FIELDS = GEOMETRY_FIELDS + PIXEL_FIELDS
DEFAULTS = {"resize_mode": "shorter", "size": None, "resize": None, "crop": "center", "pad": "center",
            "pad_value": 0.0, "pad_space": "pixel", "interpolation": "bilinear", "convention": "pillow",
            "antialias": True, "input_range": "1", "mean": (0.0,), "std": (1.0,), "channel_order": "rgb",
            "layout": "NCHW", "dtype": "float32"}
DEFAULT_SOURCES = {"channel_order": "default: rgb", "input_range": "default: 0..1",
                   "resize_mode": "default: shorter side, center crop (torchvision)"}
SOURCE_KINDS = ("flag", "config", "metadata", "catalog", "default", "guessed", "probed", "input shape", "model")


@dataclass(frozen=True)
class Preprocessing:
    """How a uint8 image becomes the model's input; ``sources`` maps each field to where its value came from
    ("flag", "config: FILE", "metadata", "catalog", "default: …", "guessed: …", "probed", "model")."""

    resize_mode: str = "shorter"
    size: tuple[int, int] | None = None  # H, W of the model input (None: not known yet)
    resize: int | None = None  # shorter/longer: that side's length (None: from size)
    crop: str = "center"  # "center" | "none"
    pad: str = "center"  # "end" (right/bottom) | "center"
    pad_value: float = 0.0
    pad_space: str = "pixel"  # "pixel" | "model"
    interpolation: str = "bilinear"
    convention: str = "pillow"
    antialias: bool = True
    input_range: str = "1"  # "1": pixels / 255 first; "255": raw
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channel_order: str = "rgb"
    layout: str = "NCHW"
    dtype: str = "float32"
    sources: dict = field(default_factory=dict, compare=False)

    def replace(self, source: str | None = None, **values) -> Preprocessing:
        """Return a copy with ``values`` changed (each checked); their source becomes ``source`` when given."""
        checked = {k: check_field(k, v, source or "replace") for k, v in values.items()}
        sources = dict(self.sources)
        if source:
            sources.update({k: source for k in values})
        return dataclasses.replace(self, **checked, sources=sources)

    def source(self, key: str) -> str:
        """Return where ``key``'s value came from ("default" when unrecorded)."""
        return self.sources.get(key, "default")

    def defaulted(self, keys=FIELDS) -> list[str]:
        """Return the fields of ``keys`` whose value was defaulted or guessed (not stated or probed)."""
        return [k for k in keys if self.source(k).startswith(("default", "guessed"))]

    def stated_geometry(self) -> bool:
        """Return True when the geometry that matters (mode and size) was stated by a flag, config or metadata."""
        return not self.defaulted(("resize_mode", "size"))

    def to_json(self) -> dict:
        """Return the value as JSON (lists for tuples), without its sources."""
        out = {k: getattr(self, k) for k in FIELDS}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def geometry_line(self) -> str:
        """Return the geometry in words, e.g. "height 48 keep ratio, max width 192, pad end 0 (model space)"."""
        h, w = self.size or (None, None)
        target = f"{h}×{w}" if h else "the model's size"
        mode = {"shorter": f"shorter side → {self.resize or (min(self.size) if self.size else '?')}, "
                           f"{'center crop' if self.crop == 'center' else 'no crop'} {target}",
                "longer": f"longer side → {self.resize or (max(self.size) if self.size else '?')}, fit {target}",
                "squash": f"squash to {target}",
                "letterbox": f"letterbox into {target}",
                "height": f"height {h}, keep ratio, width ≤ {w}",
                "none": f"no resize, {'center crop' if self.crop == 'center' else 'no crop'} {target}"}[self.resize_mode]
        pad = f"pad {self.pad} {self.pad_value:g} ({self.pad_space} space)"
        return f"{mode}; {pad}; {self.interpolation} ({self.convention}{', antialias' if self.antialias else ''})"

    def line(self, raw_uint8: bool = False, channels: int | None = 3, geometry: bool = True) -> str:
        """Return the whole value in one line, each field with its source in brackets."""
        s = self.source
        parts = []
        if geometry:
            parts.append(f"geometry {self.geometry_line()} [{s('resize_mode')}; size {s('size')}]")
        parts += (["raw uint8 fed; range/mean/std do not apply"] if raw_uint8 else
                  [f"range 0..{self.input_range} [{s('input_range')}]", f"mean {list(self.mean)} [{s('mean')}]",
                   f"std {list(self.std)} [{s('std')}]"])
        parts.append(f"layout {self.layout} [{s('layout')}]")
        if channels != 1:
            parts.append(f"channels {self.channel_order} [{s('channel_order')}]")
        parts.append(f"dtype {self.dtype}")
        return ", ".join(parts)


def _number(value, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConvkitError(f"{where}: {key} must be a finite number, got {str(value)[:40]!r}")
    return float(value)


def check_side(value, key: str, where: str) -> int:
    """Return ``value`` as a side in pixels (1..MAX_SIDE); ConvkitError naming ``where`` and ``key`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIDE:
        raise ConvkitError(f"{where}: {key} must be a whole number of pixels from 1 to {MAX_SIDE}, got "
                           f"{str(value)[:40]!r}")
    return value


def _choice(value, key: str, where: str, choices) -> str:
    text = str(value).lower() if isinstance(value, str) else None
    if text not in choices:
        raise ConvkitError(f"{where}: {key} must be one of {', '.join(choices)}, got {str(value)[:40]!r}")
    return text


def check_field(key: str, value, where: str):
    """Return ``value`` as field ``key`` holds it (tuples, upper-case layout, …); ConvkitError (exit 2) naming
    ``where`` and the field for anything else — a config's ``resize: "abc"`` is refused here, in one line."""
    if key == "size":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ConvkitError(f"{where}: size must be [height, width], got {str(value)[:40]!r}")
        return (check_side(value[0], "height", where), check_side(value[1], "width", where))
    if key == "resize":
        return None if value is None else check_side(value, "resize", where)
    if key in ("mean", "std"):
        vals = [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value
        if not isinstance(vals, (list, tuple)) or not vals or len(vals) > 4:
            raise ConvkitError(f"{where}: {key} must be 1 to 4 finite numbers, got {str(value)[:40]!r}")
        out = tuple(_number(v, key, where) for v in vals)
        if key == "std" and not all(v > 0 for v in out):
            raise ConvkitError(f"{where}: std must be positive (and not contain 0), got {list(out)}")
        return out
    if key == "pad_value":
        return _number(value, key, where)
    if key == "antialias":
        if not isinstance(value, bool):
            raise ConvkitError(f"{where}: antialias must be true or false, got {str(value)[:40]!r}")
        return value
    if key == "layout":
        return _choice(value, key, where, ("nchw", "nhwc")).upper()
    if key == "input_range":
        return _choice(str(value) if isinstance(value, int) and not isinstance(value, bool) else value, key, where,
                       ("1", "255"))
    if key == "convention":
        conv = _choice(value, key, where, ("pillow", "opencv"))
        if conv == "opencv":
            raise ConvkitError(f"{where}: OpenCV's resize convention is not supported (convkit resamples with "
                               f"Pillow, and OpenCV is not in its stack); drop it to use Pillow's, or evaluate with "
                               f"images already resized")
        return conv
    choices = {"resize_mode": MODES, "crop": ("center", "none"), "pad": ("end", "center"),
               "pad_space": ("pixel", "model"), "interpolation": tuple(INTERPOLATIONS),
               "channel_order": ("rgb", "bgr"), "dtype": tuple(DTYPES)}
    if key not in choices:
        raise ConvkitError(f"{where}: unknown preprocessing field {key!r}")
    return _choice(value, key, where, choices[key])


def resolve(layers: list[tuple[str, dict]], base: Preprocessing | None = None) -> Preprocessing:
    """Return the Preprocessing of ``layers`` — (source, {field: value}) pairs, highest precedence first (flag,
    config file, model metadata, catalog, default) — each field taken from the first layer that states it (None
    states nothing) and checked; fields no layer states keep ``base``'s value and source (DEFAULTS, "default").

    This is the one place preprocessing is resolved: evaluate, the probe and ``export --model`` all call it.
    """
    base = base or Preprocessing(sources={k: DEFAULT_SOURCES.get(k, "default") for k in FIELDS})
    values, sources = {}, dict(base.sources)
    for key in FIELDS:
        for source, layer in layers:
            if layer.get(key) is not None:
                values[key], sources[key] = check_field(key, layer[key], _where(source, key)), source
                break
    pre = dataclasses.replace(base, **values, sources=sources)
    check_combination(pre)
    return pre


def _where(source: str, key: str) -> str:
    return "--" + key.replace("_", "-") if source == "flag" else source


def check_combination(pre: Preprocessing) -> None:
    """Raise ConvkitError (exit 2) for fields that cannot go together (antialias off with Pillow's resampling, a
    model-space pad for a uint8 input, a pixel pad value outside 0..255)."""
    if not pre.antialias and pre.interpolation != "nearest":
        raise ConvkitError(f"antialias false ({pre.source('antialias')}) is not supported: Pillow's "
                           f"{pre.interpolation} resampling always antialiases when shrinking; use nearest or "
                           f"antialias true")
    if pre.pad_space == "pixel" and not 0 <= pre.pad_value <= 255:
        raise ConvkitError(f"pad value {pre.pad_value:g} ({pre.source('pad_value')}) is a pixel value and must be "
                           f"0..255; say model space (--pad-space model) for a value in the model's input")


def resized_size(pre: Preprocessing, h: int, w: int) -> tuple[int, int]:
    """Return the (height, width) an h×w image is resized to before it is cropped or padded to ``pre.size``."""
    th, tw = pre.size
    mode = pre.resize_mode
    if mode == "none":
        return h, w
    if mode == "squash":
        return th, tw
    if mode == "height":
        return th, max(1, min(tw, math.ceil(th * w / h)))
    if mode == "letterbox":
        r = min(th / h, tw / w)
        return max(1, min(th, round(h * r))), max(1, min(tw, round(w * r)))
    if mode == "shorter":  # torchvision Resize(int): the other side int(R * long / short)
        r = pre.resize or min(th, tw)
        return (int(r * h / w), r) if w <= h else (r, int(r * w / h))
    r = pre.resize or max(th, tw)  # longer
    return (r, max(1, int(r * w / h))) if h >= w else (max(1, int(r * h / w)), r)


def _place(n: int, t: int, pre: Preprocessing) -> tuple[int, int]:
    """Return (source offset, destination offset) of one axis: an excess of n over t is cropped (centred, as
    torchvision's CenterCrop: round((n - t) / 2)), a shortfall padded (at the end, or centred: (t - n) // 2)."""
    if n >= t:
        return int(round((n - t) / 2.0)), 0
    return 0, (0 if pre.pad == "end" else (t - n) // 2)


def fit(image: Image.Image, pre: Preprocessing) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Return (``image`` as uint8 HWC at ``pre.size``, the box (top, left, height, width) its content fills): the
    geometry of ``pre`` applied with Pillow; pixels outside the box hold the pixel-space pad value (or 0 when the
    pad is in model space, written later by ``to_model_input``)."""
    th, tw = pre.size
    w, h = image.size
    nh, nw = resized_size(pre, h, w)
    if (nh, nw) != (h, w):
        image = image.resize((nw, nh), INTERPOLATIONS[pre.interpolation])
    if pre.crop == "none" and (nh > th or nw > tw):
        raise ConvkitError(f"an image resized to {nh}×{nw} ({pre.geometry_line()}) exceeds the input {th}×{tw} and "
                           f"the crop is none (source {pre.source('crop')}); state --crop center or a --resize-mode "
                           f"that fits (letterbox, squash, height)")
    arr = np.asarray(image, dtype=np.uint8)
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    (sy, dy), (sx, dx) = _place(nh, th, pre), _place(nw, tw, pre)
    ch, cw = min(nh, th), min(nw, tw)
    fill = int(round(pre.pad_value)) if pre.pad_space == "pixel" else 0
    out = np.full((th, tw, arr.shape[2]), fill, dtype=np.uint8)
    out[dy:dy + ch, dx:dx + cw] = arr[sy:sy + ch, sx:sx + cw]
    return out, (dy, dx, ch, cw)


class Framed(np.ndarray):
    """uint8 images [N, C, H, W] with ``boxes`` [N, 4] (top, left, height, width of each image's content), so a
    model-space pad can be written after the pixel conversion. Only ``fit``'s callers make one."""

    boxes: np.ndarray | None = None

    def __getitem__(self, key):
        out = super().__getitem__(key)
        if isinstance(out, Framed):  # rows taken along the batch axis keep their boxes; anything else drops them
            first = key[0] if isinstance(key, tuple) and len(key) == 1 else key
            ok = self.boxes is not None and isinstance(first, (slice, list, np.ndarray)) and out.ndim == 4
            out.boxes = self.boxes[first] if ok else None
        return out

    def __array_finalize__(self, obj):
        self.boxes = None


def framed(images: np.ndarray, boxes) -> np.ndarray:
    """Return ``images`` carrying ``boxes`` (a Framed view)."""
    out = images.view(Framed)
    out.boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    return out


def to_model_input(images_u8, pre: Preprocessing) -> np.ndarray:
    """Return the model input for uint8 images [N, C, H, W] (a Framed batch for a model-space pad): range, channel
    order, mean/std, the model-space pad, layout and dtype of ``pre``. The one pixel conversion: ONNX Runtime and
    the PyTorch reference are fed what it returns."""
    boxes = getattr(images_u8, "boxes", None)
    u8 = np.asarray(images_u8)
    c = u8.shape[1]
    if pre.dtype == "uint8":
        out = u8[:, ::-1] if pre.channel_order == "bgr" and c == 3 else u8
    else:
        x = u8.astype(np.float32)
        if pre.input_range == "1":
            x = x / np.float32(255.0)
        if pre.channel_order == "bgr" and c == 3:
            x = x[:, ::-1]
        mean = np.asarray(pre.mean, np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(pre.std, np.float32).reshape(1, -1, 1, 1)
        if mean.shape[1] not in (1, c) or std.shape[1] not in (1, c):
            raise ConvkitError(f"mean/std give {mean.shape[1]}/{std.shape[1]} values but the images have {c} "
                               f"channels; give 1 or {c}")
        out = (x - mean) / std
        if pre.pad_space == "model" and boxes is not None:
            out = _model_pad(out, boxes, np.float32(pre.pad_value))
    if pre.layout == "NHWC":
        out = out.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(out, dtype=DTYPES[pre.dtype])


def _model_pad(x: np.ndarray, boxes: np.ndarray, value) -> np.ndarray:
    """Return ``x`` [N, C, H, W] with ``value`` outside each image's content box."""
    keep = np.zeros((x.shape[0], 1, x.shape[2], x.shape[3]), dtype=bool)
    for i, (top, left, h, w) in enumerate(boxes):
        keep[i, :, top:top + h, left:left + w] = True
    return np.where(keep, x, value).astype(np.float32)


def apply(image_u8: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """Return the model input [1, …] of one uint8 image (HWC or CHW, 1 or 3 channels, any size): ``fit`` then
    ``to_model_input``."""
    arr = np.asarray(image_u8, dtype=np.uint8)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[2] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    im = Image.fromarray(arr[:, :, 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr)
    out, box = fit(im, pre)
    return to_model_input(framed(out.transpose(2, 0, 1)[None], [box]), pre)


def to_document(pre: Preprocessing, model_name: str | None = None) -> dict:
    """Return the JSON document the sidecar and the ONNX metadata key hold: schema, model, the whole value."""
    doc = {"schema": SCHEMA, "preprocessing": pre.to_json()}
    return {**doc, "model": model_name} if model_name else doc


def metadata_entry(pre: Preprocessing) -> dict[str, str]:
    """Return {METADATA_KEY: the value as JSON}: the one ONNX metadata entry that carries it."""
    return {METADATA_KEY: json.dumps(to_document(pre), separators=(",", ":"))}


def from_document(doc, where: str) -> dict:
    """Return the fields a sidecar / metadata document states (checked; unknown fields refused)."""
    body = doc.get("preprocessing") if isinstance(doc, dict) else None
    if not isinstance(body, dict):
        raise ConvkitError(f"{where}: no \"preprocessing\" object; write it with --save-preprocessing")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise ConvkitError(f"{where}: unknown preprocessing field(s) {', '.join(map(repr, unknown[:5]))}")
    return {k: check_field(k, v, where) for k, v in body.items() if v is not None}
