"""The ``convkit`` command line: list, train, train-all, export, evaluate, report.

Every command is a thin shell around a library function that returns a dict; failures the user can fix
surface as one line on stderr and a distinct exit code (see convkit.errors), never a traceback.
"""

from __future__ import annotations

import os
import sys

import click

from convkit import __version__
from convkit.errors import friendly_errors


def _default_out() -> str:
    return os.environ.get("CONVKIT_RUNS", "runs")


def training_options(fn):
    """Options shared by `train` and `train-all`."""
    opts = [
        click.option("--recipe", default="fast", show_default=True, help="Training recipe: fast (GPU default) or seed (the study's protocol)."),
        click.option("--epochs", type=int, help="Epochs (default: the recipe's, else the study's for the experiment)."),
        click.option("--batch-size", type=int, help="Override the recipe's batch size."),
        click.option("--lr", type=float, help="Override the recipe's peak learning rate."),
        click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)."),
        click.option("--compile/--no-compile", "compile_", default=None, help="torch.compile (default: on for CUDA, off for CPU)."),
        click.option("--seed", type=int, default=0, show_default=True, help="Random seed; the same seed on CPU gives identical metrics."),
        click.option("--sample", is_flag=True, help="Use the embedded sample (a few thousand real images) instead of the full data."),
        click.option("--data-dir", type=click.Path(), envvar="CONVKIT_DATA", help="Where datasets are (default: $CONVKIT_DATA, else ~/.cache/convkit)."),
        click.option("--out", type=click.Path(), default=_default_out, show_default="$CONVKIT_RUNS or runs", help="Root folder for runs/<suite>/<experiment>/."),
        click.option("--resume", is_flag=True, help="Continue from the last completed epoch of an interrupted run."),
        click.option("--quiet", is_flag=True, help="No progress bar and no per-epoch lines."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="convkit")
def main():
    """convkit: train CNNs fast, export them to ONNX, and re-measure them under ONNX Runtime on GPU and CPU."""


@main.command("list")
@click.option("--suite", default=None, help="Only this suite (seed, kernel-eq).")
@friendly_errors
def list_cmd(suite):
    """Print every experiment: table, row, name, model, dataset, parameters."""
    from convkit.models import create_model
    from convkit.suite import SUITES, select_experiments

    suites = [suite] if suite else list(SUITES)
    click.echo(f"{'suite':<10} {'table':>5} {'row':>3}  {'experiment':<26} {'model':<26} {'dataset':<8} {'params':>12}")
    for name in suites:
        for exp in select_experiments(name):
            model = create_model(exp.model)
            params = sum(p.numel() for p in model.parameters() if p.requires_grad)
            click.echo(f"{exp.suite:<10} {exp.table:>5} {exp.row:>3}  {exp.name:<26} {exp.model:<26} "
                       f"{exp.dataset:<8} {params:>12,}")


@main.command()
@click.argument("experiment")
@training_options
@friendly_errors(interrupted="interrupted; the last completed epoch is saved: rerun with --resume to continue")
def train(experiment, recipe, epochs, batch_size, lr, device, compile_, seed, sample, data_dir, out, resume, quiet):
    """Train one EXPERIMENT (see `convkit list`) and write runs/<suite>/<experiment>/."""
    from convkit.train import resolve_config, train_experiment

    cfg = resolve_config(experiment, recipe=recipe, epochs=epochs, batch_size=batch_size, lr=lr, device=device,
                         compile=compile_, seed=seed, sample=sample, data_dir=data_dir, out=out)
    m = train_experiment(cfg, resume=resume, quiet=quiet)
    click.echo(f"{m['experiment']}: test acc {m['test_acc']:.4f}, test loss {m['test_loss']:.4f}, "
               f"{m['parameters']:,} params, {m['train_time_s']:.1f}s training + {m['compile_time_s']:.1f}s compile "
               f"→ {cfg.run_dir}")


@main.command("train-all")
@click.option("--suite", default="seed", show_default=True, help="Suite to run (seed, kernel-eq).")
@click.option("--only", multiple=True, help="Glob over experiment names; repeatable (e.g. --only 't3-*').")
@click.option("--precision", "precisions", multiple=True, type=click.Choice(["fp16", "int8"]),
              help="Also export (and evaluate) these ONNX variants; fp32 is always exported.")
@click.option("--no-export", is_flag=True, help="Train only: skip ONNX export and evaluation.")
@click.option("--no-evaluate", is_flag=True, help="Skip the ONNX Runtime evaluation after export.")
@training_options
@friendly_errors(interrupted="interrupted; the last completed epoch is saved: rerun with --resume to continue")
def train_all_cmd(suite, only, precisions, no_export, no_evaluate, recipe, epochs, batch_size, lr, device, compile_,
                  seed, sample, data_dir, out, resume, quiet):
    """Train, export and evaluate every experiment of a suite, then write runs/<suite>/summary.md.

    Goes on past a failing experiment and exits 1 at the end if any failed.
    """
    from convkit.train import train_all

    stages = []
    if not no_export:
        from convkit.export.stage import export_stage

        stages.append(export_stage(precisions))
        if not no_evaluate:
            from convkit.evaluate.stage import evaluate_stage

            stages.append(evaluate_stage(quick=True, precisions=("fp32", *precisions)))
    result = train_all(suite=suite, only=list(only) or None, quiet=quiet, resume=resume, echo=click.echo,
                       post_stages=stages,
                       recipe=recipe, epochs=epochs, batch_size=batch_size, lr=lr, device=device, compile=compile_,
                       seed=seed, sample=sample, data_dir=data_dir, out=out)
    click.echo(f"summary: {result['summary']}")
    if result["failed"]:
        click.echo(f"error: {len(result['failed'])} experiment(s) failed: {', '.join(result['failed'])}", err=True)
        sys.exit(1)


def _register_stage_commands() -> None:
    # The stage folders own their commands; importing their cli modules is cheap (click only).
    from convkit.evaluate.cli import evaluate_cmd
    from convkit.export.cli import export_cmd
    from convkit.report.cli import report_cmd

    main.add_command(export_cmd)
    main.add_command(evaluate_cmd)
    main.add_command(report_cmd)


_register_stage_commands()

if __name__ == "__main__":
    main()
