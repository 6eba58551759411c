"""``convkit export``: run directories (or a checkpoint) → model.onnx [+ fp16/int8] + export.json.

Module-level imports stay light (click and convkit.gates): the export machinery is imported when the command runs.
"""

from __future__ import annotations

import sys

import click

from convkit import gates

from convkit.errors import EXIT_GATE_FAILED, ConvkitError, failure_of
from convkit.preprocessing_flags import geometry_options
from convkit.text import term


def _describe(res: dict) -> str:
    fp32 = res["precisions"]["fp32"]["parity"]
    parts = [f"{res['experiment']}: fp32 max|Δ| {fp32['max_abs_diff']:.2e}, agreement {fp32['argmax_agreement']:.2%}"]
    for precision in gates.VARIANTS:
        entry = res["precisions"].get(precision)
        if entry and "parity" in entry:
            parts.append(f"{precision} agreement {entry['parity']['argmax_agreement']:.2%}, "
                         f"acc Δ {entry['gate']['acc_delta'] * 100:+.2f} pts, {entry['size_bytes'] / 1e6:.2f} MB")
            if "keep_fp32" in entry:
                from convkit.export.keep_fp32 import describe_section

                parts.append(describe_section(entry["keep_fp32"]))
    return "; ".join(parts) + f" → {term(res['out_dir'])}"


def user_model_options(f):
    """Add the options of a user model's export (a model convkit did not train) to the export command."""
    opts = [
        click.option("--model", default=None, help="Your model: MODULE:FACTORY (an importable callable returning an "
                     "nn.Module, e.g. torchvision.models:resnet18) or timm:NAME (timm.create_model, pretrained=False)."),
        click.option("--model-kwargs", default=None, help='JSON keyword arguments for the factory, e.g. '
                     '\'{"num_classes": 10}\'.'),
        click.option("--weights", type=click.Path(dir_okay=False), default=None,
                     help="A state_dict file (alone or under state_dict / model / model_state_dict; module. prefixes "
                          "stripped), read with torch.load(weights_only=True): code in a pickle is never run."),
        click.option("--program", type=click.Path(dir_okay=False), default=None,
                     help="A torch.export.save'd ExportedProgram (.pt2) instead of --model: no source code needed."),
        click.option("--out", type=click.Path(file_okay=False), default=None,
                     help="The folder the user model's export goes to (required with --model/--program)."),
        click.option("--dataset", default=None, help="A built-in dataset (mnist, cifar10) the model is measured on."),
        click.option("--data", "data_path", type=click.Path(), default=None,
                     help="Or any labelled images: an ImageFolder or a path,label CSV."),
        click.option("--classes", "classes_file", type=click.Path(dir_okay=False), default=None,
                     help="Class names in the model's output order, one per line (default: the dataset's, or the "
                          "folder's names sorted)."),
        click.option("--input-size", default=None, help="C,H,W of the model's input (default: the dataset's, or a "
                     "config's input_size)."),
        click.option("--mean", default=None, help="Per-channel mean after --input-range (default: a config's, else "
                     "the dataset's)."),
        click.option("--std", default=None, help="Per-channel std (default: a config's, else the dataset's)."),
        click.option("--input-range", type=click.Choice(["1", "255"]), default=None,
                     help="1: pixels / 255 before mean/std (default); 255: raw pixels."),
        click.option("--channel-order", type=click.Choice(["rgb", "bgr"]), default=None, help="Default rgb."),
        click.option("--preprocessing-config", type=click.Path(dir_okay=False), default=None,
                     help="Read the preprocessing from a Hugging Face preprocessor_config.json, a timm config.json, a "
                          "torchvision transforms JSON or a .convkit.json (flags win; docs/preprocessing.md)."),
        click.option("--calib-data", type=click.Path(), default=None,
                     help="Images to calibrate int8 on when the data has no train split (an ImageFolder or CSV)."),
        click.option("--exporter", type=click.Choice(["dynamo", "torchscript"]), default="dynamo", show_default=True,
                     help="torchscript: the legacy exporter, for models the dynamo exporter cannot export."),
        click.option("--sample", is_flag=True, help="--dataset: use the embedded sample (1,000/500 images)."),
        click.option("--overwrite", is_flag=True, help="Replace the export already in --out (else refused)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return geometry_options(f)


@click.command("export")
@click.argument("run_dirs", nargs=-1, type=click.Path(file_okay=False))
@click.option("--all", "all_dirs", multiple=True, type=click.Path(file_okay=False), metavar="SUITE_DIR",
              help="Export every run directory under SUITE_DIR (e.g. runs/seed); repeatable.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Export this checkpoint file (output beside it).")
@click.option("--experiment", help="Experiment the --checkpoint belongs to (default: the one it records).")
@click.option("--precision", "precisions", multiple=True, type=click.Choice(["fp16", "int8"]),
              help="Also write the fp16 / int8 variant files; repeatable.")
@click.option("--atol", type=float, default=gates.FP32_ATOL, show_default=True,
              help="fp32 gate: max |logit diff| vs PyTorch.")
@click.option("--max-accuracy-drop", default=None,
              help="Gate: accuracy below PyTorch's on the parity images, in percentage points: 0.1 (fp32) or "
                   "fp32=0.1,fp16=0.3,int8=1 (defaults: " + ", ".join(f"{k} {v:g}" for k, v in gates.MAX_ACC_DROP.items()) + ").")
@click.option("--max-disagreement", default=None,
              help="Gate: images whose top-1 class differs from PyTorch's, in percentage points, e.g. "
                   "fp32=0.1,fp16=1 (defaults: fp32 0.1, fp16 1; int8 is reported, not gated).")
@click.option("--n-images", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="Test images for the parity gate.")
@click.option("--calib-images", type=click.IntRange(1, 10_000), default=512, show_default=True,
              help="Training images to calibrate int8 on.")
@click.option("--keep-fp32", default=None, metavar="auto|NAME,...",
              help="int8: keep these tensor groups (tensor names or PyTorch module paths, as `convkit diagnose` lists "
                   "them) in fp32; auto: the smallest set found (greedy by measured top-1) that passes the int8 gate, "
                   "timed against fp32 and full int8. Recorded in the file's metadata and export.json.")
@click.option("--calibration", type=click.Choice(["minmax", "entropy", "percentile"], case_sensitive=False),
              default="minmax", show_default=True, help="int8 calibration method (ONNX Runtime's calibrators).")
@click.option("--data-dir", type=click.Path(), envvar="CONVKIT_DATA",
              help="Where datasets are (default: the run's own setting).")
@user_model_options
def export_cmd(run_dirs, all_dirs, checkpoint, experiment, precisions, atol, max_accuracy_drop, max_disagreement,
               n_images, calib_images, keep_fp32, calibration, data_dir, **user):
    """Export trained RUN_DIRS — or your own PyTorch model (--model MODULE:FACTORY, timm:NAME or --program FILE.pt2,
    with --out and the data it is measured on) — to ONNX behind a PyTorch-parity gate.

    Exit codes: 1 a gate failed, or one of several runs failed (the others were exported); 2 bad input (one run).
    """
    from convkit.artifacts import run_folders
    from convkit.export.keep_fp32 import parse_keep
    from convkit.export.pipeline import ExportSettings, export_checkpoint, export_run
    from convkit.export.quantize import CALIB_METHODS

    method = {m.lower(): m for m in CALIB_METHODS}[calibration.lower()]
    settings = ExportSettings(
        precisions=tuple(precisions), atol=atol, n_images=n_images, calib_images=calib_images, data_dir=data_dir,
        keep_fp32=parse_keep(keep_fp32), calibration=method,
        max_acc_drop=gates.parse_points(max_accuracy_drop, "--max-accuracy-drop", gates.MAX_ACC_DROP),
        max_disagreement=gates.parse_points(max_disagreement, "--max-disagreement", gates.MAX_DISAGREEMENT))
    if user["model"] or user["program"]:
        if run_dirs or all_dirs or checkpoint:
            raise ConvkitError("--model/--program export your own model; run directories are exported on their own")
        from convkit.export.user_cli import export_user

        click.echo(export_user(user, settings))
        return
    if experiment and not checkpoint:
        raise ConvkitError("--experiment goes with --checkpoint; a run directory records its experiment")
    targets: list[str] = list(run_dirs)
    for suite_dir in all_dirs:
        targets += [str(p) for p in run_folders(suite_dir, with_checkpoint=True)]
    if not targets and not checkpoint:
        raise ConvkitError("nothing to export: pass RUN_DIR..., --all SUITE_DIR or --checkpoint PATH")
    jobs = [(t, lambda t=t: export_run(t, settings)) for t in targets]
    if checkpoint:
        jobs.append((checkpoint, lambda: export_checkpoint(checkpoint, experiment, None, settings)))
    worst = 0
    for name, job in jobs:
        try:
            click.echo(_describe(job()))
        except Exception as exc:  # one failed export never stops the others; alone, a bug goes to the CLI group
            if len(jobs) == 1 and not isinstance(exc, ConvkitError):
                raise
            exc = failure_of(exc)
            prefix = f"{name}: " if len(jobs) > 1 and not exc.message.startswith(name) else ""
            click.echo(f"error: {prefix}{term(exc.message, 4000)}", err=True)
            # alone, its own code; one of several failing is exit 1 (README: the others still ran)
            worst = max(worst, exc.exit_code if len(jobs) == 1 else EXIT_GATE_FAILED)
    if len(jobs) > 1 and worst:
        click.echo(f"error: some exports failed (exit {worst})", err=True)
    if worst:
        sys.exit(worst)
