"""``convkit export``: run directories (or a checkpoint) → model.onnx [+ fp16/int8] + export.json.

Module-level imports stay light (click only); the export machinery is imported when the command runs.
"""

from __future__ import annotations

import sys

import click

from convkit.errors import friendly_errors



def _describe(run: str, res: dict) -> str:
    fp32 = res["precisions"]["fp32"]["parity"]
    parts = [f"{res['experiment']}: fp32 max|Δ| {fp32['max_abs_diff']:.2e}, agreement {fp32['argmax_agreement']:.2%}"]
    for precision in ("fp16", "int8"):
        entry = res["precisions"].get(precision)
        if entry and "parity" in entry:
            parts.append(f"{precision} agreement {entry['parity']['argmax_agreement']:.2%}, "
                         f"acc Δ {entry['gate']['acc_delta'] * 100:+.2f} pts, {entry['size_bytes'] / 1e6:.2f} MB")
    return "; ".join(parts) + f" → {res['out_dir']}"


@click.command("export", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.argument("run_dirs", nargs=-1, type=click.Path(file_okay=False))
@click.option("--all", "all_dirs", multiple=True, type=click.Path(file_okay=False), metavar="SUITE_DIR",
              help="Export every run directory under SUITE_DIR (e.g. runs/seed); repeatable.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Export this checkpoint.pt (output beside it).")
@click.option("--experiment", help="Experiment the --checkpoint belongs to (default: the one it records).")
@click.option("--precision", "precisions", multiple=True, type=click.Choice(["fp16", "int8"]),
              help="Also write model.fp16.onnx / model.int8.onnx; repeatable.")
@click.option("--atol", type=float, default=1e-4, show_default=True, help="fp32 gate: max |logit diff| vs PyTorch.")
@click.option("--min-agreement", type=float, default=0.999, show_default=True,
              help="fp32 gate: min argmax agreement with PyTorch.")
@click.option("--fp16-min-agreement", type=float, default=0.99, show_default=True, help="fp16 gate: min agreement.")
@click.option("--int8-max-drop", type=float, default=0.01, show_default=True,
              help="int8 gate: max test-accuracy drop vs fp32 (0.01 = 1 point).")
@click.option("--n-images", type=int, default=1000, show_default=True, help="Test images for the parity gate.")
@click.option("--calib-images", type=int, default=512, show_default=True, help="Training images to calibrate int8 on.")
@click.option("--data-dir", type=click.Path(), envvar="CONVKIT_DATA",
              help="Where datasets are (default: the run's own setting).")
@friendly_errors(interrupted="interrupted; files already exported are complete, the current one was not written")
def export_cmd(run_dirs, all_dirs, checkpoint, experiment, precisions, atol, min_agreement, fp16_min_agreement,
               int8_max_drop, n_images, calib_images, data_dir):
    """Export trained RUN_DIRS to ONNX behind a PyTorch-parity gate; exits 1 if a gate failed, 2 on bad input."""
    from convkit.errors import ConvkitError
    from convkit.export.pipeline import export_checkpoint, export_run, find_runs

    if experiment and not checkpoint:
        raise ConvkitError("--experiment goes with --checkpoint; a run directory records its experiment")
    targets: list[str] = list(run_dirs)
    for suite_dir in all_dirs:
        targets += [str(p) for p in find_runs(suite_dir)]
    if not targets and not checkpoint:
        raise ConvkitError("nothing to export: pass RUN_DIR..., --all SUITE_DIR or --checkpoint PATH")
    kwargs = dict(precisions=precisions, atol=atol, min_agreement=min_agreement, n_images=n_images,
                  calib_images=calib_images, data_dir=data_dir,
                  gates={"fp16": {"min_agreement": fp16_min_agreement}, "int8": {"max_acc_drop": int8_max_drop}})
    jobs = [(t, lambda t=t: export_run(t, **kwargs)) for t in targets]
    if checkpoint:
        jobs.append((checkpoint, lambda: export_checkpoint(checkpoint, experiment, None, **kwargs)))
    worst = 0
    for name, job in jobs:
        try:
            res = job()
            click.echo(_describe(name, res))
        except ConvkitError as exc:
            prefix = f"{name}: " if len(jobs) > 1 and not exc.message.startswith(name) else ""
            click.echo(f"error: {prefix}{exc.message}", err=True)
            worst = max(worst, exc.exit_code)
    if len(jobs) > 1 and worst:
        click.echo(f"error: some exports failed (exit {worst})", err=True)
    if worst:
        sys.exit(worst)
