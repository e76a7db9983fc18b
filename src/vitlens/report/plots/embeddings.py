"""Figure of the embeddings analysis: position-embedding similarity and filter components
(ViT paper Fig. 7, left and centre)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vitlens.analysis.embeddings import EmbeddingsResult
from vitlens.report.plots.common import check_kind, grid_figure, result_title
from vitlens.report.png import save_png

SHOWN_COMPONENTS = 8


def similarity_mosaic(r: EmbeddingsResult) -> np.ndarray:
    """(H*H, W*W) mosaic: tile (i, j) is position (i, j)'s similarity to every position."""
    H, W = r.position_grid
    sim = np.asarray(r.position_similarity, dtype=float).reshape(H, W, H, W)
    # (H, W, H, W) -> (H, H, W, W): tile row i, pixel row, tile column j, pixel column
    return sim.transpose(0, 2, 1, 3).reshape(H * H, W * W)


def component_image(r: EmbeddingsResult, k: int) -> np.ndarray:
    """Component k as an (h, w) grayscale or (h, w, 3) image scaled to [0, 1]."""
    c, h, w = r.filter_shape
    comp = np.asarray(r.components[k], dtype=float).reshape(c, h, w)
    comp = (comp - comp.min()) / max(comp.max() - comp.min(), 1e-12)
    return comp[0] if c != 3 else comp.transpose(1, 2, 0)


def plot_embeddings(results: Sequence[EmbeddingsResult], path: str | Path) -> Path:
    """Per model: the position-similarity mosaic, then the top filter components."""
    check_kind(results, EmbeddingsResult)
    cols = 1 + SHOWN_COMPONENTS
    fig, axes = grid_figure(len(results), cols, 1.2, 1.4)
    for row, r in zip(axes, results, strict=True):
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
        if r.position_similarity:
            row[0].imshow(similarity_mosaic(r), cmap="viridis", vmin=-1, vmax=1)
            row[0].set_title(f"{result_title(r)}\nposition similarity", fontsize=6)
        else:
            row[0].axis("off")
            row[0].set_title(f"{result_title(r)}\nno position embedding", fontsize=6)
        for k, ax in enumerate(row[1:]):
            if k >= len(r.components):
                ax.axis("off")
                continue
            ax.imshow(component_image(r, k), cmap="gray", interpolation="nearest")
            ax.set_title(f"PC {k + 1} ({r.explained_variance[k]:.0%})", fontsize=6)
    return save_png(fig, path)
