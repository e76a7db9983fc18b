"""Figure of the trajectory analysis: polar trajectories (paper Fig. 1b) beside the PCA path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vitlens.analysis.trajectory import TrajectoryResult
from vitlens.report.plots.common import check_kind, model_labels, new_figure
from vitlens.report.png import save_png


def plot_trajectory(
    results: Sequence[TrajectoryResult],
    path: str | Path,
    *,
    labels: Sequence[str] | None = None,
) -> Path:
    """Polar trajectories (angle to the initial displacement against relative distance to w*),
    and beside them, where the Results hold it, the path in its top-2 PCA plane (Li et al.)."""
    check_kind(results, TrajectoryResult)
    names = model_labels(results, labels)
    with_pca = [(n, r) for n, r in zip(names, results, strict=True) if r.pca_coordinates]
    fig = new_figure(11.5 if with_pca else 6.0, 4.6)
    ax = fig.add_subplot(1, 2 if with_pca else 1, 1, projection="polar")
    for name, r in zip(names, results, strict=True):
        theta = np.radians(r.angle_deg)
        (line,) = ax.plot(theta, r.radius, marker=".", label=name)
        ax.annotate(f"ep {r.epochs[0]}", (theta[0], r.radius[0]), fontsize="x-small")
        ax.plot(theta[-1], r.radius[-1], "*", color=line.get_color())
    ax.set_thetamin(0)
    ax.set_thetamax(180)
    ax.set_title("r = |w_t - w*| / |w_0 - w*|, angle to w_0 - w*", fontsize="small")
    ax.legend(fontsize="small", loc="lower left")
    if with_pca:
        _plot_pca_paths(fig.add_subplot(1, 2, 2), with_pca)
    return save_png(fig, path)


def _plot_pca_paths(ax, named: Sequence[tuple[str, TrajectoryResult]]) -> None:
    """Each run's path in its own top-2 PCA plane of w_t - w* (w* at the origin)."""
    for name, r in named:
        xy = np.asarray(r.pca_coordinates)
        pc1, pc2 = (100 * v for v in r.pca_explained)
        (line,) = ax.plot(xy[:, 0], xy[:, 1], marker=".", label=f"{name} ({pc1:.0f}%, {pc2:.0f}%)")
        ax.annotate(f"ep {r.epochs[0]}", xy[0], fontsize="x-small")
        ax.plot(0, 0, "*", color=line.get_color())
    ax.set_xlabel("1st principal direction")
    ax.set_ylabel("2nd principal direction")
    ax.set_title("PCA of w_t - w* (variance explained in the legend)", fontsize="small")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
