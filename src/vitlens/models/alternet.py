"""AlterNet (paper §4): a pre-activation ResNet whose stages end in MSA blocks.

Build-up rule: MSA blocks replace Conv blocks from the end of each stage, so in a stage of n blocks
with m MSA blocks the order is [Conv] * (n - 2m) + [Conv, MSA] * m. The neighbouring Conv block
plays the role of the MLP, so MSA blocks have none. An MSA block is

    x + DropPath(LocalAttention(BN(conv1x1(GELU(BN(x))))))

where LocalAttention runs MSA inside non-overlapping p x p windows (no shift) with one (2p-1)^2
relative-position bias table shared by all heads, 64-dim heads by default, and a 1x1 (Linear)
output projection with bias. The paper's CIFAR-100 AlterNet-50 (blocks 3/4/6/4, MSA 0/1/1/2,
heads 3/6/12/24, window 4) has 33,012,840 parameters (official_repo.md §2.9).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from vitlens.anatomy.spec import NCHW, VECTOR, Block
from vitlens.models.layers import (
    Attention,
    DropPath,
    drop_path_rates,
    pad_to_windows,
    relative_position_index,
    window_mask,
    window_merge,
    window_partition,
)
from vitlens.models.resnet import PreActBasicBlock, PreActBottleneck, conv1x1, make_stem


class LocalAttention(nn.Module):
    """Windowed MSA on a (B, C, H, W) map; maps the window does not tile are padded and masked."""

    def __init__(self, *, dim: int, out_dim: int, heads: int, head_dim: int, window: int):
        super().__init__()
        self.window = window
        self.attn = Attention(
            dim=dim, heads=heads, head_dim=head_dim, out_dim=out_dim, qkv_bias=False
        )
        self.rel_pos_bias = nn.Parameter(torch.randn((2 * window - 1) ** 2) * 0.02)
        self.register_buffer("rel_index", relative_position_index(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        x = pad_to_windows(x.permute(0, 2, 3, 1), self.window)  # (B, C, H, W) -> (B, Hp, Wp, C)
        Hp, Wp = x.shape[1:3]
        windows = window_partition(x, self.window)  # (B * nW, p², C)
        bias = self.rel_pos_bias[self.rel_index][None, None]  # (1, 1, p², p²), shared by heads
        mask = window_mask(H, W, Hp, Wp, self.window, shift=0)
        if mask is not None:
            bias = (bias + mask.to(x.device)[:, None]).repeat(B, 1, 1, 1)
        out = self.attn(windows, bias)
        out = window_merge(out, self.window, Hp, Wp)[:, :H, :W]
        return out.permute(0, 3, 1, 2)  # (B, H, W, C') -> (B, C', H, W)


class AttentionBlock(nn.Module):
    """Pre-activation MSA block (the authors' AttentionBlockB): GELU, not ReLU, before the conv."""

    def __init__(
        self,
        *,
        cin: int,
        width: int,
        expansion: int,
        heads: int,
        head_dim: int,
        window: int,
        drop_path: float,
    ):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.act = nn.GELU()
        self.conv1 = conv1x1(cin, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.attn = LocalAttention(
            dim=width, out_dim=width * expansion, heads=heads, head_dim=head_dim, window=window
        )
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv1(self.act(self.bn1(x))))
        return x + self.drop_path(self.attn(out))


class AlterNet(nn.Module):
    def __init__(
        self,
        *,
        block: Literal["basic", "bottleneck"] = "bottleneck",
        depths: tuple[int, ...] = (3, 4, 6, 4),
        msa: tuple[int, ...] = (0, 1, 1, 2),
        heads: tuple[int, ...] = (3, 6, 12, 24),
        widths: tuple[int, ...] = (64, 128, 256, 512),
        head_dim: int = 64,
        window: int = 4,
        stem: Literal["cifar", "imagenet"] = "cifar",
        in_chans: int = 3,
        num_classes: int = 100,
        drop_path: float = 0.0,
        image_size: int | None = None,  # accepted for a uniform registry; convs need no size
    ):
        super().__init__()
        if not len(depths) == len(msa) == len(heads) == len(widths):
            raise ValueError("depths, msa, heads and widths need one entry per stage")
        for s, (n, m) in enumerate(zip(depths, msa, strict=True)):
            if 2 * m > n:
                raise ValueError(f"stage {s}: {m} MSA blocks need at least {2 * m} blocks, not {n}")
        Conv = {"basic": PreActBasicBlock, "bottleneck": PreActBottleneck}[block]
        self.stem = make_stem(stem, in_chans, widths[0], preact=True)
        rates = iter(drop_path_rates(drop_path, sum(depths)))
        cin = widths[0]
        self.stages = nn.ModuleList()
        self.kinds: list[list[str]] = []
        for s, (n, m, h, width) in enumerate(zip(depths, msa, heads, widths, strict=True)):
            kinds = ["conv"] * (n - 2 * m) + ["conv", "msa"] * m
            units = []
            for i, kind in enumerate(kinds):
                if kind == "conv":
                    stride = 2 if (s > 0 and i == 0) else 1
                    unit = Conv(cin=cin, width=width, stride=stride, drop_path=next(rates))
                else:
                    unit = AttentionBlock(
                        cin=cin,
                        width=width,
                        expansion=Conv.expansion,
                        heads=h,
                        head_dim=head_dim,
                        window=window,
                        drop_path=next(rates),
                    )
                units.append(unit)
                cin = width * Conv.expansion
            self.stages.append(nn.Sequential(*units))
            self.kinds.append(kinds)
        self.final_act = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU())
        self.head = nn.Linear(cin, num_classes)
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(self.final_act(x).mean(dim=(2, 3)))

    def anatomy(self) -> list[Block]:
        out = [Block("embed", "embed", 0, self.stem, "output", None, NCHW)]
        for s, (stage, kinds) in enumerate(zip(self.stages, self.kinds, strict=True)):
            for i, (unit, kind) in enumerate(zip(stage, kinds, strict=True)):
                attn = unit.attn.attn.attn_map if kind == "msa" else None
                out.append(
                    Block(
                        f"stage{s}.block{i}.{kind}",
                        kind,
                        s,
                        unit,
                        "output",
                        unit.drop_path,
                        NCHW,
                        attn,
                    )
                )
        out.append(Block("head", "head", len(self.stages) - 1, self.head, "output", None, VECTOR))
        return out
