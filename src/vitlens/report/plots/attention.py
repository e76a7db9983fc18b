"""Figure of the attention statistics: mean distance, entropy and data specificity per head."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vitlens.analysis.attention import AttentionResult
from vitlens.report.plots.common import block_ticks, check_kind, grid_figure, result_title
from vitlens.report.png import save_png


def plot_attention(results: Sequence[AttentionResult], path: str | Path) -> Path:
    """Mean attention distance, entropy and data specificity per MSA block: heads as dots, the
    mean over heads as a line."""
    check_kind(results, AttentionResult)
    fig, axes = grid_figure(len(results), 3, 4.2, 3.2)
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
            block_ticks(ax, r.names, "x")
            ax.set(ylabel=label, title=f"{result_title(r)}: {field_name}")
    return save_png(fig, path)
