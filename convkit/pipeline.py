"""train-all: train → export → evaluate per experiment, as plain calls, going on past failures.

The pipeline is the one place that knows the stage order; the stages themselves only read and write run
folders. A failure of any kind in any stage of one experiment is recorded in that run folder (failure.json,
`Type: first line` for unexpected errors) and the next experiment runs; Ctrl-C still stops everything. The
summary is then rebuilt from the run folders on disk.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from convkit.artifacts import FAILURE, holds_run, write_artifact
from convkit.devices import Device
from convkit.errors import ConvkitError, failure_of
from convkit.evaluate import evaluate_model, gate_error, quick_options
from convkit.export import ExportSettings, export_run
from convkit.report.build import build_report
from convkit.suite import Experiment, get_experiment, seeded_name, select_experiments, split_seeded
from convkit.summary import record_plan, write_summary
from convkit.train import TrainConfig, TrainOverrides, resolve_config, train_experiment


@dataclass
class SuitePlan:
    """What train-all runs: experiments, training overrides, which later stages, with which precisions."""

    suite: str = "seed"
    only: list[str] | None = None
    train: TrainOverrides = field(default_factory=TrainOverrides)  # for resolve_config (recipe, epochs, device…)
    export: bool = True
    evaluate: bool = True
    precisions: tuple[str, ...] = ()  # fp16 / int8 variants beside fp32
    max_accuracy_drop: dict | None = None  # the accuracy gate of export and evaluation, points per precision
    export_images: int | None = None  # export's parity images (None: export's default)
    corruptions: object = None  # evaluate.robustness.CorruptionOptions: corrupted test splits too; None = skip
    resume: bool = False
    overwrite: bool = False
    quiet: bool = False
    # Called with the experiment's name before it starts, in the process that runs it (progress hooks, tests).
    on_start: Callable[[str], None] | None = None
    seeds: tuple[int, ...] = ()  # train each experiment once per seed, into <experiment>-seed<N> (empty: once)


def select(plan: SuitePlan) -> list[Experiment]:
    """Return the plan's experiments: every pattern of ``only`` in order, each experiment once."""
    exps: list[Experiment] = []
    for pattern in plan.only or [None]:
        exps += [e for e in select_experiments(plan.suite, pattern) if e not in exps]
    return exps


def job_names(plan: SuitePlan) -> list[str]:
    """Return the run names train-all runs: each experiment's name, or <experiment>-seed<N> per seed of the plan."""
    names = [e.name for e in select(plan)]
    return [seeded_name(n, s) for n in names for s in plan.seeds] if plan.seeds else names


def config_of(name: str, train: TrainOverrides):
    """Return the TrainConfig of a run name from ``job_names``: a seeded name trains its experiment with that seed
    into the folder of that name."""
    experiment, seed = split_seeded(name)
    if seed is None:
        return resolve_config(name, train)
    return resolve_config(experiment, replace(train, seed=seed), run_name=name)


def check_existing(plan: SuitePlan, configs: list) -> None:
    """Raise ConvkitError (exit 2) before any work when run folders already hold runs and the plan says neither
    resume nor overwrite: a suite is never half-replaced by accident."""
    if plan.resume or plan.overwrite:
        return
    held = [c.run_dir for c in configs if holds_run(Path(c.run_dir))]
    if held:
        more = f" (and {len(held) - 1} more)" if len(held) > 1 else ""
        raise ConvkitError(f"{held[0]}{more} already holds a run; pass --resume to continue or --overwrite to replace")


def run_experiment(plan: SuitePlan, name: str, device: str | None = None, cfg: TrainConfig | None = None) -> dict:
    """Train, export and evaluate one experiment; returns {"experiment", "run_dir", "failed": stage or None,
    "error"}. Any failure is caught, recorded in the run folder (failure.json) and returned; Ctrl-C propagates.

    ``cfg`` is its TrainConfig when already resolved (train-all resolves each once); else it is resolved here,
    with ``device`` over the plan's (the local multi-device and Ray executors give each experiment its own).
    """
    if plan.on_start is not None:
        plan.on_start(name)
    cfg = cfg or config_of(name, replace(plan.train, device=device) if device else plan.train)
    run_dir = Path(cfg.run_dir)
    stage = "train"
    try:
        # the device the run trains on is the one its export's reference and its evaluation use (never GPU 0 by
        # default while another job holds it)
        run_device = Device.parse(cfg.device)
        train_experiment(cfg, resume=plan.resume, quiet=plan.quiet, overwrite=plan.overwrite)
        stage = "export"
        if plan.export:
            _progress(plan, f"{name}: export")
            export_run(run_dir, export_settings(plan, run_device))
        stage = "evaluate"
        if plan.export and plan.evaluate:
            _progress(plan, f"{name}: evaluate")
            _evaluate(plan, run_dir, run_device)
        (run_dir / FAILURE).unlink(missing_ok=True)
        return {"experiment": name, "run_dir": str(run_dir), "failed": None, "error": None}
    except Exception as exc:  # one experiment never takes the others down; KeyboardInterrupt still stops
        message = failure_of(exc).message
        if run_dir.is_dir():  # one that failed before its folder existed is recorded by train_all
            record_failure(run_dir, name, stage, message)
        return {"experiment": name, "run_dir": str(run_dir), "failed": stage, "error": message}


def export_settings(plan: SuitePlan, device: Device) -> ExportSettings:
    """Return the export settings of the plan: its precisions, gate and parity images over export's defaults, the
    PyTorch reference on ``device`` (the run's)."""
    given = {"max_acc_drop": plan.max_accuracy_drop, "n_images": plan.export_images}
    return ExportSettings(precisions=plan.precisions, device=device.label,
                          **{k: v for k, v in given.items() if v is not None})


def _progress(plan: SuitePlan, line: str) -> None:
    """Print one flushed progress line (a stage starting) unless the plan is quiet: logs show where a run is."""
    if not plan.quiet:
        print(line, flush=True)


def record_failure(run_dir: Path, name: str, stage: str, message: str) -> None:
    """Write the run folder's failure record (read by the summary), creating the folder when the experiment failed
    before it existed; when even that fails, the suite's summary still lists it (from train-all's outcomes)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_artifact(run_dir / FAILURE, "failure", {"experiment": name, "stage": stage, "error": message})
    except (OSError, ConvkitError):
        pass


def train_all(plan: SuitePlan, echo: Callable[[str], None] = print, executor: Callable | None = None) -> dict:
    """Run every experiment of ``plan``, then rebuild the suite summary; returns write_summary's dict plus
    "failed" (names of experiments that failed in any stage).

    ``executor(plan, configs, echo) -> [run_experiment results]`` runs the experiments (``configs``: run name →
    its TrainConfig, resolved once here): one after another here by default; ``convkit.distribute`` has one per
    GPU in local processes and one on a Ray cluster (each resolves its experiments again for its own device).
    """
    names = job_names(plan)
    configs = {n: config_of(n, plan.train) for n in names}  # bad options fail before any work
    check_existing(plan, list(configs.values()))
    suite_dir = Path(configs[names[0]].run_dir).parent
    t0 = time.perf_counter()
    results = (executor or run_sequentially)(plan, configs, echo)
    failed = [r["experiment"] for r in results if r["failed"]]
    if not any(Path(c.run_dir).is_dir() for c in configs.values()):  # every experiment failed before its first epoch:
        return {"summary": None, "results": {}, "failed": failed, "report": None}  # no empty suite folder left
    record_plan(suite_dir, plan.suite, names)  # so the summary lists every one, run or not
    for r in results:  # failed before its run folder existed: a folder for its failure record
        if r["failed"] and not Path(r["run_dir"]).is_dir():
            record_failure(Path(r["run_dir"]), r["experiment"], r["failed"], r["error"])
    result = write_summary(suite_dir, notes=[f"Wall time of this train-all: {time.perf_counter() - t0:.1f} s."],
                           outcomes=results)
    return {**result, "failed": failed, "report": write_report(suite_dir, echo)}


def write_report(suite_dir: Path, echo: Callable[[str], None]) -> str | None:
    """Build the suite's report.md/html; returns its path, or None (said in one line) when it cannot be built:
    the runs and the summary stand without it."""
    try:
        return build_report(suite_dir)["md"]
    except Exception as exc:
        echo(f"report not written: {failure_of(exc).message}")
        return None


def run_sequentially(plan: SuitePlan, configs: dict[str, TrainConfig],
                     echo: Callable[[str], None] = print) -> list[dict]:
    """Run the experiments (run name → TrainConfig) one after another in this process; returns their
    run_experiment results."""
    results, names = [], list(configs)
    for i, name in enumerate(names, 1):
        exp, cfg = get_experiment(split_seeded(name)[0]), configs[name]
        echo(f"[{i}/{len(names)}] {name} ({exp.model}, {exp.dataset}, {cfg.epochs} epochs, seed {cfg.seed}, "
             f"{cfg.device})")
        res = run_experiment(plan, name, cfg=cfg)
        if res["failed"]:
            echo(f"[{i}/{len(names)}] {name} FAILED in {res['failed']}: {res['error']}")
        results.append(res)
    return results


def _evaluate(plan: SuitePlan, run_dir: Path, device: Device) -> None:
    """Evaluate the run's exported variants quickly on the run's ``device`` (its GPU for the GPU providers, the
    reference, timings and the hardware record); raises the gate's ConvkitError (exit 1) when a gate fails."""
    options = quick_options(("fp32", *plan.precisions), plan.corruptions)
    options.providers.reference_device = device.label
    if device.is_cuda:
        options.providers.gpu = device
    if plan.max_accuracy_drop:
        options.max_accuracy_drop = dict(plan.max_accuracy_drop)
    err = gate_error(evaluate_model(run_dir, options))
    if err is not None:
        raise err
