"""Figures of the ablation runs of a study's ViT (claims C3, C6, C7, C15, C16), drawn from the
training rows and Hessian Results that a `StudyView` holds (see `vitlens.ablations`).

Each function draws one comparison into a PNG and returns its path, or None when the study holds
too little of that comparison to draw.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from vitlens.ablations import curvature_results
from vitlens.analysis.claim import StudyView
from vitlens.report.plots.common import grid_figure
from vitlens.report.png import save_png


def _figure(panels: int) -> tuple[Figure, list]:
    fig, axes = grid_figure(1, panels, 4.0, 3.2)
    return fig, list(axes[0])


def _pairs(view: StudyView, group: str):
    """[(value, training row or None, curvature Result or None)] of one comparison."""
    curvature = curvature_results(view)
    return [(v, view.runs.get(k), curvature.get(k)) for v, k in view.comparisons.get(group, [])]


def plot_fraction(view: StudyView, path: Path) -> Path | None:
    """C3/C6: test error and NLL_train against the share of training data, NEP where known."""
    rows = sorted((v, r, c) for v, r, c in _pairs(view, "fraction") if r is not None)
    if len(rows) < 2:
        return None
    fig, (err_ax, nll_ax) = _figure(2)
    share = [v * 100 for v, _, _ in rows]
    err_ax.plot(share, [100 * (1 - r["test_acc"]) for _, r, _ in rows], "o-", color="tab:red")
    nll_ax.plot(share, [r["train_nll"] for _, r, _ in rows], "s-", color="tab:blue")
    for v, _, c in rows:
        if c is not None:
            nll_ax.annotate(f"NEP {c.nep:.1%}", (v * 100, 0), xycoords=("data", "axes fraction"))
    for ax, label in ((err_ax, "test error (%)"), (nll_ax, "NLL_train")):
        ax.set_xscale("log")
        ax.set_xlabel("training data (%)")
        ax.set_ylabel(label)
    return save_png(fig, path)


def _bars(view: StudyView, group: str, path: Path, fields) -> Path | None:
    """One bar panel per (title, value of a (row, curvature) pair) in `fields`."""
    pairs = [(v, r, c) for v, r, c in _pairs(view, group) if r is not None and c is not None]
    if len(pairs) < 2:
        return None
    fig, axes = _figure(len(fields))
    labels = [str(v) for v, _, _ in pairs]
    for ax, (title, value) in zip(axes, fields, strict=True):
        ax.bar(labels, [value(r, c) for _, r, c in pairs], color="tab:purple")
        ax.set_title(title)
    return save_png(fig, path)


def plot_window(view: StudyView, path: Path) -> Path | None:
    """C7: error, NLL_train and NEP of local windows against global attention."""
    return _bars(
        view,
        "window",
        path,
        [
            ("test error", lambda r, c: 1 - r["test_acc"]),
            ("NLL_train", lambda r, c: r["train_nll"]),
            ("NEP", lambda r, c: c.nep),
        ],
    )


def plot_pool(view: StudyView, path: Path) -> Path | None:
    """C15: NEP of the CLS-token and the GAP classifier."""
    return _bars(view, "pool", path, [("NEP", lambda r, c: c.nep)])


def plot_heads(view: StudyView, path: Path) -> Path | None:
    """C16: NEP and APE against the number of heads."""
    ordered = {
        **view.comparisons,
        "heads": sorted(view.comparisons.get("heads", []), key=lambda p: p[0]),
    }
    view = StudyView(view.results, view.runs, view.models, view.families, ordered)
    return _bars(view, "heads", path, [("NEP", lambda r, c: c.nep), ("APE", lambda r, c: c.ape)])


FIGURES = [
    (
        "ablation_fraction",
        plot_fraction,
        "The ViT trained on less data: test error and "
        "NLL_train against the share of the training set, NEP of the smallest share (C3, C6).",
    ),
    (
        "ablation_window",
        plot_window,
        "The ViT with local attention windows (k×k tokens) against "
        "global attention: test error, NLL_train and NEP (C7, paper Fig. 7).",
    ),
    ("ablation_pool", plot_pool, "NEP of the ViT with a CLS-token and a GAP classifier (C15)."),
    (
        "ablation_heads",
        plot_heads,
        "NEP and APE of ViTs of the same width with different numbers of heads (C16).",
    ),
]
