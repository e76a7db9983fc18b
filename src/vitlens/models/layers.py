"""Parts shared by the model families: attention, MLP, stochastic depth, windows, position codes.

Attention runs through `F.scaled_dot_product_attention` for speed. Every `Attention` also has an
explicit-softmax path (the `explicit` flag) whose probabilities flow through the `attn_map`
identity module: the anatomy context manager (`vitlens.anatomy.explicit_attention`) turns it on
when an analysis needs second derivatives or wants to read attention maps; nothing else sets it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def drop_path_rates(rate: float, n_blocks: int) -> list[float]:
    """Stochastic-depth probabilities rising linearly from 0 (first block) to `rate` (last)."""
    if n_blocks <= 1:
        return [rate] * n_blocks
    return [rate * i / (n_blocks - 1) for i in range(n_blocks)]


class DropPath(nn.Module):
    """Drops a residual branch per sample with probability `p` in training (Huang et al. 2016)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """Linear -> GELU -> Linear, the feed-forward half of a transformer block."""

    def __init__(self, *, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention over tokens, with an optional additive bias on the logits.

    `bias` broadcasts to (B, heads, N, N); it carries relative-position tables and masks.
    """

    def __init__(
        self,
        *,
        dim: int,
        heads: int,
        head_dim: int | None = None,
        out_dim: int | None = None,
        qkv_bias: bool = True,
        proj_bias: bool = True,
    ):
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim or dim // heads
        inner = self.heads * self.head_dim
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.proj = nn.Linear(inner, out_dim or dim, bias=proj_bias)
        self.attn_map = nn.Identity()  # the explicit path routes (B, heads, N, N) maps through here
        self.explicit = False

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
        if self.explicit:
            logits = (q * self.scale) @ k.transpose(-2, -1)  # (B, heads, N, N)
            if bias is not None:
                logits = logits + bias
            out = self.attn_map(logits.softmax(dim=-1)) @ v
        else:
            if bias is not None:
                bias = bias.to(q.dtype)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = out.transpose(1, 2).reshape(B, N, self.heads * self.head_dim)
        return self.proj(out)


def sincos_position_embedding(grid_h: int, grid_w: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position codes (MAE / big_vision style): (grid_h * grid_w, dim)."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}")
    ys, xs = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float64),
        torch.arange(grid_w, dtype=torch.float64),
        indexing="ij",
    )
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    out_y = ys.reshape(-1, 1) * omega  # (HW, dim/4)
    out_x = xs.reshape(-1, 1) * omega
    codes = torch.cat([out_x.sin(), out_x.cos(), out_y.sin(), out_y.cos()], dim=1)
    return codes.float()


def local_window_bias(grid_h: int, grid_w: int, window: int, prefix: int) -> torch.Tensor:
    """Additive mask (N, N) that lets each grid token attend only to its `window x window`
    neighbourhood; prefix (CLS) tokens attend and are attended everywhere (paper §3, Fig. 7)."""
    rows = torch.arange(grid_h).repeat_interleave(grid_w)
    cols = torch.arange(grid_w).repeat(grid_h)
    reach = window // 2
    near = ((rows[:, None] - rows[None, :]).abs() <= reach) & (
        (cols[:, None] - cols[None, :]).abs() <= reach
    )
    n = prefix + grid_h * grid_w
    allowed = torch.ones(n, n, dtype=torch.bool)
    allowed[prefix:, prefix:] = near
    return torch.zeros(n, n).masked_fill(~allowed, float("-inf"))


def relative_position_index(window: int) -> torch.Tensor:
    """(window², window²) index into a ((2w-1)², ...) table of relative offsets (Swin, AlterNet)."""
    coords = torch.stack(
        torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ).flatten(1)  # (2, w²)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, w², w²): position_i - position_j
    rel = rel + (window - 1)
    return rel[0] * (2 * window - 1) + rel[1]


def pad_to_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """Zero-pad a (B, H, W, C) map at the bottom and right so H and W are multiples of `window`."""
    H, W = x.shape[1:3]
    pad_h, pad_w = (-H) % window, (-W) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    return x


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, window², C); H and W must be multiples of `window`."""
    B, H, W, C = x.shape
    x = x.view(B, H // window, window, W // window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, C)


def window_merge(windows: torch.Tensor, window: int, H: int, W: int) -> torch.Tensor:
    """(B * nW, window², C) -> (B, H, W, C), the inverse of `window_partition`."""
    C = windows.shape[-1]
    B = windows.shape[0] // ((H // window) * (W // window))
    x = windows.view(B, H // window, W // window, window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)


def window_mask(
    H: int, W: int, padded_h: int, padded_w: int, window: int, shift: int
) -> torch.Tensor | None:
    """Additive mask (nW, window², window²) for windowed attention on a shifted, padded grid.

    The map is first rolled by -shift, then zero-padded at the bottom and right (as Swin does), so
    padding always sits at rows >= H and columns >= W; those keys are hidden. After the roll, the
    last `shift` rows and columns of the real map hold tokens wrapped around from the other edge;
    tokens from different regions are hidden from each other (Swin, Liu et al. 2021). Returns
    None when no token needs hiding.
    """
    if shift == 0 and padded_h == H and padded_w == W:
        return None
    region = torch.zeros(padded_h, padded_w)
    if shift:
        region[H - shift :, :] += 1  # rows wrapped around from the top
        region[:, W - shift :] += 2  # columns wrapped around from the left
    valid = torch.zeros(padded_h, padded_w, dtype=torch.bool)
    valid[:H, :W] = True
    region_w = window_partition(region[None, :, :, None], window).squeeze(-1)  # (nW, w²)
    valid_w = window_partition(valid[None, :, :, None].float(), window).squeeze(-1) > 0
    blocked = (region_w[:, :, None] != region_w[:, None, :]) | ~valid_w[:, None, :]
    return torch.zeros(blocked.shape).masked_fill(blocked, -100.0)


def trunc_normal_init(module: nn.Module, std: float = 0.02) -> None:
    """timm-style init: truncated-normal Linear weights, zero biases, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def to_2tuple(x: int | tuple[int, int]) -> tuple[int, int]:
    return (x, x) if isinstance(x, int) else tuple(x)


def conv_out(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    """Output length of a convolution along one axis."""
    return math.floor((size + 2 * padding - kernel) / stride) + 1
