"""``convkit report SUITE_DIR``: write report.md, report.html and report/ figures from a suite's run folders.

Imports click and convkit.errors only, so listing commands stays fast; the report itself loads on use.
"""

from __future__ import annotations

import sys

import click

from convkit.errors import ConvkitError


@click.command("report")
@click.argument("suite_dir", type=click.Path(file_okay=False))
def report_cmd(suite_dir):
    """Write SUITE_DIR/report.md and a self-contained report.html (figures in SUITE_DIR/report/)."""
    from convkit.report.build import build_report  # lazy: keeps `convkit --help` free of torch/matplotlib

    try:
        r = build_report(suite_dir)
    except ConvkitError as exc:  # the user's to fix (no runs, unreadable folder): one line and its exit code
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    click.echo(f"report: {r['md']} and {r['html']}, {len(r['figures'])} figures from {r['runs']} run(s) "
               f"in {r['seconds']:.1f}s")
