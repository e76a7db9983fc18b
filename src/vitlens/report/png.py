"""Writing figures: every PNG goes to a temporary name and is renamed, so none is half-written."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from vitlens.atomic import write_png


def save_png(fig: Figure, path: str | Path | None) -> Path | Figure:
    """Write `fig` as a PNG to `path` atomically and return the path; with no path, return the
    Figure itself (`Result.plot()` in a notebook draws with the report's own functions)."""
    if path is None:
        return fig
    return write_png(fig, path, dpi=120)
