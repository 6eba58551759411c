"""The built-in experiment suites: the seed study's 21 table rows and the equal-parameter kernel set.

An experiment binds a registered model to a table row and the study's reported results, so that
``train-all`` can print convkit's figures beside the study's own.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import asdict, dataclass

from convkit.errors import ConvkitError
from convkit.models import get_model_config


@dataclass(frozen=True)
class SeedResult:
    """A row's results as the study printed them (None where it printed none)."""

    test_acc: float | None
    time_s: float | None
    params_printed: int | None = None  # the count the study printed, where it differs from the true one


@dataclass(frozen=True)
class Experiment:
    """One row of a suite: which model, which table and row, how many epochs the study trained."""

    name: str
    suite: str
    table: int
    row: int
    title: str
    model: str
    seed_epochs: int
    seed: SeedResult | None = None

    @property
    def dataset(self) -> str:
        return get_model_config(self.model).dataset

    def to_dict(self) -> dict:
        return {**asdict(self), "dataset": self.dataset}


TABLE_TITLES = {
    1: "Table 1 — MNIST",
    2: "Table 2 — CIFAR-10",
    3: "Table 3 — CIFAR-10, kernel size",
    4: "Table 4 — CIFAR-10, depth",
    5: "Table 5 — CIFAR-10, custom layers",
    6: "Table 6 — CIFAR-10, residual block types",
    7: "Equal-parameter kernel set — CIFAR-10",
}


def _seed(name: str, table: int, row: int, title: str, model: str, reported: SeedResult,
          epochs: int = 15) -> Experiment:
    """Return the seed suite's experiment for a row of the study: ``reported`` is what the study printed for it."""
    return Experiment(name, "seed", table, row, title, model, epochs, reported)


SUITES: dict[str, list[Experiment]] = {
    "seed": [
        _seed("t1-fcn", 1, 1, "FCN", "fcn_mnist", SeedResult(0.9834, 238)),
        _seed("t1-simple-cnn", 1, 2, "Simple CNN", "simple_cnn_mnist", SeedResult(0.9928, 246)),
        _seed("t1-residual-cnn", 1, 3, "Residual CNN", "residual_cnn_mnist", SeedResult(0.9940, 333)),
        _seed("t2-fcn", 2, 1, "FCN", "fcn_cifar", SeedResult(0.5340, 247, params_printed=1462538)),
        _seed("t2-residual-cnn", 2, 2, "Residual CNN", "residual_cnn_cifar",
              SeedResult(0.8193, 364, params_printed=160906)),
        _seed("t2-regularized-residual", 2, 3, "Regularized Residual CNN", "regularized_residual_cnn",
              SeedResult(0.8349, 408)),
        _seed("t3-k3", 3, 1, "k=3", "kernel_cnn_k3", SeedResult(0.9035, 385)),
        _seed("t3-k5", 3, 2, "k=5", "kernel_cnn_k5", SeedResult(0.8089, 396, params_printed=161450)),
        _seed("t3-k7", 3, 3, "k=7", "kernel_cnn_k7", SeedResult(0.8067, 437)),
        _seed("t3-k1x3", 3, 4, "1×1+3×3", "kernel_cnn_k1x3", SeedResult(0.8038, 379)),
        _seed("t4-2conv", 4, 1, "2 conv", "depth_2conv", SeedResult(0.7227, 259)),
        _seed("t4-4conv", 4, 2, "4 conv", "depth_4conv", SeedResult(0.7918, 299)),
        _seed("t4-6conv", 4, 3, "6 conv", "depth_6conv", SeedResult(0.7576, 300)),
        _seed("t4-residual", 4, 4, "residual", "depth_residual", SeedResult(0.8147, 370)),
        _seed("t5-custom-conv", 5, 1, "custom conv", "custom_conv_cnn", SeedResult(0.6730, 255)),
        _seed("t5-attention", 5, 2, "attention", "se_attention_cnn", SeedResult(0.7069, 264)),
        _seed("t5-custom-activation", 5, 3, "custom activation", "custom_activation_cnn",
              SeedResult(0.6774, 261, params_printed=268810)),
        _seed("t5-custom-pooling", 5, 4, "custom pooling", "custom_pooling_cnn", SeedResult(0.6878, 292)),
        _seed("t6-basic", 6, 1, "basic", "residual_cnn_cifar", SeedResult(0.8148, 380)),
        _seed("t6-bottleneck", 6, 2, "bottleneck", "resnet50_cifar", SeedResult(0.8341, 1891), epochs=10),
        _seed("t6-wide", 6, 3, "wide", "wrn16_4_cifar", SeedResult(0.8462, 454), epochs=10),
    ],
    "kernel-eq": [
        Experiment(f"eq-{v}", "kernel-eq", 7, i + 1, f"equal params, {v}", f"kernel_eq_{v}", 15)
        for i, v in enumerate(["k3", "k5", "k7", "k1x3"])
    ],
}


# The baseline of the report's mCE per dataset: the study's weakest model, its MLP (the role AlexNet plays in
# Hendrycks & Dietterich's ImageNet-C table). A suite run without it reports CE-based figures as not measured.
ROBUSTNESS_BASELINES = {"mnist": "t1-fcn", "cifar10": "t2-fcn"}


def all_experiments() -> list[Experiment]:
    """Return every experiment of every suite, in suite then table order."""
    return [e for exps in SUITES.values() for e in exps]


def find_experiment(name: str) -> Experiment | None:
    """Return the experiment called ``name``, or None when no suite has it."""
    return next((exp for exp in all_experiments() if exp.name == name), None)


SEEDED_RUN = re.compile(r"(?P<experiment>.+)-seed(?P<seed>\d+)")


def seeded_name(experiment: str, seed: int) -> str:
    """Return the run folder (and train-all job) name of ``experiment`` trained with ``seed``: <name>-seed<N>."""
    return f"{experiment}-seed{seed}"


def split_seeded(name: str) -> tuple[str, int | None]:
    """Return (experiment, seed) of a run name made by ``seeded_name``; (name, None) for any other name."""
    m = SEEDED_RUN.fullmatch(name)
    if m and find_experiment(m["experiment"]) is not None:
        return m["experiment"], int(m["seed"])
    return name, None


def get_experiment(name: str) -> Experiment:
    """Return the experiment called ``name``; raise ConvkitError listing close matches otherwise."""
    exp = find_experiment(name)
    if exp is not None:
        return exp
    names = [e.name for e in all_experiments()]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConvkitError(f"unknown experiment {name!r}{hint} (`convkit list` shows all)")


def select_experiments(suite: str, only: str | None = None) -> list[Experiment]:
    """Return the experiments of ``suite`` whose names match the glob ``only`` (all when None)."""
    if suite not in SUITES:
        raise ConvkitError(f"unknown suite {suite!r}; choose one of: {', '.join(SUITES)}")
    exps = [e for e in SUITES[suite] if only is None or fnmatch.fnmatch(e.name, only)]
    if not exps:
        raise ConvkitError(f"--only {only!r} matches no experiment of suite {suite!r} (`convkit list` shows all)")
    return exps
