"""What a ViT's embeddings learned: position similarity and patch-filter components (issue 18).

Dosovitskiy et al. (ICLR 2021), Fig. 7 left and centre:

- **position embeddings**: the cosine similarity between the embeddings of every two grid
  positions; tiled on the patch grid, each position's map shows whether the model learned the
  image's 2-D layout (high similarity to its own row and column, falling with distance). Learned
  1-D (`pos_embed`, `position_embeddings`, `pos_embedding`) and 2-D map-shaped (PiT) embeddings and
  fixed sinusoidal buffers are read alike; prefix (class, register) positions are dropped.
- **relative position bias** (Swin, AlterNet): each block's table, per head, laid out on its
  (2w - 1) x (2w - 1) grid of offsets.
- **embedding filters**: the principal components of the first convolution's filters (the patch
  embedding of a ViT, the stem of a CNN): the filters flattened to rows, centred over filters, and
  the top right-singular vectors of that matrix, with the share of variance each explains. A
  component's sign is fixed so that its largest entry is positive.

A model without one of these parts gets the others, and `missing` says what it lacks; a model
with none of them is refused with a clear error.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from vitlens.analysis.registry import register_analysis
from vitlens.analysis.result import Provenance, Result
from vitlens.analysis.spec import AnalysisSpec, Budget, Figure, Option, streamed
from vitlens.analysis.streaming import Batch, evaluating, provenance_for, resolve_device, stream
from vitlens.anatomy import anatomy_of, tapping, unwrap
from vitlens.errors import VitlensError

POSITION_NAMES = re.compile(
    r"(^|\.)(pos_embed|pos_embedding|position_embeddings|absolute_pos_embed)$"
)
BIAS_NAMES = re.compile(r"(relative_position_bias_table|rel_pos_bias)$")


@dataclass(frozen=True)
class EmbeddingsResult(Result):
    """Position-embedding similarity, relative-position bias tables and filter components.

    Attributes:
        position_parameter: the parameter or buffer read ("" when the model has none).
        position_kind: "learned" (a parameter), "fixed" (a buffer, e.g. sinusoidal) or "none".
        position_grid: (H, W) of the positions compared.
        position_similarity: (H*W) x (H*W) cosine similarities, row-major positions.
        relative_bias: block parameter -> {"side": 2w - 1, "tables": heads x side² values}.
        filter_parameter: the convolution whose filters were decomposed.
        filter_shape: (channels, height, width) of one filter.
        components: the top principal components, each channels * height * width values.
        explained_variance: the share of the filters' variance each component explains.
        missing: what the model lacks, one sentence per part.
    """

    analysis: ClassVar[str] = "embeddings"
    schema: ClassVar[int] = 1

    position_parameter: str = ""
    position_kind: str = "none"
    position_grid: list[int] = field(default_factory=list)
    position_similarity: list[list[float]] = field(default_factory=list)
    relative_bias: dict[str, dict] = field(default_factory=dict)
    filter_parameter: str = ""
    filter_shape: list[int] = field(default_factory=list)
    components: list[list[float]] = field(default_factory=list)
    explained_variance: list[float] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def position_similarity(positions: torch.Tensor) -> torch.Tensor:
    """(G, D) embeddings -> (G, G) cosine similarities."""
    unit = positions.double() / positions.double().norm(dim=1, keepdim=True).clamp_min(1e-30)
    return unit @ unit.T


def filter_components(weight: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(D, C, h, w) filters -> (top-k components (k, C*h*w), explained variance shares (k,)).

    PCA of the filters as rows: centred over the D filters, then an SVD; each component's sign
    is fixed so its largest-magnitude entry is positive.
    """
    rows = weight.detach().double().flatten(1)
    rows = rows - rows.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(rows, full_matrices=False)
    k = min(k, vh.shape[0])
    comps = vh[:k]
    signs = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
    shares = s.square() / s.square().sum().clamp_min(1e-300)
    return comps * signs, shares[:k]


def grid_positions(table: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, tuple]:
    """A position embedding in any stored layout -> ((G, D) grid positions, their (H, W)).

    (1, N, D) or (N, D) token tables drop their leading prefix positions: N - H*W of them when
    the model's grid fits, else the fewest that leave a square grid; (1, D, H, W) maps are
    flattened row-major.

    Raises:
        VitlensError: the table fits no grid.
    """
    t = table.detach()
    if t.ndim == 4:  # (1, D, H, W) -> (H*W, D)
        return t[0].flatten(1).T, (int(t.shape[-2]), int(t.shape[-1]))
    t = t.reshape(-1, t.shape[-1])
    n = t.shape[0]
    H, W = grid
    if H * W <= n <= H * W + 8:
        return t[n - H * W :], (H, W)
    for prefix in range(0, 9):
        side = math.isqrt(n - prefix) if n > prefix else 0
        if side * side == n - prefix and side > 0:
            return t[prefix:], (side, side)
    raise VitlensError(f"a position table of {n} positions fits no {H}x{W} or square grid")


def _model_grid(model: nn.Module, batches, device) -> tuple[int, int] | None:
    """The token grid of the first embed/feature block, from one image (None: no token grid)."""
    anatomy = anatomy_of(model)
    first = next((b for b in anatomy.blocks if b.layout.kind in ("tokens", "nhwc")), None)
    if first is None:
        return None
    seen: list[tuple[int, int]] = []

    def on_tap(block, t):
        if not seen:
            seen.append(tuple(int(s) for s in block.layout.to_map(t).shape[-2:]))

    for images, _ in stream(batches, max_batches=1, device=device):
        with torch.no_grad(), tapping([first], on_tap):
            anatomy.forward(model, images[:1])
    return seen[0] if seen else None


def _position_table(model: nn.Module) -> tuple[str, torch.Tensor, str] | None:
    """(name, tensor, kind) of the model's absolute position embedding, if it has one."""
    for name, p in model.named_parameters():
        if POSITION_NAMES.search(name) and p.ndim >= 2:
            return name, p, "learned"
    for name, b in model.named_buffers():
        if POSITION_NAMES.search(name) and b is not None and b.ndim >= 2:
            return name, b, "fixed"
    return None


def _bias_tables(model: nn.Module) -> dict[str, dict]:
    """Every relative-position bias table: ((2w-1)², heads) or ((2w-1)²,) on its offset grid."""
    tables = {}
    for name, p in model.named_parameters():
        if not BIAS_NAMES.search(name):
            continue
        t = p.detach().double().reshape(p.shape[0], -1)  # (side², heads)
        side = math.isqrt(t.shape[0])
        if side * side == t.shape[0] and side % 2 == 1:
            tables[name] = {"side": side, "tables": t.T.tolist()}
    return tables


def _first_conv(model: nn.Module, channels: int | None) -> tuple[str, nn.Conv2d] | None:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and (channels is None or m.in_channels == channels):
            return name, m
    return None


def embeddings(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    components: int = 16,
    max_batches: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    provenance: Provenance | None = None,
) -> EmbeddingsResult:
    """Position-embedding similarity, relative-position bias and embedding-filter components.

    Args:
        model: any model vitlens can describe; only its weights and one image's token grid are
            read.
        batches: (images, labels) pairs; the first image finds the model's token grid.
        components: how many principal components of the embedding filters to keep.
        max_batches, progress: accepted for a uniform interface; one image is read.
        device: `cpu`, `cuda`, `mps` or `auto`.
        provenance: what to record; wall time and device are filled in.

    Raises:
        VitlensError: the model has no position embedding, bias table or convolution.
    """
    started = time.perf_counter()
    if components < 1:
        raise VitlensError(f"components must be at least 1, got {components}")
    device = resolve_device(device)
    with evaluating(model.to(device)):
        grid = _model_grid(model, batches, device)
    inner = unwrap(model)
    fields, missing = {}, []
    found = _position_table(inner)
    if found is None or grid is None:
        missing.append("no absolute position embedding (none found by name, or no token grid)")
    else:
        name, table, kind = found
        positions, pos_grid = grid_positions(table, grid)
        fields.update(position_parameter=name, position_kind=kind, position_grid=list(pos_grid))
        fields["position_similarity"] = position_similarity(positions).float().tolist()
    fields["relative_bias"] = _bias_tables(inner)
    if not fields["relative_bias"]:
        missing.append("no relative-position bias table")
    conv = _first_conv(inner, anatomy_of(model).input.channels)
    if conv is None:
        missing.append("no convolution to read embedding filters from")
    else:
        comps, shares = filter_components(conv[1].weight, components)
        fields.update(filter_parameter=f"{conv[0]}.weight", components=comps.float().tolist())
        fields.update(filter_shape=list(conv[1].weight.shape[1:]))
        fields["explained_variance"] = shares.tolist()
    if len(missing) == 3:
        raise VitlensError(
            f"{type(inner).__name__} has no embeddings to show: " + "; ".join(missing)
        )
    return EmbeddingsResult(
        provenance=provenance_for(provenance, model, device, started), missing=missing, **fields
    )


SPEC = register_analysis(
    AnalysisSpec(
        name="embeddings",
        summary="position-embedding similarity, relative-position bias, embedding filters' PCs",
        run=streamed(embeddings),
        function=embeddings,
        data="test",
        section="inside",
        order=20,
        budgets={p: Budget(1, 1) for p in ("analyze", "quick", "standard", "paper")},
        needs=frozenset({"msa"}),  # a study shows embeddings for its transformers
        options=(
            Option(
                "components",
                16,
                "principal components of the embedding filters",
                kind="int",
                minimum=1,
                maximum=4096,
            ),
        ),
        figures=(
            Figure(
                "embeddings",
                "vitlens.report.plots.embeddings:plot_embeddings",
                "What the embeddings learned (ViT paper Fig. 7): each grid position's cosine "
                "similarity to every other position, tiled on the patch grid; the embedding "
                "filters' top principal components.",
            ),
        ),
    )
)
