"""Draw the figures a Result's analysis declares: one entry point for the CLI and the report.

Figures are drawn only from saved Results (DESIGN.md §1), so `vitlens report` can redraw them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vitlens.analysis.registry import get_analysis
from vitlens.analysis.result import Result
from vitlens.atomic import write_error


def draw(results: Sequence[Result], folder: str | Path, stem: str = "") -> list[Path]:
    """Draw every figure for results of one analysis (several models overlaid where the figure
    supports it) into `folder`; returns the PNG paths."""
    if not results:
        return []
    analysis = results[0].analysis
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # e.g. `figures` is a file, or the disk is read-only
        raise write_error(folder, err) from None
    paths = []
    for figure in get_analysis(analysis).figures:
        path = folder / f"{stem}{figure.name}.png"
        try:
            paths.append(figure.drawer()(list(results), path))
        except ValueError:
            # e.g. a 3-D surface asked of 1-D landscapes only: that figure does not apply.
            continue
    return paths
