"""Shared fixtures: where the real data is, an isolated cache, and small trained runs to export and evaluate."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("CONVKIT_TEST_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session", autouse=True)
def _cache_env(tmp_path_factory):
    """Decoded-tensor cache: a persistent one when CONVKIT_CACHE is set (CI sets it), else a per-session folder."""
    if not os.environ.get("CONVKIT_CACHE"):
        os.environ["CONVKIT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.pop("CONVKIT_DATA", None)
    yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real MNIST and CIFAR-10 copies beside the repo; skip when they are absent."""
    if not (SHARED_DATA / "MNIST" / "raw").is_dir() or not (SHARED_DATA / "cifar10-jpeg.tar.gz").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA} (set CONVKIT_TEST_DATA)")
    return SHARED_DATA


def train_sample_run(out: Path, experiment: str, epochs: int = 1, **kw) -> Path:
    """Train ``experiment`` on the embedded sample on CPU and return its run directory."""
    from convkit.train import resolve_config, train_experiment

    cfg = resolve_config(experiment, epochs=epochs, device="cpu", sample=True, out=out, compile=False, **kw)
    train_experiment(cfg, quiet=True)
    return Path(cfg.run_dir)


@pytest.fixture(scope="session")
def sample_runs(tmp_path_factory) -> dict[str, Path]:
    """Two small experiments (MNIST MLP, CIFAR-10 CNN) trained 1 epoch on the sample: {experiment: run_dir}."""
    out = tmp_path_factory.mktemp("runs")
    return {name: train_sample_run(out, name) for name in ("t1-fcn", "t5-custom-conv")}
