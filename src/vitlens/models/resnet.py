"""ResNet (He et al. 2016) and pre-activation ResNet (He et al. 2016b), as the paper uses them.

stem -> 4 stages (widths 64/128/256/512 x expansion, strides 1/2/2/2 on each stage's first block)
     -> global average pool -> Linear.
The CIFAR stem is one 3x3 conv (no max-pool); the ImageNet stem is a 7x7 stride-2 conv and a 3x3
stride-2 max-pool. Bottleneck blocks put the stride on the 3x3 conv (ResNet v1.5). Pre-activation
blocks order BN -> ReLU -> conv, the stem is a bare conv and the head is BN -> ReLU -> pool ->
Linear. The paper's CIFAR-100 ResNet-50 has 23,705,252 parameters; the pre-activation one
23,697,572 (official_repo.md §2.10).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from vitlens.anatomy.spec import NCHW, VECTOR, Block
from vitlens.models.layers import DropPath, drop_path_rates


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, *, cin: int, width: int, stride: int, drop_path: float):
        super().__init__()
        cout = width * self.expansion
        self.conv1, self.bn1 = conv3x3(cin, width, stride), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = conv3x3(width, cout), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.drop_path = DropPath(drop_path)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(skip + self.drop_path(out))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, *, cin: int, width: int, stride: int, drop_path: float):
        super().__init__()
        cout = width * self.expansion
        self.conv1, self.bn1 = conv1x1(cin, width), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = conv3x3(width, width, stride), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = conv1x1(width, cout), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.drop_path = DropPath(drop_path)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(skip + self.drop_path(out))


class PreActBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, *, cin: int, width: int, stride: int, drop_path: float):
        super().__init__()
        cout = width * self.expansion
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), conv3x3(cin, width, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(width), conv3x3(width, cout)
        self.relu = nn.ReLU()
        self.drop_path = DropPath(drop_path)
        self.downsample = conv1x1(cin, cout, stride) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))
        # With a projection, the pre-activated input feeds both paths.
        skip = x if self.downsample is None else self.downsample(out)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        return skip + self.drop_path(out)


class PreActBottleneck(nn.Module):
    expansion = 4

    def __init__(self, *, cin: int, width: int, stride: int, drop_path: float):
        super().__init__()
        cout = width * self.expansion
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), conv1x1(cin, width)
        self.bn2, self.conv2 = nn.BatchNorm2d(width), conv3x3(width, width, stride)
        self.bn3, self.conv3 = nn.BatchNorm2d(width), conv1x1(width, cout)
        self.relu = nn.ReLU()
        self.drop_path = DropPath(drop_path)
        self.downsample = conv1x1(cin, cout, stride) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))
        skip = x if self.downsample is None else self.downsample(out)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return skip + self.drop_path(out)


BLOCKS = {
    ("basic", False): BasicBlock,
    ("bottleneck", False): Bottleneck,
    ("basic", True): PreActBasicBlock,
    ("bottleneck", True): PreActBottleneck,
}


def make_stem(
    kind: Literal["cifar", "imagenet"], in_chans: int, width: int, preact: bool
) -> nn.Sequential:
    """CIFAR: 3x3 conv; ImageNet: 7x7/2 conv + 3x3/2 max-pool. Pre-activation stems have no BN."""
    if kind == "cifar":
        layers: list[nn.Module] = [conv3x3(in_chans, width)]
    elif kind == "imagenet":
        layers = [nn.Conv2d(in_chans, width, kernel_size=7, stride=2, padding=3, bias=False)]
    else:
        raise ValueError(f"stem must be 'cifar' or 'imagenet', got {kind!r}")
    if not preact:
        layers += [nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
    if kind == "imagenet":
        layers.append(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    def __init__(
        self,
        *,
        block: Literal["basic", "bottleneck"] = "bottleneck",
        depths: tuple[int, ...] = (3, 4, 6, 3),
        widths: tuple[int, ...] = (64, 128, 256, 512),
        stem: Literal["cifar", "imagenet"] = "cifar",
        preact: bool = False,
        in_chans: int = 3,
        num_classes: int = 100,
        drop_path: float = 0.0,
        image_size: int | None = None,  # accepted for a uniform registry; convs need no size
    ):
        super().__init__()
        if (block, preact) not in BLOCKS:
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
        Unit = BLOCKS[(block, preact)]
        self.preact = preact
        self.stem = make_stem(stem, in_chans, widths[0], preact)
        rates = iter(drop_path_rates(drop_path, sum(depths)))
        cin = widths[0]
        self.stages = nn.ModuleList()
        for s, (depth, width) in enumerate(zip(depths, widths, strict=True)):
            units = []
            for i in range(depth):
                stride = 2 if (s > 0 and i == 0) else 1
                units.append(Unit(cin=cin, width=width, stride=stride, drop_path=next(rates)))
                cin = width * Unit.expansion
            self.stages.append(nn.Sequential(*units))
        self.final_act = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU()) if preact else nn.Identity()
        self.head = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        x = self.final_act(x).mean(dim=(2, 3))  # global average pool
        return self.head(x)

    def anatomy(self) -> list[Block]:
        out = [Block("embed", "embed", 0, self.stem, "output", None, NCHW)]
        for s, stage in enumerate(self.stages):
            for i, unit in enumerate(stage):
                out.append(
                    Block(
                        f"stage{s}.block{i}.conv", "conv", s, unit, "output", unit.drop_path, NCHW
                    )
                )
        out.append(Block("head", "head", len(self.stages) - 1, self.head, "output", None, VECTOR))
        return out
