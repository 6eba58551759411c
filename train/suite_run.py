"""``train-all``: train every experiment of a suite, keep going past failures, write ``summary.md``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from convkit.atomic import write_json, write_text
from convkit.errors import ConvkitError
from convkit.suite import Experiment, select_experiments
from convkit.train.config import resolve_config
from convkit.train.run import train_experiment
from convkit.train.summary import summary_markdown

# A stage run after training, e.g. export and evaluation: (experiment, run_dir, metrics) -> extra summary fields.
PostStage = Callable[[Experiment, Path, dict], dict]


def train_all(
    suite: str = "seed",
    only: list[str] | None = None,
    post_stages: list[PostStage] | None = None,
    quiet: bool = False,
    resume: bool = False,
    echo: Callable[[str], None] = print,
    **train_kwargs,
) -> dict:
    """Train (then post-process) every selected experiment; returns {"summary": path, "results": ..., "failed": [...]}.

    ``train_kwargs`` go to ``resolve_config`` (recipe, epochs, device, sample, out, ...). A failing experiment
    is reported and skipped; the caller decides the exit code from ``failed``.
    """
    patterns = only or [None]
    exps: list[Experiment] = []
    for pattern in patterns:
        exps += [e for e in select_experiments(suite, pattern) if e not in exps]
    results: list[tuple[Experiment, dict]] = []
    failed: list[str] = []
    suite_dir = None
    t0 = time.perf_counter()
    for i, exp in enumerate(exps, 1):
        cfg = resolve_config(exp.name, **train_kwargs)
        suite_dir = Path(cfg.run_dir).parent
        echo(f"[{i}/{len(exps)}] {exp.name} ({exp.model}, {exp.dataset}, {cfg.epochs} epochs, {cfg.device})")
        try:
            res = train_experiment(cfg, resume=resume, quiet=quiet)
            for stage in post_stages or []:
                res = {**res, **stage(exp, Path(cfg.run_dir), res)}
        except ConvkitError as exc:
            failed.append(exp.name)
            res = {"error": exc.message}
            echo(f"[{i}/{len(exps)}] {exp.name} FAILED: {exc.message}")
        results.append((exp, res))
    header = [
        f"Wall time of this train-all: {time.perf_counter() - t0:.1f} s.",
        "Study's values in parentheses (its GPU, no seeds). `time` = train + per-epoch test wall clock;",
        "`compile` = torch.compile warm-up, measured apart.",
    ]
    for dataset, source in sorted({(r["dataset"], r["data_source"]) for _, r in results if "data_source" in r}):
        jpeg = dataset == "cifar10" and ("jpeg" in source.lower() or "jpg" in source.lower())
        header.append(f"Data: {dataset} from `{source}`" + (" — **CIFAR-10 (JPEG copy)**: JPEG re-encoded images, "
                                                            "accuracy within about a point of the original's." if jpeg else "."))
    if train_kwargs.get("sample"):
        header.append("**Embedded sample** (1,000 train / 500 test images per dataset): accuracies are not comparable to the study's.")
    summary = suite_dir / "summary.md"
    write_text(summary, summary_markdown(suite, results, header))
    write_json(suite_dir / "summary.json", {"suite": suite, "failed": failed,
                                           "results": {e.name: r for e, r in results}})
    return {"summary": str(summary), "results": {e.name: r for e, r in results}, "failed": failed}
