"""The user's own PyTorch model: where it comes from, how it is rebuilt, and the data contract it was exported with.

A model convkit did not train is named by its source — an importable factory (``MODULE:FACTORY`` with JSON
kwargs), ``timm:NAME`` (timm.create_model, pretrained=False), or a ``torch.export.save``d program (.pt2) — plus a
weights file read with ``torch.load(weights_only=True)`` (a pickle that asks to create objects is refused and never
run). Export records the source, the weights' sha256 and the data contract in ``model_source.json`` beside the ONNX
files; evaluate rebuilds the same module from it for the PyTorch reference, checking the weights' hash.
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from convkit.archive_bounds import check_zip_sizes
from convkit.artifacts import MODEL_SOURCE, RunModel, load_weights, read_artifact
from convkit.errors import ConvkitError, one_line
from convkit.onnx_meta import file_sha256
from convkit.program_archive import load_program
from convkit.text import term
from convkit.trust import require_trusted

KINDS = ("factory", "timm", "program")  # the sources model_source.json may name; anything else is refused
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
FACTORY_SPEC = re.compile(rf"{_NAME}(?:\.{_NAME})*:{_NAME}(?:\.{_NAME})*")  # MODULE:FACTORY, as entry points name them
# state_dict keys of the usual checkpoint layouts, in timm's order (timm.models._helpers.load_state_dict)
STATE_DICT_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "model_state_dict")
MAX_KWARGS_CHARS = 10_000


@dataclass(frozen=True)
class ModelSource:
    """Where a user model comes from: "factory" (``MODULE:FACTORY``), "timm" (a timm model name) or "program" (a
    .pt2 file), its kwargs, and the weights file with its sha256 (None for a program, which holds its weights)."""

    kind: str
    spec: str
    kwargs: dict = field(default_factory=dict)
    weights: str | None = None
    weights_sha256: str | None = None
    program_sha256: str | None = None

    def describe(self) -> str:
        """Return the source in one line, as the metadata and the terminal show it."""
        what = {"factory": f"{self.spec}(**{json.dumps(self.kwargs)})", "timm": f"timm:{self.spec}",
                "program": f"torch.export program {Path(self.spec).name}"}[self.kind]
        return what + (f" + weights {Path(self.weights).name} (sha256 {self.weights_sha256[:12]}…)"
                       if self.weights else "")


@dataclass(frozen=True)
class DataContract:
    """The data a user model is measured on and how pixels become its input (uint8 RGB → float NCHW)."""

    dataset: str | None  # a catalog dataset, or None with ``data``
    data: str | None  # an ImageFolder or path,label CSV
    classes: tuple[str, ...]
    input_shape: tuple[int, int, int]  # C, H, W
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_range: str = "1"  # "1": pixels / 255 before mean/std; "255": raw pixels
    channel_order: str = "rgb"
    resize: int | None = None  # --data: shorter side before the center crop (None: the crop size)
    interpolation: str = "bilinear"
    calib_data: str | None = None
    preprocessing: dict | None = None  # the whole convkit.preprocessing value (JSON); older exports lack it

    @property
    def pre(self):
        """Return the contract's convkit.preprocessing.Preprocessing (built from the older fields when the export
        predates the whole value: a shorter-side resize and a center crop)."""
        from convkit import preprocessing as P

        if self.preprocessing:
            return P.resolve([("metadata", P.from_document({"preprocessing": self.preprocessing},
                                                           "model_source.json"))])
        return P.resolve([("metadata", {"mean": self.mean, "std": self.std, "input_range": self.input_range,
                                        "channel_order": self.channel_order, "resize": self.resize,
                                        "size": tuple(self.input_shape[1:]), "interpolation": self.interpolation,
                                        "resize_mode": "shorter" if self.resize else None})])

    def prepare(self, images_u8) -> torch.Tensor:
        """Return the float32 NCHW model input of uint8 NCHW images: convkit.preprocessing.to_model_input (the
        array ONNX Runtime is fed), as a tensor on the images' device."""
        from convkit import preprocessing as P

        device = images_u8.device if isinstance(images_u8, torch.Tensor) else None
        arr = images_u8.cpu().numpy() if device is not None else images_u8
        x = torch.from_numpy(P.to_model_input(arr, self.pre))
        return x.to(device) if device is not None else x


class ProgramModule(torch.nn.Module):
    """A torch.export program's module behind the nn.Module interface convkit calls: its graph module refuses
    ``train()``/``eval()`` (its mode was fixed when it was exported), so it is held unregistered and those calls
    stop here; ``to()`` and ``parameters()`` reach it."""

    def __init__(self, graph_module):
        super().__init__()
        object.__setattr__(self, "inner", graph_module)

    def forward(self, x):
        return self.inner(x)

    def train(self, mode: bool = True):
        return self

    def to(self, *args, **kwargs):
        self.inner.to(*args, **kwargs)
        return self

    def parameters(self, recurse: bool = True):
        return self.inner.parameters(recurse)


def parse_kwargs(text: str | None) -> dict:
    """Return the JSON object of ``--model-kwargs`` ({} for None); ConvkitError (exit 2) for anything else."""
    if not text:
        return {}
    if len(text) > MAX_KWARGS_CHARS:
        raise ConvkitError(f"--model-kwargs is {len(text):,} characters; give at most {MAX_KWARGS_CHARS:,}")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConvkitError(f"--model-kwargs is not JSON ({exc.msg} at character {exc.pos}); e.g. "
                           f"'{{\"num_classes\": 10}}'") from None
    except RecursionError:
        raise ConvkitError("--model-kwargs is nested too deeply to be keyword arguments; give a flat JSON object, "
                           "e.g. '{\"num_classes\": 10}'") from None
    if not isinstance(value, dict):
        raise ConvkitError("--model-kwargs must be a JSON object, e.g. '{\"num_classes\": 10}'")
    return value


def source_from_flags(model: str | None, program: str | None, kwargs: dict, weights: str | None) -> ModelSource:
    """Return the ModelSource of ``--model`` / ``--program`` and ``--weights``; ConvkitError for bad combinations."""
    if bool(model) == bool(program):
        raise ConvkitError("pass exactly one of --model MODULE:FACTORY (or timm:NAME) and --program FILE.pt2")
    w_sha = None
    if weights:
        if program:
            raise ConvkitError("--weights goes with --model; a --program file holds its own weights")
        if not Path(weights).is_file():
            raise ConvkitError(f"--weights {weights}: not found")
        w_sha = file_sha256(Path(weights))
    if program:
        if not Path(program).is_file():
            raise ConvkitError(f"--program {program}: not found; pass a file written by torch.export.save")
        return ModelSource("program", str(Path(program).resolve()), program_sha256=file_sha256(Path(program)))
    weights_path = str(Path(weights).resolve()) if weights else None
    if model.startswith("timm:"):
        return ModelSource("timm", model[len("timm:"):], kwargs, weights_path, w_sha)
    if not FACTORY_SPEC.fullmatch(model):
        raise ConvkitError(f"--model {term(model, 80)!r}: give MODULE:FACTORY, a dotted module and a callable in it "
                           f"(e.g. torchvision.models:resnet18), or timm:NAME")
    return ModelSource("factory", model, kwargs, weights_path, w_sha)


def build_model(source: ModelSource) -> torch.nn.Module:
    """Return the eager module of ``source`` in eval mode on the CPU, its weights loaded; every recorded sha256
    (program, weights) is checked before anything is imported or loaded. ConvkitError (exit 2) naming what
    failed."""
    if source.kind == "program":
        _check_hash(source.spec, source.program_sha256, "--program")
        return ProgramModule(load_program(Path(source.spec)))
    if source.weights:
        _check_hash(source.weights, source.weights_sha256, "--weights")
    module = _call_factory(source)
    if source.weights:
        load_weights(module, read_state_dict(Path(source.weights)), source.weights)
    return module.eval()


def _call_factory(source: ModelSource) -> torch.nn.Module:
    if source.kind == "timm":
        try:
            timm = importlib.import_module("timm")
        except ImportError:
            raise ConvkitError("timm:NAME needs timm: pip install 'convkit[timm]'") from None
        factory, what = (lambda **kw: timm.create_model(source.spec, pretrained=False, **kw)), f"timm:{source.spec}"
    else:
        module_name, _, attr = source.spec.partition(":")
        try:
            factory = importlib.import_module(module_name)
            for part in attr.split("."):
                factory = getattr(factory, part)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 — importing the user's module runs its code
            raise ConvkitError(f"--model {term(source.spec)}: cannot import it ({term(one_line(exc, 120))}); check "
                               f"the module is importable (PYTHONPATH) and names a callable") from None
        if not callable(factory):
            raise ConvkitError(f"--model {term(source.spec)} names a {type(factory).__name__}, not a callable")
        what = source.spec
    called = f"{what}(**{json.dumps(source.kwargs)[:200]})"
    try:
        with torch.random.fork_rng(devices=[]):  # a factory without --weights initialises randomly: the same way
            torch.manual_seed(0)  # at export and at evaluate, so the reference is the model that was exported
            model = factory(**source.kwargs)
    except SystemExit as exc:  # a script's factory may end the process: convkit says so instead of exiting
        raise ConvkitError(f"{term(called)} called sys.exit({term(exc.code, 40)}) instead of returning a "
                           f"model; make the factory return the nn.Module") from None
    except Exception as exc:  # noqa: BLE001 — the user's factory may raise anything
        raise ConvkitError(f"{term(called)} failed: {term(one_line(exc, 200))}") from None
    if not isinstance(model, torch.nn.Module):
        raise ConvkitError(f"{what} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _check_hash(path: str, recorded: str | None, what: str) -> None:
    if not Path(path).is_file():
        raise ConvkitError(f"{what} {path} is gone; restore it or re-export")
    if recorded and file_sha256(Path(path)) != recorded:
        raise ConvkitError(f"{what} {path} changed since export (sha256 differs); re-export the model")


def read_state_dict(path: Path) -> dict:
    """Return the state_dict in ``path``: the file itself or the one under a usual key (``state_dict``, ``model``,
    ``model_state_dict``, EMA first as timm does), ``module.`` prefixes stripped. Loaded with weights_only=True: a
    pickle that asks to create objects is refused and never executed; a zip that would expand beyond its bounds
    (convkit.archive_bounds) is refused before it is expanded."""
    check_zip_sizes(Path(path), "--weights")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 — torch raises many types for foreign or damaged files
        if "unsupported global" in str(exc).lower() or "weights_only" in str(exc):
            raise ConvkitError(f"{path} asks to create Python objects beyond tensors, which convkit never executes "
                               f"(it was not loaded); save the weights with torch.save(model.state_dict(), …)") from None
        raise ConvkitError(f"{path} is not a readable weights file ({type(exc).__name__}); save it with "
                           f"torch.save(model.state_dict(), …)") from None
    if isinstance(obj, dict):
        for key in STATE_DICT_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConvkitError(f"{path} holds no state_dict (a mapping of names to tensors, alone or under one of "
                           f"{', '.join(STATE_DICT_KEYS)})")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def source_to_json(source: ModelSource, contract: DataContract) -> dict:
    """Return model_source.json's body: the source and the data contract."""
    return {"source": asdict(source), "contract": {**asdict(contract), "classes": list(contract.classes)}}


def source_from_json(doc: dict) -> tuple[ModelSource, DataContract]:
    """Return (ModelSource, DataContract) from model_source.json's body; ConvkitError (exit 2) for a body that is
    not one (an unknown kind, a field of the wrong type)."""
    try:
        c = dict(doc["contract"])
        c.update(classes=tuple(str(n) for n in c["classes"]), input_shape=tuple(int(v) for v in c["input_shape"]),
                 mean=tuple(float(v) for v in c["mean"]), std=tuple(float(v) for v in c["std"]))
        source, contract = ModelSource(**doc["source"]), DataContract(**c)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ConvkitError("not a readable model source") from None
    if source.kind not in KINDS:
        raise ConvkitError(f"unknown model kind {term(source.kind, 40)!s} (convkit writes {', '.join(KINDS)})")
    text = (source.spec, source.weights or "", source.weights_sha256 or "", source.program_sha256 or "")
    if not all(isinstance(v, str) for v in text) or not isinstance(source.kwargs, dict):
        raise ConvkitError("not a readable model source (a field has the wrong type)")
    if source.weights and not source.weights_sha256 or source.kind == "program" and not source.program_sha256:
        raise ConvkitError("not a readable model source (a file without its sha256)")
    return source, contract


def load_user_run(folder: Path) -> RunModel:
    """Return the RunModel of a user model's export folder: the module rebuilt from model_source.json, which
    stands where a convkit run's checkpoint stands. Code the file names (a factory, a timm model) is imported only
    when the user stated it (convkit.trust: exported on this machine, or --trust-model-source), else
    UntrustedSource (exit 2) before any import; recorded hashes are checked before anything is loaded."""
    path = Path(folder) / MODEL_SOURCE
    doc = read_artifact(path, "model_source")
    if doc is None:
        raise ConvkitError(f"{term(path)} not found; export the model with `convkit export --model … --out "
                           f"{term(folder)}`")
    try:
        source, contract = source_from_json(doc)
    except ConvkitError as exc:
        raise ConvkitError(f"{term(path)}: {exc.message}; re-export the model") from None
    run = RunModel(checkpoint=path, model=None, model_name=source.describe(), config={}, epoch=None,
                   contract=contract, data_checksum=doc.get("data_checksum"))
    run.config = {"dataset": contract.dataset, "data": contract.data, "sample": bool(doc.get("sample")),
                  "experiment": Path(folder).name, "model": source.describe(), "user_model": True}
    if source.kind != "program":
        require_trusted(source.describe(), path, run.checkpoint_sha256, run.config, run.data_checksum)
    run.model = build_model(source)
    return run
