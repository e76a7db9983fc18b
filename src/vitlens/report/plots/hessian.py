"""Figure of the Hessian analysis: densities of the top-k eigenvalues, models overlaid, NEP and APE
in the legend (paper Figs. 1c, 4), beside the SLQ spectral density where it was computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vitlens.analysis.hessian import HessianResult
from vitlens.report.plots.common import check_kind, gaussian_kde, model_labels, new_figure, one_axes
from vitlens.report.png import save_png


def plot_hessian_spectra(
    results: Sequence[HessianResult],
    path: str | Path,
    *,
    labels: Sequence[str] | None = None,
    bandwidth: float | None = None,
) -> Path:
    """Density of the pooled top-k eigenvalues, one curve per model, NEP/APE in the legend;
    beside it the SLQ spectral densities of the Results that have one."""
    check_kind(results, HessianResult)
    names = model_labels(results, labels)
    pooled = [np.asarray(r.pooled(), dtype=float) for r in results]
    lo = min(p.min() for p in pooled)
    hi = max(p.max() for p in pooled)
    pad = 0.1 * (hi - lo) if hi > lo else 1.0
    grid = np.linspace(lo - pad, hi + pad, 512)
    with_density = [(n, r) for n, r in zip(names, results, strict=True) if r.density_nodes]
    if with_density:
        fig = new_figure(12.0, 4.0)
        ax = fig.add_subplot(1, 2, 1)
    else:
        fig, ax = one_axes(6.4, 4.0)
    for name, r, p in zip(names, results, pooled, strict=True):
        density = gaussian_kde(p, grid, bandwidth)
        label = f"{name} (NEP {100 * r.nep:.1f}%, APE {r.ape:.3g})"
        (line,) = ax.plot(grid, density, label=label)
        ax.fill_between(grid, density, color=line.get_color(), alpha=0.15)
    ax.axvline(0.0, color="0.4", lw=0.8, ls=":")
    ax.set_xlabel("max Hessian eigenvalue")
    ax.set_ylabel("density")
    r0 = results[0]
    ax.set_title(f"top-{r0.k} eigenvalues, batch {r0.batch_size}, {r0.objective}")
    ax.legend(fontsize="small")
    if with_density:
        _plot_slq_density(fig.add_subplot(1, 2, 2), with_density)
    return save_png(fig, path)


def _plot_slq_density(ax, named: Sequence[tuple[str, HessianResult]]) -> None:
    """SLQ spectral densities (log scale, floor 1e-6), Gaussian-smoothed at 1% of the range."""
    nodes = np.concatenate([np.ravel(r.density_nodes) for _, r in named])
    lo, hi = float(nodes.min()), float(nodes.max())
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    grid = np.linspace(lo - pad, hi + pad, 800)
    sigma = 0.01 * (hi - lo + 2 * pad)
    for name, r in named:
        density = np.maximum(np.asarray(r.spectral_density(grid.tolist(), sigma)), 1e-6)
        trace = f", Hutch++ trace {r.mean_trace:.3g}" if r.trace else ""
        ax.semilogy(grid, density, label=f"{name}{trace}")
    ax.axvline(0.0, color="0.4", lw=0.8, ls=":")
    ax.set_xlabel("Hessian eigenvalue")
    ax.set_ylabel("density (log)")
    r0 = named[0][1]
    ax.set_title(
        f"SLQ spectral density, {r0.density_vectors} x {r0.density_steps} Lanczos steps "
        "per minibatch, mean over minibatches",
        fontsize="small",
    )
    ax.legend(fontsize="small")
