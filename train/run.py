"""Train one experiment end to end and write its artifacts under ``runs/<suite>/<experiment>/``."""

from __future__ import annotations

import copy
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from tqdm import tqdm

from convkit.artifacts import (
    CHECKPOINT,
    CONFIG,
    GRAD_NORMS,
    HISTORY,
    METRICS,
    CheckpointRecord,
    fresh_run_folder,
    holds_run,
    load_checkpoint,
    load_weights,
    promote_run_folder,
    remove_downstream,
    run_lock,
    save_checkpoint,
    write_artifact,
)
from convkit.atomic import ensure_writable_dir, write_csv
from convkit.compilation import compile_model
from convkit.data.load import load_dataset
from convkit.data.loader import DeviceLoader, LoaderOptions, make_generator
from convkit.devices import exact_fp32
from convkit.envinfo import environment
from convkit.errors import ConvkitError, TrainingDiverged, failure_of
from convkit.models import create_model
from convkit.onnx_meta import file_sha256
from convkit.text import term
from convkit.train.config import TrainConfig
from convkit.train.loop import GradNormTracker, TrainStep, autocast, evaluate, padded_batches, synchronize, train_epoch
from convkit.train.optim import build_optimizer
from convkit.uncertainty import wilson

# Keys of the config that must agree for --resume to continue a run instead of starting over.
_RESUME_KEYS = ("experiment", "model", "dataset", "recipe", "epochs", "seed", "sample", "device", "amp")


def count_parameters(model: nn.Module) -> int:
    """Return the number of trainable parameters (the study's count)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def warm_up(model: nn.Module, compiled, train_loader: DeviceLoader, test_loader: DeviceLoader, cfg: TrainConfig,
            device: torch.device) -> float:
    """Trigger every compilation the run will need, then restore the weights; returns seconds spent.

    As in airbench, compile time is kept out of the training clock: one train step (forward + backward)
    and one eval forward at the (padded) eval batch shape run here on real data, after which model and BN
    statistics are restored, so the run itself is unaffected.
    """
    if not cfg.compile:
        return 0.0
    snapshot = copy.deepcopy(model.state_dict())
    synchronize(device)
    t0 = time.perf_counter()
    x, y = next(iter(train_loader.epoch(make_generator(device, 0))))
    model.train()
    with autocast(device, cfg.amp):
        loss = torch.nn.functional.cross_entropy(compiled(x), y)
    loss.backward()
    model.eval()
    with torch.no_grad(), autocast(device, cfg.amp):
        compiled(next(padded_batches(test_loader))[0])  # evaluate() pads every batch to this one shape
    synchronize(device)
    seconds = time.perf_counter() - t0
    model.load_state_dict(snapshot)
    model.zero_grad(set_to_none=True)
    return seconds


def _resume_state(run_dir: Path, cfg: TrainConfig, data_checksum: str, model, optimizer,
                  scheduler) -> tuple[int, list, list]:
    """Load a compatible checkpoint into model/optimizer/scheduler; return (epochs done, history, grad norms).

    Refused (ConvkitError, exit 2, nothing changed) when the config or the data differ from the checkpoint's.
    """
    ckpt = load_checkpoint(run_dir / CHECKPOINT)
    old, new = ckpt["config"], cfg.to_dict()
    differs = [k for k in _RESUME_KEYS if old.get(k) != new.get(k)]
    if differs:
        raise ConvkitError(
            f"cannot resume {run_dir}: its config differs in {', '.join(differs)}; rerun with --overwrite to start over"
        )
    if ckpt.get("data_checksum") not in (None, data_checksum):
        raise ConvkitError(
            f"cannot resume {run_dir}: it was trained on other data (checksum {str(ckpt['data_checksum'])[:12]}, "
            f"this data {data_checksum[:12]}); point --data-dir at the data it was trained on, or use --overwrite"
        )
    load_weights(model, ckpt["model"], str(run_dir / CHECKPOINT))
    optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt["scheduler"] is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    return int(ckpt["epoch"]), list(ckpt["history"]), list(ckpt["grad_norms"])


# The columns training adds to the suite summary: (title, key of metrics.json's "summary", format).
SUMMARY_COLUMNS = (
    ("params", "parameters", ","),
    ("test loss", "test_loss", ".4f"),
    ("train loss", "train_loss", ".4f"),
    ("test acc", "test_acc", ".4f"),
    ("train acc", "train_acc", ".4f"),
    ("time s", "train_time_s", ".1f"),
    ("compile s", "compile_time_s", ".1f"),
    ("ran", "execution", "s"),
)


@dataclass
class RunState:
    """A run set up and ready for its epochs: model, loaders, optimizer, and what earlier epochs left."""

    cfg: TrainConfig
    run_dir: Path  # where files go now: a temporary folder until a fresh run's first checkpoint exists
    device: torch.device
    model: nn.Module
    data: object  # LoadedDataset
    train_loader: DeviceLoader
    test_loader: DeviceLoader
    optimizer: torch.optim.Optimizer
    scheduler: object
    env: dict
    start_epoch: int = 0
    history: list = field(default_factory=list)
    grad_rows: list = field(default_factory=list)
    compile_error: str | None = None
    saved_epoch: int = 0  # the epoch of the newest checkpoint on disk
    saved_at: float = 0.0  # time.monotonic() when it was written
    final: dict | None = None  # the final model's fp32 figures, measured before the last checkpoint is written


def train_experiment(cfg: TrainConfig, resume: bool = False, quiet: bool = False, overwrite: bool = False) -> dict:
    """Train ``cfg``'s experiment; returns the final metrics dict (also written to ``metrics.json``).

    Artifacts, each written atomically (names in convkit.artifacts): config.json, history.csv, grad_norms.csv,
    metrics.json and checkpoint.pt (rewritten after every epoch, so an interrupted run resumes from its last
    epoch). The run folder is locked while training. A folder that already holds a run is continued with
    ``resume``, replaced with ``overwrite`` (only once the new run's first checkpoint exists), else refused.
    """
    with run_lock(Path(cfg.run_dir), f"convkit train {cfg.experiment}"):
        state = set_up(cfg, resume, overwrite)
        try:
            compiled, compile_s = compile_or_eager(state)
            run_epochs(state, compiled, quiet)
        except KeyboardInterrupt:
            raise TrainingInterrupted(interrupted(state)) from None
        finally:
            if state.run_dir != Path(cfg.run_dir):  # a fresh run that never reached its first checkpoint
                shutil.rmtree(state.run_dir, ignore_errors=True)
        metrics = final_metrics(state, compile_s)
        write_artifact(state.run_dir / METRICS, "metrics", metrics)
    return metrics


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; ``message`` says exactly what the run folder holds (the CLI prints it, exit 130)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def interrupted(state: "RunState") -> str:
    """Return what an interrupted run leaves: the epoch its checkpoint holds, history.csv and grad_norms.csv cut
    back to that epoch (so no file lists epochs a resume will train again), and how to go on."""
    cfg, saved = state.cfg, state.saved_epoch
    done = len(state.history)
    if state.run_dir != Path(cfg.run_dir) or not saved:
        return (f"interrupted in epoch {done + 1} of {cfg.epochs}: no checkpoint was written yet, so nothing was "
                f"kept; rerun to start over")
    if done > saved:
        try:
            write_csv(state.run_dir / HISTORY, state.history[:saved])
            write_csv(state.run_dir / GRAD_NORMS, [r for r in state.grad_rows if r["epoch"] <= saved])
        except ConvkitError:  # a full disk: the CSVs stay longer than the checkpoint; --resume rewrites them
            pass
    later = f" (epochs {saved + 1}–{done} finished since are not saved: checkpoints are written at most every " \
            f"{CHECKPOINT_INTERVAL_S / 60:.0f} min)" if done > saved else ""
    return (f"interrupted: {term(Path(cfg.run_dir) / CHECKPOINT)} holds epoch {saved} of {cfg.epochs}{later}; rerun "
            f"with --resume to continue from epoch {saved + 1}")


def compile_or_eager(state: "RunState"):
    """Return (the module to run, compile seconds): torch.compile'd when the config asks and compilation works.

    A compiler failure (dynamo, inductor, a missing toolchain) does not end the run: it trains eagerly and
    ``state.compile_error`` records why, for metrics.json and the summary. Ctrl-C still stops.
    """
    cfg, model = state.cfg, state.model
    if not cfg.compile:
        return model, 0.0
    # Two variables on purpose: `model` (eager) is what is saved and exported, `compiled` is what runs.
    compiled = compile_model(model)
    try:
        return compiled, warm_up(model, compiled, state.train_loader, state.test_loader, cfg, state.device)
    except Exception as exc:
        state.compile_error = failure_of(exc).message
        model.zero_grad(set_to_none=True)
        return model, 0.0


def set_up(cfg: TrainConfig, resume: bool, overwrite: bool = False) -> RunState:
    """Return the RunState: data on the device, model, optimizer; with ``resume``, the checkpoint's state loaded.

    Writes config.json, but only after a resume was accepted (a refused resume leaves the old run as it was);
    a fresh run writes into a temporary folder that replaces the run folder after its first checkpoint.
    """
    final = Path(cfg.run_dir)
    resuming = resume and (final / CHECKPOINT).is_file()
    if not resuming and holds_run(final) and not overwrite:
        raise ConvkitError(f"{final} already holds a run; pass --resume to continue it or --overwrite to replace it")
    ensure_writable_dir(final.parent)
    device = torch.device(cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    data = load_dataset(cfg.dataset, cfg.data_dir, sample=cfg.sample, max_images=cfg.max_images)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    mcfg = model.default_cfg
    train_loader = DeviceLoader(data.train_images, data.train_labels, cfg.recipe.batch_size, mcfg.mean, mcfg.std,
                                device, LoaderOptions(train=True, crop_pad=cfg.crop_pad, flip=cfg.flip,
                                                      channels_last=cfg.channels_last))
    if len(train_loader) == 0:
        raise ConvkitError(
            f"--batch-size {cfg.recipe.batch_size} exceeds the {len(data.train_images)} training images; lower it"
        )
    test_loader = DeviceLoader(data.test_images, data.test_labels, cfg.recipe.batch_size, mcfg.mean, mcfg.std,
                               device, LoaderOptions(train=False, channels_last=cfg.channels_last))
    optimizer, scheduler = build_optimizer(model, cfg, len(train_loader))
    state = RunState(cfg, final, device, model, data, train_loader, test_loader, optimizer, scheduler,
                     environment(device))
    if resuming:
        state.start_epoch, state.history, state.grad_rows = _resume_state(final, cfg, data.checksum, model,
                                                                          optimizer, scheduler)
        state.saved_epoch, state.saved_at = state.start_epoch, time.monotonic()
        if state.start_epoch < cfg.epochs:
            remove_downstream(final)  # the checkpoint will change: its exports and evaluations would be stale
    else:
        state.run_dir = fresh_run_folder(final)
    write_artifact(state.run_dir / CONFIG, "config", {
        "config": cfg.to_dict(), "model_config": mcfg.to_dict(), "parameters": count_parameters(model),
        "data_source": data.source, "data_checksum": data.checksum, "environment": state.env})
    return state


# A checkpoint (weights + optimizer state: about 280 MB for ResNet-50) is written after the first epoch a run
# trains, after the last, and otherwise at most once per this many seconds: on a fast GPU, writing every epoch
# would cost more than the epochs themselves, and a resume repeats at most this much work (it stays exact,
# because every epoch's randomness derives from the seed and the epoch number).
CHECKPOINT_INTERVAL_S = 300.0


def checkpoint_due(state: RunState, epochs_done: int) -> bool:
    """Return True when the checkpoint should be written after ``epochs_done`` epochs."""
    first = state.saved_epoch == state.start_epoch and epochs_done == state.start_epoch + 1
    last = epochs_done == state.cfg.epochs
    return first or last or time.monotonic() - state.saved_at >= CHECKPOINT_INTERVAL_S


def run_epochs(state: RunState, compiled, quiet: bool) -> None:
    """Train the remaining epochs; after each, append history and the CSVs, and save the checkpoint when due.

    Raises TrainingDiverged (exit 3) when a loss becomes non-finite; the last good checkpoint stays.
    """
    cfg, model, device = state.cfg, state.model, state.device
    tracker = GradNormTracker(model, every=cfg.grad_norm_every)
    step = TrainStep(state.optimizer, state.scheduler, cfg.amp, cfg.recipe.label_smoothing)
    terminal = sys.stdout.isatty()  # a bar only on a terminal; elsewhere (CI logs, nohup, docker run without -t)
    bar = tqdm(total=(cfg.epochs - state.start_epoch) * len(state.train_loader), desc=cfg.experiment, unit="step",
               disable=quiet or not terminal, leave=False, dynamic_ncols=True)
    for epoch in range(state.start_epoch, cfg.epochs):
        # Every epoch's randomness (shuffle, augmentation, dropout) derives from (seed, epoch) alone, which is
        # what makes a resumed run identical to an uninterrupted one.
        epoch_seed = cfg.seed * 100_003 + epoch
        torch.manual_seed(epoch_seed)
        model.train()
        tr = train_epoch(compiled, state.train_loader, step, make_generator(device, epoch_seed), tracker,
                         on_step=lambda: bar.update(1))
        model.eval()
        te = evaluate(compiled, state.test_loader, cfg.amp)
        if not (math.isfinite(tr.loss) and math.isfinite(te.loss)):
            bar.close()
            kept = f"epoch {state.saved_epoch}" if state.saved_epoch else "none: no epoch completed"
            raise TrainingDiverged(
                f"{cfg.experiment}: loss became non-finite in epoch {epoch + 1}; last good checkpoint ({kept}) kept "
                f"in {cfg.run_dir}; lower --lr or use --recipe seed"
            )
        row = {
            "epoch": epoch + 1,
            "train_loss": tr.loss, "train_acc": tr.acc, "test_loss": te.loss, "test_acc": te.acc,
            "epoch_time_s": tr.seconds + te.seconds, "train_time_s": tr.seconds, "eval_time_s": te.seconds,
            "samples_per_s": tr.samples / tr.seconds, "lr": state.optimizer.param_groups[0]["lr"],
        }
        state.history.append(row)
        state.grad_rows += [{"epoch": epoch + 1, "parameter": k, "grad_norm": v}
                            for k, v in tracker.epoch_means().items()]
        if epoch + 1 == cfg.epochs:  # measured before the last checkpoint, which records it for metrics.json's readers
            state.final = {**final_fp32_accuracy(state), "parameters": count_parameters(model)}
        if checkpoint_due(state, epoch + 1):
            record = CheckpointRecord(epoch=epoch + 1, config=cfg.to_dict(), history=state.history,
                                      grad_norms=state.grad_rows, environment=state.env,
                                      data_checksum=state.data.checksum, final=state.final)
            save_checkpoint(state.run_dir, model=model, optimizer=state.optimizer, scheduler=state.scheduler,
                            record=record)
            state.saved_epoch, state.saved_at = epoch + 1, time.monotonic()
        write_csv(state.run_dir / HISTORY, state.history)
        write_csv(state.run_dir / GRAD_NORMS, state.grad_rows)
        if state.run_dir != Path(cfg.run_dir):
            state.run_dir = promote_run_folder(state.run_dir, Path(cfg.run_dir))
        if not quiet:  # one plain flushed line per epoch, under the bar on a terminal, alone in a log
            line = (f"{cfg.experiment} epoch {epoch + 1}/{cfg.epochs}  train loss {tr.loss:.4f} acc {tr.acc:.4f}  "
                    f"test loss {te.loss:.4f} acc {te.acc:.4f}  {row['epoch_time_s']:.1f}s  "
                    f"{row['samples_per_s']:.0f} samples/s")
            if terminal:
                tqdm.write(line)
            else:
                print(line, flush=True)
    bar.close()


def final_metrics(state: RunState, compile_s: float) -> dict:
    """Return metrics.json's content: the last epoch's figures, timings, data identity, config, environment;
    ``test_acc_ci`` is the 95 % Wilson interval of test_acc over ``test_images``."""
    cfg, history, last = state.cfg, state.history, state.history[-1]
    metrics = {
        "experiment": cfg.experiment,
        "model": cfg.model,
        "dataset": cfg.dataset,
        "parameters": count_parameters(state.model),
        "epochs": len(history),
        **{k: last[k] for k in ("train_loss", "train_acc", "test_loss", "test_acc")},
        "train_time_s": sum(r["epoch_time_s"] for r in history),
        "compile_time_s": compile_s,
        "execution": execution(cfg, state.compile_error),
        "compile_error": state.compile_error,
        **(state.final or final_fp32_accuracy(state)),
        "timing": "wall clock of train + per-epoch test passes, device synchronized before each reading; "
                  "compile time measured separately in a warm-up step before the clock starts",
        "resumed_from_epoch": state.start_epoch or None,
        "data_source": state.data.source,
        "data_checksum": state.data.checksum,
        "test_images": len(state.data.test_images),
        # the checkpoint these figures describe (convkit.provenance verifies both the hash and the figures)
        "checkpoint_sha256": file_sha256(state.run_dir / CHECKPOINT),
        "config": cfg.to_dict(),
        "environment": state.env,
    }
    warnings = divergence_warnings(history)
    if warnings:
        metrics["warnings"] = warnings
    n_test = len(state.data.test_labels)
    interval = wilson(round(last["test_acc"] * n_test), n_test)  # test_acc is a share of whole images
    metrics["test_images"], metrics["test_acc_ci"] = n_test, interval.to_list() if interval else None
    metrics["summary"] = {key: metrics[key] for _, key, _ in SUMMARY_COLUMNS}
    metrics["summary"]["test_acc_ci"] = metrics["test_acc_ci"]  # shown in the test acc cell, not a column
    metrics["summary_columns"] = [list(c) for c in SUMMARY_COLUMNS]
    return metrics


# A final loss this many times the first epoch's means the run blew up, even if every number stayed finite.
EXPLODED_LOSS_FACTOR = 10.0


def divergence_warnings(history: list[dict]) -> list[str]:
    """Return warnings for a run whose final train or test loss is far above its first epoch's (finite blow-ups)."""
    first, last = history[0], history[-1]
    out = []
    for key in ("train_loss", "test_loss"):
        if last[key] > EXPLODED_LOSS_FACTOR * max(first[key], 1e-12):
            out.append(f"final {key.replace('_', ' ')} {last[key]:.3g} is more than {EXPLODED_LOSS_FACTOR:g}× the "
                       f"first epoch's ({first[key]:.3g}): the run diverged; lower --lr or use --recipe seed")
    return out


def execution(cfg: TrainConfig, compile_error: str | None) -> str:
    """Return how the run executed: "compiled", "eager", or "eager (compile failed)" when it fell back."""
    if not cfg.compile:
        return "eager"
    return "eager (compile failed)" if compile_error else "compiled"


def final_fp32_accuracy(state: RunState) -> dict:
    """Return the final model's test loss and accuracy in plain fp32 on its device (no autocast, TF32 off).

    Training measures each epoch under its mixed precision (bf16 on CUDA); this is the number export and
    evaluation compare ONNX files with, so it is measured the same way they run. On the CPU both agree.
    """
    state.model.eval()
    with exact_fp32():
        stats = evaluate(state.model, state.test_loader, "none")
    return {"test_acc_fp32": stats.acc, "test_loss_fp32": stats.loss,
            "test_acc_note": "test_acc/test_loss: last epoch's test pass under the training precision "
                             f"({state.cfg.amp}); *_fp32: the final model in fp32, TF32 off, on {state.cfg.device}"}
