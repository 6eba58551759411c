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


@dataclass
class ModelSpec:
    """Everything evaluation needs to know about one ONNX classifier."""

    path: Path
    input_name: str
    output_name: str
    input_type: str  # ORT type string, e.g. "tensor(float)"
    layout: str  # "NCHW" | "NHWC"
    fixed_batch: int | None  # static batch size, None when dynamic
    image_shape: tuple[int | None, int | None, int | None]  # C, H, W as declared (None = symbolic)
    num_classes: int | None  # declared classes (None = symbolic until run)
    dataset: str
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_range: str  # "1" or "255"
    precision: str
    metadata: dict = field(default_factory=dict)
    # where each preprocessing value came from: "metadata", "flag", "default: …" or "guessed: …"
    sources: dict = field(default_factory=dict)
    channel_order: str = "rgb"  # "bgr": the three channels are reversed before mean/std
    flat: bool = False  # the input is [N, C*H*W]: images are flattened (in ``layout`` order) before the model
    output_kind: str = "scores"  # "scores" [N, K]; "squeeze" [N, K, 1, 1]; "zipmap" a sequence of {class: prob}

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

    def preprocessing_line(self) -> str:
        """Return one line naming every preprocessing value actually used and where it came from."""
        def kind(key):
            return self.sources.get(key, "default")
        parts = (["raw uint8 fed; range/mean/std do not apply"] if self.raw_uint8 else
                 [f"range 0..{self.input_range} [{kind('input_range')}]", f"mean {list(self.mean)} [{kind('mean')}]",
                  f"std {list(self.std)} [{kind('std')}]"])
        parts.append(f"layout {self.layout}{' flattened' if self.flat else ''} [{kind('layout')}]")
        if self.image_shape[0] != 1:
            parts.append(f"channels {self.channel_order} [{kind('channel_order')}]")
        return ", ".join(parts)

    @property
    def input_dtype(self):
        """Return the numpy dtype the model's input wants."""
        return NP_TYPES.get(self.input_type, np.float32)

    def prepare(self, images_u8: np.ndarray) -> np.ndarray:
        """Return uint8 images [N, C, H, W] converted to the model's input: range, mean/std, layout, dtype."""
        images_u8 = np.asarray(images_u8)  # a lazily decoded --data folder is decoded here
        x = images_u8.astype(np.float32)
        if self.input_dtype == np.uint8:
            out = images_u8[:, ::-1] if self.channel_order == "bgr" and images_u8.shape[1] == 3 else images_u8
        else:
            if self.input_range == "1":
                x = x / np.float32(255.0)
            c = x.shape[1]
            if self.channel_order == "bgr" and c == 3:
                x = x[:, ::-1]
            mean = np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1)
            std = np.asarray(self.std, np.float32).reshape(1, -1, 1, 1)
            if mean.shape[1] not in (1, c) or std.shape[1] not in (1, c):
                raise ConvkitError(f"--mean/--std give {mean.shape[1]}/{std.shape[1]} values but the images have "
                                   f"{c} channels; give 1 or {c}")
            out = (x - mean) / std
        if self.layout == "NHWC":
            out = out.transpose(0, 2, 3, 1)
        if self.flat:
            out = out.reshape(len(out), -1)
        return np.ascontiguousarray(out, dtype=self.input_dtype)

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
    layout = _layout(ov, meta, in_dims, sources, flat)
    c, h, w = (in_dims[1], in_dims[2], in_dims[3]) if layout == "NCHW" else (in_dims[3], in_dims[1], in_dims[2])
    if info is not None:
        _check_dataset_shape(path, inp, in_dims, layout, (c, h, w), info)
    class_names = _class_names(path, meta, ov, info, sources)
    n_classes = out_dims[1]
    if n_classes is not None and n_classes != len(class_names):
        raise ConvkitError(f"{path}: output {out.name!r} has {n_classes} classes but {dataset} has "
                           f"{len(class_names)} ({sources['classes']}); pass the matching "
                           f"{'--classes FILE' if ov.folder else '--dataset'}")
    input_range, channel_order = _range_and_order(ov, meta, sources)
    default_mean, default_std, norm_name = default_normalization(info, c)
    mean = _norm("mean", ov, meta, input_range, sources, (default_mean, norm_name))
    std = _norm("std", ov, meta, input_range, sources, (default_std, norm_name))
    if not all(s > 0 for s in std):  # 0 divides by zero; a negative std only mirrors the pixel values
        raise ConvkitError(f"{sources['std'].replace('flag', '--std')} std must be positive (and not contain 0), "
                           f"got {list(std)}")
    return ModelSpec(path=path, input_name=inp.name, output_name=out.name, input_type=input_type, layout=layout,
                     fixed_batch=in_dims[0], image_shape=(c, h, w), num_classes=n_classes, dataset=dataset,
                     class_names=class_names, mean=mean, std=std, input_range=input_range,
                     precision=meta.get("precision") or _precision_from_name(path), metadata=meta, sources=sources,
                     channel_order=channel_order, flat=flat, output_kind=kind)


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


def _norm(key: str, ov: Overrides, meta: dict, input_range: str, sources: dict, default) -> tuple[float, ...]:
    """Return mean or std: the flag, else the config file's, else the metadata's, else the default."""
    given = getattr(ov, key)
    if given is not None:
        sources[key] = "flag"
        return tuple(given)
    if ov.config is not None and getattr(ov.config, key) is not None:
        sources[key] = ov.config.source
        return tuple(getattr(ov.config, key))
    if meta.get(key):
        sources[key] = "metadata"
        return _floats(meta[key], f"metadata {key}")
    if input_range == "255":
        sources[key] = "default: raw 0..255 pixels, no normalization"
        return (0.0,) if key == "mean" else (1.0,)
    values, name = default
    sources[key] = f"default: {name}"
    return tuple(values)


def _layout(ov: Overrides, meta: dict, in_dims: list, sources: dict, flat: bool = False) -> str:
    """Return "NCHW" or "NHWC": --layout, else the config's, else the metadata's, else from the input shape
    (decided by it when only one position can hold the channels, else guessed)."""
    cfg = ov.config.layout if ov.config is not None else None
    if ov.layout:
        layout, sources["layout"] = ov.layout.upper(), "flag"
    elif cfg:
        layout, sources["layout"] = cfg.upper(), ov.config.source
    elif meta.get("input_layout", "").upper() in ("NCHW", "NHWC"):
        layout, sources["layout"] = meta["input_layout"].upper(), "metadata"
    elif flat:
        layout, sources["layout"] = "NCHW", "default: nchw (C, H, W order of the flattened values)"
    else:
        layout, decided = _guess_layout(in_dims)
        sources["layout"] = "input shape" if decided else "guessed: from the input shape"
    if layout not in ("NCHW", "NHWC"):
        raise ConvkitError(f"--layout must be nchw or nhwc, got {ov.layout!r}")
    return layout


def _range_and_order(ov: Overrides, meta: dict, sources: dict) -> tuple[str, str]:
    """Return (input range "1"|"255", channel order "rgb"|"bgr"): flag, else the config's, else metadata (a
    convkit file's are 0..1 and RGB, as trained), else the defaults 0..1 and RGB."""
    cfg = ov.config
    values = {}
    for key, default in (("input_range", "1"), ("channel_order", "rgb")):
        from_cfg = getattr(cfg, key) if cfg is not None else None
        if getattr(ov, key):
            values[key], sources[key] = getattr(ov, key), "flag"
        elif from_cfg:
            values[key], sources[key] = from_cfg, cfg.source
        elif meta.get(key) or meta.get("experiment"):
            values[key], sources[key] = meta.get(key) or default, "metadata"
        else:
            values[key], sources[key] = default, f"default: {'0..1' if key == 'input_range' else default}"
    input_range, channel_order = values["input_range"], values["channel_order"].lower()
    if channel_order not in ("rgb", "bgr"):
        raise ConvkitError(f"--channel-order must be rgb or bgr, got {channel_order!r}")
    if input_range not in ("1", "255"):
        what = "--input-range" if ov.input_range else "metadata input_range"
        raise ConvkitError(f"{what} must be 1 or 255, got {input_range!r}")
    return input_range, channel_order


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
