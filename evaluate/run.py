"""``evaluate_model``: accuracy, confusion and latency of one ONNX model (or a run's exported variants) under
ONNX Runtime, beside the run's PyTorch model when its checkpoint is at hand; writes eval.json/eval.md/plots.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from convkit.artifacts import (
    EVAL_PREFIX,
    MODEL_SOURCE,
    EvalNames,
    RunModel,
    data_settings,
    load_run_model,
    read_artifact,
    run_lock,
    write_artifact,
)
from convkit.atomic import ensure_writable_dir
from convkit.data.catalog import display_name, get_dataset_info
from convkit.data.folder import list_labelled
from convkit.envinfo import environment, physical_cores
from convkit.errors import EXIT_GATE_FAILED, EXIT_UNVERIFIED, ConvkitError
from convkit.evaluate import accuracy as acc
from convkit.evaluate import latency as lat
from convkit.evaluate import markdown, predictions, preprocessing_probe, robustness
from convkit.evaluate.images import TestData, catalog_data, folder_data, read_classes
from convkit.evaluate.model_io import ModelSpec, Overrides, default_normalization, inspect_model
from convkit.evaluate.options import EvalOptions
from convkit.evaluate.result import EvalResult
from convkit.evaluate.serving import section as serving_section
from convkit.evaluate.serving.recommend import recommend
from convkit.evaluate.target import Target, resolve_target
from convkit.onnx_meta import file_sha256
from convkit.preprocessing_config import find_config, read_config, write_sidecar
from convkit.provenance import eval_dir, eval_record
from convkit.providers import ProviderConfig, make_session, preload_cuda_libraries, select_providers
from convkit.reference import reference_logits
from convkit.trust import SourceFile, UntrustedSource

# The columns this stage adds to the suite summary: (title, key of eval.json's "summary", format).
SUMMARY_COLUMNS = (
    ("ORT acc", "ort_test_acc", ".4f"),
    ("Δ acc ORT−PT", "ort_acc_delta", "+.4f"),
    ("ORT CPU b1 p50 ms", "ort_cpu_b1_p50_ms", ".3f"),
    ("ORT GPU b1 p50 ms", "ort_cuda_b1_p50_ms", ".3f"),
    ("max-batch img/s", "ort_max_batch_ips", ",.0f"),
)
# declared only by evaluations whose preprocessing was partly defaulted: "checked" or "unverified" (see probe)
PREPROCESSING_COLUMN = ("preprocessing", "preprocessing", "s")
GEOMETRY_COLUMN = ("geometry", "geometry", "s")  # declared by evaluations of --data folders


@dataclass
class Setup:
    """Everything resolved before measuring: files, their interfaces, reference, data, providers."""

    target: Target
    specs: dict[str, ModelSpec]  # precision → spec, the first is the primary
    reference: RunModel | None
    data: TestData
    providers: list[str]
    configs: dict[str, ProviderConfig]
    threads: int
    notes: list[str]
    # a user model's model_source.json whose code was not run (convkit.trust): the folder's record without a module
    source_file: SourceFile | None = None

    @property
    def primary(self) -> tuple[str, ModelSpec]:
        return next(iter(self.specs.items()))


@dataclass
class Measured:
    """What one evaluation measured, before it becomes an EvalResult."""

    reference: dict | None  # the PyTorch reference's metrics (None without a checkpoint)
    accuracy: list[dict]  # one entry per precision × provider
    failures: list[str]  # the accuracy gate's reasons
    latency: list[dict]  # flat rows, ratios attached
    preprocessing: dict  # the preprocessing check (preprocessing_probe)
    robustness: robustness.RobustnessResult | None = None
    serving: serving_section.ServingResult | None = None


def evaluate_model(path: Path | str, options: EvalOptions | None = None) -> EvalResult:
    """Evaluate the model(s) at ``path`` (a run directory or an .onnx file), write the outputs; returns the
    EvalResult written to eval.json (evaluate/result.py).

    It holds ``accuracy`` (one entry per precision × provider, with deltas vs PyTorch and the gate verdict when
    a checkpoint is at hand), ``pytorch`` (reference metrics), ``latency`` (flat rows, PyTorch p50 and ratios
    attached), ``summary`` (the suite-summary fields), ``gate`` ({"passed": True/False, or None when there is no
    reference, "failures"}), ``files`` written, ``method``, ``hardware`` and ``notes``.
    Raises ConvkitError (exit 2) for bad input; a failed gate is reported in ``gate`` (see ``gate_error``).
    """
    opts = options or EvalOptions()
    target = resolve_target(Path(path), opts.out)
    with run_lock(target.out_dir, f"convkit evaluate {path}"):
        return _evaluate(target, opts, str(path))


def _evaluate(target: Target, opts: EvalOptions, given_path: str) -> EvalResult:
    setup = prepare(target, opts)
    measured = measure(setup, opts)
    if opts.data.save_preprocessing:
        sidecar = save_preprocessing(setup.primary[1])
        setup.notes.append(f"preprocessing written to {sidecar.name}: the next evaluation of this file needs no flags")
    sha256 = {p: file_sha256(s.path) for p, s in setup.specs.items()}
    provenance = keyed_by_data(setup, sha256)  # where the outputs go (LoadGen's logs too) depends on the data
    if opts.serving is not None and opts.serving.scenarios:  # LoadGen scenarios when asked
        measured.serving = serving_section.serve(serving_request(setup, opts), opts.serving, measured.latency)
    result = assemble(setup, opts, measured, sha256, provenance, given_path)
    recommendation = recommend(result, serving_section.latency_bound(opts.serving), max_drop=opts.max_accuracy_drop)
    result = dataclasses.replace(result, recommendation=recommendation,
                                 files=predictions.write_evaluation(setup.target, setup.data, result, measured.accuracy))
    return write_outputs(result, setup.target, setup.primary[1].class_names)


def measure(setup: Setup, opts: EvalOptions) -> Measured:
    """Return what ``setup`` measures under ``opts``: the PyTorch reference, accuracy and its gate, the
    preprocessing check, latency and the corrupted splits (torch's threads set to the evaluation's meanwhile)."""
    images, labels = setup.data.images, setup.data.labels
    robustness.check_applicable(opts.corruptions, images)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(setup.threads)
    try:
        reference = pytorch_reference(setup, images, labels, opts.providers.reference())
        sessions = open_sessions(setup)
        accuracy, failures = acc.ort_accuracy(sessions, setup.specs, images, labels, reference,
                                              opts.max_accuracy_drop, opts.data.eval_batch)
        preprocessing = check_preprocessing(setup, sessions, accuracy, images, labels, opts.data.eval_batch)
        rows = measure_latency(setup, sessions, images, opts) if opts.timing.latency else []
        corrupted = measure_corruptions(setup, sessions, accuracy, reference, opts)
    finally:
        torch.set_num_threads(old_threads)
    return Measured(reference, accuracy, failures, rows, preprocessing, corrupted)


def serving_request(setup: Setup, opts: EvalOptions) -> serving_section.ServingRequest:
    """Return what the serving section is given: the prepared models, providers, images and the log folder."""
    return serving_section.ServingRequest(setup.specs, setup.providers, setup.data.images, setup.data.labels,
                                          setup.primary[1].class_names, setup.target.out_dir,
                                          opts.providers.cudnn_conv_algo_search)


def keyed_by_data(setup: Setup, sha256: dict[str, str]) -> dict:
    """Point ``setup.target.out_dir`` at where this evaluation belongs (a run's own eval.json only on the run's own
    data, else eval/<data-key>/ beside it: convkit.provenance); returns eval.json's provenance record."""
    target = setup.target
    ref = setup.reference if setup.reference is not None else setup.source_file
    trained_on = ref.data_checksum if ref is not None else None
    if ref is not None and trained_on is None and not setup.data.reading:  # a user model or an older checkpoint:
        trained_on = setup.data.checksum  # no data recorded, so its dataset's test split counts as its own
    target.out_dir = eval_dir(target.out_dir, trained_on, setup.data.name, setup.data.checksum)
    if target.run_dir is not None and "fp32" not in setup.specs and target.names.prefix == EVAL_PREFIX:
        target.names = EvalNames(f"{EVAL_PREFIX}.{'-'.join(setup.specs)}")  # eval.json's numbers are fp32's
    return eval_record({p: (s.path, sha256[p]) for p, s in setup.specs.items()}, ref.checkpoint_sha256 if ref else None,
                       setup.data.checksum, trained_on == setup.data.checksum)


def pytorch_reference(setup: Setup, images, labels: np.ndarray, device: str) -> dict | None:
    """Return the PyTorch reference's metrics on the test images, None without a checkpoint.

    Its fp32 logits come from convkit.reference: cached in the run folder per checkpoint and data, so train-all's
    evaluation after its export, evaluating again, or export after evaluate, does not recompute them.
    """
    if setup.reference is None:
        return None
    own_data = setup.reference.data_checksum in (None, setup.data.checksum)  # other data never touches the run cache
    spec = setup.primary[1]
    same_input = (setup.reference.contract is not None and spec.layout == "NCHW" and not spec.flat
                  and spec.pre.dtype == "float32")  # a user model takes what ORT takes: feed both one array
    scores = reference_logits(setup.reference, images, setup.data.checksum if own_data else None, device,
                              spec.prepare if same_input else None, preprocessing_digest(spec.pre))
    return acc.pytorch_accuracy(scores, labels, setup.primary[1].class_names, device)


def measure_corruptions(setup: Setup, sessions: dict, accuracy: list[dict], reference: dict | None,
                        opts: EvalOptions) -> robustness.RobustnessResult | None:
    """Return the corrupted-split measurements (``--corruptions``) of every session and the PyTorch reference,
    None when no corruption was asked for."""
    if opts.corruptions is None:
        return None
    clean = {f"ort/{a['precision']}/{a['provider']}": a["accuracy"] for a in accuracy}
    if reference is not None:
        clean[f"pytorch/fp32/{reference['device']}"] = reference["accuracy"]
    return robustness.measure(sessions, setup.specs, setup.reference if reference is not None else None,
                              setup.data, clean, opts.corruptions, opts.data.eval_batch,
                              reference["device"] if reference is not None else "cpu")


def prepare(target: Target, opts: EvalOptions) -> Setup:
    """Return the Setup: the target's variant files inspected, the PyTorch reference, the test data, providers.

    A file exported from another checkpoint than the run's current one is refused (exit 2: re-export), so a
    retrained run is never compared with a stale export.
    """
    files = dict(target.files)
    if opts.precisions:
        files = {p: f for p, f in files.items() if p in set(opts.precisions) or p == "model"}
        if not files:
            raise ConvkitError(f"--precision {','.join(opts.precisions)} matches none of "
                               f"{', '.join(target.files)} in {target.out_dir}")
    d = opts.data
    data_path = d.data_path or (recorded_data(target.run_dir) if not d.dataset else None)
    folder = list_labelled(data_path) if data_path else None
    config_file = find_config(next(iter(files.values())), d.preprocessing_config)
    config = read_config(config_file) if config_file else None
    overrides = Overrides(dataset=d.dataset, mean=d.mean, std=d.std, layout=d.layout, input_range=d.input_range,
                          output=d.output, channel_order=d.channel_order,
                          class_names=read_classes(d.classes) if d.classes else recorded_classes(target.run_dir),
                          class_names_source="flag" if d.classes else f"recorded: {MODEL_SOURCE}",
                          folder=Path(data_path).name if folder else None,
                          folder_classes=folder.classes if folder else None, config=config,
                          input_shape=d.input_shape, geometry=dict(d.geometry))
    specs = {}
    for prec, f in files.items():
        spec = inspect_model(f, overrides)
        specs[spec.precision if prec == "model" else prec] = spec
    primary = next(iter(specs.values()))
    notes: list[str] = []
    try:
        reference = load_run_model(target.run_dir) if target.run_dir is not None else None
        recorded, source_file = (reference.config if reference is not None else None), None
    except UntrustedSource as exc:  # code named by a file is never run: measured without the PyTorch reference
        reference, recorded, source_file = None, exc.config, exc.source_file
        notes.append(f"no PyTorch reference: {exc.message}")
        check_fresh_exports(specs, exc.source_file)
    if reference is not None:
        check_fresh_exports(specs, reference)
    data_dir, sample, max_images = d.data_dir, d.sample, d.max_images
    if recorded is not None and data_dir is None and sample is None:  # the data it was trained on
        data_dir, sample, trained_max = data_settings(recorded, primary.dataset)
        max_images = max_images or trained_max
    if reference is not None and reference.contract is None and reference.config.get("dataset") != primary.dataset:
        notes.append(f"the checkpoint was trained on {reference.config.get('dataset')}, evaluated on {primary.dataset}")
    data = (folder_data(Path(data_path).name, folder, primary) if folder else
            catalog_data(primary.dataset, data_dir, bool(sample), max_images))
    providers, provider_notes = select_providers(opts.providers.provider, opts.providers.device_id)
    threads = int(opts.providers.threads or physical_cores())
    p = opts.providers
    configs = {k: ProviderConfig(k, threads=threads, device_id=p.device_id,
                                 cudnn_conv_algo_search=p.cudnn_conv_algo_search) for k in providers}
    if any(k != "cpu" for k in providers):
        provider_notes.append(preload_cuda_libraries())
    return Setup(target, specs, reference, data, providers, configs, threads, notes + provider_notes, source_file)


def recorded_data(run_dir: Path | None) -> str | None:
    """Return the image folder a user model was exported with (its model_source.json), None for anything else: a
    user model's folder is evaluated on the data it was exported on unless --data or --dataset says otherwise."""
    if run_dir is None:
        return None
    doc = read_artifact(Path(run_dir) / MODEL_SOURCE, "model_source")
    data = ((doc or {}).get("contract") or {}).get("data")
    return str(data) if data else None


def recorded_classes(run_dir: Path | None) -> list[str] | None:
    """Return the class names a user model was exported with (its model_source.json holds them all; the ONNX
    metadata's copy is cut beyond 256 KB), None for anything else."""
    if run_dir is None:
        return None
    classes = ((read_artifact(Path(run_dir) / MODEL_SOURCE, "model_source") or {}).get("contract") or {}).get("classes")
    return [str(c) for c in classes] if isinstance(classes, list) and classes else None


def check_fresh_exports(specs: dict[str, ModelSpec], reference: RunModel) -> None:
    """Raise ConvkitError (exit 2) when an ONNX file records another checkpoint's sha256 than the run's."""
    checkpoint = reference.checkpoint
    for spec in specs.values():
        recorded = spec.metadata.get("checkpoint_sha256")
        if recorded and recorded != reference.checkpoint_sha256:
            raise ConvkitError(f"{spec.path.name} was exported from another checkpoint than {checkpoint} (the run was "
                               f"retrained since): re-export it with `convkit export {checkpoint.parent}`")


def check_preprocessing(setup: Setup, sessions: dict, accuracy: list[dict], images, labels, batch: int) -> dict:
    """Return the primary model's preprocessing check (preprocessing_probe.check_preprocessing), first provider."""
    prec, spec = setup.primary
    key = (prec, setup.providers[0])
    entry = next(a for a in accuracy if (a["precision"], a["provider"]) == key)
    info = None if setup.data.reading else get_dataset_info(spec.dataset)
    mean, std, _ = default_normalization(info, spec.image_shape[0])
    return preprocessing_probe.check_preprocessing(spec, sessions[key], entry, images, labels, mean, std, batch)


def open_sessions(setup: Setup) -> dict[tuple[str, str], object]:
    """Return {(precision, provider): InferenceSession}; a variant that cannot run on a provider is noted.

    The primary file on the first provider must open: its failure is the evaluation's failure.
    """
    primary_prec = setup.primary[0]
    sessions = {}
    for prec, spec in setup.specs.items():
        for kind in setup.providers:
            try:
                sessions[(prec, kind)] = make_session(str(spec.path), setup.configs[kind])
            except ConvkitError as exc:
                if prec == primary_prec and kind == setup.providers[0]:
                    raise
                setup.notes.append(f"{prec} on {kind} skipped: {exc.message}")
    return sessions


def measure_latency(setup: Setup, sessions: dict, images: np.ndarray, opts: EvalOptions) -> list[dict]:
    """Return the latency rows of every ORT session and, with a reference, of PyTorch; ratios attached."""
    device_id = opts.providers.device_id

    def graph_session(spec):
        return make_session(str(spec.path), setup.configs["cuda"], cuda_graph=True)

    rows = lat.ort_rows(sessions, setup.specs, images, opts.timing, device_id, graph_session, setup.notes)
    if setup.reference is not None and opts.timing.pytorch_latency:
        used = list(dict.fromkeys(kind for _, kind in sessions))
        rows += lat.torch_rows(setup.reference, used, images, opts.timing, device_id, setup.notes)
    return lat.attach_ratios(rows)


def summary_fields(accuracy: list[dict], reference: dict | None, rows: list[dict], primary_prec: str,
                   first_provider: str) -> dict:
    """Return the SUMMARY_COLUMNS values: the primary variant's accuracy on the first provider, its delta to
    PyTorch, batch-1 p50 per provider and the best throughput of any batch size; beside a value, ``<key>_ci`` is
    its 95 % interval and ``ort_acc_delta_p`` the exact McNemar p-value of the delta (convkit.uncertainty)."""
    out = {}
    main = next((a for a in accuracy if a["precision"] == primary_prec and a["provider"] == first_provider), None)
    if main and not main.get("degenerate"):
        out["ort_test_acc"], out["ort_test_acc_ci"] = main["accuracy"], main.get("accuracy_ci")
        if reference is not None:
            out["ort_acc_delta"] = main["accuracy"] - reference["accuracy"]
            paired = (main.get("vs_pytorch") or {}).get("paired_test")
            if paired:
                out["ort_acc_delta_ci"], out["ort_acc_delta_p"] = paired["delta_ci"], paired["p_value"]
    ort = [r for r in rows if r["precision"] == primary_prec and r["backend"] == "ort"]
    for kind in ("cpu", "cuda"):
        b1 = [r for r in ort if r["provider"] == kind and r["batch"] == 1]
        if b1:
            out[f"ort_{kind}_b1_p50_ms"] = b1[0]["p50_ms"]
            out[f"ort_{kind}_b1_p50_ms_ci"] = b1[0].get("p50_ci_ms")
    ips = [r["images_per_s"] for r in ort if r["images_per_s"]]
    if ips:
        out["ort_max_batch_ips"] = max(ips)
    return out


def assemble(setup: Setup, opts: EvalOptions, measured: Measured, sha256: dict[str, str], provenance: dict,
             given_path: str) -> EvalResult:
    """Return the EvalResult (without ``files`` and the recommendation) of what ``setup`` measured; ``sha256``:
    each variant file's, ``provenance``: keyed_by_data's record."""
    primary_prec, primary = setup.primary
    gpu_used = any(k != "cpu" for k in setup.providers)
    reference, pre = measured.reference, measured.preprocessing
    summary = summary_fields(measured.accuracy, reference, measured.latency, primary_prec, setup.providers[0])
    columns = [list(c) for c in SUMMARY_COLUMNS]
    if pre["verdict"] != "stated":  # a column only where the preprocessing was not all stated
        summary["preprocessing"] = pre["verdict"]
        columns.append(list(PREPROCESSING_COLUMN))
    if setup.data.reading:  # images read from a folder: the geometry behind the number, in the suite summary too
        summary["geometry"] = setup.data.reading["geometry"]
        columns.append(list(GEOMETRY_COLUMN))
    return EvalResult(
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        input=given_path,
        run_dir=str(setup.target.run_dir) if setup.target.run_dir else None,
        model=primary.describe(),
        variants={p: {**s.describe(), "sha256": sha256[p], "size_bytes": s.path.stat().st_size}
                  for p, s in setup.specs.items()},
        parameters=(sum(t.numel() for t in setup.reference.model.parameters())
                    if setup.reference is not None else None),
        dataset={"name": primary.dataset, "label": display_name(primary.dataset, setup.data.source),
                 "split": "test" if not setup.data.reading else "whole folder", "n": int(len(setup.data.labels)),
                 "source": setup.data.source, "checksum": setup.data.checksum, **setup.data.reading},
        providers={"used": setup.providers, "options": {k: c.describe() for k, c in setup.configs.items()}},
        pytorch=_strip(reference) if reference else None,
        accuracy=[_strip(a) for a in measured.accuracy],
        latency=measured.latency,
        summary=summary,
        summary_columns=columns,
        gate={"passed": None if reference is None else not measured.failures, "failures": measured.failures,
              "max_drop_points": opts.max_accuracy_drop,
              **({} if reference is not None else {"note": "no reference: no PyTorch checkpoint beside the file"})},
        method={**method(opts, setup.threads, gpu_used, setup.reference.checkpoint.name if setup.reference else None),
                **({"input_shape_timed": timed_shape(primary, setup.data.images)} if measured.latency else {})},
        hardware=hardware(gpu_used, opts.providers.device_id),
        notes=setup.notes + (measured.serving.notes if measured.serving else []),
        preprocessing=pre,
        robustness=measured.robustness.to_dict() if measured.robustness is not None else None,
        provenance=provenance,
        serving=measured.serving.to_dict() if measured.serving else None,
    )


def timed_shape(spec: ModelSpec, images) -> str:
    """Return the model input shape latency was timed at, e.g. "[batch, 3, 48, 192] (NCHW float32)"."""
    c, h, w = (images.shape[1], images.shape[2], images.shape[3])
    dims = [c, h, w] if spec.layout == "NCHW" else [h, w, c]
    return f"[batch, {', '.join(map(str, dims))}] ({spec.layout} {spec.pre.dtype})"


def method(opts: EvalOptions, threads: int, gpu_used: bool, reference_file: str | None) -> dict:
    """Return the Method section: how accuracy and (when measured) latency were obtained."""
    t = opts.timing
    out = {
        "pytorch_reference": f"eager fp32 module rebuilt from {reference_file}, TF32 off; accuracy on "
                             f"{opts.providers.reference()}" if reference_file else
                             "no checkpoint at hand: ORT figures only",
        "accuracy_gate": "ORT accuracy at most max_drop_points percentage points below PyTorch's, and at most "
                         "the gate's share of images with another top-1 class than PyTorch's",
        "cpu_threads": f"{threads} intra-op threads (ORT) / torch.set_num_threads({threads}) (PyTorch)",
        "graph_optimization": "ORT_ENABLE_ALL",
    }
    if not t.latency:
        return {**out, "latency": "not measured (--no-latency)"}
    out.update({
        "warmup": f"{t.warmup} untimed calls after the first (first call timed separately as first_run_ms)",
        "repetitions": f"at least {t.runs} timed calls and at least {t.min_seconds} s",
        "clock": lat.CLOCK,
        "inputs": "real test images (cycled to fill the batch), preprocessed once before timing",
    })
    if gpu_used:
        out["gpu"] = ("IO binding with input and output on the device; ort-e2e includes host↔device copies; "
                      f"CUDA graphs {'on (separate session per static batch size)' if t.cuda_graph else 'off'}; "
                      f"cudnn_conv_algo_search={opts.providers.cudnn_conv_algo_search}; torch.compile "
                      f"{'on' if t.torch_compile else 'off'}")
    return out


def hardware(gpu_used: bool, device_id: int) -> dict:
    """Return the machine and software versions the figures were measured with (the GPU: cuda:``device_id``)."""
    env = environment(f"cuda:{device_id}" if gpu_used and torch.cuda.is_available() else "cpu")
    return {"cpu": env.get("cpu"), "cpu_physical_cores": env.get("cpu_physical_cores"), **_gpu_info(device_id),
            **{k: env.get(k) for k in ("python", "platform", "convkit", "torch", "torchvision", "onnx",
                                      "onnxruntime", "cuda", "cudnn", "git_revision")}}


def _gpu_info(device_id: int) -> dict:
    info = {}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(device_id)
        info["gpu_device"] = f"cuda:{device_id}"
        info["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability(device_id)))
    try:
        out = subprocess.run(["nvidia-smi", f"--id={device_id}", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            info["nvidia_smi"] = out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


def _strip(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in ("predictions", "tie_mask", "labels", "top_k")}


def write_outputs(result: EvalResult, target: Target, class_names: list[str]) -> EvalResult:
    """Write eval.json, eval.md, the latency plot and confusion PNG/CSV into ``target.out_dir``; returns the
    result with ``files`` (their paths) filled in, as written to eval.json.

    Confusion files of precisions this evaluation did not measure (left by an earlier one) are removed.
    """
    out = ensure_writable_dir(target.out_dir)
    names = target.names
    before = {p: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    for written in result.files.values():  # the predictions file, already written by this evaluation
        before.pop(Path(written), None)
    try:
        files = markdown.write_figures(out, names, result, class_names)
        files.update({**result.files, "eval_md": str(out / names.md), "eval_json": str(out / names.json)})
        result = dataclasses.replace(result, files=files)
        markdown.write_markdown(out / names.md, result)
        write_artifact(out / names.json, "eval", result.to_json())
    except BaseException:  # a full disk midway: no confusion.csv or eval.md is left without the eval.json it needs
        for path in (p for p in out.iterdir() if p.is_file()):
            if before.get(path) != path.stat().st_mtime_ns and not path.name.startswith("."):
                path.unlink(missing_ok=True)
        raise
    return result


def trust_error(result: EvalResult, accept_defaults: bool) -> ConvkitError | None:
    """Return a ConvkitError (exit 4) when the numbers of ``result`` cannot be stood behind: degenerate outputs, or
    a probe that found better preprocessing than the defaulted one (unless ``accept_defaults``); else None."""
    if result.degenerate:
        return ConvkitError("outputs degenerate, no accuracy reported: " + "; ".join(result.degenerate),
                            EXIT_UNVERIFIED)
    pre = result.preprocessing or {}
    if pre.get("verdict") == "unverified" and not accept_defaults:
        better = pre["probe"]["better"]
        return ConvkitError(f"preprocessing unverified: `{better['flags']}` gives {better['accuracy']:.2f} on the "
                            f"probe's images; rerun with those flags, or pass --accept-defaults", EXIT_UNVERIFIED)
    return None


def gate_error(result: EvalResult) -> ConvkitError | None:
    """Return a ConvkitError (exit 1) describing the failed accuracy gate(s) of ``result``, or None."""
    if result.gate_passed is not False:
        return None
    return ConvkitError("accuracy gate failed: " + "; ".join(result.gate["failures"]), EXIT_GATE_FAILED)


def preprocessing_digest(pre) -> str:
    """Return a short digest of the whole preprocessing value (it keys cached reference logits)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(pre.to_json(), sort_keys=True).encode()).hexdigest()[:16]


def save_preprocessing(spec: ModelSpec) -> Path:
    """Write the whole preprocessing of ``spec`` beside its file (the sidecar) and into its ONNX metadata (one
    key, convkit.preprocessing.METADATA_KEY); returns the sidecar's path. A file carrying it needs no flags."""
    from convkit.onnx_meta import write_preprocessing_metadata

    if not spec.has_convkit_metadata:  # a run's export keeps the bytes its export.json hashed
        write_preprocessing_metadata(spec.path, spec.pre)
    return write_sidecar(spec.path, spec.pre)
