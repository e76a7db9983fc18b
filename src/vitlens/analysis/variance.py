"""Feature-map variance (paper §3, Figs. 9 and D.1; official_repo.md §4.2).

Per block, the spatial variance of each channel of its feature map — the unbiased sample variance
over the H x W positions, as `latent.var(dim=[H, W])` in the authors' notebook — averaged over
images and channels. MSAs lower it (they aggregate feature maps); Convs and MLPs raise it (they
diversify them). Token models have their class tokens dropped first (the block's layout does it).
Unlike the notebook (one test batch), the average is streamed over every batch asked for.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from vitlens.analysis.claim import (
    Claim,
    StudyView,
    block_deltas,
    msas_attend,
    not_measured,
    requires,
    the_vit,
)
from vitlens.analysis.registry import register_analysis
from vitlens.analysis.result import Provenance, Result
from vitlens.analysis.spec import FEATURE_BUDGETS, AnalysisSpec, Figure, streamed
from vitlens.analysis.streaming import (
    Batch,
    normalized_depths,
    provenance_for,
    resolve_device,
    stream_map_sums,
)


@dataclass(frozen=True)
class VarianceResult(Result):
    """Mean spatial variance of every block's feature maps.

    Attributes:
        names, kinds, stages: the blocks analysed, in forward order (1x1 maps skipped).
        depths: normalized depth of each block over the model's feature-map blocks.
        map_sizes: (H, W) of each block's map.
        variance: per block, the unbiased spatial variance averaged over images and channels.
        n_images, n_batches: how much data the statistics were streamed over.
    """

    analysis: ClassVar[str] = "variance"
    schema: ClassVar[int] = 1

    names: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    stages: list[int] = field(default_factory=list)
    depths: list[float] = field(default_factory=list)
    map_sizes: list[list[int]] = field(default_factory=list)
    variance: list[float] = field(default_factory=list)
    n_images: int = 0
    n_batches: int = 0


def _variance_sum(maps: torch.Tensor) -> torch.Tensor:
    """Sum over images and channels of each map's unbiased spatial variance (float64 scalar).

    Two passes, as `torch.var` does, but with plain reductions: centre each map on its mean, then
    one float64 sum of all squares divided by H·W - 1. `torch.var` over the two spatial axes of a
    token model's strided (B, C, H, W) view is several times slower than the forward pass's own
    work on that tensor (benchmarks/feature_cost_bench.py).
    """
    n = maps.shape[-2] * maps.shape[-1]
    centred = maps - maps.mean(dim=(-2, -1), keepdim=True)
    return centred.square().sum(dtype=torch.float64) / (n - 1)


def spatial_variance(maps: torch.Tensor) -> float:
    """Unbiased variance over H x W of each (image, channel) map, averaged over images and channels.

    Args:
        maps: (B, C, H, W) feature maps with H * W >= 2.
    """
    return float(_variance_sum(maps)) / (maps.shape[0] * maps.shape[1])


def variance(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    max_batches: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    provenance: Provenance | None = None,
) -> VarianceResult:
    """Mean spatial variance of every block's feature maps over all images streamed.

    Args:
        model: any model `vitlens.anatomy.describe` knows; moved to `device`, run in eval mode.
        batches: (images, labels) pairs, e.g. a DataLoader.
        max_batches: use at most this many batches (None: all).
        device: `cpu`, `cuda`, `mps` or `auto`.
        progress: show a progress bar.
        provenance: what to record about the model and data; wall time and device are filled in.
    """
    started = time.perf_counter()
    device = resolve_device(device)
    model.to(device)
    sums = stream_map_sums(
        model,
        batches,
        _variance_sum,
        accepts=lambda size: size[0] * size[1] >= 2,  # a 1x1 map has no spatial variance
        max_batches=max_batches,
        device=device,
        progress=progress,
        description="variance",
    )
    depths = normalized_depths(sums.model_blocks)
    blocks = sums.blocks
    means = sums.means()
    return VarianceResult(
        provenance=provenance_for(provenance, model, device, started),
        names=[b.name for b in blocks],
        kinds=[b.kind for b in blocks],
        stages=[b.stage for b in blocks],
        depths=[depths[b.name] for b in blocks],
        map_sizes=[list(sums.sizes[b.name]) for b in blocks],
        variance=[float(means[b.name]) for b in blocks],
        n_images=sums.n_images,
        n_batches=sums.n_batches,
    )


# -- the paper's claim this analysis measures, and its spec -------------------------------------


@requires(msas_attend(the_vit))
def c11_variance(view: StudyView) -> Claim:
    claim = "MSAs reduce feature-map variance; Convs and MLPs increase it"
    paper = "all 12 ViT-Ti MSA blocks lower the variance"
    r = view.result("variance", view.vit)
    msa = block_deltas(r.variance, r.kinds, "msa") if r else []
    if not msa:
        return not_measured("C11", claim, paper)
    mlp = block_deltas(r.variance, r.kinds, "mlp")
    down = sum(d < 0 for d in msa) / len(msa)
    measured = (
        f"{down:.0%} of MSA blocks lower it; "
        f"{sum(d > 0 for d in mlp) / max(len(mlp), 1):.0%} of MLP blocks raise it"
    )
    return Claim("C11", claim, paper, measured, down > 0.5, down - 0.5)


SPEC = register_analysis(
    AnalysisSpec(
        name="variance",
        summary="feature-map variance per block (paper Fig. 9)",
        run=streamed(variance),
        function=variance,
        data="test",
        section="features",
        order=20,
        budgets=FEATURE_BUDGETS,
        figures=(
            Figure(
                "variance",
                "vitlens.report.plots.variance:plot_variance",
                "Feature-map variance against depth, MSA blocks shaded (paper Fig. 9).",
            ),
        ),
        claims=(c11_variance,),
    )
)
