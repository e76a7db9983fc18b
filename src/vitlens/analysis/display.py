"""Results that draw themselves, for notebooks: `Result.plot()`, `vitlens.plot(results)` and the
rich display `Result._repr_html_()`.

The figure is the report's own: each analysis spec names its figure functions
(`"module:function"`, imported on use), and every one of them returns the matplotlib Figure when
it is given no path. So a notebook, `vitlens analyze` and the study report draw with the same
code. The HTML display is a short header (analysis, model, data), the Result's scalar numbers as
a small table and its figure as an inlined PNG: a few kilobytes, nothing loaded from the network.
"""

from __future__ import annotations

import base64
import contextvars
import dataclasses
import html
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vitlens.errors import VitlensError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from vitlens.analysis.result import Result

MAX_ROWS = 12  # scalar fields shown in the display's table

# The Axes a caller asked a one-panel figure to be drawn into (`plot(..., ax=ax)`); the figure
# helpers of `vitlens.report.plots.common` read it, so every drawer honours it the same way.
TARGET_AXES: contextvars.ContextVar[Axes | None] = contextvars.ContextVar("ax", default=None)


def plot(
    results: Result | Sequence[Result], figure: str | None = None, ax: Axes | None = None
) -> Figure | Axes:
    """Several Results of one analysis overlaid (e.g. ViT against ResNet, as the paper draws
    them), or one Result: the report's figure as a matplotlib Figure, or drawn into `ax`.

    Args:
        results: one Result, or Results of the same analysis, model and data scale.
        figure: which of the analysis's figures (default: its first), e.g. "corruptions_heatmap".
        ax: draw a one-panel figure into these Axes and return them (a figure of several panels
            refuses: draw it without `ax`).

    Raises:
        VitlensError: no Results, Results of different analyses or scales, or an unknown figure.
    """
    from vitlens.analysis.registry import get_analysis
    from vitlens.analysis.result import Result

    items = [results] if isinstance(results, Result) else list(results)
    if not items:
        raise VitlensError("no Results to plot")
    kinds = sorted({r.analysis for r in items})
    if len(kinds) > 1:
        raise VitlensError(f"cannot overlay Results of different analyses: {', '.join(kinds)}")
    empty = [r for r in items if not _has_values(r)]
    if empty:
        model = empty[0].provenance.model or "a model"
        raise VitlensError(f"the {kinds[0]} Result of {model} holds no values to draw")
    _check_same_scale(items)
    figures = get_analysis(kinds[0]).figures
    chosen = [f for f in figures if figure in (None, f.name)]
    if not chosen:
        names = ", ".join(f.name for f in figures) or "none"
        raise VitlensError(f"{kinds[0]} has no figure {figure!r}; its figures: {names}")
    token = TARGET_AXES.set(ax)
    try:
        drawn = chosen[0].drawer()(items, None)
    except (ValueError, IndexError, KeyError, ZeroDivisionError) as err:
        raise VitlensError(f"cannot draw these {kinds[0]} Results: {err}") from None
    finally:
        TARGET_AXES.reset(token)
    return ax if ax is not None else _displayable(drawn)


def _check_same_scale(items: list[Result]) -> None:
    """Overlaid curves must be measured on the same data: the same dataset and split."""
    seen = {(r.provenance.dataset, r.provenance.split): r.provenance.model or "?" for r in items}
    if len(seen) > 1:
        described = "; ".join(
            f"{model}: {', '.join(x for x in key if x) or 'unknown data'}"
            for key, model in seen.items()
        )
        raise VitlensError(f"cannot overlay Results measured on different data ({described})")


def _png(fig: Figure, dpi: int | None = None) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", **({"dpi": dpi} if dpi else {}))
    return buffer.getvalue()


def _displayable(fig: Figure) -> Figure:
    """The figures are drawn without pyplot (no global state), so Jupyter has no display for
    them unless pyplot's inline backend happens to be loaded: give each its own PNG display."""
    fig._repr_png_ = lambda: _png(fig)
    return fig


def _has_values(result: Result) -> bool:
    """Whether any list or mapping field of the Result holds something."""
    return any(
        isinstance(v, list | dict) and len(v) > 0
        for v in (getattr(result, f.name) for f in dataclasses.fields(result))
    )


def scalars(result: Result) -> list[tuple[str, Any]]:
    """The Result's single-number (and short text) fields, in declaration order."""
    rows = []
    for f in dataclasses.fields(result):
        value = getattr(result, f.name)
        if isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) < 60):
            rows.append((f.name, value))
    return rows[:MAX_ROWS]


def result_html(result: Result, dpi: int = 60) -> str:
    """The notebook display: header, key numbers, inlined figure."""
    p = result.provenance
    where = ", ".join(x for x in (p.dataset, p.split) if x)
    head = f"<b>{html.escape(result.analysis)}</b> of <b>{html.escape(p.model or '?')}</b>"
    head += f" <small>({html.escape(where)})</small>" if where else ""
    cells = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(_short(v))}</td></tr>"
        for k, v in scalars(result)
    )
    image = ""
    try:
        data = base64.b64encode(_png(plot(result), dpi)).decode("ascii")
        image = f"<img alt='{html.escape(result.analysis)}' src='data:image/png;base64,{data}'>"
    except VitlensError as err:
        image = f"<p><i>no figure: {html.escape(str(err))}</i></p>"
    return f"<div>{head}<table>{cells}</table>{image}</div>"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
