"""The block contract (DESIGN.md §2): what an analysis may know about a model.

A model is a sequence of blocks in forward order. Each block names where the residual stream after
it can be read (the *tap*), which residual branch a lesion zeroes, and how to turn the tapped tensor
into a `B x C x H x W` map (the *layout*).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

KINDS = ("embed", "conv", "msa", "mlp", "pool", "head")

LayoutKind = Literal["nchw", "nhwc", "tokens", "vector"]


@dataclass(frozen=True)
class Layout:
    """How a tapped tensor becomes a `B x C x H x W` map.

    - `nchw`: already (B, C, H, W).
    - `nhwc`: (B, H, W, C), as in Swin.
    - `tokens`: (B, prefix + H*W, C); the `prefix` (CLS) tokens are dropped and the rest is laid
      out row-major on an H x W grid. `grid=None` means a square grid.
    - `vector`: (B, C) such as logits; read as (B, C, 1, 1).
    """

    kind: LayoutKind
    prefix: int = 0
    grid: tuple[int, int] | None = None

    def to_map(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "nchw":
            return x
        if self.kind == "nhwc":
            return x.permute(0, 3, 1, 2)
        if self.kind == "vector":
            return x.reshape(x.shape[0], -1, 1, 1)
        B, N, C = x.shape
        n_grid = N - self.prefix
        if self.grid is not None:
            H, W = self.grid
        else:
            H = W = math.isqrt(n_grid)
        if n_grid != H * W:
            raise ValueError(f"{n_grid} tokens do not fill a {H}x{W} grid")
        # (B, prefix + H*W, C) -> (B, C, H, W)
        return x[:, self.prefix :].transpose(1, 2).reshape(B, C, H, W)


NCHW = Layout("nchw")
NHWC = Layout("nhwc")
VECTOR = Layout("vector")


def tokens(prefix: int = 0, grid: tuple[int, int] | None = None) -> Layout:
    return Layout("tokens", prefix=prefix, grid=grid)


@dataclass(frozen=True)
class Block:
    """One block of a model, as analyses see it.

    Attributes:
        name: stable and readable, e.g. `stage2.block3.msa`.
        kind: one of `KINDS`.
        stage: index of the resolution stage.
        tap: the module whose input or output is the residual stream after this block.
        tap_point: `"output"` or `"input"` of `tap`.
        branch: the residual-branch module whose output a lesion zeroes (None: no skip).
        layout: how the tapped tensor becomes a `B x C x H x W` map.
        attention: for `msa` blocks, the module whose output is the (B, heads, N, N) attention
            probabilities under `explicit_attention` (None where maps cannot be read).
    """

    name: str
    kind: str
    stage: int
    tap: nn.Module
    tap_point: Literal["input", "output"]
    branch: nn.Module | None
    layout: Layout
    attention: nn.Module | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"block kind {self.kind!r} is not one of {KINDS}")
        if self.tap_point not in ("input", "output"):
            raise ValueError(f"tap_point must be 'input' or 'output', got {self.tap_point!r}")
