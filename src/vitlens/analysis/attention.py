"""Attention statistics per MSA block and head (paper Fig. 7; reference/paper.md §1.8, §1.15).

The paper's point is that the key feature of MSA is *data specificity*, not long-range dependency.
For every `msa` block whose attention maps can be read (`Block.attention`, on the explicit-softmax
path of `vitlens.anatomy.explicit_attention`) and every head, streamed over all images:

- **mean attention distance**, in pixels of the input (Dosovitskiy et al. 2021, Fig. 7): for each
  query token on the grid, the attention-weighted mean Euclidean distance between its centre and
  the centres of the grid tokens it attends to, then averaged over queries and images. Token
  centres are grid positions times the token's size in input pixels, input side / grid side per
  axis (so the distance is exact for patch grids and approximate for PiT's overlapping stride-1
  embedding). Prefix (class, distillation, register) tokens have no position: they are dropped as
  queries, and as keys the row is renormalized over the grid tokens.
- **entropy** of each query's full attention row (prefix keys included), in nats, averaged.
  Uniform attention over N keys has entropy log N; attending to one token has 0.
- **data specificity**: how much the maps differ between images. Per query row, the mean over
  images of the squared Euclidean distance between an image's attention row and the row averaged
  over images; averaged over query rows (and windows), then square-rooted: an RMS distance in
  [0, √2]. 0 means every image gets the same map (a data-agnostic, conv-like filter). Squared
  distances let the statistic stream in one pass: mean‖a_i - ā‖² = mean‖a_i‖² - ‖ā‖².

Windowed attention (Swin, AlterNet) runs on (B * windows, heads, w², w²) maps. The window is read
from the nearest module above `Block.attention` with an integer `window` (vitlens Swin and
AlterNet) or a `window_size` (timm Swin) attribute, and must account for N; without one, an
attention that does not cover the whole grid is taken to use square windows of side √N. Windows
tile the block's grid row-major after zero-padding at the bottom and right (the order vitlens and
timm use, after Swin's cyclic shift); distances are between positions inside a window; padded
positions are dropped as queries and keys. Positions inside a shifted window are measured in the
shifted frame, which is exact because tokens wrapped around the map's edge are masked from the
others.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from vitlens.analysis.geometry import Geometry, place, window_of
from vitlens.analysis.registry import register_analysis
from vitlens.analysis.result import Provenance, Result
from vitlens.analysis.spec import AnalysisSpec, Budget, Figure, streamed
from vitlens.analysis.streaming import (
    Batch,
    evaluating,
    float64_device,
    normalized_depths,
    provenance_for,
    resolve_device,
    stream,
)
from vitlens.anatomy import Block, anatomy_of, tapping, unwrap
from vitlens.anatomy.attention import hook_maps, map_source
from vitlens.errors import VitlensError


@dataclass(frozen=True)
class AttentionResult(Result):
    """Per MSA block and head: mean attention distance, entropy and data specificity.

    Attributes:
        names, stages: the MSA blocks with readable attention, in forward order.
        depths: normalized depth of each block over the model's feature-map blocks.
        heads: number of heads per block.
        grids: (H, W) token grid of each block's stage.
        windows: (h, w) grid positions inside one attention window (the whole grid if global).
        keys: (h, w) grid of the keys each query attends to: the window, or the pooled grid
            of attention over pooled keys (PVT, Twins, MViT); [] in Results saved before.
        prefix: prefix (class) tokens per block (0 for windowed attention).
        pixels_per_token: (rows, columns) input pixels per grid step.
        distance: per block, per head, mean attention distance in input pixels.
        entropy: per block, per head, mean entropy of a query's attention row in nats.
        specificity: per block, per head, RMS distance of an image's attention rows from the
            image-averaged rows (see the module docstring).
        n_images, n_batches: how much data the statistics were streamed over.
        unread: MSA block -> why its maps could not be read (it is then left out).
    """

    analysis: ClassVar[str] = "attention"
    schema: ClassVar[int] = 1

    names: list[str] = field(default_factory=list)
    stages: list[int] = field(default_factory=list)
    depths: list[float] = field(default_factory=list)
    heads: list[int] = field(default_factory=list)
    grids: list[list[int]] = field(default_factory=list)
    windows: list[list[int]] = field(default_factory=list)
    keys: list[list[int]] = field(default_factory=list)
    prefix: list[int] = field(default_factory=list)
    pixels_per_token: list[list[float]] = field(default_factory=list)
    distance: list[list[float]] = field(default_factory=list)
    entropy: list[list[float]] = field(default_factory=list)
    specificity: list[list[float]] = field(default_factory=list)
    n_images: int = 0
    n_batches: int = 0
    unread: dict[str, str] = field(default_factory=dict)


class AttentionAccumulator:
    """Running per-head sums for one block: distance, entropy and the specificity moments."""

    def __init__(self, geometry: Geometry, heads: int, device: torch.device):
        self.geometry = geometry
        self.heads = heads
        self.n_images = 0
        g = geometry
        self.distances = g.distances().float().to(device)  # (G, K): queries x keys
        self.valid = g.valid.to(device)  # (nW, G)
        self.key_valid = g.key_valid.to(device)  # (nW, K)
        n = g.prefix + g.window[0] * g.window[1]
        m = g.prefix + g.key_grid[0] * g.key_grid[1]
        acc = float64_device(device)
        self.distance_sum = torch.zeros(heads, dtype=torch.float64, device=acc)
        self.entropy_sum = torch.zeros(heads, dtype=torch.float64, device=acc)
        self.map_sum = torch.zeros(g.n_windows, heads, n, m, dtype=torch.float64, device=acc)
        self.row_square_sum = torch.zeros(g.n_windows, heads, n, dtype=torch.float64, device=acc)

    def update(self, attn: torch.Tensor) -> None:
        """Add a batch of maps (B * n_windows, heads, N, M), windows of an image consecutive."""
        g, P = self.geometry, self.geometry.prefix
        attn = attn.float()
        B = attn.shape[0] // g.n_windows
        a = attn.reshape(B, g.n_windows, *attn.shape[1:])  # (B, nW, heads, N, M)
        queries = self.valid[None, :, None, :].float()  # (1, nW, 1, G) real grid queries

        # Distance: rows of grid queries over grid keys, renormalized over real grid keys.
        grid = a[..., P:, P:] * self.key_valid[None, :, None, None, :]  # (B, nW, heads, G, K)
        mass = grid.sum(-1)
        dist = (grid * self.distances).sum(-1) / mass.clamp_min(1e-12)  # (B, nW, heads, G)
        self.distance_sum += (
            (dist * queries).sum(dim=(0, 1, 3), dtype=torch.float64).to(self.distance_sum.device)
        )

        # Entropy of each grid query's whole row (0 log 0 = 0).
        ent = -torch.special.xlogy(a[..., P:, :], a[..., P:, :]).sum(-1)  # (B, nW, heads, G)
        self.entropy_sum += (
            (ent * queries).sum(dim=(0, 1, 3), dtype=torch.float64).to(self.entropy_sum.device)
        )

        # Specificity moments: the sum of maps and of each row's squared norm over images.
        self.map_sum += a.sum(0, dtype=torch.float64).to(self.map_sum.device)
        self.row_square_sum += (
            a.square().sum(-1).sum(0, dtype=torch.float64).to(self.row_square_sum.device)
        )
        self.n_images += B

    def finish(self) -> tuple[list[float], list[float], list[float]]:
        """Per-head (distance, entropy, specificity)."""
        g, P = self.geometry, self.geometry.prefix
        valid = g.valid.to(self.map_sum.device)  # (nW, G)
        n_queries = self.n_images * int(valid.sum())
        distance = self.distance_sum / n_queries
        entropy = self.entropy_sum / n_queries
        mean_map = self.map_sum / self.n_images  # (nW, heads, N, M)
        msd = self.row_square_sum / self.n_images - mean_map.square().sum(-1)  # (nW, heads, N)
        msd = msd[..., P:].clamp_min(0) * valid[:, None, :]  # grid queries only
        specificity = (msd.sum(dim=(0, 2)) / int(valid.sum())).sqrt()
        return distance.tolist(), entropy.tolist(), specificity.tolist()


def head_statistics(
    attn: torch.Tensor, geometry: Geometry
) -> tuple[list[float], list[float], list[float]]:
    """Per-head (distance, entropy, specificity) of one batch of attention maps.

    Args:
        attn: (B * n_windows, heads, N, M) attention probabilities.
        geometry: where the tokens sit (`Geometry.global_grid`, `.windowed` or `.reduced`).
    """
    acc = AttentionAccumulator(geometry, attn.shape[1], attn.device)
    acc.update(attn)
    return acc.finish()


class _AttentionReader:
    """Collects each MSA block's attention map as it is produced and reduces it at the block's
    tap, so no batch of maps is held longer than one block."""

    def __init__(self, model: nn.Module, blocks: list[Block]):
        self.windows = {b.name: window_of(unwrap(model), map_source(b)) for b in blocks}
        self.unread: dict[str, str] = {}
        self.accumulators: dict[str, AttentionAccumulator] = {}
        self.grids: dict[str, tuple[int, int]] = {}
        self.pending: dict[str, torch.Tensor] = {}
        self.images: torch.Tensor | None = None  # the batch being run

    def keep(self, block: Block, candidates: list[torch.Tensor]) -> None:
        self.pending[block.name] = candidates

    def hooks(self, blocks: list[Block]) -> list:
        return hook_maps(blocks, self.keep, self.unread)

    def on_tap(self, block: Block, t: torch.Tensor) -> None:
        # The tap (the stream after the block) comes after the attention inside it; the map's
        # grid is what places the attention tokens.
        candidates = self.pending.pop(block.name, None)
        if candidates is None or block.name in self.unread:
            return
        grid = tuple(int(s) for s in block.layout.to_map(t).shape[-2:])
        images = self.images
        try:
            attn, geometry = place(
                block,
                candidates,
                images.shape[0],
                grid,
                images.shape[-2:],
                self.windows[block.name],
            )
        except VitlensError as err:  # left out, and named in the Result
            self.unread[block.name] = str(err)
            return
        if block.name not in self.accumulators:
            self.accumulators[block.name] = AttentionAccumulator(
                geometry, attn.shape[1], attn.device
            )
            self.grids[block.name] = grid
        elif self.grids[block.name] != grid:
            raise VitlensError(f"block {block.name} changed grid size; use images of one size")
        self.accumulators[block.name].update(attn)


def attention_stats(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    max_batches: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    provenance: Provenance | None = None,
) -> AttentionResult:
    """Mean attention distance, entropy and data specificity of every MSA block and head.

    Args:
        model: any model `vitlens.anatomy.describe` knows with readable attention maps; moved
            to `device`, run in eval mode on the explicit-softmax path.
        batches: (images, labels) pairs, e.g. a DataLoader; all images of one size.
        max_batches: use at most this many batches (None: all).
        device: `cpu`, `cuda`, `mps` or `auto`.
        progress: show a progress bar.
        provenance: what to record about the model and data; wall time and device are filled in.

    Raises:
        VitlensError: the model has no MSA block whose attention maps can be read.
    """
    started = time.perf_counter()
    device = resolve_device(device)
    anatomy = anatomy_of(model.to(device))
    blocks = [b for b in anatomy.blocks if b.kind == "msa" and map_source(b) is not None]
    if not blocks:
        raise VitlensError(
            f"{type(unwrap(model)).__name__} has no MSA block whose attention maps vitlens can "
            "read, so there are no attention statistics to compute"
        )
    reader = _AttentionReader(model, blocks)
    data = stream(
        batches, max_batches=max_batches, device=device, progress=progress, description="attention"
    )
    n_images, n_batches = _read_all(model, anatomy, blocks, reader, data)
    if not reader.accumulators and reader.unread:
        raise VitlensError(
            f"no MSA block of {type(unwrap(model)).__name__} gave one attention map: "
            + "; ".join(f"{name}: {why}" for name, why in reader.unread.items())
        )
    provenance = provenance_for(provenance, model, device, started)
    return _result(reader, list(anatomy.blocks), blocks, provenance, n_images, n_batches)


def _read_all(model, anatomy, blocks, reader: _AttentionReader, data) -> tuple[int, int]:
    """Run every batch on the explicit path, the reader collecting each block's maps;
    returns (images, batches) seen."""
    n_images = n_batches = 0
    handles = reader.hooks(blocks)
    try:
        with (
            evaluating(model),
            torch.no_grad(),
            anatomy.explicit(model),
            tapping(blocks, reader.on_tap),
        ):
            for images, _ in data:
                reader.images = images
                anatomy.run(model, images)
                n_images += int(images.shape[0])
                n_batches += 1
    finally:
        for h in handles:
            h.remove()
    return n_images, n_batches


def _result(reader, all_blocks, blocks, provenance, n_images, n_batches) -> AttentionResult:
    depths = normalized_depths(all_blocks)
    acc = reader.accumulators
    done = [b for b in blocks if b.name in acc]
    stats = {b.name: acc[b.name].finish() for b in done}
    geo = {b.name: acc[b.name].geometry for b in done}
    return AttentionResult(
        provenance=provenance,
        names=[b.name for b in done],
        stages=[b.stage for b in done],
        depths=[depths[b.name] for b in done],
        heads=[acc[b.name].heads for b in done],
        grids=[list(reader.grids[b.name]) for b in done],
        windows=[list(geo[b.name].window) for b in done],
        keys=[list(geo[b.name].key_grid) for b in done],
        prefix=[geo[b.name].prefix for b in done],
        pixels_per_token=[list(geo[b.name].pixels) for b in done],
        distance=[stats[b.name][0] for b in done],
        entropy=[stats[b.name][1] for b in done],
        specificity=[stats[b.name][2] for b in done],
        n_images=n_images,
        n_batches=n_batches,
        unread=dict(reader.unread),
    )


# -- spec -----------------------------------------------------------------------------------------


SPEC = register_analysis(
    AnalysisSpec(
        name="attention",
        summary="attention distance, entropy and data specificity per head and block",
        run=streamed(attention_stats),
        function=attention_stats,
        data="test",
        section="features",
        order=50,
        budgets={
            "analyze": Budget(None, 128),
            "quick": Budget(2, 64),
            "standard": Budget(5, 64),
            "paper": Budget(20, 64),
        },
        figures=(
            Figure(
                "attention",
                "vitlens.report.plots.attention:plot_attention",
                "Mean attention distance and entropy per head and block.",
            ),
        ),
        needs=frozenset({"msa"}),
    )
)
