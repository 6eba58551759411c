"""Every figure convkit writes (evaluation, serving, report): one style, the Agg canvas, one save.

Figures are built on matplotlib's object API (Figure + Agg canvas, no pyplot state), so nothing depends on a
display or on figures left open elsewhere. ``save`` is the only place a figure is written: atomically (a temp
file, then a rename, so a full disk never leaves a 0-byte PNG) and byte-stable (no "Software" tag, a fixed SVG
hash salt: the same numbers give the same bytes).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from convkit.atomic import atomic_path

DPI = 100
STYLE = {
    "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "xtick.labelsize": 9, "ytick.labelsize": 9,
    "legend.fontsize": 8, "figure.titlesize": 12, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
    "axes.spines.right": False, "figure.dpi": DPI, "savefig.dpi": DPI, "svg.hashsalt": "convkit-report",
    "image.interpolation": "nearest",
}


@contextmanager
def plot_style():
    """Context in which a figure is built and saved (the shared rcParams)."""
    with matplotlib.rc_context(STYLE):
        yield


def new_figure(w: float, h: float, layout: str | None = None) -> Figure:
    """Return an Agg-backed Figure of ``w``×``h`` inches (``layout``: matplotlib's, e.g. "constrained")."""
    fig = Figure(figsize=(w, h), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: Path, dpi: int = DPI) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically and byte-stable, release its artists; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp:  # a full disk or read-only folder: one line, the old file kept
            fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
    finally:
        fig.clear()
    return path
