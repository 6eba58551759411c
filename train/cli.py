"""``convkit train``: train one experiment into runs/<suite>/<experiment>/; and the options train-all shares.

Module-level imports stay light (click only): the training machinery is imported when the command runs.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping

import click

from convkit.errors import ConvkitError
from convkit.text import term

if TYPE_CHECKING:
    from convkit.train.config import TrainOverrides


def _default_out() -> str:
    return os.environ.get("CONVKIT_RUNS", "runs")


def training_options(fn):
    """Decorate a command with the options shared by `train` and `train-all`."""
    opts = [
        click.option("--recipe", default="fast", show_default=True, help="Training recipe: fast (GPU default) or seed (the study's protocol)."),
        click.option("--epochs", type=int, help="Epochs (default: the recipe's, else the study's for the experiment)."),
        click.option("--batch-size", type=int, help="Override the recipe's batch size."),
        click.option("--lr", type=float, help="Override the recipe's peak learning rate."),
        click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)."),
        click.option("--compile/--no-compile", "compile_", default=None, help="torch.compile (default: on for CUDA, off for CPU)."),
        click.option("--seed", type=int, default=0, show_default=True, help="Random seed; the same seed on CPU gives identical metrics."),
        click.option("--sample", is_flag=True, help="Use the embedded sample (a few thousand real images) instead of the full data."),
        click.option("--data-dir", type=click.Path(), envvar="CONVKIT_DATA", help="Where datasets are (default: $CONVKIT_DATA, else ~/.cache/convkit)."),
        click.option("--out", type=click.Path(), default=_default_out, show_default="$CONVKIT_RUNS or runs", help="Root folder for runs/<suite>/<experiment>/."),
        click.option("--resume", is_flag=True, help="Continue an interrupted run from the epoch its checkpoint holds."),
        click.option("--overwrite", is_flag=True,
                     help="Replace a run already in the folder (it is kept until the new run's first checkpoint)."),
        click.option("--quiet", is_flag=True, help="No progress bar and no per-epoch lines."),
        click.option("--max-images", "max_images", multiple=True, metavar="[GLOB=]N",
                     help="At most N images per split, evenly spaced (a quick look, not a result); GLOB=N limits "
                          "only matching experiments, e.g. 't6-*=256'. Repeatable; the first match applies."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def overrides_from_cli(options: Mapping[str, Any]) -> TrainOverrides:
    """Return the TrainOverrides of the training options (``training_options``) among a command's parsed
    ``options`` (click's ``ctx.params``: name → value)."""
    from convkit.train.config import TrainOverrides  # imports torch: only when a command runs

    return TrainOverrides(recipe=options["recipe"], epochs=options["epochs"], batch_size=options["batch_size"],
                          lr=options["lr"], device=options["device"], compile=options["compile_"],
                          seed=options["seed"], sample=options["sample"], data_dir=options["data_dir"],
                          out=options["out"], max_images=parse_max_images(options["max_images"]))


def parse_max_images(values) -> list[tuple[str, int]] | None:
    """Return [(glob, N)] from ``--max-images`` values "N" or "GLOB=N"; ConvkitError naming a malformed one."""
    out = []
    for value in values or ():
        pattern, _, number = value.rpartition("=")
        try:
            out.append((pattern or "*", int(number)))
        except ValueError:
            raise ConvkitError(f"--max-images {value!r}: expected N or GLOB=N, e.g. 256 or 't6-*=256'") from None
    return out or None


@click.command("train")
@click.argument("experiment")
@training_options
def train_cmd(experiment, recipe, epochs, batch_size, lr, device, compile_, seed, sample, data_dir, out, resume,
              overwrite, quiet, max_images):
    """Train one EXPERIMENT (see `convkit list`) and write runs/<suite>/<experiment>/."""
    from convkit.train import resolve_config, train_experiment

    cfg = resolve_config(experiment, overrides_from_cli(click.get_current_context().params))
    if resume and overwrite:
        raise ConvkitError("--resume and --overwrite contradict each other; pick one")
    m = train_experiment(cfg, resume=resume, quiet=quiet, overwrite=overwrite)
    for warning in m.get("warnings", []):
        click.echo(f"warning: {m['experiment']}: {warning}", err=True)
    click.echo(f"{m['experiment']}: test acc {m['test_acc']:.4f}, test loss {m['test_loss']:.4f}, "
               f"{m['parameters']:,} params, {m['train_time_s']:.1f}s training + {m['compile_time_s']:.1f}s compile "
               f"→ {term(cfg.run_dir)}")
