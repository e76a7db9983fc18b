"""Figure of the Fourier analysis: ΔLog amplitude curves coloured by depth (paper Fig. 2a) and the
high-frequency ΔLog amplitude against normalized depth with MSA blocks shaded (Fig. 8).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

from vitlens.analysis.fourier import FourierResult
from vitlens.report.plots.common import (
    check_kind,
    depth_step,
    grid_figure,
    plot_by_kind,
    result_title,
    shade_kinds,
)
from vitlens.report.png import save_png


def plot_fourier(results: Sequence[FourierResult], path: str | Path) -> Path:
    """ΔLog amplitude curves coloured by depth, and the notebook's high-frequency point by depth.

    Args:
        results: one FourierResult per model (one row each).
        path: where to write the PNG.
    """
    check_kind(results, FourierResult)
    fig, axes = grid_figure(len(results), 2, 4.6, 3.4)
    cmap, norm = colormaps["plasma_r"], Normalize(0.0, 1.0)
    for row, r in zip(axes, results, strict=True):
        left, right = row
        for freqs, curve, depth in zip(r.frequencies, r.delta_log_amplitude, r.depths, strict=True):
            left.plot(freqs, curve, color=cmap(norm(depth)), lw=1.2)
        left.set(
            xlabel="frequency (×π)",
            ylabel="ΔLog amplitude",
            xlim=(0, 1),
            title=f"{result_title(r)}: spectra by depth",
        )
        fig.colorbar(ScalarMappable(norm, cmap), ax=left, label="normalized depth")
        shade_kinds(right, r.depths, r.kinds, depth_step(r.depths))
        plot_by_kind(right, r.depths, r.high_frequency, r.kinds)
        right.set(
            xlabel="normalized depth",
            ylabel="ΔLog amplitude at the last point before π",
            title=f"{result_title(r)}: high-frequency amplitude",
        )
        right.legend(fontsize=7, loc="best")
    return save_png(fig, path)
