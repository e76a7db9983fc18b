"""Figure of the variance analysis: feature-map variance against depth, MSA blocks shaded
(paper Fig. 9).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vitlens.analysis.variance import VarianceResult
from vitlens.report.plots.common import (
    check_kind,
    depth_step,
    grid_figure,
    plot_by_kind,
    result_title,
    shade_kinds,
)
from vitlens.report.png import save_png


def plot_variance(results: Sequence[VarianceResult], path: str | Path) -> Path:
    """Feature-map variance against normalized depth, MSA blocks shaded; one panel per model."""
    check_kind(results, VarianceResult)
    fig, axes = grid_figure(len(results), 1, 5.5, 3.2)
    for ax, r in zip(axes[:, 0], results, strict=True):
        shade_kinds(ax, r.depths, r.kinds, depth_step(r.depths))
        plot_by_kind(ax, r.depths, r.variance, r.kinds)
        ax.set(
            xlabel="normalized depth",
            ylabel="feature-map variance",
            title=f"{result_title(r)}: spatial variance",
        )
        ax.legend(fontsize=7, loc="best")
    return save_png(fig, path)
