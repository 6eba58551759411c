"""``convkit diagnose RUN_DIR...``: the short answer to why a number of an export moved, then diagnose.md/json.

Module-level imports stay light (click): the measuring machinery is imported when the command runs.
"""

from __future__ import annotations

import sys

import click

from convkit.errors import ConvkitError, failure_of
from convkit.text import term


@click.command("diagnose")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--n-images", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="Test images measured (the first of the run's test split, or of the user model's data).")
@click.option("--top", type=click.IntRange(1, 50), default=5, show_default=True,
              help="int8: tensor groups (lowest SQNR first) measured kept in fp32.")
@click.option("--device", default="cpu", show_default=True, help="Where the PyTorch reference runs (cpu, cuda).")
@click.option("--data-dir", type=click.Path(), envvar="CONVKIT_DATA",
              help="Where datasets are (default: the run's own setting).")
def diagnose_cmd(run_dirs, n_images, top, device, data_dir):
    """Say why a number of exported RUN_DIRS moved: which int8 tensor (and PyTorch module) costs the accuracy and
    what keeping it fp32 gives back, the first module where ONNX stops matching PyTorch, and the classes that
    changed beyond noise. Writes diagnose.md and diagnose.json into each folder. Opt-in: it re-quantizes the
    model several times (see docs/diagnose.md for its cost).

    Exit codes: 2 bad input (no export in the folder); 1 one of several folders failed (the others were diagnosed).
    """
    from convkit.export.diagnose import DIAGNOSE_MD, diagnose

    worst = 0
    for folder in run_dirs:
        try:
            doc = diagnose(folder, n_images=n_images, top=top, device=device, data_dir=data_dir)
        except Exception as exc:  # one folder failing never stops the others; alone, a bug goes to the CLI group
            if len(run_dirs) == 1 and not isinstance(exc, ConvkitError):
                raise
            exc = failure_of(exc)
            click.echo(f"error: {term(folder)}: {term(exc.message, 4000)}", err=True)
            worst = max(worst, exc.exit_code if len(run_dirs) == 1 else 1)
            continue
        click.echo(f"{term(folder)}:")
        for line in doc["headline"]:  # module and class names come from the model file: escaped
            click.echo(f"  {term(line, 4000)}")
        click.echo(f"  → {term(folder)}/{DIAGNOSE_MD}")
    if worst:
        sys.exit(worst)
