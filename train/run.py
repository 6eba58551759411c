"""Train one experiment end to end and write its artifacts under ``runs/<suite>/<experiment>/``."""

from __future__ import annotations

import copy
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
from tqdm import tqdm

from convkit.artifacts import (CHECKPOINT, CONFIG, GRAD_NORMS, HISTORY, METRICS, load_checkpoint, load_weights,
                               save_checkpoint, write_artifact)
from convkit.atomic import ensure_writable_dir, write_csv
from convkit.compilation import compile_model
from convkit.data.load import load_dataset
from convkit.data.loader import DeviceLoader, make_generator
from convkit.envinfo import environment
from convkit.errors import ConvkitError, TrainingDiverged
from convkit.models import create_model
from convkit.train.config import TrainConfig
from convkit.train.loop import GradNormTracker, autocast, evaluate, padded_batches, synchronize, train_epoch

# Keys of the config that must agree for --resume to continue a run instead of starting over.
_RESUME_KEYS = ("experiment", "model", "dataset", "recipe", "epochs", "seed", "sample", "device", "amp")


def count_parameters(model: nn.Module) -> int:
    """Return the number of trainable parameters (the study's count)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_optimizer(model: nn.Module, cfg: TrainConfig, steps_per_epoch: int):
    """Return (optimizer, scheduler or None) for the config's recipe."""
    r = cfg.recipe
    params = model.parameters()
    # On CUDA the fused Adam/AdamW update is one kernel for all parameters instead of several per tensor.
    # The CPU keeps the default implementation, so CPU results stay bit-identical to earlier runs.
    fused = {"fused": True} if torch.device(cfg.device).type == "cuda" else {}
    if r.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=r.lr, weight_decay=r.weight_decay, **fused)
    elif r.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=r.lr, weight_decay=r.weight_decay, **fused)
    elif r.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=r.lr, momentum=r.momentum, nesterov=r.nesterov, weight_decay=r.weight_decay)
    else:
        raise ConvkitError(f"recipe {r.name!r} names unknown optimizer {r.optimizer!r}; use adam, adamw or sgd")
    if r.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=r.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=r.warmup_frac,
            anneal_strategy="cos", cycle_momentum=r.optimizer == "sgd", div_factor=25.0, final_div_factor=1e3,
        )
    elif r.schedule == "constant":
        sched = None
    else:
        raise ConvkitError(f"recipe {r.name!r} names unknown schedule {r.schedule!r}; use constant or onecycle")
    return opt, sched


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


def _resume_state(run_dir: Path, cfg: TrainConfig, model, optimizer, scheduler) -> tuple[int, list, list]:
    """Load a compatible checkpoint into model/optimizer/scheduler; return (epochs done, history, grad norms)."""
    ckpt = load_checkpoint(run_dir / CHECKPOINT)
    old, new = ckpt["config"], cfg.to_dict()
    differs = [k for k in _RESUME_KEYS if old.get(k) != new.get(k)]
    if differs:
        raise ConvkitError(
            f"cannot resume {run_dir}: its config differs in {', '.join(differs)}; rerun without --resume to start over"
        )
    load_weights(model, ckpt["model"], str(run_dir / CHECKPOINT))
    optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt["scheduler"] is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    return int(ckpt["epoch"]), list(ckpt["history"]), list(ckpt["grad_norms"])


def train_experiment(cfg: TrainConfig, resume: bool = False, quiet: bool = False) -> dict:
    """Train ``cfg``'s experiment; returns the final metrics dict (also written to ``metrics.json``).

    Artifacts, each written atomically: config.json, history.csv, grad_norms.csv, metrics.json and
    checkpoint.pt (rewritten after every epoch, so an interrupted run resumes from its last epoch).
    """
    run_dir = ensure_writable_dir(Path(cfg.run_dir))
    quiet = quiet or not sys.stdout.isatty()  # progress bar and per-epoch lines only on a terminal
    device = torch.device(cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    data = load_dataset(cfg.dataset, cfg.data_dir, sample=cfg.sample)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    mcfg = model.default_cfg
    train_loader = DeviceLoader(data.train_images, data.train_labels, cfg.recipe.batch_size, mcfg.mean, mcfg.std,
                                device, train=True, crop_pad=cfg.crop_pad, flip=cfg.flip,
                                channels_last=cfg.channels_last)
    if len(train_loader) == 0:
        raise ConvkitError(
            f"--batch-size {cfg.recipe.batch_size} exceeds the {len(data.train_images)} training images; lower it"
        )
    test_loader = DeviceLoader(data.test_images, data.test_labels, cfg.recipe.batch_size, mcfg.mean, mcfg.std,
                               device, train=False, channels_last=cfg.channels_last)
    optimizer, scheduler = build_optimizer(model, cfg, len(train_loader))

    env = environment(device)
    config_doc = {"config": cfg.to_dict(), "model_config": mcfg.to_dict(), "parameters": count_parameters(model),
                  "data_source": data.source, "data_checksum": data.checksum, "environment": env}
    start_epoch, history, grad_rows = 0, [], []
    if resume and (run_dir / CHECKPOINT).is_file():
        # Before anything is written: a refused resume must leave the old run as it was.
        start_epoch, history, grad_rows = _resume_state(run_dir, cfg, model, optimizer, scheduler)
    write_artifact(run_dir / CONFIG, "config", config_doc)

    # Two variables on purpose: `model` (eager) is what is saved and exported, `compiled` is what runs.
    compiled = compile_model(model) if cfg.compile else model
    compile_s = warm_up(model, compiled, train_loader, test_loader, cfg, device)
    tracker = GradNormTracker(model, every=cfg.grad_norm_every)

    bar = tqdm(total=(cfg.epochs - start_epoch) * len(train_loader), desc=cfg.experiment, unit="step",
               disable=quiet, leave=False, dynamic_ncols=True)
    for epoch in range(start_epoch, cfg.epochs):
        # Every epoch's randomness (shuffle, augmentation, dropout) derives from (seed, epoch) alone, which is
        # what makes a resumed run identical to an uninterrupted one.
        epoch_seed = cfg.seed * 100_003 + epoch
        torch.manual_seed(epoch_seed)
        model.train()
        tr = train_epoch(compiled, train_loader, optimizer, scheduler, make_generator(device, epoch_seed), cfg.amp,
                         cfg.recipe.label_smoothing, tracker, on_step=lambda: bar.update(1))
        model.eval()
        te = evaluate(compiled, test_loader, cfg.amp)
        if not (math.isfinite(tr.loss) and math.isfinite(te.loss)):
            bar.close()
            kept = f"epoch {epoch}" if epoch else "none: no epoch completed"
            raise TrainingDiverged(
                f"{cfg.experiment}: loss became non-finite in epoch {epoch + 1}; last good checkpoint ({kept}) kept "
                f"in {run_dir}; lower --lr or use --recipe seed"
            )
        row = {
            "epoch": epoch + 1,
            "train_loss": tr.loss, "train_acc": tr.acc, "test_loss": te.loss, "test_acc": te.acc,
            "epoch_time_s": tr.seconds + te.seconds, "train_time_s": tr.seconds, "eval_time_s": te.seconds,
            "samples_per_s": tr.samples / tr.seconds, "lr": optimizer.param_groups[0]["lr"],
        }
        history.append(row)
        grad_rows += [{"epoch": epoch + 1, "parameter": k, "grad_norm": v} for k, v in tracker.epoch_means().items()]
        save_checkpoint(run_dir, model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch + 1,
                        config=cfg.to_dict(), history=history, grad_norms=grad_rows, environment=env,
                        data_checksum=data.checksum)
        write_csv(run_dir / HISTORY, history)
        write_csv(run_dir / GRAD_NORMS, grad_rows)
        if not quiet:
            line = (f"{cfg.experiment} epoch {epoch + 1}/{cfg.epochs}  train loss {tr.loss:.4f} acc {tr.acc:.4f}  "
                    f"test loss {te.loss:.4f} acc {te.acc:.4f}  {row['epoch_time_s']:.1f}s  "
                    f"{row['samples_per_s']:.0f} samples/s")
            tqdm.write(line)
    bar.close()

    last = history[-1]
    metrics = {
        "experiment": cfg.experiment,
        "model": cfg.model,
        "dataset": cfg.dataset,
        "parameters": count_parameters(model),
        "epochs": len(history),
        **{k: last[k] for k in ("train_loss", "train_acc", "test_loss", "test_acc")},
        "train_time_s": sum(r["epoch_time_s"] for r in history),
        "compile_time_s": compile_s,
        "timing": "wall clock of train + per-epoch test passes, device synchronized before each reading; "
                  "compile time measured separately in a warm-up step before the clock starts",
        "resumed_from_epoch": start_epoch or None,
        "data_source": data.source,
        "data_checksum": data.checksum,
        "config": cfg.to_dict(),
        "environment": env,
    }
    write_artifact(run_dir / METRICS, "metrics", metrics)
    return metrics
