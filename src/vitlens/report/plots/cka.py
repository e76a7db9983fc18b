"""Figure of the CKA analysis: heatmaps of CKA between blocks (paper Fig. D.3)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vitlens.analysis.cka import CKAResult
from vitlens.report.plots.common import block_ticks, check_kind, grid_figure, result_title
from vitlens.report.png import save_png


def plot_cka(results: Sequence[CKAResult], path: str | Path) -> Path:
    """CKA heatmaps between blocks (rows: model A's blocks, columns: model B's)."""
    check_kind(results, CKAResult)
    fig, axes = grid_figure(1, len(results), 4.8, 4.6)
    for ax, r in zip(axes[0], results, strict=True):
        image = ax.imshow(
            np.asarray(r.matrix, dtype=float),
            vmin=0.0,
            vmax=1.0,
            cmap="magma",
            origin="lower",
            interpolation="nearest",
        )
        block_ticks(ax, r.names_b, "x")
        block_ticks(ax, r.names_a, "y")
        other = r.model_b or result_title(r)
        ax.set(title=f"CKA: {result_title(r)} vs {other}", xlabel=other, ylabel=result_title(r))
        fig.colorbar(image, ax=ax, shrink=0.8, label="linear CKA")
    return save_png(fig, path)
