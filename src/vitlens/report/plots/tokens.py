"""Figure of the tokens analysis: token norms against depth, outliers counted."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vitlens.analysis.tokens import TokensResult
from vitlens.report.plots.common import check_kind, one_axes, result_title
from vitlens.report.png import save_png

ROLE_NAMES = {"cls": "class token", "dist": "distillation token", "reg": "register tokens"}


def norm_curves(r: TokensResult) -> dict[str, list[float]]:
    """Per block: median and max patch-token norm, and the mean norm of each kind of prefix
    token (class, distillation, registers; nan where a block has none)."""
    patch = [np.asarray(n, dtype=float) for n in r.norms]
    curves = {
        "patch median": [float(np.median(p)) for p in patch],
        "patch max": [float(p.max()) for p in patch],
    }
    roles = r.prefix_roles or ["prefix"] * max(r.prefix, default=0)
    for role in dict.fromkeys(roles):
        where = [i for i, x in enumerate(roles) if x == role]
        curves[ROLE_NAMES.get(role, "prefix tokens")] = [
            float(np.asarray(p, dtype=float)[:, where].mean()) if n >= len(roles) else float("nan")
            for p, n in zip(r.prefix_norms, r.prefix, strict=True)
        ]
    return curves


def plot_tokens(results: Sequence[TokensResult], path: str | Path) -> Path:
    """Token norms after each block against depth, one colour per model."""
    check_kind(results, TokensResult)
    fig, ax = one_axes(6.0, 3.6)
    styles = {"patch median": "-", "patch max": ":", "class token": "--"}
    for r in results:
        colour = None
        for label, values in norm_curves(r).items():
            if all(np.isnan(values)):
                continue
            outliers = sum(len(o) for o in r.outliers)
            name = f"{result_title(r)}: {label}" + (
                f" ({outliers} outlier tokens)" if label == "patch max" else ""
            )
            style = styles.get(label, "-.")
            line = ax.plot(r.depths, values, style, color=colour, label=name)[0]
            colour = line.get_color()
    ax.set(xlabel="normalized depth", ylabel="token L2 norm", yscale="log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    return save_png(fig, path)
