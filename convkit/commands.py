"""The commands that span stages: ``list``, ``train-all`` (the pipeline) and ``summarize``.

Module-level imports stay light (click, and the stage cli modules that import click alone).
"""

from __future__ import annotations

import sys
from dataclasses import replace

import click

from convkit import gates
from convkit.errors import ConvkitError
from convkit.text import term
from convkit.train.cli import overrides_from_cli, training_options


@click.command("list")
@click.option("--suite", default=None, help="Only this suite (seed, kernel-eq).")
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


@click.command("train-all")
@click.option("--suite", default="seed", show_default=True, help="Suite to run (seed, kernel-eq).")
@click.option("--only", multiple=True, help="Glob over experiment names; repeatable (e.g. --only 't3-*').")
@click.option("--precision", "precisions", multiple=True, type=click.Choice(["fp16", "int8"]),
              help="Also export (and evaluate) these ONNX variants; fp32 is always exported.")
@click.option("--no-export", is_flag=True, help="Train only: skip ONNX export and evaluation.")
@click.option("--no-evaluate", is_flag=True, help="Skip the ONNX Runtime evaluation after export.")
@click.option("--max-accuracy-drop", default=None,
              help="Gate of export and evaluation, in percentage points below PyTorch, per precision: "
                   f"0.1 (fp32) or fp32=0.1,fp16=0.3,int8=1 (defaults: {gates.describe()}).")
@click.option("--devices", default=None,
              help="Spread experiments over these devices, one process each, e.g. cuda:0,cuda:1 (default: every "
                   "visible GPU when there are several and no --device is given).")
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Experiments at once per device (or per GPU on Ray: each task gets 1/JOBS of a GPU).")
@click.option("--seeds", default=None, metavar="0,1,2",
              help="Train each experiment once per seed, into <experiment>-seed<N> (instead of --seed); the summary "
                   "and report show mean ± sd and min–max per row.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="auto", default=None, metavar="[ADDRESS]",
              help="Run the experiments as tasks on a Ray cluster (`--ray` alone: the running cluster, "
                   "or ADDRESS, e.g. ray://head:10001); results come back into --out.")
@click.option("--corruptions", default=None,
              help="Also evaluate corrupted copies of each test split (all, or a comma list; see `convkit evaluate "
                   "--help`); the report gains a robustness section.")
@click.option("--severities", default="1-5", show_default=True, help="Corruption severities: 1-5, 3 or 1,3,5.")
@training_options
def train_all_cmd(suite, only, precisions, no_export, no_evaluate, max_accuracy_drop, devices, jobs, seeds, ray_address,
                  corruptions, severities, recipe, epochs, batch_size, lr, device, compile_, seed, sample, data_dir,
                  out, resume, overwrite, quiet, max_images):
    """Train, export and evaluate every experiment of a suite, then write runs/<suite>/summary.md.

    Goes on past a failing experiment (recorded in its run folder) and exits 1 at the end if any failed.
    """
    from convkit.evaluate.robustness import options_from_cli
    from convkit.pipeline import SuitePlan, train_all

    drop = gates.parse_points(max_accuracy_drop, "--max-accuracy-drop", gates.MAX_ACC_DROP)
    device = single_device(devices, jobs, device)
    plan = SuitePlan(suite=suite, only=list(only) or None, export=not no_export, evaluate=not no_evaluate,
                     precisions=tuple(precisions), max_accuracy_drop=drop,
                     resume=resume, overwrite=overwrite, quiet=quiet, seeds=parse_seeds(seeds),
                     corruptions=options_from_cli(corruptions, severities),
                     train=replace(overrides_from_cli(click.get_current_context().params), device=device))
    result = train_all(plan, echo=click.echo, executor=choose_executor(ray_address, devices, jobs, device))
    if result["summary"]:
        click.echo(f"summary: {term(result['summary'])}")
    if result.get("report"):
        click.echo(f"report: {term(result['report'])}")
    if result["failed"]:
        click.echo(f"error: {len(result['failed'])} experiment(s) failed: {', '.join(result['failed'])}", err=True)
        sys.exit(1)


def parse_seeds(text: str | None) -> tuple[int, ...]:
    """Return the seeds of ``--seeds 0,1,2`` in order, each once; () when not given. ConvkitError (exit 2) otherwise."""
    if text is None:
        return ()
    try:
        seeds = tuple(dict.fromkeys(int(part) for part in text.split(",") if part.strip()))
    except ValueError:
        seeds = ()
    if not seeds or any(s < 0 for s in seeds):
        raise ConvkitError(f"--seeds {text!r}: give non-negative integers separated by commas, e.g. --seeds 0,1,2")
    return seeds


def single_device(devices: str | None, jobs: int, device: str | None) -> str | None:
    """Return the device to train on in process: ``--devices`` when it names one device (and --jobs is 1), else
    ``device``; ConvkitError for an unusable device or a --device that contradicts it."""
    if not devices:
        return device
    from convkit.distribute import parse_devices

    slots = parse_devices(devices)  # refuses a malformed or unusable device, as `train --device` does
    if len(slots) != 1 or jobs != 1:
        return device
    if device and device != slots[0]:
        raise ConvkitError(f"--device {device} and --devices {slots[0]} contradict each other; pass one of them")
    return slots[0]


def choose_executor(ray_address, devices, jobs, device):
    """Return the train-all executor the options ask for: Ray, local processes per device, or None (in process)."""
    if ray_address:
        from convkit.distribute import ray_executor

        return ray_executor(None if ray_address == "local" else ray_address, jobs)
    if devices or jobs > 1 or not device:
        from convkit.distribute import local_executor, parse_devices

        slots = parse_devices(devices) or ([device] if device else [])
        if len(slots) * jobs > 1:
            return local_executor(slots, jobs)
    return None


@click.command("summarize")
@click.argument("suite_dir", type=click.Path(file_okay=False))
def summarize_cmd(suite_dir):
    """Rebuild SUITE_DIR/summary.md and summary.json from its run folders alone.

    A suite trained in pieces (other machines, --only runs, resumed runs) gets one summary.
    """
    from convkit.summary import write_summary

    result = write_summary(suite_dir)
    not_run = sum(1 for v in result["status"].values() if v == "not run")
    click.echo(f"summary: {term(result['summary'])} ({len(result['results'])} runs, {len(result['failed'])} failed"
               + (f", {not_run} planned but not run" if not_run else "") + ")")
