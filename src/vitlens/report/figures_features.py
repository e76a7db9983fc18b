"""Figures of the feature-map analyses, drawn only from saved Results (DESIGN.md §4).

- `plot_fourier`: ΔLog amplitude curves coloured by depth (reversed plasma, paper Fig. 2a) and the
  ΔLog amplitude at 1.0π against normalized depth with MSA blocks shaded (Fig. 8).
- `plot_variance`: feature-map variance against depth, MSA blocks shaded (Fig. 9).
- `plot_cka`: CKA heatmaps between blocks (Fig. D.3).
- `plot_lesion`: change in accuracy and NLL against depth with block kinds marked (Fig. D.4).
- `plot_attention`: mean attention distance, entropy and data specificity per block and head.

Each function takes a list of Results (one row or panel per model), writes a PNG atomically and
returns its path. Figures are built with matplotlib's object API on the Agg canvas, so no global
backend is switched and no display is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from vitlens.analysis.attention_stats import AttentionResult
from vitlens.analysis.cka import CKAResult
from vitlens.analysis.fourier import FourierResult
from vitlens.analysis.lesion import LesionResult
from vitlens.analysis.result import Result
from vitlens.analysis.variance import VarianceResult
from vitlens.errors import VitlensError
from vitlens.report.png import save_png as _save

MSA_SHADE = dict(color="0.5", alpha=0.18, lw=0)  # gray bands: MSA blocks, as in the paper
POOL_SHADE = dict(color="tab:blue", alpha=0.15, lw=0)  # blue bands: subsampling blocks
MARKERS = {"embed": "D", "conv": "^", "msa": "o", "mlp": "s", "pool": "v", "head": "*"}
COLORS = {
    "embed": "black",
    "conv": "tab:blue",
    "msa": "tab:red",
    "mlp": "tab:green",
    "pool": "tab:purple",
    "head": "tab:gray",
}


def _check(results: Sequence[Result], kind: type[Result]) -> None:
    if not results:
        raise VitlensError(f"no {kind.analysis} results to plot")
    wrong = [type(r).__name__ for r in results if not isinstance(r, kind)]
    if wrong:
        raise VitlensError(f"expected {kind.__name__} results, got {wrong}")


def _figure(rows: int, cols: int, width: float, height: float) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    return fig, axes


def _title(result: Result) -> str:
    return result.provenance.model or result.analysis


def _shade(ax: Axes, depths: Sequence[float], kinds: Sequence[str], step: float) -> None:
    """Shade [x - step, x] for each MSA (gray) and subsampling (blue) block at depth x."""
    for x, kind in zip(depths, kinds, strict=True):
        if kind == "msa":
            ax.axvspan(x - step, x, **MSA_SHADE)
        elif kind == "pool":
            ax.axvspan(x - step, x, **POOL_SHADE)


def _depth_step(depths: Sequence[float]) -> float:
    gaps = np.diff(sorted(depths))
    gaps = gaps[gaps > 0]
    return float(gaps.min()) if gaps.size else 0.05


def _by_kind(ax: Axes, depths, values, kinds, *, line: bool = True) -> None:
    """Values against depth: a thin line through all, markers by block kind."""
    if line:
        ax.plot(depths, values, color="0.6", lw=1, zorder=1)
    for kind in dict.fromkeys(kinds):
        pick = [i for i, k in enumerate(kinds) if k == kind]
        ax.scatter(
            [depths[i] for i in pick],
            [values[i] for i in pick],
            marker=MARKERS.get(kind, "o"),
            color=COLORS.get(kind, "k"),
            s=22,
            label=kind,
            zorder=2,
        )


def plot_fourier(results: Sequence[FourierResult], path: str | Path) -> Path:
    """ΔLog amplitude curves coloured by depth, and the notebook's high-frequency point by depth.

    Args:
        results: one FourierResult per model (one row each).
        path: where to write the PNG.
    """
    _check(results, FourierResult)
    fig, axes = _figure(len(results), 2, 4.6, 3.4)
    cmap, norm = colormaps["plasma_r"], Normalize(0.0, 1.0)
    for row, r in zip(axes, results, strict=True):
        left, right = row
        for freqs, curve, depth in zip(r.frequencies, r.delta_log_amplitude, r.depths, strict=True):
            left.plot(freqs, curve, color=cmap(norm(depth)), lw=1.2)
        left.set(
            xlabel="frequency (×π)",
            ylabel="ΔLog amplitude",
            xlim=(0, 1),
            title=f"{_title(r)}: spectra by depth",
        )
        fig.colorbar(ScalarMappable(norm, cmap), ax=left, label="normalized depth")
        _shade(right, r.depths, r.kinds, _depth_step(r.depths))
        _by_kind(right, r.depths, r.high_frequency, r.kinds)
        right.set(
            xlabel="normalized depth",
            ylabel="ΔLog amplitude at the last point before π",
            title=f"{_title(r)}: high-frequency amplitude",
        )
        right.legend(fontsize=7, loc="best")
    return _save(fig, path)


def plot_variance(results: Sequence[VarianceResult], path: str | Path) -> Path:
    """Feature-map variance against normalized depth, MSA blocks shaded; one panel per model."""
    _check(results, VarianceResult)
    fig, axes = _figure(len(results), 1, 5.5, 3.2)
    for ax, r in zip(axes[:, 0], results, strict=True):
        _shade(ax, r.depths, r.kinds, _depth_step(r.depths))
        _by_kind(ax, r.depths, r.variance, r.kinds)
        ax.set(
            xlabel="normalized depth",
            ylabel="feature-map variance",
            title=f"{_title(r)}: spatial variance",
        )
        ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def _block_ticks(ax: Axes, names: Sequence[str], axis: str) -> None:
    n = len(names)
    step = max(1, int(np.ceil(n / 16)))  # at most ~16 labels per axis
    ticks = list(range(0, n, step))
    labels = [names[i] for i in ticks]
    if axis == "x":
        ax.set_xticks(ticks, labels, rotation=90, fontsize=6)
    else:
        ax.set_yticks(ticks, labels, fontsize=6)


def plot_cka(results: Sequence[CKAResult], path: str | Path) -> Path:
    """CKA heatmaps between blocks (rows: model A's blocks, columns: model B's)."""
    _check(results, CKAResult)
    fig, axes = _figure(1, len(results), 4.8, 4.6)
    for ax, r in zip(axes[0], results, strict=True):
        image = ax.imshow(
            np.asarray(r.matrix, dtype=float),
            vmin=0.0,
            vmax=1.0,
            cmap="magma",
            origin="lower",
            interpolation="nearest",
        )
        _block_ticks(ax, r.names_b, "x")
        _block_ticks(ax, r.names_a, "y")
        other = r.model_b or _title(r)
        ax.set(title=f"CKA: {_title(r)} vs {other}", xlabel=other, ylabel=_title(r))
        fig.colorbar(image, ax=ax, shrink=0.8, label="linear CKA")
    return _save(fig, path)


def plot_lesion(results: Sequence[LesionResult], path: str | Path) -> Path:
    """Change in accuracy (percentage points) and NLL against depth when each branch is removed."""
    _check(results, LesionResult)
    fig, axes = _figure(len(results), 2, 4.6, 3.2)
    for row, r in zip(axes, results, strict=True):
        step = _depth_step(r.depths)
        acc = [100.0 * d for d in r.delta_accuracy]
        for ax, values, label in ((row[0], acc, "Δ accuracy (pp)"), (row[1], r.delta_nll, "Δ NLL")):
            _shade(ax, r.depths, r.kinds, step)
            ax.axhline(0.0, color="0.3", lw=0.8)
            _by_kind(ax, r.depths, values, r.kinds, line=False)
            ax.set(xlabel="normalized depth", ylabel=label, title=f"{_title(r)}: lesions")
            ax.legend(fontsize=7, loc="best")
        row[0].text(
            0.02,
            0.03,
            f"intact: {100 * r.intact_accuracy:.2f}% acc, NLL {r.intact_nll:.3f}",
            transform=row[0].transAxes,
            fontsize=7,
        )
    return _save(fig, path)


def plot_attention(results: Sequence[AttentionResult], path: str | Path) -> Path:
    """Mean attention distance, entropy and data specificity per MSA block: heads as dots, the
    mean over heads as a line."""
    _check(results, AttentionResult)
    fig, axes = _figure(len(results), 3, 4.2, 3.2)
    panels = (
        ("distance", "mean attention distance (px)"),
        ("entropy", "attention entropy (nats)"),
        ("specificity", "data specificity (RMS)"),
    )
    for row, r in zip(axes, results, strict=True):
        x = np.arange(len(r.names))
        for ax, (field_name, label) in zip(row, panels, strict=True):
            per_head = getattr(r, field_name)
            for i, values in enumerate(per_head):
                ax.scatter([i] * len(values), values, s=10, color="tab:red", alpha=0.5, lw=0)
            ax.plot(x, [float(np.mean(v)) for v in per_head], color="k", lw=1.2, label="mean")
            _block_ticks(ax, r.names, "x")
            ax.set(ylabel=label, title=f"{_title(r)}: {field_name}")
    return _save(fig, path)
