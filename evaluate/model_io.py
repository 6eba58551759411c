"""Read an ONNX classifier: validate it, find its image input and class output, resolve its dataset and
normalization (from convkit metadata, overridable for models made elsewhere), and adapt uint8 images to it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from convkit.artifacts import VARIANT_FILES
from convkit.data.catalog import get_dataset_info
from convkit.data.folder import IMAGENET_MEAN, IMAGENET_STD
from convkit.errors import ConvkitError, first_line
from convkit.gates import VARIANTS
from convkit.onnx_meta import capped_metadata
from convkit import preprocessing as P
from convkit.preprocessing_config import ConfigPreprocessing

NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
            "tensor(uint8)": np.uint8}


@dataclass
class Overrides:
    """User overrides of what the model's metadata says (None = keep the metadata's / the default)."""

    dataset: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: str | None = None  # "nchw" | "nhwc"
    input_range: str | None = None  # "1" | "255"
    output: str | None = None  # which graph output holds the class scores (required when there are several)
    channel_order: str | None = None  # "rgb" | "bgr"
    class_names: list[str] | None = None  # --classes: the model's output order
    class_names_source: str = "flag"  # where class_names come from: --classes, or a user model's model_source.json
    folder: str | None = None  # --data: the image folder's name (no catalog dataset)
    folder_classes: list[str] | None = None  # --data: the folder's classes, sorted
    config: ConfigPreprocessing | None = None  # a preprocessing config file (HF, timm, convkit sidecar)
    input_shape: tuple[int, int, int] | None = None  # --input-shape C,H,W: how a flattened input unflattens
    geometry: dict = field(default_factory=dict)  # geometry flags (convkit.preprocessing field names)

    def flags(self) -> dict:
        """Return the preprocessing fields the flags state."""
        return {**self.geometry, "mean": self.mean, "std": self.std, "layout": self.layout,
                "input_range": self.input_range, "channel_order": self.channel_order}


PIXEL_KEYS = ("input_range", "mean", "std", "layout", "channel_order")


@dataclass
class ModelSpec:
    """Everything evaluation needs to know about one ONNX classifier; ``pre`` is its whole preprocessing."""

    path: Path
    input_name: str
    output_name: str
    input_type: str  # ORT type string, e.g. "tensor(float)"
    fixed_batch: int | None  # static batch size, None when dynamic
    image_shape: tuple[int | None, int | None, int | None]  # C, H, W as declared (None = symbolic)
    num_classes: int | None  # declared classes (None = symbolic until run)
    dataset: str
    class_names: list[str]
    pre: P.Preprocessing
    precision: str
    metadata: dict = field(default_factory=dict)
    # where the dataset and classes came from ("flag", "metadata", "default: …"); the preprocessing's are pre's
    other_sources: dict = field(default_factory=dict)
    flat: bool = False  # the input is [N, C*H*W]: images are flattened (in ``layout`` order) before the model
    output_kind: str = "scores"  # "scores" [N, K]; "squeeze" [N, K, 1, 1]; "zipmap" a sequence of {class: prob}
    conflicts: list = field(default_factory=list)  # where a config file and the metadata disagree (the config won)

    mean = property(lambda self: self.pre.mean)
    std = property(lambda self: self.pre.std)
    input_range = property(lambda self: self.pre.input_range)
    channel_order = property(lambda self: self.pre.channel_order)
    layout = property(lambda self: self.pre.layout)

    @property
    def sources(self) -> dict:
        """Return where each value came from: the dataset, the classes and every preprocessing field."""
        return {**self.other_sources, **self.pre.sources}

    @property
    def has_convkit_metadata(self) -> bool:
        """Return True when the file carries convkit's metadata (it was exported by convkit)."""
        return bool(self.metadata.get("experiment") and self.metadata.get("dataset"))

    @property
    def raw_uint8(self) -> bool:
        """Return True when the model takes uint8 pixels (its preprocessing is inside the graph)."""
        return self.input_type == "tensor(uint8)"

    def applicable(self) -> list[str]:
        """Return the preprocessing values that apply to this model: no range/mean/std for a uint8 input, no
        channel order for a one-channel one."""
        keys = ["classes"] + ([] if self.flat and self.image_shape[0] == 1 else ["layout"])  # 1 channel: same order
        if not self.raw_uint8:
            keys += ["input_range", "mean", "std"]
        if self.image_shape[0] != 1:
            keys.append("channel_order")
        return keys

    def defaulted(self) -> list[str]:
        """Return the applicable preprocessing values that were neither given nor read from metadata or a config
        (defaults, guesses)."""
        return [k for k in self.applicable() if self.sources.get(k, "default").startswith(("default", "guessed"))]

    def preprocessing_line(self, geometry: bool = False) -> str:
        """Return one line naming every preprocessing value actually used and where it came from."""
        line = self.pre.line(self.raw_uint8, self.image_shape[0], geometry)
        return line.replace(f"layout {self.layout}", f"layout {self.layout}{' flattened' if self.flat else ''}", 1)

    @property
    def input_dtype(self):
        """Return the numpy dtype the model's input wants."""
        return NP_TYPES.get(self.input_type, np.float32)

    def prepare(self, images_u8) -> np.ndarray:
        """Return uint8 images [N, C, H, W] converted to the model's input (convkit.preprocessing.to_model_input:
        range, mean/std, a model-space pad, layout, dtype), flattened for a flat input."""
        if hasattr(images_u8, "with_preprocessing"):  # a lazily decoded --data folder is decoded here, framed
            images_u8 = images_u8[:]
        out = P.to_model_input(images_u8, self.pre)
        return np.ascontiguousarray(out.reshape(len(out), -1)) if self.flat else out

    def scores(self, raw) -> np.ndarray:
        """Return the class scores [N, K] (float32) of one ``session.run`` output: squeezed from [N, K, 1, 1], or
        read from a ZipMap's sequence of {class: probability} (classes in key order)."""
        if self.output_kind == "zipmap":
            rows = list(raw)
            keys = sorted(rows[0]) if rows else []
            return np.asarray([[r[k] for k in keys] for r in rows], dtype=np.float32).reshape(len(rows), len(keys))
        y = np.asarray(raw)
        if self.output_kind == "squeeze" and y.ndim == 4:
            y = y.reshape(y.shape[0], y.shape[1])
        return y

    def describe(self) -> dict:
        """Return a JSON-able description of the model's interface and preprocessing."""
        return {"path": str(self.path), "input": self.input_name, "input_type": self.input_type,
                "output": self.output_name, "layout": self.layout, "fixed_batch": self.fixed_batch,
                "image_shape_chw": list(self.image_shape), "num_classes": self.num_classes,
                "dataset": self.dataset, "class_names": self.class_names, "mean": list(self.mean),
                "std": list(self.std), "input_range": self.input_range, "channel_order": self.channel_order,
                "precision": self.precision, "sources": self.sources, "flattened_input": self.flat,
                "preprocessing_value": self.pre.to_json(), "geometry": self.pre.geometry_line(),
                "output_kind": self.output_kind,
                "convkit_metadata": self.has_convkit_metadata, "preprocessing": self.preprocessing_line(),
                "metadata": {k: v for k, v in self.metadata.items() if k not in ("class_names",)}}


def load_onnx(path: Path):
    """Return the parsed, checked ``onnx.ModelProto`` at ``path``; ConvkitError (exit 2) when it is not valid ONNX."""

    path = Path(path)
    if not path.is_file():
        raise ConvkitError(f"{path} not found; pass an .onnx file or a run directory holding {VARIANT_FILES['fp32']}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ConvkitError(f"{path} is not a readable ONNX model (truncated or not ONNX: {type(exc).__name__})") from None
    if model.ir_version <= 0 or not model.opset_import or len(model.graph.node) == 0 or len(model.graph.output) == 0:
        raise ConvkitError(f"{path} is not an ONNX model (no graph, opset or outputs; truncated or not ONNX)")
    try:  # by path: external data resolves beside the model file (onnx refuses locations that leave its folder)
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise ConvkitError(f"{path} is not a valid ONNX model (truncated or corrupt): {first_line(exc, 200)}") from None
    return model


def _dims(value_info) -> list[int | None]:
    """Return the declared dims of a graph input/output: positive sizes, None for symbolic or unknown ones.

    0 is kept (an empty tensor, rejected by the caller); negative sizes, which some exporters write for
    "dynamic", count as symbolic.
    """
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None for d in shape.dim]


def _no_zero_dims(path: Path, kind: str, value_info, dims: list[int | None]) -> None:
    """Raise ConvkitError when a declared dim is 0: such a model holds no image or no class to score."""
    if 0 in dims:
        raise ConvkitError(f"{path}: {kind} {value_info.name!r} declares a zero-sized dimension {dims}; "
                           "re-export it with real (or symbolic) sizes")


def _class_names(path: Path, meta: dict, ov: Overrides, info, sources: dict) -> list[str]:
    """Return the class names in the model's output order: --classes, else the metadata's list when usable (and
    no --dataset override), else the catalog's, else the --data folder's (sorted, as torchvision's ImageFolder)."""
    if ov.class_names:
        sources["classes"] = ov.class_names_source
        return list(ov.class_names)
    names = None
    if meta.get("class_names") and not ov.dataset:
        try:
            listed = json.loads(meta["class_names"])
        except ValueError:
            listed = None
        if isinstance(listed, list):  # anything else (a number, a mapping) is not a list of names: ignore it
            names, sources["classes"] = [str(c) for c in listed], "metadata"
    if names is None and info is not None:
        names, sources["classes"] = list(info.classes), ("flag: --dataset's catalog classes" if ov.dataset else
                                                          f"default: {info.name} catalog")
    if names is None:
        names, sources["classes"] = list(ov.folder_classes or []), "guessed: the folder's class names, sorted"
    if info is not None and len(names) != info.num_classes:
        raise ConvkitError(f"{path}: metadata class_names lists {len(names)} names but {info.name} has "
                           f"{info.num_classes} classes; pass --dataset to use the catalog's names")
    return names


def _floats(text: str, what: str) -> tuple[float, ...]:
    """Return the finite numbers of "0.5,0.5" or "[0.5, 0.5]"; ConvkitError (one line) for anything else."""
    shown = repr(text) if len(text) <= 60 else repr(text[:57] + "...")
    try:
        vals = json.loads(text) if text.strip().startswith("[") else [float(v) for v in text.split(",")]
        if not isinstance(vals, list) or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in vals):
            raise TypeError(text)
        out = tuple(float(v) for v in vals)
    except (ValueError, TypeError, OverflowError):
        raise ConvkitError(f"{what} must be a comma-separated list of numbers, got {shown}") from None
    if not out:
        raise ConvkitError(f"{what} must list at least one number, got {shown}")
    # NaN or inf would turn every image into NaN and every prediction into class 0, silently
    if not all(math.isfinite(v) for v in out):
        raise ConvkitError(f"{what} must be finite numbers (no nan or inf), got {shown}")
    return out


def parse_floats(text: str | None, what: str) -> tuple[float, ...] | None:
    """Return a tuple of floats from "0.5,0.5" or "[0.5, 0.5]" (None passes through); ConvkitError otherwise."""
    return None if text is None else _floats(text, what)


def _is_zipmap(value_info) -> bool:
    """Return True for skl2onnx's ZipMap output: a sequence of maps {class: probability}."""
    seq = value_info.type.sequence_type if value_info.type.HasField("sequence_type") else None
    return seq is not None and seq.elem_type.HasField("map_type")


def _is_label_output(value_info) -> bool:
    """Return True for an integer tensor (class ids, not scores)."""
    elem = value_info.type.tensor_type.elem_type if value_info.type.HasField("tensor_type") else None
    return elem in (TensorProto.INT64, TensorProto.INT32)


def _describe_output(o) -> str:
    if _is_zipmap(o):
        return f"{o.name!r} ZipMap (sequence of maps)"
    return f"{o.name!r} {['?' if d is None else d for d in _dims(o)]}"


def pick_output(path: Path, outputs, name: str | None):
    """Return the graph output holding the class scores: the one named ``name``, the only one, or the only
    score-like one beside integer label outputs (skl2onnx writes a label output and a probability output).

    Several score-like outputs and no name is a ConvkitError (exit 2) listing them with their shapes: scoring the
    first one silently could measure an auxiliary head or a feature map.
    """
    listing = ", ".join(_describe_output(o) for o in outputs)
    if name is not None:
        found = [o for o in outputs if o.name == name]
        if not found:
            raise ConvkitError(f"{path} has no output {name!r}; its outputs: {listing}")
        return found[0]
    scores = [o for o in outputs if not _is_label_output(o)]
    if len(outputs) > 1 and len(scores) == 1:
        return scores[0]
    if len(outputs) > 1:
        raise ConvkitError(f"{path} has {len(outputs)} outputs ({listing}); pass --output NAME to say which holds "
                           f"the class scores")
    return outputs[0]


def output_kind(path: Path, out) -> tuple[str, list[int | None]]:
    """Return (how to read ``out`` as scores, its declared dims): "scores" [N, K], "squeeze" [N, K, 1, 1] or
    "zipmap"; ConvkitError (exit 2) for class-id outputs and any other shape."""
    if _is_zipmap(out):
        return "zipmap", [None, None]
    if out.type.HasField("sequence_type") or out.type.HasField("map_type"):
        raise ConvkitError(f"{path}: output {out.name!r} is a sequence or map, not class scores; re-export it as a "
                           f"tensor [N, classes]")
    dims = _dims(out)
    if _is_label_output(out):
        raise ConvkitError(f"{path}: output {out.name!r} holds integer class ids {dims}, not scores: accuracy "
                           f"needs the scores (top-5, loss and calibration do too); pass --output with the "
                           f"probability/logit output, or re-export the model with one")
    if len(dims) == 4 and dims[2] in (1, None) and dims[3] in (1, None):
        return "squeeze", [dims[0], dims[1]]
    if len(dims) != 2:
        raise ConvkitError(f"{path}: output {out.name!r} has shape {dims}, expected [N, classes] logits or "
                           f"probabilities (or [N, classes, 1, 1])")
    return "scores", dims


def _guess_layout(dims: list[int | None]) -> tuple[str, bool]:
    """Return (layout, whether the shape alone decides it) for 4-D input dims."""
    c_first, c_last = dims[1] in (1, 3, 4), dims[3] in (1, 3, 4)
    if c_last and not c_first:
        return "NHWC", True
    return "NCHW", c_first and not c_last


def _image_input(path: Path, model, ov: Overrides):
    """Return (the image input, its dims as 4-D, whether it is flattened [N, C*H*W])."""
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    ranked = [i for i in inputs if len(i.type.tensor_type.shape.dim) in (2, 4)]
    if len(ranked) != 1 or len(inputs) != 1:
        desc = ", ".join(f"{i.name!r} {_dims(i)}" for i in inputs) or "none"  # repr: names may hold newlines
        raise ConvkitError(f"{path} has no single image-like input (need exactly one 4-D [N, C, H, W] / [N, H, W, C] "
                           f"or flattened [N, C*H*W] input; found: {desc})")
    inp = ranked[0]
    dims = _dims(inp)
    if len(dims) == 4:
        return inp, dims, False
    return inp, _unflatten(path, inp, dims, ov), True


def _unflatten(path: Path, inp, dims: list, ov: Overrides) -> list:
    """Return 4-D dims for a flattened [N, D] input from --input-shape C,H,W (or the dataset's image shape)."""
    shape = ov.input_shape
    if shape is None and ov.dataset:
        shape = tuple(get_dataset_info(ov.dataset).input_shape)
    if shape is None:
        raise ConvkitError(f"{path}: input {inp.name!r} {dims} is flattened; pass --input-shape C,H,W to say how "
                           f"images unflatten (e.g. 1,28,28)")
    c, h, w = shape
    if dims[1] is not None and dims[1] != c * h * w:
        raise ConvkitError(f"{path}: input {inp.name!r} {dims} takes {dims[1]} values but --input-shape "
                           f"{c},{h},{w} gives {c * h * w}; pass the shape the model was trained on")
    layout = (ov.layout or "nchw").upper()
    return [dims[0], c, h, w] if layout == "NCHW" else [dims[0], h, w, c]


def inspect_model(path: Path, overrides: Overrides | None = None) -> ModelSpec:
    """Return the ModelSpec of the ONNX classifier at ``path``; ConvkitError (exit 2) for anything unusable.

    Checks: valid ONNX; exactly one image input (4-D, or flattened 2-D with --input-shape); one score output (or
    the one ``overrides.output`` names): [N, classes], [N, classes, 1, 1] or a ZipMap; the dataset named by
    metadata or ``overrides`` exists in the catalog; declared classes and image shape agree with the dataset.
    """
    ov = overrides or Overrides()
    path = Path(path)
    model = load_onnx(path)
    meta = capped_metadata(model.metadata_props)
    inp, in_dims, flat = _image_input(path, model, ov)
    out = pick_output(path, model.graph.output, ov.output)
    kind, out_dims = output_kind(path, out)
    _no_zero_dims(path, "input", inp, in_dims)
    _no_zero_dims(path, "output", out, out_dims)
    input_type = _input_type(path, inp)
    sources = {}
    dataset, info = _dataset(path, meta, ov, sources)
    layers = [("flag", {})] + _layout_layers(ov, meta, in_dims, flat)
    layout = P.resolve(preprocessing_layers(ov, meta) + layers[1:]).layout
    c, h, w = (in_dims[1], in_dims[2], in_dims[3]) if layout == "NCHW" else (in_dims[3], in_dims[1], in_dims[2])
    if info is not None:
        _check_dataset_shape(path, inp, in_dims, layout, (c, h, w), info)
    class_names = _class_names(path, meta, ov, info, sources)
    n_classes = out_dims[1]
    if n_classes is not None and n_classes != len(class_names):
        raise ConvkitError(f"{path}: output {out.name!r} has {n_classes} classes but {dataset} has "
                           f"{len(class_names)} ({sources['classes']}); pass the matching "
                           f"{'--classes FILE' if ov.folder else '--dataset'}")
    pre = resolve_preprocessing(path, ov, meta, layers[1:], info, (c, h, w), input_type)
    return ModelSpec(path=path, input_name=inp.name, output_name=out.name, input_type=input_type,
                     fixed_batch=in_dims[0], image_shape=(c, h, w), num_classes=n_classes, dataset=dataset,
                     class_names=class_names, pre=pre,
                     precision=meta.get("precision") or _precision_from_name(path), metadata=meta,
                     other_sources=sources, flat=flat, output_kind=kind, conflicts=conflicts(ov, meta))


def conflicts(ov: Overrides, meta: dict) -> list[str]:
    """Return, in words, each field a config file and the model's metadata both state with different values (the
    config won, being higher in flag > config > metadata), unless a flag settled it."""
    if ov.config is None:
        return []
    cfg, md, flags = ov.config.values(), metadata_fields(meta), ov.flags()
    shown = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    return [f"{ov.config.source} says {k} {shown(P.check_field(k, cfg[k], ov.config.source))} where the model's "
            f"metadata says {shown(P.check_field(k, md[k], 'metadata'))}; the config won (flag > config > "
            f"metadata): pass --{k.replace('_', '-')} to choose, or remove the config"
            for k in P.FIELDS if k in cfg and k in md and flags.get(k) is None
            and P.check_field(k, cfg[k], "config") != P.check_field(k, md[k], "metadata")]


DTYPE_OF_INPUT = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
                  "tensor(uint8)": "uint8"}


def preprocessing_layers(ov: Overrides, meta: dict) -> list[tuple[str, dict]]:
    """Return the (source, fields) layers above the defaults, highest first: the flags, the config file, the
    model's metadata (convkit's one key, its older keys, an Ultralytics classifier's imgsz)."""
    layers = [("flag", ov.flags())]
    if ov.config is not None:
        layers.append((ov.config.source, ov.config.values()))
    layers.append(("metadata", metadata_fields(meta)))
    return layers


def metadata_fields(meta: dict) -> dict:
    """Return the preprocessing fields an ONNX file's metadata states: convkit's ``convkit_preprocessing`` JSON,
    else its older keys (mean, std, input_range, channel_order, input_layout), an Ultralytics classifier's."""
    if meta.get(P.METADATA_KEY):
        try:
            doc = json.loads(meta[P.METADATA_KEY])
        except ValueError:
            raise ConvkitError(f"metadata {P.METADATA_KEY} is not JSON; re-export the model") from None
        return P.from_document(doc, f"metadata {P.METADATA_KEY}")
    out = {}
    for key in ("mean", "std"):
        if meta.get(key):
            try:
                out[key] = _floats(meta[key], f"metadata {key}")
            except ConvkitError:  # kept as text: the resolver refuses it only where no flag or config overrides it
                out[key] = meta[key][:200]
    if meta.get("input_layout", "").upper() in ("NCHW", "NHWC"):
        out["layout"] = meta["input_layout"]
    for key, default in (("input_range", "1"), ("channel_order", "rgb")):
        if meta.get(key) or meta.get("experiment"):  # a convkit file's are 0..1 and RGB, as trained
            out[key] = meta.get(key) or default
    if meta.get("task") == "classify" and meta.get("imgsz"):
        out.update(ultralytics_fields(meta))
    return out


def ultralytics_fields(meta: dict) -> dict:
    """Return an Ultralytics classification export's preprocessing (ultralytics classify_transforms): the shorter
    side resized to imgsz, a center crop of imgsz, RGB 0..1 with no mean/std, bilinear."""
    try:
        size = json.loads(meta["imgsz"])
    except ValueError:
        raise ConvkitError(f"metadata imgsz {meta['imgsz'][:40]!r} is not [height, width]") from None
    size = [size, size] if isinstance(size, int) else size
    hw = P.check_field("size", size, "metadata imgsz")
    return {"size": hw, "resize_mode": "shorter", "resize": min(hw), "crop": "center", "input_range": "1",
            "mean": (0.0,), "std": (1.0,), "channel_order": "rgb", "interpolation": "bilinear"}


def resolve_preprocessing(path: Path, ov: Overrides, meta: dict, shape_layer: list, info, chw: tuple,
                          input_type: str) -> P.Preprocessing:
    """Return the model's Preprocessing: flags > config > metadata > the input shape > catalog > defaults
    (convkit.preprocessing.resolve), with the model's fixed H×W and input dtype enforced."""
    layers = preprocessing_layers(ov, meta) + shape_layer
    c, h, w = chw
    first = P.resolve(layers)
    default_mean, default_std, norm_name = default_normalization(info, c)
    if first.input_range == "255":
        norm = ("default: raw 0..255 pixels, no normalization", {"mean": (0.0,), "std": (1.0,)})
    else:
        norm = (f"default: {norm_name}", {"mean": default_mean, "std": default_std})
    pre = P.resolve(layers + [norm, ("model input", {"dtype": DTYPE_OF_INPUT[input_type]})])
    if pre.dtype != DTYPE_OF_INPUT[input_type]:
        raise ConvkitError(f"{path} takes {DTYPE_OF_INPUT[input_type]} input, but dtype {pre.dtype} "
                           f"({pre.source('dtype')}) was stated; drop it")
    return _fit_model_size(path, pre, h, w)


def _fit_model_size(path: Path, pre: P.Preprocessing, h, w) -> P.Preprocessing:
    """Return ``pre`` with the model's fixed H×W as its size (a stated size that differs is a ConvkitError naming
    where it came from); a dynamic width at a fixed height guesses a square."""
    if h and w:
        if pre.size is not None and pre.size != (h, w):
            where = pre.source("size")
            where = "--size/--crop" if where == "flag" else where
            raise ConvkitError(f"{path.name} takes a fixed {h}×{w} input, but size {pre.size[0]}×{pre.size[1]} "
                               f"({where}) was stated; drop it or state {h}x{w}")
        return pre if pre.size is not None else pre.replace("model input", size=(h, w))
    if pre.size is None and h:
        return pre.replace(f"guessed: {h}×{h}, the model's height (its width is dynamic)", size=(h, h))
    if pre.size is not None and h and pre.size[0] != h:
        raise ConvkitError(f"{path.name} takes inputs {h} high, but size {pre.size[0]}×{pre.size[1]} "
                           f"({pre.source('size')}) was stated")
    return pre


def _input_type(path: Path, inp) -> str:
    elem = inp.type.tensor_type.elem_type
    input_type = {TensorProto.FLOAT: "tensor(float)", TensorProto.FLOAT16: "tensor(float16)",
                  TensorProto.DOUBLE: "tensor(double)", TensorProto.UINT8: "tensor(uint8)"}.get(elem)
    if input_type is None:
        raise ConvkitError(f"{path}: input {inp.name!r} has element type "
                           f"{TensorProto.DataType.Name(elem)}; only float32/float16/float64/uint8 images are supported")
    return input_type


def _check_dataset_shape(path: Path, inp, in_dims: list, layout: str, chw: tuple, info) -> None:
    """Raise ConvkitError when the model's fixed C/H/W differ from the catalog dataset's images."""
    for got, exp, what in zip(chw, info.input_shape, ("channels", "height", "width")):
        if got is not None and got != exp:
            hint = ("; to evaluate it at its own size use --data FOLDER (an ImageFolder of your images) with "
                    "--resize/--crop" if what != "channels" else "; check --layout or --dataset")
            raise ConvkitError(f"{path}: input {inp.name!r} {in_dims} ({layout}) has {got} {what}, but {info.name} "
                               f"images have {exp}{hint}")


def _layout_layers(ov: Overrides, meta: dict, in_dims: list, flat: bool) -> list[tuple[str, dict]]:
    """Return the layout the input shape implies, as a resolver layer below the metadata: NCHW for a flattened
    input, else decided by the shape when only one position can hold the channels, else guessed."""
    if flat:
        return [("default: nchw (C, H, W order of the flattened values)", {"layout": "nchw"})]
    layout, decided = _guess_layout(in_dims)
    return [("input shape" if decided else "guessed: from the input shape", {"layout": layout})]


def default_normalization(info, channels: int | None) -> tuple[tuple, tuple, str]:
    """Return (mean, std, where from) for 0..1 pixels: the catalog dataset's, else ImageNet's (torchvision's
    convention) for colour models and 0.5/0.5 for single-channel ones."""
    if info is not None:
        return tuple(info.mean), tuple(info.std), f"{info.name} catalog"
    if channels == 1:
        return (0.5,), (0.5,), "0.5/0.5 (single channel, no dataset known)"
    return IMAGENET_MEAN, IMAGENET_STD, "ImageNet (the torchvision convention)"


def _dataset(path: Path, meta: dict, ov: Overrides, sources: dict):
    """Return (dataset name, catalog DatasetInfo or None for an image folder given with --data)."""
    if ov.folder:
        sources["dataset"] = "flag"
        return ov.folder, None
    dataset = ov.dataset or meta.get("dataset")
    sources["dataset"] = "flag" if ov.dataset else "metadata"
    if not dataset:
        raise ConvkitError(f"{path} carries no convkit metadata naming its dataset; pass --dataset (mnist or cifar10) "
                           f"or --data FOLDER")
    return dataset, get_dataset_info(dataset)


def _precision_from_name(path: Path) -> str:
    name = Path(path).name
    for p in VARIANTS:
        if f".{p}." in name or name.endswith(f"_{p}.onnx"):
            return p
    return "fp32"
