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
        tap_index: where `tap`'s input or output is a tuple, the position of the residual stream
            in it (TNT's blocks take and return (pixel tokens, patch tokens): the stream is the
            second).
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
    tap_index: int = 0

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
    fixed_size: bool = False  # other sizes are refused (a vitlens model runs at its own size)


def _expected(spec: InputSpec) -> str:
    parts = [
        f"{spec.channels} channels" if spec.channels else "",
        f"{spec.size} px" if spec.size else "",
    ]
    said = " at ".join(p for p in parts if p)
    return f" (it expects {said})" if said else ""


def check_images(x: Any, spec: InputSpec | None = None, *, image: bool = True) -> None:
    """Refuse a batch no analysis can use: not a tensor, holding NaN or infinity, and for an
    image model (`image`) not (B, C, H, W), not floating point, empty, or with other channels
    (or, for a model of fixed size, another size) than the model declares."""
    if not isinstance(x, torch.Tensor):
        raise VitlensError(
            f"images must be a torch.Tensor of shape (B, C, H, W), not {type(x).__name__}"
        )
    if not image:  # a model vitlens knows nothing of (the Hessian of a toy): only finiteness
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise VitlensError("inputs hold NaN or infinite values; analyses need finite inputs")
        return
    if x.ndim != 4 or x.numel() == 0:
        raise VitlensError(
            f"images must be a non-empty (B, C, H, W) batch, got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise VitlensError(f"images must be floating point (normalised), got {x.dtype}")
    if spec is not None and spec.channels and x.shape[1] != spec.channels:
        raise VitlensError(
            f"images have {x.shape[1]} channels, the model takes {spec.channels}: "
            f"shape {tuple(x.shape)}"
        )
    if (
        spec is not None
        and spec.fixed_size
        and spec.size
        and tuple(x.shape[-2:]) != (spec.size,) * 2
    ):
        raise VitlensError(
            f"images are {x.shape[-2]}x{x.shape[-1]} px, the model is built for "
            f"{spec.size}x{spec.size}: shape {tuple(x.shape)}"
        )
    if not bool(torch.isfinite(x).all()):
        raise VitlensError("images hold NaN or infinite values; analyses need finite inputs")


def check_targets(logits: torch.Tensor, targets: torch.Tensor) -> None:
    """Refuse labels that do not match the logits: class indices outside [0, classes), a count
    other than the batch's, or soft targets of another width."""
    if targets.shape[0] != logits.shape[0]:
        raise VitlensError(f"{targets.shape[0]} labels for a batch of {logits.shape[0]} images")
    classes = logits.shape[-1]
    if targets.is_floating_point() and targets.ndim == 2:
        if targets.shape[1] != classes:
            raise VitlensError(f"soft labels of width {targets.shape[1]} for {classes} classes")
        return
    if targets.ndim != 1 or targets.is_floating_point():
        raise VitlensError(
            "labels must be class indices of shape (B,), "
            f"got {targets.dtype} of shape {tuple(targets.shape)}"
        )
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= classes):
        raise VitlensError(
            f"labels run from {int(targets.min())} to {int(targets.max())}; "
            f"the model has {classes} classes (0 to {classes - 1})"
        )


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
        """Run `model` on `x` and return its logits (checked as `run` checks)."""
        return self.logits(self.run(model, x))

    def run(self, model: nn.Module, x: torch.Tensor) -> Any:
        """Run `model` on `x` and return its raw output; a batch the model cannot take (see
        `check_images`, or a forward that fails on its shape) is a VitlensError."""
        check_images(x, self.input, image=bool(self.blocks) or self.input != InputSpec())
        try:
            return model(x)
        except (RuntimeError, ValueError, IndexError) as err:
            if isinstance(err, torch.OutOfMemoryError):
                raise
            raise VitlensError(
                f"the model cannot run on images of shape {tuple(x.shape)}"
                f"{_expected(self.input)}: {err}"
            ) from err

    def kinds(self) -> set[str]:
        return {b.kind for b in self.blocks}

    def has(self, kind: str) -> bool:
        return any(b.kind == kind for b in self.blocks)
