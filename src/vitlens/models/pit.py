"""Pooling-based Vision Transformer, PiT (Heo et al. 2021): a ViT in three resolution stages.

image -> conv patch embedding (kernel = patch, stride) -> + 2-D position embedding (map layout)
      -> stage 0 blocks -> pool -> stage 1 blocks -> pool -> stage 2 blocks -> LN(CLS) -> Linear
Each pool halves the token grid with a depthwise 3x3 stride-2 conv (channels x2) and maps the CLS
token with a Linear. Laid out like timm's PoolingVisionTransformer: the paper's CIFAR PiT-Ti
(patch 2, stride 1, base dims 32, depths 2/6/4, heads 2/4/8) has 4,582,436 parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from vitlens.anatomy.spec import VECTOR, Block, tokens
from vitlens.models.layers import conv_out, drop_path_rates, trunc_normal_init
from vitlens.models.vit import TransformerBlock


class TokenPool(nn.Module):
    """Halve the token grid (depthwise conv, stride 2) and widen channels; CLS through a Linear."""

    def __init__(self, *, dim: int, out_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, out_dim, kernel_size=3, stride=2, padding=1, groups=dim)
        self.fc = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        B, _, C = x.shape
        cls, rest = x[:, :1], x[:, 1:]
        rest = rest.transpose(1, 2).reshape(B, C, *grid)  # (B, H*W, C) -> (B, C, H, W)
        rest = self.conv(rest).flatten(2).transpose(1, 2)  # -> (B, H'*W', C')
        return torch.cat([self.fc(cls), rest], dim=1)


class PiT(nn.Module):
    def __init__(
        self,
        *,
        image_size: int = 32,
        patch_size: int = 2,
        stride: int = 1,
        in_chans: int = 3,
        num_classes: int = 100,
        base_dim: int = 32,
        depths: tuple[int, ...] = (2, 6, 4),
        heads: tuple[int, ...] = (2, 4, 8),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
    ):
        super().__init__()
        if len(depths) != len(heads):
            raise ValueError("depths and heads need one entry per stage")
        dims = [base_dim * h for h in heads]
        side = conv_out(image_size, patch_size, stride)
        if side < 1:
            raise ValueError(f"image size {image_size} is smaller than patch {patch_size}")
        self.grids = [(side, side)]
        for _ in depths[1:]:
            side = conv_out(side, 3, 2, 1)
            self.grids.append((side, side))

        self.patch_embed = nn.Conv2d(in_chans, dims[0], kernel_size=patch_size, stride=stride)
        self.pos_embed = nn.Parameter(torch.randn(1, dims[0], *self.grids[0]) * 0.02)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dims[0]) * 0.02)
        self.embed_out = nn.Identity()

        rates = iter(drop_path_rates(drop_path, sum(depths)))
        self.stages = nn.ModuleList()
        self.pools = nn.ModuleList()
        for s, (depth, h) in enumerate(zip(depths, heads, strict=True)):
            if s > 0:
                self.pools.append(TokenPool(dim=dims[s - 1], out_dim=dims[s]))
            self.stages.append(
                nn.ModuleList(
                    TransformerBlock(
                        dim=dims[s],
                        heads=h,
                        mlp_dim=int(dims[s] * mlp_ratio),
                        qkv_bias=qkv_bias,
                        drop_path=next(rates),
                    )
                    for _ in range(depth)
                )
            )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)
        trunc_normal_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x) + self.pos_embed  # (B, C, H, W)
        x = x.flatten(2).transpose(1, 2)  # -> (B, H*W, C)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.embed_out(x)
        for s, stage in enumerate(self.stages):
            if s > 0:
                x = self.pools[s - 1](x, self.grids[s - 1])
            for block in stage:
                x = block(x)
        return self.head(self.norm(x[:, 0]))

    def anatomy(self) -> list[Block]:
        out = [Block("embed", "embed", 0, self.embed_out, "output", None, tokens(1, self.grids[0]))]
        for s, stage in enumerate(self.stages):
            layout = tokens(1, self.grids[s])
            if s > 0:
                pool = self.pools[s - 1]
                out.append(Block(f"stage{s}.pool", "pool", s, pool, "output", None, layout))
            for i, b in enumerate(stage):
                name = f"stage{s}.block{i}"
                out.append(
                    Block(
                        f"{name}.msa", "msa", s, b.norm2, "input", b.attn, layout, b.attn.attn_map
                    )
                )
                out.append(Block(f"{name}.mlp", "mlp", s, b, "output", b.mlp, layout))
        out.append(Block("head", "head", len(self.stages) - 1, self.head, "output", None, VECTOR))
        return out
