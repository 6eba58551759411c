"""The PyTorch reference every ONNX file is judged against: the run's eager fp32 logits, cached per run folder
(convkit.artifacts' reference_logits.pt), and the images where its top two logits tie.

Export computes the logits of the whole test split once and caches them, so train-all's evaluation of the same
checkpoint on the same data reads them instead of running PyTorch again.
"""

from __future__ import annotations

import numpy as np
import torch

from convkit import gates
from convkit.artifacts import load_reference_logits, save_reference_logits
from convkit.devices import exact_fp32

BATCH = 256  # images per PyTorch forward pass


def tie_mask(ref: np.ndarray, gap: float = gates.TIE_GAP) -> np.ndarray:
    """Return a bool per row of ``ref`` logits [N, classes]: True where the top two are less than ``gap`` apart
    (never with fewer than two classes)."""
    if ref.ndim != 2 or ref.shape[1] < 2:
        return np.zeros(len(ref), dtype=bool)
    top2 = np.sort(ref.astype(np.float64), axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) < gap


def torch_logits(model, images, prepare=None, device: str = "cpu", numpy_input: bool = False) -> np.ndarray:
    """Return the eager ``model``'s fp32 logits [N, classes] (TF32 off) on ``device`` for ``images`` [N, C, H, W]
    (a tensor, an array or a folder's lazy images), each batch of BATCH turned into the model's input by
    ``prepare`` (None: ``images`` already are; ``numpy_input``: ``prepare`` takes the uint8 batch as it is
    indexed, on the CPU, and its result is moved to ``device``); the model ends on the CPU."""
    dev = torch.device(device)
    prepare = prepare or (lambda x: x)
    model.to(dev).eval()
    try:
        with torch.inference_mode(), exact_fp32():
            out = [model(prepare(images[i:i + BATCH]).to(dev) if numpy_input else prepare(_batch(images, i).to(dev)))
                   .float().cpu() for i in range(0, len(images), BATCH)]
    finally:
        model.to("cpu")
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def _batch(images, start: int) -> torch.Tensor:
    """Return images[start:start + BATCH] as a tensor (``images``: a tensor, an array, or a folder's lazy images)."""
    chunk = images[start:start + BATCH]
    return chunk if isinstance(chunk, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(chunk))


def reference_logits(run, images_u8, data_checksum: str | None, device: str = "cpu", model_input=None,
                     input_key: str | None = None) -> np.ndarray:
    """Return the fp32 PyTorch logits of ``run`` (a convkit.artifacts.RunModel) for ``images_u8``, the test split
    (or its first rows) of the data whose checksum is ``data_checksum``: read from the run folder's cache when it
    holds them for this checkpoint and data, else computed on ``device`` and cached. ``data_checksum`` None:
    images that are not a test split of a catalogued dataset (corrupted copies), computed and never cached.
    ``model_input`` (uint8 batch → numpy array, e.g. ModelSpec.prepare): the very array ONNX Runtime is fed, in
    place of the run's own conversion; ``input_key`` (its preprocessing's digest) then keys the cache too."""
    run_dir, sha = run.checkpoint.parent, run.checkpoint_sha256
    if model_input is not None and data_checksum:
        data_checksum = f"{data_checksum}:{input_key}"
    cached = load_reference_logits(run_dir, sha, data_checksum, len(images_u8)) if data_checksum else None
    if cached is not None:
        return cached
    prepare = run.model_input if model_input is None else (lambda chunk: torch.from_numpy(model_input(chunk)))
    logits = torch_logits(run.model, images_u8, prepare, device, numpy_input=model_input is not None)
    if data_checksum:
        save_reference_logits(run_dir, logits, sha, data_checksum, device)
    return logits
