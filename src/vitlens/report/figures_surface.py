"""Figures of the loss-surface analyses, drawn only from saved Results (DESIGN.md §4).

- `plot_hessian_spectra`: density (Gaussian KDE) of the pooled top-k Hessian eigenvalues, models
  overlaid, NEP and APE in the legend (paper Figs. 1c, 4); next to it, where the Results hold
  one, the SLQ estimate of the whole spectral density on a log scale (PyHessian's figure), with
  the Hutch++ trace in the legend.
- `plot_landscape`: per model, contour and 3-D surface of a 2-D loss landscape (Fig. 1a; the
  authors' view: loss - min, plasma, elevation 15, azimuth 15).
- `plot_landscape_curves`: 1-D landscapes (or the y = 0 row of 2-D ones) of several models.
- `plot_trajectory`: polar optimization trajectories, radius against angle (Fig. 1b), and next
  to them the paths projected on their top-2 principal directions (Li et al. 2018).

Each function writes a PNG atomically and returns its path; matplotlib's object API on the Agg
canvas, so no global backend is switched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vitlens.analysis.hessian import HessianResult
from vitlens.analysis.landscape import LandscapeResult
from vitlens.analysis.result import Result
from vitlens.analysis.trajectory import TrajectoryResult
from vitlens.errors import VitlensError
from vitlens.report.png import save_png as _save


def _check(results: Sequence[Result], kind: type[Result]) -> None:
    if not results:
        raise VitlensError(f"no {kind.analysis} results to plot")
    wrong = [type(r).__name__ for r in results if not isinstance(r, kind)]
    if wrong:
        raise VitlensError(f"expected {kind.__name__} results, got {wrong}")


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _labels(results: Sequence, labels: Sequence[str] | None) -> list[str]:
    if labels is not None:
        if len(labels) != len(results):
            raise ValueError(f"{len(labels)} labels for {len(results)} results")
        return list(labels)
    return [r.provenance.model or f"model {i}" for i, r in enumerate(results)]


def gaussian_kde(
    values: Sequence[float], grid: np.ndarray, bandwidth: float | None = None
) -> np.ndarray:
    """Gaussian kernel density of `values` on `grid`; Scott's rule h = std * n^(-1/5) by default."""
    v = np.asarray(values, dtype=float)
    if bandwidth is None:
        spread = v.std(ddof=1) if v.size > 1 else 0.0
        bandwidth = spread * v.size ** (-0.2) if spread > 0 else max(abs(v.mean()) * 0.05, 1e-3)
    z = (grid[:, None] - v[None, :]) / bandwidth
    return np.exp(-0.5 * z**2).sum(axis=1) / (v.size * bandwidth * math.sqrt(2 * math.pi))


def plot_hessian_spectra(
    results: Sequence[HessianResult],
    path: str | Path,
    *,
    labels: Sequence[str] | None = None,
    bandwidth: float | None = None,
) -> Path:
    """Density of the pooled top-k eigenvalues, one curve per model, NEP/APE in the legend;
    beside it the SLQ spectral densities of the Results that have one."""
    _check(results, HessianResult)
    names = _labels(results, labels)
    pooled = [np.asarray(r.pooled(), dtype=float) for r in results]
    lo = min(p.min() for p in pooled)
    hi = max(p.max() for p in pooled)
    pad = 0.1 * (hi - lo) if hi > lo else 1.0
    grid = np.linspace(lo - pad, hi + pad, 512)
    with_density = [(n, r) for n, r in zip(names, results, strict=True) if r.density_nodes]
    fig = _new_figure(12.0 if with_density else 6.4, 4.0)
    ax = fig.add_subplot(1, 2 if with_density else 1, 1)
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
    return _save(fig, path)


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


def plot_landscape(
    results: Sequence[LandscapeResult], path: str | Path, *, quantity: str = "loss"
) -> Path:
    """Contour and 3-D surface of `quantity` - min for each 2-D landscape (one row per model)."""
    _check(results, LandscapeResult)
    flat = [r for r in results if r.dims != 2]
    if flat:
        raise ValueError("plot_landscape needs 2-D landscapes; use plot_landscape_curves for 1-D")
    fig = _new_figure(10.0, 4.2 * len(results))
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
    return _save(fig, path)


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
    _check(results, LandscapeResult)
    names = _labels(results, labels)
    fig = _new_figure(6.4, 4.0)
    ax = fig.add_subplot()
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
    return _save(fig, path)


def plot_trajectory(
    results: Sequence[TrajectoryResult],
    path: str | Path,
    *,
    labels: Sequence[str] | None = None,
) -> Path:
    """Polar trajectories (angle to the initial displacement against relative distance to w*),
    and beside them, where the Results hold it, the path in its top-2 PCA plane (Li et al.)."""
    _check(results, TrajectoryResult)
    names = _labels(results, labels)
    with_pca = [(n, r) for n, r in zip(names, results, strict=True) if r.pca_coordinates]
    fig = _new_figure(11.5 if with_pca else 6.0, 4.6)
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
    return _save(fig, path)


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
