"""``convkit report SUITE_DIR``: write report.md, report.html and report/ figures from a suite's run folders.

Imports click only, so listing commands stays fast; the report itself loads on use.
"""

from __future__ import annotations

import click

from convkit.text import term
from convkit.trust import trust_option


@click.command("report")
@click.argument("suite_dir", type=click.Path(file_okay=False))
@trust_option
def report_cmd(suite_dir):
    """Write SUITE_DIR/report.md and a self-contained report.html (figures in SUITE_DIR/report/)."""
    from convkit.report.build import build_report  # lazy: keeps `convkit --help` free of torch/matplotlib

    r = build_report(suite_dir)  # a ConvkitError (no runs, unreadable folder) is reported by the CLI group
    click.echo(f"report: {term(r['md'])} and {term(r['html'])}, {len(r['figures'])} figures from {r['runs']} run(s) "
               f"in {r['seconds']:.1f}s")
