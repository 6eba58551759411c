"""Shared fixtures: where the real data is, an isolated cache, and small trained runs to export and evaluate."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The real MNIST and CIFAR-10 copies for the tests that need them: $CONVKIT_TEST_DATA (.ci/run sets it).
TEST_DATA = os.environ.get("CONVKIT_TEST_DATA")


@pytest.fixture(scope="session", autouse=True)
def _cache_env(tmp_path_factory):
    """Decoded-tensor cache: a persistent one when CONVKIT_CACHE is set (CI sets it), else a per-session folder."""
    if not os.environ.get("CONVKIT_CACHE"):
        os.environ["CONVKIT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.pop("CONVKIT_DATA", None)
    yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real MNIST (MNIST/raw) and CIFAR-10 (cifar10-jpeg.tar.gz); skip when it is not given."""
    root = Path(TEST_DATA) if TEST_DATA else None
    if root is None or not (root / "MNIST" / "raw").is_dir() or not (root / "cifar10-jpeg.tar.gz").is_file():
        pytest.skip("real data not found (set CONVKIT_TEST_DATA to a folder holding MNIST/raw and cifar10-jpeg.tar.gz)")
    return root


def train_sample_run(out: Path, experiment: str, epochs: int = 1, **kw) -> Path:
    """Train ``experiment`` on the embedded sample on CPU and return its run directory."""
    from convkit.train import TrainOverrides, resolve_config, train_experiment

    overrides = TrainOverrides(epochs=epochs, device="cpu", sample=True, out=out, compile=False, **kw)
    cfg = resolve_config(experiment, overrides)
    train_experiment(cfg, quiet=True)
    return Path(cfg.run_dir)


@pytest.fixture(scope="session")
def sample_runs(tmp_path_factory) -> dict[str, Path]:
    """Two small experiments (MNIST MLP, CIFAR-10 CNN) trained 1 epoch on the sample: {experiment: run_dir}."""
    out = tmp_path_factory.mktemp("runs")
    return {name: train_sample_run(out, name) for name in ("t1-fcn", "t5-custom-conv")}
