"""Figure of the frequency-noise analysis: change in accuracy against the noise band, per ε."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vitlens.analysis.freqnoise import FreqNoiseResult
from vitlens.report.plots.common import as_results, one_axes
from vitlens.report.png import save_png


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
    items = as_results(results, FreqNoiseResult)
    all_eps = sorted({e for r in items for e, _ in _eps_curves(r)}, reverse=True)
    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "v", "D"]
    fig, ax = one_axes(5.8, 4.0)
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
    settings = sorted({(r.window, r.space, r.energy) for r in items})
    eps_text = ", ".join(f"{e:g}" for e in reversed(all_eps))
    energy = {"equal": "bands of equal energy", "authors": "authors' unscaled bands"}
    ax.set_title(
        f"ε = {eps_text}; "
        + "; ".join(f"{s} space, window {w:g}π, {energy[e]}" for w, s, e in settings),
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7 if len(all_eps) > 1 else 8)
    return save_png(fig, path)
