"""The block contract (DESIGN.md §2): what an analysis may know about a model.

A model is a sequence of blocks in forward order. Each block names where the residual stream after
it can be read (the *tap*), which residual branch a lesion zeroes, and how to turn the tapped tensor
into a `B x C x H x W` map (the *layout*).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from vitlens.errors import VitlensError

# A block's kind says what mixes its tokens (the paper compares MSAs with convolutions):
# `msa` self-attention over positions (global, windowed, pooled keys, class attention; a whole
# unit when attention and MLP cannot be split), `channel_msa` attention over channels (XCiT's
# XCA: no spatial map), `token_mlp` an MLP across positions (MLP-Mixer, ResMLP, gMLP), `pool` a
# pooling mixer or subsampling, `conv` convolution, `mlp` a per-token MLP; `block` a unit whose
# mixing is unknown.
KINDS = ("embed", "conv", "msa", "mlp", "pool", "head", "block", "token_mlp", "channel_msa")

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
        mixer: for `msa` blocks without such a module, the module inside which the attention
            is computed; its maps are read by catching the softmax (or SDPA) it runs (None:
            the branch).
    """

    name: str
    kind: str
    stage: int
    tap: nn.Module
    tap_point: Literal["input", "output"]
    branch: nn.Module | None
    layout: Layout
    attention: nn.Module | None = None
    mixer: nn.Module | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"block kind {self.kind!r} is not one of {KINDS}")
        if self.tap_point not in ("input", "output"):
            raise ValueError(f"tap_point must be 'input' or 'output', got {self.tap_point!r}")


@dataclass(frozen=True)
class InputSpec:
    """What is known about a model's input; None where the model does not say."""

    channels: int | None = None
    size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def output_logits(output: Any) -> torch.Tensor:
    """Logits from whatever a forward returns: a tensor, a tuple, a dict or an output object."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    if isinstance(getattr(output, "logits", None), torch.Tensor):
        return output.logits
    raise VitlensError(
        f"cannot find logits in a {type(output).__name__} returned by the model; give its adapter "
        "a `logits` function (vitlens.anatomy.Anatomy)"
    )


def no_switch(model: nn.Module) -> contextlib.AbstractContextManager:
    """For models whose attention is always explicit (or that have none)."""
    return contextlib.nullcontext(model)


def _with_math_sdpa(switch: Callable[[nn.Module], contextlib.AbstractContextManager]):
    @contextlib.contextmanager
    def explicit(model: nn.Module):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with switch(model) as switched, sdpa_kernel(SDPBackend.MATH):
            yield switched

    explicit.math_sdpa = True
    return explicit


@dataclass(frozen=True)
class Anatomy:
    """Everything an analysis may know about a model (DESIGN.md §2, docs/ARCHITECTURE.md).

    Attributes:
        blocks: the blocks in forward order.
        logits: turns the model's output into a (B, classes) logits tensor.
        explicit: `explicit(model)` is a context in which all attention takes the explicit
            softmax path (double backward works; `Block.attention` modules emit maps).
        input: channels, side and normalisation the model expects, where known.
    """

    blocks: tuple[Block, ...]
    logits: Callable[[Any], torch.Tensor] = output_logits
    explicit: Callable[[nn.Module], contextlib.AbstractContextManager] = no_switch
    input: InputSpec = field(default_factory=InputSpec)

    def __post_init__(self):
        # Whatever the adapter switches, fused SDPA kernels (flash, memory-efficient, the CPU
        # flash kernel) have no double backward: inside `explicit` only the math path runs.
        if not getattr(self.explicit, "math_sdpa", False):
            object.__setattr__(self, "explicit", _with_math_sdpa(self.explicit))

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Run `model` on `x` and return its logits."""
        return self.logits(model(x))

    def kinds(self) -> set[str]:
        return {b.kind for b in self.blocks}

    def has(self, kind: str) -> bool:
        return any(b.kind == kind for b in self.blocks)
