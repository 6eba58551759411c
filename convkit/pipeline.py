"""train-all: train → export → evaluate per experiment, as plain calls, going on past failures.

The pipeline is the one place that knows the stage order; the stages themselves only read and write run
folders. A failure of any kind in any stage of one experiment is recorded in that run folder (failure.json,
`Type: first line` for unexpected errors) and the next experiment runs; Ctrl-C still stops everything. The
summary is then rebuilt from the run folders on disk.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from convkit.artifacts import FAILURE, holds_run, write_artifact
from convkit.errors import ConvkitError
from convkit.evaluate import evaluate_model, gate_error, quick_options
from convkit.export import export_run
from convkit.suite import Experiment, select_experiments
from convkit.summary import write_summary
from convkit.train import resolve_config, train_experiment


@dataclass
class SuitePlan:
    """What train-all runs: experiments, training overrides, which later stages, with which precisions."""

    suite: str = "seed"
    only: list[str] | None = None
    train_kwargs: dict = field(default_factory=dict)  # for resolve_config (recipe, epochs, device, sample, out…)
    export: bool = True
    evaluate: bool = True
    precisions: tuple[str, ...] = ()  # fp16 / int8 variants beside fp32
    export_kwargs: dict = field(default_factory=dict)  # gates for export_run
    max_accuracy_drop: dict | None = None  # evaluation gate, points per precision
    resume: bool = False
    overwrite: bool = False
    quiet: bool = False


def select(plan: SuitePlan) -> list[Experiment]:
    """Return the plan's experiments: every pattern of ``only`` in order, each experiment once."""
    exps: list[Experiment] = []
    for pattern in plan.only or [None]:
        exps += [e for e in select_experiments(plan.suite, pattern) if e not in exps]
    return exps


def check_existing(plan: SuitePlan, configs: list) -> None:
    """Raise ConvkitError (exit 2) before any work when run folders already hold runs and the plan says neither
    resume nor overwrite: a suite is never half-replaced by accident."""
    if plan.resume or plan.overwrite:
        return
    held = [c.run_dir for c in configs if holds_run(Path(c.run_dir))]
    if held:
        more = f" (and {len(held) - 1} more)" if len(held) > 1 else ""
        raise ConvkitError(f"{held[0]}{more} already holds a run; pass --resume to continue or --overwrite to replace")


def describe_failure(exc: BaseException) -> str:
    """Return one line for a failure: a ConvkitError's message, else `Type: first line` of the exception."""
    if isinstance(exc, ConvkitError):
        return exc.message
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"{type(exc).__name__}: {first}"


def train_all(plan: SuitePlan, echo: Callable[[str], None] = print) -> dict:
    """Run every experiment of ``plan``, then rebuild the suite summary; returns write_summary's dict plus
    "failed" (names of experiments that failed in any stage)."""
    exps = select(plan)
    configs = [resolve_config(e.name, **plan.train_kwargs) for e in exps]  # bad options fail before any work
    check_existing(plan, configs)
    t0 = time.perf_counter()
    failed = []
    for i, (exp, cfg) in enumerate(zip(exps, configs), 1):
        echo(f"[{i}/{len(exps)}] {exp.name} ({exp.model}, {exp.dataset}, {cfg.epochs} epochs, {cfg.device})")
        run_dir = Path(cfg.run_dir)
        stage = "train"
        try:
            train_experiment(cfg, resume=plan.resume, quiet=plan.quiet, overwrite=plan.overwrite)
            stage = "export"
            if plan.export:
                export_run(run_dir, precisions=plan.precisions, **plan.export_kwargs)
            stage = "evaluate"
            if plan.export and plan.evaluate:
                _evaluate(plan, run_dir)
            (run_dir / FAILURE).unlink(missing_ok=True)
        except Exception as exc:  # one experiment never takes the others down; KeyboardInterrupt still stops
            message = describe_failure(exc)
            failed.append(exp.name)
            echo(f"[{i}/{len(exps)}] {exp.name} FAILED in {stage}: {message}")
            if run_dir.is_dir():
                write_artifact(run_dir / FAILURE, "failure", {"experiment": exp.name, "stage": stage,
                                                              "error": message})
    suite_dir = Path(configs[0].run_dir).parent
    result = write_summary(suite_dir, notes=[f"Wall time of this train-all: {time.perf_counter() - t0:.1f} s."])
    return {**result, "failed": failed}


def _evaluate(plan: SuitePlan, run_dir: Path) -> None:
    """Evaluate the run's exported variants quickly; raises the gate's ConvkitError (exit 1) when it fails."""
    options = quick_options(("fp32", *plan.precisions))
    if plan.max_accuracy_drop:
        options.max_accuracy_drop = dict(plan.max_accuracy_drop)
    err = gate_error(evaluate_model(run_dir, options))
    if err is not None:
        raise err
