"""Which figure draws which Result: one entry point for the CLI, the study and the report.

Figures are drawn only from saved Results (DESIGN.md §1), so `vitlens report` can redraw them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from vitlens.analysis.result import Result


def _figure_table() -> dict[str, list[tuple[str, Callable]]]:
    from vitlens.report import figures_features as ff
    from vitlens.report import figures_robustness as fr
    from vitlens.report import figures_surface as fs

    return {
        "fourier": [("fourier", ff.plot_fourier)],
        "variance": [("variance", ff.plot_variance)],
        "cka": [("cka", ff.plot_cka)],
        "lesion": [("lesion", ff.plot_lesion)],
        "attention": [("attention", ff.plot_attention)],
        "hessian": [("hessian", fs.plot_hessian_spectra)],
        "landscape": [("landscape", fs.plot_landscape), ("landscape_1d", fs.plot_landscape_curves)],
        "trajectory": [("trajectory", fs.plot_trajectory)],
        "corruptions": [
            ("corruptions", fr.plot_corruption_bars),
            ("corruptions_heatmap", fr.plot_corruption_heatmap),
        ],
        "freqnoise": [("freqnoise", fr.plot_frequency_noise)],
    }


def draw(results: Sequence[Result], folder: str | Path, stem: str = "") -> list[Path]:
    """Draw every figure for results of one analysis (several models overlaid where the figure
    supports it) into `folder`; returns the PNG paths."""
    if not results:
        return []
    analysis = results[0].analysis
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, plot in _figure_table()[analysis]:
        path = folder / f"{stem}{name}.png"
        try:
            paths.append(plot(list(results), path))
        except ValueError:
            # e.g. a 3-D surface asked of 1-D landscapes only: that figure does not apply.
            continue
    return paths
