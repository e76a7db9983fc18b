"""What the figure modules share: checks, axes, shading of block kinds, labels.

Figures are drawn only from saved Results, with matplotlib's object API on the Agg canvas (no
global backend, no display), and written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vitlens.analysis.display import TARGET_AXES
from vitlens.analysis.result import Result
from vitlens.errors import VitlensError

MSA_SHADE = dict(color="0.5", alpha=0.18, lw=0)  # gray bands: MSA blocks, as in the paper


POOL_SHADE = dict(color="tab:blue", alpha=0.15, lw=0)  # blue bands: subsampling blocks


MARKERS = {
    "embed": "D",
    "conv": "^",
    "msa": "o",
    "mlp": "s",
    "pool": "v",
    "head": "*",
    "token_mlp": "P",
    "channel_msa": "X",
    "block": ".",
}


COLORS = {
    "embed": "black",
    "conv": "tab:blue",
    "msa": "tab:red",
    "mlp": "tab:green",
    "pool": "tab:purple",
    "head": "tab:gray",
    "token_mlp": "tab:olive",
    "channel_msa": "tab:orange",
    "block": "tab:brown",
}


def check_kind(results: Sequence[Result], kind: type[Result]) -> None:
    if not results:
        raise VitlensError(f"no {kind.analysis} results to plot")
    wrong = [type(r).__name__ for r in results if not isinstance(r, kind)]
    if wrong:
        raise VitlensError(f"expected {kind.__name__} results, got {wrong}")


def grid_figure(rows: int, cols: int, width: float, height: float) -> tuple[Figure, np.ndarray]:
    """A figure of rows x cols panels; a one-panel figure goes into the caller's Axes when
    `plot(..., ax=)` gave some."""
    if rows * cols == 1 and TARGET_AXES.get() is not None:
        ax = TARGET_AXES.get()
        return ax.figure, np.array([[ax]])
    _refuse_target(rows * cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    return fig, axes


def result_title(result: Result) -> str:
    return result.provenance.model or result.analysis


def shade_kinds(ax: Axes, depths: Sequence[float], kinds: Sequence[str], step: float) -> None:
    """Shade [x - step, x] for each MSA (gray) and subsampling (blue) block at depth x."""
    for x, kind in zip(depths, kinds, strict=True):
        if kind == "msa":
            ax.axvspan(x - step, x, **MSA_SHADE)
        elif kind == "pool":
            ax.axvspan(x - step, x, **POOL_SHADE)


def depth_step(depths: Sequence[float]) -> float:
    gaps = np.diff(sorted(depths))
    gaps = gaps[gaps > 0]
    return float(gaps.min()) if gaps.size else 0.05


def plot_by_kind(ax: Axes, depths, values, kinds, *, line: bool = True) -> None:
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


def block_ticks(ax: Axes, names: Sequence[str], axis: str) -> None:
    n = len(names)
    step = max(1, int(np.ceil(n / 16)))  # at most ~16 labels per axis
    ticks = list(range(0, n, step))
    labels = [names[i] for i in ticks]
    if axis == "x":
        ax.set_xticks(ticks, labels, rotation=90, fontsize=6)
    else:
        ax.set_yticks(ticks, labels, fontsize=6)


def new_figure(width: float, height: float) -> Figure:
    """An empty figure for drawers that lay out their own panels (none takes a caller's Axes)."""
    _refuse_target(2)
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def one_axes(width: float, height: float) -> tuple[Figure, Axes]:
    """The figure and Axes of a one-panel drawing: the caller's Axes when it gave some."""
    fig, axes = grid_figure(1, 1, width, height)
    return fig, axes[0, 0]


def _refuse_target(panels: int) -> None:
    if TARGET_AXES.get() is not None:
        raise VitlensError(
            f"this figure has {panels} or more panels and cannot be drawn into one Axes; "
            "call plot() without ax= to get its Figure"
        )


def model_labels(results: Sequence, labels: Sequence[str] | None) -> list[str]:
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


CORRUPTION_LABELS = {
    "gaussian_noise": "Gaussian noise",
    "shot_noise": "shot noise",
    "impulse_noise": "impulse noise",
    "defocus_blur": "defocus blur",
    "glass_blur": "glass blur",
    "motion_blur": "motion blur",
    "zoom_blur": "zoom blur",
    "snow": "snow",
    "frost": "frost*",
    "fog": "fog",
    "brightness": "brightness",
    "contrast": "contrast",
    "elastic_transform": "elastic",
    "pixelate": "pixelate",
    "jpeg_compression": "JPEG",
}


FROST_NOTE = "* frost: synthetic texture, not the reference photographs"


def as_results(results: Result | Sequence[Result], kind: type[Result]) -> list:
    items = [results] if isinstance(results, Result) else list(results)
    if not items:
        raise VitlensError(f"no {kind.analysis} results to plot")
    wrong = [type(r).__name__ for r in items if not isinstance(r, kind)]
    if wrong:
        raise VitlensError(f"expected {kind.__name__} results, got {wrong}")
    return items


def corruption_label(c: str, source: str) -> str:
    # The released CIFAR-C frost *is* the reference; only generated frost is synthetic.
    return c if source == "files" else CORRUPTION_LABELS.get(c, c)


def result_names(items: Sequence[Result]) -> list[str]:
    # Provenance names, made unique (two unnamed "Sequential" models become "Sequential #2").
    names = [r.provenance.model or f"model {i + 1}" for i, r in enumerate(items)]
    return [
        n if names.count(n) == 1 else f"{n} #{names[:i].count(n) + 1}" for i, n in enumerate(names)
    ]
