"""Figure of the lesion analysis: change in accuracy and NLL against depth (paper Fig. D.4)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vitlens.analysis.lesion import LesionResult
from vitlens.report.plots.common import (
    check_kind,
    depth_step,
    grid_figure,
    plot_by_kind,
    result_title,
    shade_kinds,
)
from vitlens.report.png import save_png


def plot_lesion(results: Sequence[LesionResult], path: str | Path) -> Path:
    """Change in accuracy (percentage points) and NLL against depth when each branch is removed."""
    check_kind(results, LesionResult)
    fig, axes = grid_figure(len(results), 2, 4.6, 3.2)
    for row, r in zip(axes, results, strict=True):
        step = depth_step(r.depths)
        acc = [100.0 * d for d in r.delta_accuracy]
        for ax, values, label in ((row[0], acc, "Δ accuracy (pp)"), (row[1], r.delta_nll, "Δ NLL")):
            shade_kinds(ax, r.depths, r.kinds, step)
            ax.axhline(0.0, color="0.3", lw=0.8)
            plot_by_kind(ax, r.depths, values, r.kinds, line=False)
            ax.set(xlabel="normalized depth", ylabel=label, title=f"{result_title(r)}: lesions")
            ax.legend(fontsize=7, loc="best")
        row[0].text(
            0.02,
            0.03,
            f"intact: {100 * r.intact_accuracy:.2f}% acc, NLL {r.intact_nll:.3f}",
            transform=row[0].transAxes,
            fontsize=7,
        )
    return save_png(fig, path)
