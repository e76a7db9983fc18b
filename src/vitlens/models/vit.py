"""Vision Transformer (Dosovitskiy et al. 2021), laid out like timm's so CIFAR counts match.

image -> patches (conv, kernel = stride = patch) -> [CLS] + tokens + position embedding
      -> depth x (x + MSA(LN(x)), x + MLP(LN(x))) -> LN -> CLS token or token mean -> Linear

Options the paper's experiments need: CLS or global-average-pool head, qkv bias on/off, stochastic
depth, position embedding learned 1-D / fixed 2-D sin-cos / none (the role of spatial location),
and `local_window=k` to restrict attention to k x k token neighbourhoods (paper §3, Fig. 7).
The paper's CIFAR ViT-Ti (patch 2, 32x32, 100 classes) has 5,403,172 parameters.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from vitlens.anatomy.spec import VECTOR, Block, tokens
from vitlens.models.layers import (
    Attention,
    DropPath,
    Mlp,
    drop_path_rates,
    local_window_bias,
    sincos_position_embedding,
    to_2tuple,
    trunc_normal_init,
)


class TransformerBlock(nn.Module):
    """Pre-norm block: x + MSA(LN(x)), then x + MLP(LN(x)). Shared by ViT and PiT."""

    def __init__(self, *, dim: int, heads: int, mlp_dim: int, qkv_bias: bool, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim=dim, heads=heads, qkv_bias=qkv_bias)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim=dim, hidden=mlp_dim)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x), bias))
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x


class ViT(nn.Module):
    def __init__(
        self,
        *,
        image_size: int = 32,
        patch_size: int = 2,
        in_chans: int = 3,
        num_classes: int = 100,
        dim: int = 192,
        depth: int = 12,
        heads: int = 3,
        mlp_dim: int = 768,
        qkv_bias: bool = False,
        pool: Literal["cls", "gap"] = "cls",
        pos_embed: Literal["learned", "sincos", "none"] = "learned",
        local_window: int | None = None,
        drop_path: float = 0.0,
    ):
        super().__init__()
        if pool not in ("cls", "gap"):
            raise ValueError(f"pool must be 'cls' or 'gap', got {pool!r}")
        if pos_embed not in ("learned", "sincos", "none"):
            raise ValueError(f"pos_embed must be 'learned', 'sincos' or 'none', got {pos_embed!r}")
        H, W = to_2tuple(image_size)
        if H % patch_size or W % patch_size:
            raise ValueError(f"image size {image_size} is not a multiple of patch {patch_size}")
        self.grid = (H // patch_size, W // patch_size)
        self.pool = pool
        self.prefix = 1 if pool == "cls" else 0
        n_tokens = self.prefix + self.grid[0] * self.grid[1]

        self.patch_embed = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if self.prefix else None
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.randn(1, n_tokens, dim) * 0.02)
        elif pos_embed == "sincos":
            codes = sincos_position_embedding(*self.grid, dim)
            codes = torch.cat([torch.zeros(self.prefix, dim), codes])[None]  # CLS gets zeros
            self.register_buffer("pos_embed", codes, persistent=False)
        else:
            self.pos_embed = None
        self.embed_out = nn.Identity()  # the residual stream after embedding, for the anatomy
        if local_window is not None:
            mask = local_window_bias(*self.grid, local_window, self.prefix)
            self.register_buffer("attn_bias", mask, persistent=False)
        else:
            self.attn_bias = None

        rates = drop_path_rates(drop_path, depth)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                dim=dim, heads=heads, mlp_dim=mlp_dim, qkv_bias=qkv_bias, drop_path=rates[i]
            )
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        trunc_normal_init(self)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, h*w, C)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        x = self.embed_out(x)
        for block in self.blocks:
            x = block(x, self.attn_bias)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        x = x[:, 0] if self.pool == "cls" else x.mean(dim=1)
        return self.head(x)

    def anatomy(self) -> list[Block]:
        layout = tokens(self.prefix, self.grid)
        blocks = [Block("embed", "embed", 0, self.embed_out, "output", None, layout)]
        for i, b in enumerate(self.blocks):
            blocks.append(
                Block(f"block{i}.msa", "msa", 0, b.norm2, "input", b.attn, layout, b.attn.attn_map)
            )
            blocks.append(Block(f"block{i}.mlp", "mlp", 0, b, "output", b.mlp, layout))
        blocks.append(Block("head", "head", 0, self.head, "output", None, VECTOR))
        return blocks
