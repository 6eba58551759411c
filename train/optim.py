"""The optimizer and learning-rate schedule of a recipe."""

from __future__ import annotations

import torch
import torch.nn as nn

from convkit.errors import ConvkitError
from convkit.train.config import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig, steps_per_epoch: int):
    """Return (optimizer, scheduler or None) for the config's recipe.

    The one-cycle schedule warms the learning rate up over the recipe's ``warmup_frac`` of all steps, then
    anneals it with a cosine.
    """
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
