"""Token norms by depth, and high-norm outlier tokens (issue 18).

Darcet, Oquab, Mairal & Bojanowski (ICLR 2024), "Vision Transformers Need Registers": large,
well-trained ViTs repurpose a few patch tokens in low-information areas as global stores, and
those tokens carry norms far above the others. For a model with MSA blocks, after every block
whose output is a grid of positions (a ViT's tokens, Swin's channels-last map, an AlterNet's
feature map, where a position's channel vector is its token):

- the L2 norm of every token over channels, the prefix tokens (class, distillation, register)
  apart from the patch tokens;
- **outliers**: patch tokens whose norm exceeds OUTLIER_FACTOR times the median patch-token norm
  of their image in that block, with their image and grid position, and their share of all patch
  tokens.

Mean attention distance against depth (ViT paper Fig. 7, right) is the attention analysis's
(`vitlens.analysis.attention`); the page and the report draw it from that Result.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from vitlens.analysis.registry import register_analysis
from vitlens.analysis.result import Provenance, Result
from vitlens.analysis.spec import VIEW_BUDGETS, AnalysisSpec, Figure, Option, streamed
from vitlens.analysis.streaming import (
    Batch,
    evaluating,
    normalized_depths,
    provenance_for,
    resolve_device,
    stream,
)
from vitlens.anatomy import anatomy_of, tapping, unwrap
from vitlens.errors import VitlensError

#: A patch token is an outlier when its norm exceeds this many times its image's median.
OUTLIER_FACTOR = 4.0


@dataclass(frozen=True)
class TokensResult(Result):
    """Per token block: every token's norm, prefix tokens apart, and the outlier tokens.

    Attributes:
        names, kinds, stages, depths: the blocks with a token grid, in forward order.
        prefix: prefix tokens per block; grids: (H, W) of its patch tokens.
        norms: block -> image -> H * W patch-token norms, row-major.
        prefix_norms: block -> image -> the prefix tokens' norms.
        prefix_roles: what each prefix token is, in order: "cls", "dist" (distillation) or
            "reg" (register), read from the model's parameters; "prefix" where unknown.
        median: block -> median patch-token norm over all images.
        outliers: block -> [[image, position], ...] of outlier patch tokens.
        outlier_share: block -> share of patch tokens that are outliers.
        outlier_factor: the threshold, in multiples of the image's median norm.
        n_images, n_batches: the data.
    """

    analysis: ClassVar[str] = "tokens"
    schema: ClassVar[int] = 1

    names: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    stages: list[int] = field(default_factory=list)
    depths: list[float] = field(default_factory=list)
    prefix: list[int] = field(default_factory=list)
    grids: list[list[int]] = field(default_factory=list)
    norms: list[list[list[float]]] = field(default_factory=list)
    prefix_norms: list[list[list[float]]] = field(default_factory=list)
    prefix_roles: list[str] = field(default_factory=list)
    median: list[float] = field(default_factory=list)
    outliers: list[list[list[int]]] = field(default_factory=list)
    outlier_share: list[float] = field(default_factory=list)
    outlier_factor: float = OUTLIER_FACTOR
    n_images: int = 0
    n_batches: int = 0


# Parameter names of the prefix tokens in timm, Hugging Face and vitlens models.
_DIST = ("dist_token", "distillation_token")
_REG = ("reg_token", "register_tokens")


def prefix_roles(model: nn.Module, prefix: int) -> list[str]:
    """What each of the `prefix` tokens is: the class token first, then a distillation token
    (DeiT) and register tokens (Darcet et al. 2024) where the model holds such parameters, in
    the order timm and Hugging Face concatenate them; "prefix" for any left unexplained."""
    dist = regs = 0
    for name, p in unwrap(model).named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in _DIST:
            dist = 1
        elif leaf in _REG and p.ndim == 3:
            regs = p.shape[1]  # (1, registers, width)
    roles = (["cls"] + ["dist"] * dist + ["reg"] * regs) if prefix else []
    return (roles + ["prefix"] * prefix)[:prefix]


def outlier_tokens(norms: torch.Tensor, factor: float = OUTLIER_FACTOR) -> list[list[int]]:
    """[[image, position], ...] where a (B, G) patch-token norm exceeds factor x its image's
    median."""
    median = norms.median(dim=1, keepdim=True).values
    hits = (norms > factor * median).nonzero()
    return [[int(i), int(p)] for i, p in hits]


@dataclass
class _BlockNorms:
    prefix: int
    grid: tuple[int, int]
    norms: list[torch.Tensor] = field(default_factory=list)  # per batch, (B, G)
    prefix_norms: list[torch.Tensor] = field(default_factory=list)  # per batch, (B, P)


def _on_tap(found: dict[str, _BlockNorms]):
    def on_tap(block, t: torch.Tensor) -> None:
        grid_map = block.layout.to_map(t).float()  # (B, C, H, W)
        B, _, H, W = grid_map.shape
        prefix = block.layout.prefix if block.layout.kind == "tokens" else 0
        entry = found.setdefault(block.name, _BlockNorms(prefix, (H, W)))
        entry.norms.append(grid_map.norm(dim=1).reshape(B, H * W).cpu())
        entry.prefix_norms.append(t[:, :prefix].float().norm(dim=-1).cpu())

    return on_tap


def tokens(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    outlier_factor: float = OUTLIER_FACTOR,
    max_batches: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    provenance: Provenance | None = None,
) -> TokensResult:
    """Token norms after every block with a token grid, and the high-norm outliers.

    Args:
        model: any model vitlens can describe with blocks whose output is a token grid.
        batches: (images, labels) pairs, normalised as the model expects; keep them few.
        outlier_factor: a patch token is an outlier above this multiple of its image's median.
        max_batches: use at most this many batches (None: all).
        device: `cpu`, `cuda`, `mps` or `auto`.
        progress: show a progress bar.
        provenance: what to record; wall time and device are filled in.

    Raises:
        VitlensError: the model has no MSA block, or a bad factor.
    """
    started = time.perf_counter()
    if not outlier_factor > 1:
        raise VitlensError(f"outlier_factor must be above 1, got {outlier_factor}")
    device = resolve_device(device)
    anatomy = anatomy_of(model.to(device))
    blocks = [b for b in anatomy.blocks if b.layout.kind in ("tokens", "nhwc", "nchw")]
    if not anatomy.has("msa") or not blocks:
        raise VitlensError(
            f"{type(unwrap(model)).__name__} has no MSA block, so no tokens that attention "
            "mixes; the feature-map analyses (variance, fourier) describe a CNN's maps instead"
        )
    found: dict[str, _BlockNorms] = {}
    n_batches = 0
    with evaluating(model), torch.no_grad(), tapping(blocks, _on_tap(found)):
        for images, _ in stream(
            batches,
            max_batches=max_batches,
            device=device,
            progress=progress,
            description="tokens",
        ):
            anatomy.forward(model, images)
            n_batches += 1
    provenance = provenance_for(provenance, model, device, started)
    roles = prefix_roles(model, max((e.prefix for e in found.values()), default=0))
    return _result(anatomy.blocks, blocks, found, outlier_factor, n_batches, provenance, roles)


def _result(all_blocks, blocks, found, factor, n_batches, provenance, roles) -> TokensResult:
    depths = normalized_depths(list(all_blocks))
    done = [b for b in blocks if b.name in found]
    norms = {b.name: torch.cat(found[b.name].norms) for b in done}
    outliers = {b.name: outlier_tokens(norms[b.name], factor) for b in done}
    return TokensResult(
        provenance=provenance,
        names=[b.name for b in done],
        kinds=[b.kind for b in done],
        stages=[b.stage for b in done],
        depths=[depths.get(b.name, 0.0) for b in done],
        prefix=[found[b.name].prefix for b in done],
        grids=[list(found[b.name].grid) for b in done],
        norms=[norms[b.name].tolist() for b in done],
        prefix_norms=[torch.cat(found[b.name].prefix_norms).tolist() for b in done],
        prefix_roles=roles,
        median=[float(norms[b.name].median()) for b in done],
        outliers=[outliers[b.name] for b in done],
        outlier_share=[len(outliers[b.name]) / norms[b.name].numel() for b in done],
        outlier_factor=factor,
        n_images=int(norms[done[0].name].shape[0]) if done else 0,
        n_batches=n_batches,
    )


SPEC = register_analysis(
    AnalysisSpec(
        name="tokens",
        summary="token norms by depth and high-norm outlier tokens (Darcet et al. 2024)",
        run=streamed(tokens),
        function=tokens,
        data="test",
        section="inside",
        order=30,
        budgets=VIEW_BUDGETS,
        needs=frozenset({"msa"}),  # a study shows tokens for its transformers
        options=(
            Option(
                "outlier_factor",
                OUTLIER_FACTOR,
                "outlier: this many x the median",
                kind="float",
                minimum=1.0,
                maximum=1e6,
            ),
        ),
        figures=(
            Figure(
                "tokens",
                "vitlens.report.plots.tokens:plot_tokens",
                "Token norms after each block: patch tokens (median and maximum) and prefix "
                "tokens; high-norm outliers (above 4x their image's median, Darcet et al. 2024) "
                "are counted.",
            ),
        ),
    )
)
