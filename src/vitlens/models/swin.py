"""Swin Transformer (Liu et al. 2021): multi-stage ViT with local, shifted-window attention.

image -> conv patch embedding -> LN -> stages of (W-MSA block, SW-MSA block) pairs, with patch
merging (2x2 neighbours concatenated, LN, Linear 4C -> 2C) between stages -> LN -> mean -> Linear.
The map stays channels-last (B, H, W, C) between blocks. A map smaller than or equal to the window
gets one global window and no shift. Maps that the window does not tile are padded; padded keys
are masked. Laid out like timm's SwinTransformer: the paper's CIFAR Swin-Ti (patch 1, window 4,
dim 96, depths 2/2/6/2, heads 3/6/12/24, no qkv bias) has 27,562,126 parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vitlens.anatomy.spec import NHWC, VECTOR, Block
from vitlens.models.layers import (
    Attention,
    DropPath,
    Mlp,
    drop_path_rates,
    pad_to_windows,
    relative_position_index,
    trunc_normal_init,
    window_mask,
    window_merge,
    window_partition,
)


class WindowAttention(nn.Module):
    """MSA inside non-overlapping windows, plus a per-head relative-position bias table."""

    def __init__(self, *, dim: int, heads: int, window: int, shift: int, qkv_bias: bool):
        super().__init__()
        self.window, self.shift, self.heads = window, shift, heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("rel_index", relative_position_index(window), persistent=False)
        self.attn = Attention(dim=dim, heads=heads, qkv_bias=qkv_bias)
        self._masks: dict[tuple, torch.Tensor | None] = {}

    def _mask(self, H: int, W: int, Hp: int, Wp: int, device) -> torch.Tensor | None:
        key = (H, W, Hp, Wp, device)
        if key not in self._masks:
            mask = window_mask(H, W, Hp, Wp, self.window, self.shift)
            self._masks[key] = None if mask is None else mask.to(device)
        return self._masks[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        x = pad_to_windows(x, self.window)
        Hp, Wp = x.shape[1:3]
        windows = window_partition(x, self.window)  # (B * nW, w², C)
        n = self.window**2
        bias = self.relative_position_bias_table[self.rel_index.view(-1)]
        bias = bias.view(n, n, self.heads).permute(2, 0, 1)[None]  # (1, heads, w², w²)
        mask = self._mask(H, W, Hp, Wp, x.device)
        if mask is not None:
            bias = (bias + mask[:, None]).repeat(B, 1, 1, 1)  # (B * nW, heads, w², w²)
        out = self.attn(windows, bias)
        x = window_merge(out, self.window, Hp, Wp)[:, :H, :W]
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        return x


class SwinBlock(nn.Module):
    def __init__(
        self,
        *,
        dim: int,
        heads: int,
        window: int,
        shift: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_path: float,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(
            dim=dim, heads=heads, window=window, shift=shift, qkv_bias=qkv_bias
        )
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim=dim, hidden=int(dim * mlp_ratio))
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x


class PatchMerging(nn.Module):
    """(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C): concatenate 2x2 neighbours, LN, Linear."""

    def __init__(self, *, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x = x.reshape(B, x.shape[1] // 2, 2, x.shape[2] // 2, 2, C)
        x = x.permute(0, 1, 3, 4, 2, 5).flatten(3)  # (B, H/2, W/2, 4C)
        return self.reduction(self.norm(x))


class Swin(nn.Module):
    def __init__(
        self,
        *,
        image_size: int = 32,
        patch_size: int = 1,
        in_chans: int = 3,
        num_classes: int = 100,
        dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        heads: tuple[int, ...] = (3, 6, 12, 24),
        window: int = 4,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        drop_path: float = 0.0,
    ):
        super().__init__()
        if len(depths) != len(heads):
            raise ValueError("depths and heads need one entry per stage")
        if image_size % patch_size:
            raise ValueError(f"image size {image_size} is not a multiple of patch {patch_size}")
        self.patch_embed = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        self.embed_norm = nn.LayerNorm(dim)
        side = image_size // patch_size
        self.grids: list[tuple[int, int]] = []
        rates = iter(drop_path_rates(drop_path, sum(depths)))
        self.stages = nn.ModuleList()
        self.merges = nn.ModuleList()
        for s, (depth, h) in enumerate(zip(depths, heads, strict=True)):
            if s > 0:
                self.merges.append(PatchMerging(dim=dim))
                dim, side = dim * 2, (side + 1) // 2
            self.grids.append((side, side))
            win = min(window, side)  # a map no larger than the window is one global window
            blocks = [
                SwinBlock(
                    dim=dim,
                    heads=h,
                    window=win,
                    shift=win // 2 if (i % 2 and side > window) else 0,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop_path=next(rates),
                )
                for i in range(depth)
            ]
            self.stages.append(nn.ModuleList(blocks))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        trunc_normal_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed_norm(self.patch_embed(x).permute(0, 2, 3, 1))  # (B, C, H, W) -> (B, H, W, C)
        for s, stage in enumerate(self.stages):
            if s > 0:
                x = self.merges[s - 1](x)
            for block in stage:
                x = block(x)
        return self.head(self.norm(x).mean(dim=(1, 2)))

    def anatomy(self) -> list[Block]:
        out = [Block("embed", "embed", 0, self.embed_norm, "output", None, NHWC)]
        for s, stage in enumerate(self.stages):
            if s > 0:
                out.append(
                    Block(f"stage{s}.pool", "pool", s, self.merges[s - 1], "output", None, NHWC)
                )
            for i, b in enumerate(stage):
                name = f"stage{s}.block{i}"
                attn = b.attn.attn
                out.append(
                    Block(f"{name}.msa", "msa", s, b.norm2, "input", b.attn, NHWC, attn.attn_map)
                )
                out.append(Block(f"{name}.mlp", "mlp", s, b, "output", b.mlp, NHWC))
        out.append(Block("head", "head", len(self.stages) - 1, self.head, "output", None, VECTOR))
        return out
