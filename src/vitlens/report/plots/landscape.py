"""Figures of the loss landscape: contour and surface of 2-D landscapes (paper Fig. 1a), and 1-D
slices of several models.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vitlens.analysis.landscape import LandscapeResult
from vitlens.report.plots.common import check_kind, model_labels, new_figure, one_axes
from vitlens.report.png import save_png


def plot_landscape(
    results: Sequence[LandscapeResult], path: str | Path, *, quantity: str = "loss"
) -> Path:
    """Contour and 3-D surface of `quantity` - min for each 2-D landscape (one row per model)."""
    check_kind(results, LandscapeResult)
    flat = [r for r in results if r.dims != 2]
    if flat:
        raise ValueError("plot_landscape needs 2-D landscapes; use plot_landscape_curves for 1-D")
    fig = new_figure(10.0, 4.2 * len(results))
    for row, r in enumerate(results):
        x, y = np.meshgrid(r.xs, r.ys)
        z = r.grid(quantity)
        z = z - np.nanmin(z)
        ax = fig.add_subplot(len(results), 2, 2 * row + 1)
        cs = ax.contour(x, y, z, levels=15, cmap="plasma")
        ax.clabel(cs, fontsize="x-small", fmt="%.2g")
        ax.plot([0], [0], "k+")
        ax.set_aspect("equal")
        ax.set_title(f"{r.provenance.model or 'model'}: {quantity} - min")
        ax3 = fig.add_subplot(len(results), 2, 2 * row + 2, projection="3d")
        ax3.plot_surface(x, y, z, cmap="plasma", linewidth=0, antialiased=True)
        ax3.view_init(elev=15, azim=15)
        ax3.set_xlabel("x (d1)")
        ax3.set_ylabel("y (d2)")
        ax3.set_zlabel(f"{quantity} - min")
    return save_png(fig, path)


_AXIS_LABELS = {
    "random": "step along d1 (filter-normalized)",
    "hessian": "distance along the top Hessian eigenvector",
    "interpolation": "a in (1 - a) theta + a theta_other",
}


def plot_landscape_curves(
    results: Sequence[LandscapeResult],
    path: str | Path,
    *,
    labels: Sequence[str] | None = None,
    quantity: str = "loss",
    relative: bool = True,
) -> Path:
    """1-D landscapes overlaid (for 2-D results, the row nearest y = 0)."""
    check_kind(results, LandscapeResult)
    names = model_labels(results, labels)
    fig, ax = one_axes(6.4, 4.0)
    for name, r in zip(names, results, strict=True):
        z = r.grid(quantity)
        row = int(np.argmin(np.abs(np.asarray(r.ys)))) if r.dims == 2 else 0
        curve = z[row]
        xs = np.asarray(r.xs)
        if relative:
            curve = curve - curve[int(np.argmin(np.abs(xs)))]
        ax.plot(xs, curve, marker=".", label=name)
    kinds = {r.direction_kind for r in results}
    ax.set_xlabel(_AXIS_LABELS.get(kinds.pop(), "step along d1") if len(kinds) == 1 else "step")
    ax.set_ylabel(f"{quantity} - {quantity}(0)" if relative else quantity)
    ax.legend(fontsize="small")
    return save_png(fig, path)
