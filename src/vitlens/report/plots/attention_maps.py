"""Figure of the attention-maps analysis: per image, where each MSA block attends, and rollouts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vitlens.analysis.attention_maps import AttentionMapsResult
from vitlens.report.plots.common import check_kind, grid_figure, result_title
from vitlens.report.png import save_png

MAX_IMAGES = 2  # rows per model: the figure is a glance; the explain page has every image


def head_mean_map(r: AttentionMapsResult, image: int, block: int) -> np.ndarray:
    """(H, W) map of one block for one image, averaged over heads."""
    H, W = r.grids[block]
    return np.asarray(r.maps[image][block], dtype=float).mean(0).reshape(H, W)


def grid_of(values: list[float], grid: list[int]) -> np.ndarray:
    return np.asarray(values, dtype=float).reshape(grid)


def _panels(r: AttentionMapsResult, image: int) -> list[tuple[str, np.ndarray]]:
    panels = [(f"{name}", head_mean_map(r, image, k)) for k, name in enumerate(r.names)]
    if r.rollout:
        panels.append(("rollout", grid_of(r.rollout[image], r.grids[0])))
    if r.gradient_rollout:
        explained = r.explained[image]
        panels.append(
            (f"grad. rollout (class {explained})", grid_of(r.gradient_rollout[image], r.grids[0]))
        )
    return panels


def plot_attention_maps(results: Sequence[AttentionMapsResult], path: str | Path) -> Path:
    """One row per image and model: each block's head-averaged query map, then the rollouts."""
    check_kind(results, AttentionMapsResult)
    rows = [(r, i) for r in results for i in range(min(MAX_IMAGES, r.n_images))]
    if not rows:
        from vitlens.errors import VitlensError

        raise VitlensError("the attention-maps Results hold no image to draw")
    cols = max(len(_panels(r, i)) for r, i in rows)
    fig, axes = grid_figure(len(rows), cols, 1.35, 1.5)
    for row, (r, i) in zip(axes, rows, strict=True):
        panels = _panels(r, i)
        for ax, (title, values) in zip(row, panels, strict=False):
            ax.imshow(values, cmap="inferno", interpolation="nearest")
            ax.set_title(title, fontsize=6)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in row[len(panels) :]:
            ax.axis("off")
        row[0].set_ylabel(f"{result_title(r)}\nimage {i}", fontsize=7)
    return save_png(fig, path)
