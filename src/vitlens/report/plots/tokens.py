"""Figure of the tokens analysis: token norms against depth, outliers counted."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vitlens.analysis.tokens import TokensResult
from vitlens.report.plots.common import check_kind, one_axes, result_title
from vitlens.report.png import save_png


def norm_curves(r: TokensResult) -> dict[str, list[float]]:
    """Per block: median and max patch-token norm, and mean prefix-token norm (nan if none)."""
    patch = [np.asarray(n, dtype=float) for n in r.norms]
    prefix = [np.asarray(p, dtype=float) for p in r.prefix_norms]
    return {
        "patch median": [float(np.median(p)) for p in patch],
        "patch max": [float(p.max()) for p in patch],
        "prefix mean": [float(p.mean()) if p.size else float("nan") for p in prefix],
    }


def plot_tokens(results: Sequence[TokensResult], path: str | Path) -> Path:
    """Token norms after each block against depth, one colour per model."""
    check_kind(results, TokensResult)
    fig, ax = one_axes(6.0, 3.6)
    styles = {"patch median": "-", "patch max": ":", "prefix mean": "--"}
    for r in results:
        colour = None
        for label, values in norm_curves(r).items():
            if all(np.isnan(values)):
                continue
            outliers = sum(len(o) for o in r.outliers)
            name = f"{result_title(r)}: {label}" + (
                f" ({outliers} outlier tokens)" if label == "patch max" else ""
            )
            line = ax.plot(r.depths, values, styles[label], color=colour, label=name)[0]
            colour = line.get_color()
    ax.set(xlabel="normalized depth", ylabel="token L2 norm", yscale="log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    return save_png(fig, path)
