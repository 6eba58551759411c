"""``convkit evaluate``: accuracy, confusion matrices and latency of ONNX models under ONNX Runtime.

Loaded lazily by the main CLI group. Module-level imports stay light (click and convkit.gates).
"""

from __future__ import annotations

import sys

import click

from convkit import gates
from convkit.errors import EXIT_BAD_INPUT, EXIT_GATE_FAILED, ConvkitError, failure_of
from convkit.evaluate.options import MAX_BATCH_SIZE, MAX_RUNS, MAX_THREADS, MAX_WARMUP
from convkit.preprocessing_flags import geometry_from_cli, geometry_options
from convkit.evaluate.result import EvalResult
from convkit.evaluate.serving import cli as serving_cli
from convkit.text import cap, term
from convkit.trust import trust_option
from convkit.uncertainty import format_interval, format_paired


def _batch_sizes(text: str | None):
    if not text:
        return None
    try:
        sizes = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConvkitError(f"--batch-sizes must be comma-separated integers, got {text!r}") from None
    if not sizes or any(s <= 0 for s in sizes):
        raise ConvkitError(f"--batch-sizes must be positive integers, got {text!r}")
    if max(sizes) > MAX_BATCH_SIZE:
        raise ConvkitError(f"--batch-sizes {max(sizes)} is more than {MAX_BATCH_SIZE:,} images per call; "
                           f"pass batch sizes of at most {MAX_BATCH_SIZE}")
    return sizes


def _input_shape(text: str | None) -> tuple[int, int, int] | None:
    if not text:
        return None
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or any(v <= 0 or v > 65536 for v in shape):
        raise ConvkitError(f"--input-shape must be three positive integers C,H,W (e.g. 1,28,28), got {text[:40]!r}")
    return shape


def _summary_line(path: str, res: EvalResult) -> str:
    parts = [f"{path}:"]
    ds = res.dataset
    if ds:
        parts.append(f"  data: {cap(ds.get('label', ds['name']))}, {ds['n']} images ({cap(ds['source'], 400)})")
    pre = res.preprocessing
    if pre:
        if res.dataset.get("geometry"):
            d = res.dataset
            src = d.get("geometry_sources", {})
            parts.append(f"  geometry: {cap(d['geometry'], 300)} [mode {src.get('resize_mode')}; size "
                         f"{src.get('size')}]")
        parts.append(f"  preprocessing: {pre['used']}")
        parts += [f"  WARNING: {cap(w, 1000)}" for w in pre["warnings"]]
        parts += [f"  note: {cap(n, 1000)}" for n in pre.get("notes", [])]
    for a in res.accuracy:
        if a.get("degenerate"):
            parts.append(f"  {a['precision']} ORT {a['provider']}: OUTPUTS DEGENERATE ({a['degenerate']}): no "
                         f"accuracy reported")
            continue
        d = a.get("vs_pytorch")
        extra = (f" (Δ vs PyTorch {format_paired(d.get('paired_test'))}, {d['disagreements']} differ)"
                 if d and d.get("paired_test") else
                 f" (Δ vs PyTorch {d['delta']['accuracy'] * 100:+.2f} pts, {d['disagreements']} differ)" if d else "")
        top5 = (f", top-5 {format_interval(a['top5_accuracy'], a.get('top5_accuracy_ci'))}"
                if a.get("top5_accuracy") is not None else "")
        parts.append(f"  {a['precision']} ORT {a['provider']}: acc "
                     f"{format_interval(a['accuracy'], a.get('accuracy_ci'))}{top5}{extra}")
    s = res.summary
    for kind in ("cpu", "cuda"):
        if f"ort_{kind}_b1_p50_ms" in s:
            why = next((r.get("unstable") for r in res.latency if r["backend"] == "ort" and r["provider"] == kind
                        and r["batch"] == 1), None)
            flag = f" — UNSTABLE ({why}): rerun on a quiet machine" if why else ""
            ci = s.get(f"ort_{kind}_b1_p50_ms_ci")
            band = f" [{ci[0]:.3f}, {ci[1]:.3f}] (95 %, order statistics)" if ci else " (too few calls for an interval)"
            shape = res.method.get("input_shape_timed")
            parts.append(f"  ORT {kind} batch-1 p50 {s[f'ort_{kind}_b1_p50_ms']:.3f} ms{band}{flag}"
                         + (f" (input {shape})" if shape else ""))
    if "ort_max_batch_ips" in s:
        parts.append(f"  best throughput {s['ort_max_batch_ips']:,.0f} images/s (batch ÷ mean latency)")
    unstable = [r for r in res.latency if r.get("unstable")]
    if unstable:
        parts.append(f"  warning: {len(unstable)} of {len(res.latency)} latency figures are unstable "
                     f"(p90/p50 or std/mean large; see the report below); ratios from them are not formed")
    for key, v in ((res.robustness or {}).get("summary", {}).get("variants") or {}).items():
        parts.append(f"  corrupted {key}: mean top-1 {v['mean_corrupted_accuracy']:.4f} (clean "
                     f"{v['clean_accuracy']:.4f}), worst {v['worst_corruption']}")
    parts += serving_cli.summary_lines(res)
    for n in res.notes:
        parts.append(f"  note: {cap(n, 1000)}")
    parts.append(f"  → {term(res.files.get('eval_md'))}")
    return "\n".join(parts)


@click.command("evaluate")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--onnx", "onnx_paths", multiple=True, type=click.Path(), help="An .onnx file or run directory; repeatable.")
@click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt", "all"]), default=None,
              help="Execution provider (default: every one that really works here).")
@click.option("--dataset", default=None, help="Dataset to evaluate on (default: the model's metadata).")
@click.option("--data-dir", type=click.Path(), default=None, help="Where the dataset is (default: as trained / $CONVKIT_DATA).")
@click.option("--data", "data_path", type=click.Path(), default=None,
              help="Evaluate on any labelled images instead: an ImageFolder (one subfolder per class; any size, any "
                   "format Pillow reads, grayscale or RGB) or a CSV of path,label.")
@click.option("--classes", "classes_file", type=click.Path(), default=None,
              help="Text file of class names, one per line, in the model's output order (default: the model's "
                   "metadata, else the --data folder's class names sorted, as torchvision's ImageFolder).")
@geometry_options
@click.option("--sample/--no-sample", default=None, help="Use the embedded sample (default: as the run was trained).")
@click.option("--mean", default=None,
              help="Per-channel mean, e.g. 0.5,0.5,0.5, applied after --input-range (default: metadata, else the "
                   "dataset's catalog mean — ImageNet's for --data — with --input-range 1, 0 with 255).")
@click.option("--std", default=None,
              help="Per-channel std (default: metadata, else the dataset's catalog std — ImageNet's for --data — "
                   "with --input-range 1, 1 with 255).")
@click.option("--layout", type=click.Choice(["nchw", "nhwc"], case_sensitive=False), default=None,
              help="Input layout (default: metadata, else guessed from the input shape: NHWC when only the last "
                   "dim is 1/3/4, else NCHW).")
@click.option("--input-range", type=click.Choice(["1", "255"]), default=None,
              help="1: pixels scaled to 0..1 before mean/std; 255: raw 0..255 (default: metadata, else 1).")
@click.option("--channel-order", type=click.Choice(["rgb", "bgr"], case_sensitive=False), default=None,
              help="Order of the three colour channels the model expects (default: metadata, else rgb).")
@click.option("--output", "output_name", default=None,
              help="The graph output holding the class scores (required when the model has several; default: its "
                   "only output).")
@click.option("--preprocessing-config", type=click.Path(), default=None,
              help="Read the preprocessing from this file: a Hugging Face preprocessor_config.json, a timm config.json "
                   "(pretrained_cfg: mean, std, input_size, crop_pct, interpolation) or a <model>.convkit.json "
                   "(default: such a file beside the model, in that order: <model>.convkit.json, "
                   "preprocessor_config.json, config.json). Flags win over it.")
@click.option("--input-shape", default=None,
              help="C,H,W of a flattened input [N, C*H*W] (e.g. 1,28,28), flattened in --layout order (default: "
                   "the --dataset's image shape).")
@click.option("--accept-defaults", is_flag=True,
              help="Exit 0 even when the probe finds preprocessing better than the defaulted values (it is still "
                   "reported).")
@click.option("--save-preprocessing", is_flag=True,
              help="Write <model>.convkit.json beside the model with the preprocessing used, so the next evaluation "
                   "needs no flags.")
@click.option("--warmup", type=click.IntRange(1, MAX_WARMUP), default=10, show_default=True,
              help="Untimed warm-up calls.")
@click.option("--runs", type=click.IntRange(1, MAX_RUNS), default=50, show_default=True,
              help=f"Timed calls, at least (more while --min-seconds has not passed, up to {MAX_RUNS:,}).")
@click.option("--min-seconds", type=click.FloatRange(0, 3600), default=1.0, show_default=True,
              help="Minimum timed duration per figure.")
@click.option("--batch-sizes", default=None,
              help=f"Comma list, each at most {MAX_BATCH_SIZE} (default: 1,8,64,256 on CPU; 1,8,64,256,1024 on GPU).")
@click.option("--threads", type=click.IntRange(1, MAX_THREADS), default=None,
              help="CPU intra-op threads (default: physical cores).")
@click.option("--precision", "precisions", default=None, help="Only these variants, e.g. fp32,int8 (default: all found).")
@click.option("--max-accuracy-drop", default=None,
              help="Gate, in percentage points below PyTorch: 0.1 (fp32) or fp32=0.1,fp16=0.3,int8=1 (defaults: "
                   + ", ".join(f"{k} {v:g}" for k, v in gates.MAX_ACC_DROP.items()) + "; top-1 disagreement "
                   "with PyTorch is gated too: fp32 0.1, fp16 1 point).")
@click.option("--cudnn-conv-algo-search", type=click.Choice(["EXHAUSTIVE", "HEURISTIC", "DEFAULT"]),
              default="EXHAUSTIVE", show_default=True, help="CUDA provider convolution algorithm search.")
@click.option("--cuda-graph/--no-cuda-graph", default=True, show_default=True, help="Also measure CUDA-graph replay.")
@click.option("--torch-compile/--no-torch-compile", default=True, show_default=True,
              help="Also measure torch.compile on CUDA.")
@click.option("--no-latency", is_flag=True, help="Accuracy only.")
@click.option("--device-id", type=click.IntRange(0, 1023), default=0, show_default=True,
              help="GPU index (cuda:N): the GPU providers, the PyTorch reference, timings and the hardware record.")
@click.option("--out", type=click.Path(), default=None,
              help="Output folder (default: the run directory for a run's model, <stem>_eval beside any other .onnx). "
                   "In a run folder, an evaluation on other data than the run's goes to eval/<data-key>/, never over "
                   "the run's eval.json; a model not exported from that run's checkpoint is refused.")
@click.option("--corruptions", default=None,
              help="Also evaluate corrupted copies of the test split: all, or a comma list (e.g. gaussian_noise,"
                   "contrast); CIFAR-10-C / ImageNet-C parameters, MNIST-C's subset for one channel.")
@click.option("--severities", default="1-5", show_default=True, help="Corruption severities: 1-5, 3 or 1,3,5.")
@click.option("--corruption-seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the corrupted copies (each corruption and severity draws from its own generator).")
@serving_cli.cli_options
@trust_option
def evaluate_cmd(paths, onnx_paths, **cli):
    """Evaluate ONNX models (files or run directories) under ONNX Runtime: accuracy, confusion, latency.

    Writes eval.json, eval.md, latency.png, confusion.png and confusion.csv into the run directory (or --out);
    on other data than the run was tested on (--data, another --dataset), into its eval/<data-key>/ folder.
    Prints the preprocessing used, each value marked flag / config / metadata / default / guessed. Whenever a
    value was defaulted or guessed it probes the usual conventions on 300 images (exact McNemar test against the
    preprocessing used) and says loudly, with the flags, when one is better; outputs with NaN/Inf or identical for
    every image are reported as degenerate, with no accuracy.
    Latency figures with p90/p50 > 1.5 or std/mean > 0.5 are flagged unstable; images/s is batch ÷ mean latency.
    --corruptions adds top-1, ECE and the change vs clean data per corruption and severity for every variant
    and provider (and PyTorch), cached under $CONVKIT_CACHE/tensors/corrupted.
    Exit codes: 0 fine, 1 an accuracy gate failed or one of several models failed (the others were evaluated),
    2 bad usage or input, 4 the numbers cannot be stood behind (better preprocessing found — unless
    --accept-defaults — or degenerate outputs).
    """
    targets = list(onnx_paths) + list(paths)  # `--onnx a.onnx b.onnx` (a shell glob): keep the order given
    if not targets:
        raise ConvkitError("no model given; pass .onnx files or run directories (or --onnx PATH)")
    if cli["out"] and len(targets) > 1:
        raise ConvkitError("--out needs a single model; evaluate one .onnx at a time or drop --out")
    if cli["out"]:
        from convkit.artifacts import check_out_name  # lazy: keeps `convkit --help` free of torch

        check_out_name(cli["out"])
    worst = evaluate_each(targets, options_from_cli(cli), cli["accept_defaults"])
    if worst:
        sys.exit(worst)


def options_from_cli(cli: dict):
    """Return the EvalOptions of evaluate's click values ``cli`` (ConvkitError, exit 2, for a malformed one)."""
    from convkit.evaluate import robustness
    from convkit.evaluate.model_io import parse_floats
    from convkit.devices import Device
    from convkit.evaluate.options import DataOptions, EvalOptions, ProviderOptions, TimingOptions

    serving = {k: cli[k] for k in serving_cli.OPTION_NAMES}
    return EvalOptions(
        data=DataOptions(dataset=cli["dataset"], data_dir=cli["data_dir"], data_path=cli["data_path"],
                         classes=cli["classes_file"], geometry=geometry_from_cli(cli), sample=cli["sample"],
                         mean=parse_floats(cli["mean"], "--mean"), std=parse_floats(cli["std"], "--std"),
                         layout=cli["layout"], input_range=cli["input_range"], output=cli["output_name"],
                         channel_order=cli["channel_order"], preprocessing_config=cli["preprocessing_config"],
                         input_shape=_input_shape(cli["input_shape"]), accept_defaults=cli["accept_defaults"],
                         save_preprocessing=cli["save_preprocessing"]),
        providers=ProviderOptions(provider=cli["provider"], gpu=Device.gpu(cli["device_id"]), threads=cli["threads"],
                                  cudnn_conv_algo_search=cli["cudnn_conv_algo_search"]),
        timing=TimingOptions(latency=not cli["no_latency"], warmup=cli["warmup"], runs=cli["runs"],
                             min_seconds=cli["min_seconds"], batch_sizes=_batch_sizes(cli["batch_sizes"]),
                             cuda_graph=cli["cuda_graph"], torch_compile=cli["torch_compile"]),
        precisions=tuple(p.strip() for p in cli["precisions"].split(",")) if cli["precisions"] else None,
        max_accuracy_drop=gates.parse_points(cli["max_accuracy_drop"], "--max-accuracy-drop", gates.MAX_ACC_DROP),
        out=cli["out"], serving=serving_cli.options_from_cli(**serving, threads=cli["threads"],
                                                          device_id=cli["device_id"]),
        corruptions=robustness.options_from_cli(cli["corruptions"], cli["severities"], cli["corruption_seed"]),
    )


def evaluate_each(targets: list[str], opts, accept_defaults: bool) -> int:
    """Evaluate every target with ``opts``, printing one summary line (or one error line) each; returns the exit
    code: 0, or the worst of the failures (one bad model never stops the others)."""
    from convkit.evaluate.run import evaluate_model, gate_error, trust_error

    worst = 0
    for path in targets:
        try:
            res = evaluate_model(path, opts)
            click.echo(_summary_line(path, res))
            err = gate_error(res) or trust_error(res, accept_defaults)
        except Exception as exc:  # alone, an unexpected error is a bug for the CLI group to report
            if len(targets) == 1 and not isinstance(exc, ConvkitError):
                raise
            err = failure_of(exc)
        if err is not None:
            prefix = f"{path}: " if len(targets) > 1 else ""
            click.echo(f"error: {prefix}{term(err.message, 4000)}", err=True)
            # one of several with bad input is exit 1, as the README says (the others were still evaluated);
            # a gate (1) or untrustworthy numbers (4) keep their code
            several_bad = len(targets) > 1 and err.exit_code == EXIT_BAD_INPUT
            worst = max(worst, EXIT_GATE_FAILED if several_bad else err.exit_code)
    return worst
