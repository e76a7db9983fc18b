"""Attention maps of one image, per block and head, and attention rollout (issue 18).

What a person asks first about their ViT: which patches does a head attend to? For each image, each
MSA block whose attention can be read (`Block.attention` on the explicit path) and each head:

- **the query map**: the attention of the classification token over the patch grid; for a model
  without one (Swin, a GAP ViT), the attention of every grid query averaged (`queries` says which,
  per block). Windowed attention (Swin, AlterNet) is stitched back onto the image grid: each
  window's rows are placed at their tokens' positions, shifted windows un-rolled (a token at
  position p of the shifted frame sits at (p + shift) mod H of the image), padding dropped.
  Blocks of pooled stages (PiT) keep their own grid.
- **attention rollout** (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers"):
  heads fused by their mean, max or min, the identity added for the residual path, rows
  renormalised, and the layers multiplied, last on the left: R = Â_L ... Â_1. The CLS row of R
  (or the mean grid row) over the grid is the map.
- **gradient-weighted rollout** for a class (Chefer, Gur & Wolf 2021, "Generic Attention-model
  Explainability", eq. 5-6): R = I, then per block R += E_h[(∇A ⊙ A)+] R, where ∇A is the gradient
  of the class's logit with respect to the block's attention; the predicted class unless one is
  named.

Rollout needs every MSA block to attend over one token set (a plain ViT); for other models
`rollout_note` says why it is absent. Blocks whose maps cannot be read or placed are listed in
`unread` with the reason, never silently dropped.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from torch import nn

from vitlens.analysis.geometry import Geometry, place, window_of
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
from vitlens.anatomy import Block, anatomy_of, tapping, unwrap
from vitlens.anatomy.attention import hook_maps, map_source
from vitlens.errors import VitlensError

HeadFusion = Literal["mean", "max", "min"]


@dataclass(frozen=True)
class AttentionMapsResult(Result):
    """Per image: each MSA block's per-head query map on its grid, and the rollouts.

    Attributes:
        names, stages, depths, heads: the MSA blocks whose maps were read, in forward order.
        grids: (H, W) of each block's map: its token grid, or for attention over pooled keys
            (PVT, Twins, MViT) the keys' grid; windows: (h, w) of its attention windows (the
            map's grid itself for global and pooled-key attention); shifts: its cyclic shift
            (0, 0 when not shifted).
        queries: per block, "cls" (the class token's row) or "mean" (every grid query's row
            averaged, for blocks without a class token).
        maps: image -> block -> head -> H * W attention, row-major on the block's grid.
        labels, predicted: per image, the label given (-1: none) and the model's prediction.
        explained: per image, the class the gradient rollout explains.
        head_fusion: how rollout fused the heads ("mean", "max" or "min").
        rollout, gradient_rollout: image -> H * W on the first MSA block's grid ([] when absent).
        rollout_note: how the rollout was read, or why it is absent.
        unread: MSA block -> why its maps could not be read or placed.
        n_images, n_batches: the data.
    """

    analysis: ClassVar[str] = "attention_maps"
    schema: ClassVar[int] = 1
    block_axes: ClassVar[dict[str, int | None]] = {
        "maps": 1,  # image -> block -> head -> ...
        **dict.fromkeys(("labels", "predicted", "explained", "rollout", "gradient_rollout")),
    }

    names: list[str] = field(default_factory=list)
    stages: list[int] = field(default_factory=list)
    depths: list[float] = field(default_factory=list)
    heads: list[int] = field(default_factory=list)
    grids: list[list[int]] = field(default_factory=list)
    windows: list[list[int]] = field(default_factory=list)
    shifts: list[list[int]] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    maps: list[list[list[list[float]]]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    predicted: list[int] = field(default_factory=list)
    explained: list[int] = field(default_factory=list)
    head_fusion: str = "mean"
    rollout: list[list[float]] = field(default_factory=list)
    gradient_rollout: list[list[float]] = field(default_factory=list)
    rollout_note: str = ""
    unread: dict[str, str] = field(default_factory=dict)
    n_images: int = 0
    n_batches: int = 0


# -- pure operations on attention tensors ---------------------------------------------------------


def fuse_heads(attn: torch.Tensor, how: HeadFusion = "mean") -> torch.Tensor:
    """(B, heads, N, N) -> (B, N, N) by the heads' mean, max or min."""
    if how == "mean":
        return attn.mean(1)
    if how == "max":
        return attn.amax(1)
    if how == "min":
        return attn.amin(1)
    raise VitlensError(f"head_fusion must be 'mean', 'max' or 'min', got {how!r}")


def attention_rollout(attns: list[torch.Tensor], head_fusion: HeadFusion = "mean") -> torch.Tensor:
    """Abnar & Zuidema's rollout of (B, heads, N, N) maps in forward order: (B, N, N)."""
    B, _, N, _ = attns[0].shape
    eye = torch.eye(N, dtype=torch.float64, device=attns[0].device).expand(B, N, N)
    rollout = eye
    for attn in attns:
        a = fuse_heads(attn.double(), head_fusion) + eye  # the residual path
        a = a / a.sum(-1, keepdim=True)
        rollout = a @ rollout  # the later layer on the left
    return rollout


def gradient_rollout(attns: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.Tensor:
    """Chefer et al.'s relevance: R = I; R += mean_h((∇A ⊙ A)+) R per block. (B, N, N)."""
    B, _, N, _ = attns[0].shape
    relevance = torch.eye(N, dtype=torch.float64, device=attns[0].device).repeat(B, 1, 1)
    for attn, grad in zip(attns, grads, strict=True):
        weighted = (grad.double() * attn.double()).clamp_min(0).mean(1)  # (B, N, N)
        relevance = relevance + weighted @ relevance
    return relevance


def stitch_windows(
    attn: torch.Tensor, grid: tuple[int, int], window: tuple[int, int], shift=(0, 0)
) -> torch.Tensor:
    """(B * nW, heads, w², w²) window attention -> (B, heads, H*W, H*W) on the image grid.

    Windows tile the grid zero-padded at the bottom and right, row-major, in the frame rolled by
    -shift (vitlens's and timm's order); a token at (r, c) of that frame is at ((r + shift) mod
    H, (c + shift) mod W) of the image. Padding positions are dropped.
    """
    (H, W), (wh, ww) = grid, window
    nh, nw = -(-H // wh), -(-W // ww)
    B, heads = attn.shape[0] // (nh * nw), attn.shape[1]
    rows = torch.arange(nh * wh).view(nh, wh, 1, 1).expand(nh, wh, nw, ww)
    cols = torch.arange(nw * ww).view(1, 1, nw, ww).expand(nh, wh, nw, ww)
    # (nh, wh, nw, ww) -> (nW, wh*ww): the frame's row and column of each window position
    rows = rows.permute(0, 2, 1, 3).reshape(nh * nw, wh * ww)
    cols = cols.permute(0, 2, 1, 3).reshape(nh * nw, wh * ww)
    valid = (rows < H) & (cols < W)
    position = ((rows + shift[0]) % H) * W + (cols + shift[1]) % W
    a = attn.reshape(B, nh * nw, heads, wh * ww, wh * ww)
    out = attn.new_zeros(B, heads, H * W, H * W)
    for w in range(nh * nw):
        keep = valid[w].nonzero().squeeze(1)
        where = position[w, keep]
        block = a[:, w][:, :, keep][:, :, :, keep]  # (B, heads, n, n)
        out[:, :, where[:, None], where[None, :]] = block
    return out


def query_maps(full: torch.Tensor, prefix: int) -> tuple[torch.Tensor, str]:
    """(B, heads, P + G, P + G) attention -> ((B, heads, G) map over the grid keys, which query):
    the class token's row when there is one, else every grid query's row averaged."""
    if prefix > 0:
        return full[:, :, 0, prefix:], "cls"
    return full[:, :, prefix:, prefix:].mean(2), "mean"


def rollout_map(rollout: torch.Tensor, prefix: int) -> torch.Tensor:
    """(B, N, N) rollout -> (B, G): the class token's row, or the mean grid row, over grid keys."""
    if prefix > 0:
        return rollout[:, 0, prefix:]
    return rollout[:, prefix:, prefix:].mean(1)


# -- reading the maps from a model ----------------------------------------------------------------


@dataclass
class BlockMaps:
    """One MSA block's attention for a batch, on the image grid."""

    block: Block
    attn: torch.Tensor  # as the module emitted it: (B * nW, heads, N, N)
    grid: tuple[int, int]
    geometry: Geometry
    shift: tuple[int, int]

    def full(self) -> torch.Tensor:
        """(B, heads, P + H*W, P + K): global maps and maps over pooled keys as they are
        (K = h*w pooled keys), windows stitched (K = H*W)."""
        g = self.geometry
        whole = g.n_windows == 1 and g.window == self.grid and self.shift == (0, 0)
        if g.keys is not None or whole:
            return self.attn
        return stitch_windows(self.attn, self.grid, g.window, self.shift)

    @property
    def prefix(self) -> int:
        return self.geometry.prefix


@dataclass
class Capture:
    """What one forward pass on the explicit path showed: maps per block, logits, and the MSA
    blocks whose maps could not be read (with why)."""

    blocks: list[BlockMaps]
    logits: torch.Tensor
    unread: dict[str, str]


def shift_of(model: nn.Module, module: nn.Module) -> tuple[int, int]:
    """The cyclic shift declared at or above `module` (`shift`, `shift_size`); (0, 0) if none."""
    parents = {id(c): m for m in model.modules() for c in m.children()}
    while module is not None:
        for attr in ("shift", "shift_size"):
            value = getattr(module, attr, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value, value
            if isinstance(value, tuple | list) and len(value) == 2:
                return int(value[0]), int(value[1])
        module = parents.get(id(module))
    return 0, 0


class _MapReader:
    """Collects each MSA block's attention as it is produced and places it on the block's grid
    when the block's tap (the stream after it) shows that grid."""

    def __init__(self, model: nn.Module, images: torch.Tensor, keep_graph: bool):
        self.model, self.images, self.keep_graph = unwrap(model), images, keep_graph
        self.pending: dict[str, torch.Tensor] = {}
        self.found: list[BlockMaps] = []
        self.unread: dict[str, str] = {}

    def keep(self, block: Block, candidates: list[torch.Tensor]) -> None:
        for attn in candidates:
            if self.keep_graph and attn.requires_grad:
                attn.retain_grad()
        self.pending[block.name] = candidates

    def on_tap(self, block: Block, t: torch.Tensor) -> None:
        candidates = self.pending.pop(block.name, None)
        if candidates is None:
            self.unread.setdefault(block.name, "its attention module emitted no map on this input")
            return
        grid = tuple(int(s) for s in block.layout.to_map(t).shape[-2:])
        source = map_source(block)
        images = self.images
        try:
            attn, geometry = place(
                block,
                candidates,
                images.shape[0],
                grid,
                images.shape[-2:],
                window_of(self.model, source),
            )
        except VitlensError as err:
            self.unread[block.name] = str(err)
            return
        shift = shift_of(self.model, source) if geometry.n_windows > 1 else (0, 0)
        self.found.append(BlockMaps(block, attn, grid, geometry, shift))

    def hooks(self, blocks: list[Block]) -> list:
        return hook_maps(blocks, self.keep, self.unread)


def capture_attention(model: nn.Module, images: torch.Tensor, *, keep_graph: bool = False):
    """Run `model` once on the explicit path and read every MSA block's attention.

    With `keep_graph`, the maps stay in the autograd graph with their gradients retained, so a
    backward pass from the logits fills `BlockMaps.attn.grad` (gradient rollout).
    """
    anatomy = anatomy_of(model)
    msa = [b for b in anatomy.blocks if b.kind == "msa"]
    reader = _MapReader(model, images, keep_graph)
    for b in msa:
        if b.attention is None and b.mixer is None and b.branch is None:
            reader.unread[b.name] = "no attention module, and no branch to read a softmax in"
    readable = [b for b in msa if map_source(b) is not None]
    handles = reader.hooks(readable)
    try:
        with anatomy.explicit(model), tapping(readable, reader.on_tap):
            logits = anatomy.forward(model, images)
    finally:
        for h in handles:
            h.remove()
    return Capture(reader.found, logits, reader.unread)


def _rollout_note(blocks: list[BlockMaps]) -> str:
    """Why rollout cannot be computed for these blocks ('' when it can)."""
    if not blocks:
        return "no MSA block's attention could be read"
    sizes = {(tuple(b.attn.shape[-2:]), b.geometry.n_windows, b.grid) for b in blocks}
    if len(sizes) > 1 or any(b.geometry.n_windows > 1 or b.geometry.keys for b in blocks):
        return (
            "rollout multiplies the attention of every MSA block over one set of tokens; this "
            "model's MSA blocks attend over different token sets (windows, pooled keys or "
            "pooled stages), so only the per-block maps are shown"
        )
    return ""


# -- the analysis ---------------------------------------------------------------------------------


@dataclass
class _Collected:
    """Per-image rows gathered over batches."""

    maps: list = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    predicted: list[int] = field(default_factory=list)
    explained: list[int] = field(default_factory=list)
    rollout: list = field(default_factory=list)
    gradient: list = field(default_factory=list)
    gradient_note: str = ""


def _explained_classes(logits: torch.Tensor, class_index: int | None) -> torch.Tensor:
    classes = logits.shape[-1]
    if class_index is None:
        return logits.argmax(-1)
    if not 0 <= class_index < classes:
        raise VitlensError(
            f"class {class_index} is outside the model's {classes} classes (0 to {classes - 1})"
        )
    return torch.full((logits.shape[0],), class_index, device=logits.device)


def _one_batch(model, images, labels, class_index, head_fusion, out: _Collected) -> Capture:
    """Maps and rollouts of one batch, appended to `out`; returns the capture (for its blocks)."""
    with torch.enable_grad():
        images = images.clone().requires_grad_(True)  # a graph even for frozen weights
        capture = capture_attention(model, images, keep_graph=True)
        target = _explained_classes(capture.logits, class_index)
        note = _rollout_note(capture.blocks)
        if not note:
            capture.logits.gather(1, target[:, None]).sum().backward()
    per_block = []
    for b in capture.blocks:
        maps, _ = query_maps(b.full().detach(), b.prefix)  # (B, heads, G)
        per_block.append(maps.float())
    for i in range(images.shape[0]):
        out.maps.append([m[i].tolist() for m in per_block])
    out.labels += labels.tolist() if labels is not None else [-1] * images.shape[0]
    out.predicted += capture.logits.argmax(-1).tolist()
    out.explained += target.tolist()
    if not note:
        attns = [b.attn.detach() for b in capture.blocks]
        grads = [b.attn.grad for b in capture.blocks]
        prefix = capture.blocks[0].prefix
        out.rollout += rollout_map(attention_rollout(attns, head_fusion), prefix).float().tolist()
        if all(g is not None for g in grads):
            relevance = rollout_map(gradient_rollout(attns, grads), prefix)
            out.gradient += relevance.float().tolist()
        else:  # e.g. nn.MultiheadAttention returns a view of its weights off the output's path
            out.gradient_note = (
                "no gradient rollout: the attention maps this model emits are not on the path "
                "from its input to its logits, so they have no gradient"
            )
    model.zero_grad(set_to_none=True)
    return capture


def attention_maps_of(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    head_fusion: HeadFusion = "mean",
    class_index: int | None = None,
    max_batches: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    provenance: Provenance | None = None,
) -> AttentionMapsResult:
    """Per image, block and head: the attention map; and the attention and gradient rollouts.

    Args:
        model: any model `vitlens.anatomy.describe` knows; its attention is switched to the
            explicit path by its Anatomy. Moved to `device`, run in eval mode.
        batches: (images, labels) pairs, normalised as the model expects; keep them few.
        head_fusion: how rollout fuses the heads: "mean", "max" or "min".
        class_index: the class the gradient rollout explains (default: each image's prediction).
        max_batches: use at most this many batches (None: all).
        device: `cpu`, `cuda`, `mps` or `auto`.
        progress: show a progress bar.
        provenance: what to record; wall time and device are filled in.

    Raises:
        VitlensError: the model has no MSA block or none whose maps can be read (each named
            with why), a class outside the model's classes, or a bad head fusion.
    """
    started = time.perf_counter()
    fuse_heads(torch.zeros(1, 1, 1, 1), head_fusion)  # refuse a bad fusion before any work
    device = resolve_device(device)
    anatomy = anatomy_of(model.to(device))
    if not anatomy.has("msa"):
        raise VitlensError(
            f"{type(unwrap(model)).__name__} has no MSA block: there is no attention to map "
            "(the embeddings and tokens views still apply where it has tokens)"
        )
    out, capture, n_batches = _Collected(), None, 0
    with evaluating(model):
        for images, labels in stream(
            batches,
            max_batches=max_batches,
            device=device,
            progress=progress,
            description="attention maps",
        ):
            capture = _one_batch(model, images, labels, class_index, head_fusion, out)
            n_batches += 1
    if capture is None:
        raise VitlensError("no images to map: the data yielded no batch")
    if not capture.blocks:  # every MSA block unread: nothing to show, say why for each
        raise VitlensError(
            f"no MSA block of {type(unwrap(model)).__name__} gave one attention map: "
            + "; ".join(f"{name}: {why}" for name, why in capture.unread.items())
        )
    provenance = provenance_for(provenance, model, device, started)
    return _result(anatomy.blocks, capture, out, head_fusion, n_batches, provenance)


def _result(all_blocks, capture: Capture, out: _Collected, fusion, n_batches, provenance):
    depths = normalized_depths(list(all_blocks))
    blocks = capture.blocks
    note = _rollout_note(blocks)
    if not note:
        how = "the class token's row" if blocks[0].prefix else "the mean of the grid rows"
        note = f"rollout over {len(blocks)} MSA blocks, heads fused by their {fusion}; {how}"
        note += f"; {out.gradient_note}" if out.gradient_note else ""
    return AttentionMapsResult(
        provenance=provenance,
        names=[b.block.name for b in blocks],
        stages=[b.block.stage for b in blocks],
        depths=[depths[b.block.name] for b in blocks],
        heads=[int(b.attn.shape[1]) for b in blocks],
        grids=[list(b.geometry.keys or b.grid) for b in blocks],
        windows=[list(b.geometry.key_grid) for b in blocks],
        shifts=[list(b.shift) for b in blocks],
        queries=["cls" if b.prefix else "mean" for b in blocks],
        maps=out.maps,
        labels=out.labels,
        predicted=out.predicted,
        explained=out.explained,
        head_fusion=fusion,
        rollout=out.rollout,
        gradient_rollout=out.gradient,
        rollout_note=note,
        unread=dict(capture.unread),
        n_images=len(out.maps),
        n_batches=n_batches,
    )


# One small batch of fixed test images: these are per-image views, not statistics.
SPEC = register_analysis(
    AnalysisSpec(
        name="attention_maps",
        summary="attention maps per image, block and head, attention and gradient rollout",
        run=streamed(attention_maps_of),
        function=attention_maps_of,
        data="test",
        section="inside",
        order=10,
        budgets=VIEW_BUDGETS,
        options=(
            Option(
                "head_fusion",
                "mean",
                "how rollout fuses heads: mean, max or min",
                kind="choice",
                choices=("mean", "max", "min"),
            ),
            Option(
                "class_index",
                None,
                "the class gradient rollout explains (default: predicted)",
                kind="int",
                minimum=0,
                optional=True,
            ),
        ),
        figures=(
            Figure(
                "attention_maps",
                "vitlens.report.plots.attention_maps:plot_attention_maps",
                "Where the class token attends (head-averaged) in each MSA block, then the "
                "attention rollout (Abnar & Zuidema 2020) and the gradient rollout for the "
                "predicted class (Chefer et al. 2021), for a few test images.",
            ),
        ),
        needs=frozenset({"msa"}),
    )
)
