"""Figures of the robustness analyses, drawn only from saved Results (DESIGN.md §4).

- `plot_corruption_heatmap`: accuracy per corruption (rows) and severity (columns), one panel per
  model, annotated in percent (Hendrycks & Dietterich 2019's 15 x 5 grid).
- `plot_corruption_bars`: mean accuracy over severities per corruption, one bar per model, with
  each model's clean accuracy and mean corruption accuracy (Park & Kim's robustness) in the legend.
- `plot_frequency_noise`: change in accuracy (percentage points) against noise frequency for every
  model of every result on one axis (Park & Kim 2022, Fig. 2b).

Each function takes one Result or a list, writes a PNG atomically and returns its path. Figures use
matplotlib's object API on the Agg canvas, so no global backend is switched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vitlens.analysis.corruption_eval import CorruptionResult
from vitlens.analysis.freqnoise_eval import FreqNoiseResult
from vitlens.analysis.result import Result
from vitlens.errors import VitlensError
from vitlens.report.png import save_png as _save

_LABELS = {
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
_FROST_NOTE = "* frost: synthetic texture, not the reference photographs"


def _as_list(results: Result | Sequence[Result], kind: type[Result]) -> list:
    items = [results] if isinstance(results, Result) else list(results)
    if not items:
        raise VitlensError(f"no {kind.analysis} results to plot")
    wrong = [type(r).__name__ for r in items if not isinstance(r, kind)]
    if wrong:
        raise VitlensError(f"expected {kind.__name__} results, got {wrong}")
    return items


def _label(c: str, source: str) -> str:
    # The released CIFAR-C frost *is* the reference; only generated frost is synthetic.
    return c if source == "files" else _LABELS.get(c, c)


def _names(items: Sequence[Result]) -> list[str]:
    # Provenance names, made unique (two unnamed "Sequential" models become "Sequential #2").
    names = [r.provenance.model or f"model {i + 1}" for i, r in enumerate(items)]
    return [n if names.count(n) == 1 else f"{n} #{names[:i].count(n) + 1}"
            for i, n in enumerate(names)]  # fmt: skip


def plot_corruption_heatmap(
    results: CorruptionResult | Sequence[CorruptionResult], path: str | Path
) -> Path:
    """Accuracy heatmap, corruptions x severities, one panel per result.

    Args:
        results: One or more `CorruptionResult`s.
        path: Where to write the PNG.
    """
    items = _as_list(results, CorruptionResult)
    rows = max(len(r.corruptions) for r in items)
    fig = Figure(figsize=(1.2 + 0.75 * 5 * len(items), 1.0 + 0.38 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, len(items), squeeze=False)[0])
    image = None
    names = _names(items)
    for i, (ax, r) in enumerate(zip(axes, items, strict=True)):
        grid = np.array([r.accuracy[c] for c in r.corruptions]) * 100  # (corruptions, severities)
        image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=100, aspect="auto")
        for (y, x), v in np.ndenumerate(grid):
            ax.text(x, y, f"{v:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if v < 55 else "black")  # fmt: skip
        ax.set_xticks(range(len(r.severities)), [str(s) for s in r.severities])
        ax.set_xlabel("severity")
        ax.set_yticks(range(len(r.corruptions)), [_label(c, r.source) for c in r.corruptions])
        if i:
            ax.tick_params(labelleft=False)
        clean = "" if r.clean_accuracy is None else f"clean {100 * r.clean_accuracy:.1f}%, "
        ax.set_title(f"{names[i]}\n{clean}mean {100 * r.mean_accuracy:.1f}%", fontsize=9)
    fig.colorbar(image, ax=list(axes), label="accuracy (%)", shrink=0.8)
    if any(r.source != "files" and "frost" in r.corruptions for r in items):
        fig.supxlabel(_FROST_NOTE, fontsize=7)
    return _save(fig, path)


def plot_corruption_bars(
    results: CorruptionResult | Sequence[CorruptionResult], path: str | Path
) -> Path:
    """Mean accuracy over severities per corruption, one bar per model.

    Args:
        results: One or more `CorruptionResult`s.
        path: Where to write the PNG.
    """
    items = _as_list(results, CorruptionResult)
    names = list(dict.fromkeys(c for r in items for c in r.corruptions))
    fig = Figure(figsize=(max(6.0, 0.55 * len(names) * max(1, len(items) / 2)), 4.2),
                 layout="constrained")  # fmt: skip
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / len(items)
    x = np.arange(len(names))
    labels = _names(items)
    for i, r in enumerate(items):
        vals = [100 * r.accuracy_by_corruption.get(c, np.nan) for c in names]
        clean = "" if r.clean_accuracy is None else f"clean {100 * r.clean_accuracy:.1f}%, "
        label = f"{labels[i]} ({clean}mean {100 * r.mean_accuracy:.1f}%)"
        ax.bar(x + (i - (len(items) - 1) / 2) * width, vals, width, label=label)
    source = "files" if all(r.source == "files" for r in items) else "generated"
    ax.set_xticks(x, [_label(c, source) for c in names], rotation=45, ha="right")
    ax.set_ylabel("accuracy, mean over severities (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    if source != "files" and "frost" in names:
        fig.supxlabel(_FROST_NOTE, fontsize=7)
    return _save(fig, path)


def _eps_curves(r: FreqNoiseResult) -> list[tuple[float, dict[str, list[float]]]]:
    # (eps, model -> Δacc per frequency) for every eps of a sweep; one entry for an old Result.
    if r.by_eps:
        return [(e["eps"], e["delta_accuracy"]) for e in r.by_eps]
    return [(r.eps, r.delta_accuracy)]


def plot_frequency_noise(
    results: FreqNoiseResult | Sequence[FreqNoiseResult], path: str | Path
) -> Path:
    """Change in accuracy (pp) against noise frequency, every model on one axis (paper Fig. 2b).

    With an eps sweep, one curve set per eps: each model keeps its colour, and the line style
    and marker tell the eps (the largest drawn solid).

    Args:
        results: One or more `FreqNoiseResult`s (each may hold several models and eps).
        path: Where to write the PNG.
    """
    items = _as_list(results, FreqNoiseResult)
    all_eps = sorted({e for r in items for e, _ in _eps_curves(r)}, reverse=True)
    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "v", "D"]
    fig = Figure(figsize=(5.8, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    colours: dict[str, str] = {}
    for r in items:
        for e, curves in _eps_curves(r):
            k = all_eps.index(e)
            for m in r.models:
                line = ax.plot(
                    r.frequencies,
                    [100 * d for d in curves[m]],
                    linestyle=styles[k % len(styles)],
                    marker=markers[k % len(markers)],
                    color=colours.get(m),
                    label=m if len(all_eps) == 1 else f"{m}, ε = {e:g}",
                )[0]
                colours.setdefault(m, line.get_color())
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xlabel("noise frequency (× π)")
    ax.set_ylabel("Δ accuracy (pp)")
    settings = sorted({(r.window, r.space) for r in items})
    eps_text = ", ".join(f"{e:g}" for e in reversed(all_eps))
    ax.set_title(
        f"ε = {eps_text}; " + "; ".join(f"{s} space, window {w:g}π" for w, s in settings),
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7 if len(all_eps) > 1 else 8)
    return _save(fig, path)


__all__ = ["plot_corruption_bars", "plot_corruption_heatmap", "plot_frequency_noise"]
