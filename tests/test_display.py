"""Results that draw themselves (issue 25, point 1): `plot()`, `vitlens.plot` overlays and the
notebook display, drawn by the report's own figure functions."""

from __future__ import annotations

import dataclasses
import re

import pytest
from matplotlib.figure import Figure

import vitlens
from vitlens.analysis.lesion import LesionResult
from vitlens.analysis.result import Provenance
from vitlens.analysis.variance import VarianceResult
from vitlens.errors import VitlensError


def variance(model: str, values: list[float]) -> VarianceResult:
    kinds = ["embed", "msa", "mlp", "msa", "mlp"][: len(values)]
    return VarianceResult(
        provenance=Provenance(model=model, dataset="fashion-mnist-mini", split="test"),
        names=[f"b{i}" for i in range(len(values))],
        kinds=kinds,
        stages=[0] * len(values),
        depths=[i / (len(values) - 1) for i in range(len(values))],
        map_sizes=[[7, 7]] * len(values),
        variance=values,
        n_images=8,
        n_batches=1,
    )


def test_plot_returns_the_figure_with_one_curve_per_model():
    vit, cnn = variance("vit", [1.0, 0.8, 1.2, 1.0, 1.3]), variance("resnet", [1, 2, 3, 4, 5])
    one = vit.plot()
    assert isinstance(one, Figure)
    both = vitlens.plot([vit, cnn])
    lines = [ln for ax in both.axes for ln in ax.get_lines() if len(ln.get_xdata()) == 5]
    assert len(lines) == 2 * len([ln for ax in one.axes for ln in ax.get_lines()
                                  if len(ln.get_xdata()) == 5])  # fmt: skip
    ys = sorted(tuple(ln.get_ydata()) for ln in lines)
    assert (1.0, 0.8, 1.2, 1.0, 1.3) in ys and (1, 2, 3, 4, 5) in ys


def test_the_notebook_display_is_small_html_with_an_inlined_figure():
    page = variance("vit", [1.0, 0.8, 1.2, 1.0, 1.3])._repr_html_()
    assert page.startswith("<div>") and page.endswith("</div>")
    assert "<b>variance</b> of <b>vit</b>" in page and "<td>n_images</td><td>8</td>" in page
    assert re.search(r"src='data:image/png;base64,[A-Za-z0-9+/=]{200,}'", page)
    assert not re.search(r"https?://", page) and len(page) < 100_000


def test_bad_plots_say_what_is_wrong():
    vit = variance("vit", [1.0, 0.8, 1.2, 1.0, 1.3])
    with pytest.raises(VitlensError, match="different analyses: lesion, variance"):
        vitlens.plot([vit, LesionResult(names=["x"], kinds=["msa"], stages=[0], depths=[0.0],
                                        accuracy=[0.1], nll=[1.0], delta_accuracy=[0.0],
                                        delta_nll=[0.0])])  # fmt: skip
    with pytest.raises(VitlensError, match="holds no values to draw"):
        VarianceResult(provenance=Provenance(model="empty")).plot()
    with pytest.raises(VitlensError, match="no Results to plot"):
        vitlens.plot([])
    with pytest.raises(VitlensError, match="has no figure 'nope'"):
        vit.plot("nope")
    assert "no figure" in VarianceResult()._repr_html_()


def test_plot_draws_into_the_callers_axes():
    vit, cnn = variance("vit", [1.0, 0.8, 1.2, 1.0, 1.3]), variance("resnet", [1, 2, 3, 4, 5])
    fig = Figure()
    left, right = fig.subplots(1, 2)
    assert vit.plot(ax=left) is left and vitlens.plot([cnn], ax=right) is right
    assert len(fig.axes) == 2, "no panel added: the caller's Axes were used"
    for ax, want in ((left, (1.0, 0.8, 1.2, 1.0, 1.3)), (right, (1, 2, 3, 4, 5))):
        curves = [tuple(ln.get_ydata()) for ln in ax.get_lines() if len(ln.get_xdata()) == 5]
        assert want in curves
    with pytest.raises(VitlensError, match="2 or more panels.*without ax="):
        vitlens.plot([vit, cnn], ax=right)  # one panel per model
    lesion = LesionResult(names=["x"], kinds=["msa"], stages=[0], depths=[0.0], accuracy=[0.1],
                          nll=[1.0], delta_accuracy=[0.0], delta_nll=[0.0])  # fmt: skip
    with pytest.raises(VitlensError, match="2 or more panels.*without ax="):
        lesion.plot(ax=left)  # accuracy and NLL side by side: a Figure of its own


def test_results_on_different_data_are_not_overlaid():
    vit = variance("vit", [1.0, 0.8, 1.2, 1.0, 1.3])
    other = dataclasses.replace(
        variance("resnet", [1, 2, 3, 4, 5]),
        provenance=Provenance(model="resnet", dataset="cifar100", split="test"),
    )
    with pytest.raises(VitlensError, match="different data.*vit: fashion-mnist-mini, test"):
        vitlens.plot([vit, other])


def test_the_package_namespace_is_lazy_and_complete():
    for name in ("create_model", "load_model", "load_result", "plot", "explain", "run_analysis"):
        assert callable(getattr(vitlens, name))
    with pytest.raises(AttributeError):
        vitlens.nothing_here  # noqa: B018
