"""One training epoch and one evaluation pass. Device-agnostic: the CPU path and the CUDA path are one code."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from convkit.data.loader import DeviceLoader


def synchronize(device: torch.device) -> None:
    """Wait for all queued work on ``device`` (a no-op on CPU) so the clock reads finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, amp: str):
    """Return the autocast context for ``amp`` ("bf16" or "none") on ``device``."""
    if amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class EpochStats:
    """What one pass measured; loss and accuracy are means over the samples seen."""

    loss: float
    acc: float
    samples: int
    seconds: float


class GradNormTracker:
    """Accumulates each parameter's gradient L2 norm on every ``every``-th step of an epoch (steps 0, N, 2N, ...),
    on the device (no sync per step).

    One norm per parameter tensor is a kernel launch each; on small models that is a sizeable share of a step,
    and a sample of every Nth step describes an epoch's gradients as well as all of them.
    """

    def __init__(self, model: nn.Module, every: int = 1):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.every = every
        self.total: torch.Tensor | None = None
        self.steps = 0  # steps seen this epoch
        self.samples = 0  # steps whose norms were accumulated

    def update(self) -> None:
        """Record this step's gradient norms when it is a sampled step; call once per step, after backward."""
        sampled = self.steps % self.every == 0
        self.steps += 1
        if not sampled:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        norms = torch.stack(torch._foreach_norm(grads)).float()
        self.total = norms if self.total is None else self.total + norms
        self.samples += 1

    def epoch_means(self) -> dict[str, float]:
        """Return {parameter name: mean gradient norm over this epoch's sampled steps} and reset."""
        if self.total is None:
            return {}
        means = (self.total / self.samples).tolist()
        self.total, self.steps, self.samples = None, 0, 0
        return dict(zip(self.names, means))


@dataclass
class TrainStep:
    """How each training step updates the model: the optimizer, its schedule (stepped after every step, None for
    none), the autocast precision ("bf16" or "none") and the cross-entropy's label smoothing."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    amp: str
    label_smoothing: float = 0.0


def train_epoch(
    model: Callable,
    loader: DeviceLoader,
    step: TrainStep,
    gen: torch.Generator,
    grad_tracker: GradNormTracker | None = None,
    on_step: Callable[[], None] | None = None,
) -> EpochStats:
    """Run one epoch of training in train mode, each batch updated as ``step`` says; returns the epoch's mean loss
    and accuracy (train mode, as the study)."""
    optimizer, scheduler = step.optimizer, step.scheduler
    device = loader.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    synchronize(device)
    t0 = time.perf_counter()
    for x, y in loader.epoch(gen):
        with autocast(device, step.amp):
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=step.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_tracker is not None:
            grad_tracker.update()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        # Accumulate on the device: reading .item() every step would stall the GPU.
        loss_sum += loss.detach().float() * len(y)
        correct += (logits.argmax(1) == y).sum()
        if on_step is not None:
            on_step()
    synchronize(device)
    n = loader.num_samples
    return EpochStats(loss_sum.item() / n, correct.item() / n, n, time.perf_counter() - t0)


def padded_batches(loader: DeviceLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """Yield (images, labels, n) for one in-order pass, each image batch padded to ``loader.batch_size`` rows.

    The last batch of a split is usually short; a compiled model sees a new shape there and compiles a
    second eval graph. Padding with copies of the batch's first image keeps one shape; only the first ``n``
    rows are real (``labels`` has exactly those). Eval mode keeps rows independent (BatchNorm uses its
    running statistics), so padding cannot change the real rows' outputs.
    """
    for x, y in loader.epoch():
        n = len(y)
        if n < loader.batch_size:
            filler = x[:1].expand(loader.batch_size - n, *x.shape[1:])
            x = loader.layout(torch.cat([x, filler]))
        yield x, y, n


@torch.no_grad()
def evaluate(model: Callable, loader: DeviceLoader, amp: str) -> EpochStats:
    """Return mean cross-entropy and top-1 accuracy over every sample of ``loader`` (caller sets eval mode).

    Every forward runs at the full batch size (see padded_batches): one compiled eval graph, tail included.
    """
    device = loader.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    synchronize(device)
    t0 = time.perf_counter()
    for x, y, n in padded_batches(loader):
        with autocast(device, amp):
            logits = model(x)[:n]  # padded rows dropped: they count in neither loss nor accuracy
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    synchronize(device)
    n = loader.num_samples
    return EpochStats(loss_sum.item() / n, correct.item() / n, n, time.perf_counter() - t0)
