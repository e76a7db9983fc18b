"""Figures of the corruption analysis: accuracy per corruption (bars) and per severity (heatmap)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vitlens.analysis.corruptions import CorruptionResult
from vitlens.report.plots.common import (
    FROST_NOTE,
    as_results,
    corruption_label,
    grid_figure,
    one_axes,
    result_names,
)
from vitlens.report.png import save_png


def plot_corruption_heatmap(
    results: CorruptionResult | Sequence[CorruptionResult], path: str | Path
) -> Path:
    """Accuracy heatmap, corruptions x severities, one panel per result.

    Args:
        results: One or more `CorruptionResult`s.
        path: Where to write the PNG.
    """
    items = as_results(results, CorruptionResult)
    rows = max(len(r.corruptions) for r in items)
    fig, grid = grid_figure(1, len(items), 1.2 / len(items) + 3.75, 1.0 + 0.38 * rows)
    axes = grid[0]
    image = None
    names = result_names(items)
    for i, (ax, r) in enumerate(zip(axes, items, strict=True)):
        grid = np.array([r.accuracy[c] for c in r.corruptions]) * 100  # (corruptions, severities)
        image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=100, aspect="auto")
        for (y, x), v in np.ndenumerate(grid):
            ax.text(
                x,
                y,
                f"{v:.0f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if v < 55 else "black",
            )
        ax.set_xticks(range(len(r.severities)), [str(s) for s in r.severities])
        ax.set_xlabel("severity")
        ax.set_yticks(
            range(len(r.corruptions)), [corruption_label(c, r.source) for c in r.corruptions]
        )
        if i:
            ax.tick_params(labelleft=False)
        clean = "" if r.clean_accuracy is None else f"clean {100 * r.clean_accuracy:.1f}%, "
        ax.set_title(f"{names[i]}\n{clean}mean {100 * r.mean_accuracy:.1f}%", fontsize=9)
    fig.colorbar(image, ax=list(axes), label="accuracy (%)", shrink=0.8)
    if any(r.source != "files" and "frost" in r.corruptions for r in items):
        fig.supxlabel(FROST_NOTE, fontsize=7)
    return save_png(fig, path)


def plot_corruption_bars(
    results: CorruptionResult | Sequence[CorruptionResult], path: str | Path
) -> Path:
    """Mean accuracy over severities per corruption, one bar per model.

    Args:
        results: One or more `CorruptionResult`s.
        path: Where to write the PNG.
    """
    items = as_results(results, CorruptionResult)
    names = list(dict.fromkeys(c for r in items for c in r.corruptions))
    fig, ax = one_axes(max(6.0, 0.55 * len(names) * max(1, len(items) / 2)), 4.2)
    width = 0.8 / len(items)
    x = np.arange(len(names))
    labels = result_names(items)
    for i, r in enumerate(items):
        vals = [100 * r.accuracy_by_corruption.get(c, np.nan) for c in names]
        clean = "" if r.clean_accuracy is None else f"clean {100 * r.clean_accuracy:.1f}%, "
        label = f"{labels[i]} ({clean}mean {100 * r.mean_accuracy:.1f}%)"
        ax.bar(x + (i - (len(items) - 1) / 2) * width, vals, width, label=label)
    source = "files" if all(r.source == "files" for r in items) else "generated"
    ax.set_xticks(x, [corruption_label(c, source) for c in names], rotation=45, ha="right")
    ax.set_ylabel("accuracy, mean over severities (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    if source != "files" and "frost" in names:
        fig.supxlabel(FROST_NOTE, fontsize=7)
    return save_png(fig, path)
