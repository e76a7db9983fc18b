"""Helpers shared by the timm and torchvision adapters (DESIGN.md §2).

Classes are recognised by module and class name along the method resolution order, so the adapters
import neither timm nor torchvision, and a subclass (DeiT's distilled ViT) counts as its parent.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from vitlens.anatomy.spec import NCHW, VECTOR, Block
from vitlens.errors import VitlensError


def input_channels(model: nn.Module) -> int | None:
    """The channels the model takes, from its first convolution (a timm model built for
    grayscale keeps an RGB `pretrained_cfg`); None when it starts with something else."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)), None)
    return first.in_channels if isinstance(first, nn.Conv2d) else None


def derives_from(obj: object, module: str, name: str) -> bool:
    """Whether `obj` is an instance of the class `module.name` or of a subclass of it."""
    return any(c.__module__ == module and c.__name__ == name for c in type(obj).__mro__)


def unknown_part(model: nn.Module, part: nn.Module, expected: str) -> VitlensError:
    """The error for a known model family built from parts the adapter cannot vouch for."""
    return VitlensError(
        f"vitlens knows {type(model).__name__} models built from {expected}, but this one contains "
        f"a {type(part).__module__}.{type(part).__name__}, whose residual branches it cannot "
        "locate. Register an adapter for it with vitlens.anatomy.register_adapter."
    )


def conv_grid(grid: tuple[int, int], conv: nn.Conv2d) -> tuple[int, int]:
    """The (H, W) that `conv` produces from an (H, W) input."""
    sizes = zip(grid, conv.kernel_size, conv.stride, conv.padding, conv.dilation, strict=True)
    h, w = ((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in sizes)
    return h, w


def resnet_blocks(
    model: nn.Module, block_module: str, branch_end: Callable[[nn.Module], nn.Module]
) -> list[Block]:
    """Blocks of a ResNet laid out as `conv1 ... maxpool, layer1..layer4, fc` (timm, torchvision).

    Args:
        model: the ResNet.
        block_module: the module that defines its `BasicBlock` and `Bottleneck` classes.
        branch_end: the last module of a block's residual branch; zeroing its output leaves
            `relu(shortcut)`.
    """
    out = [Block("embed", "embed", 0, model.maxpool, "output", None, NCHW)]
    layers = [getattr(model, f"layer{k}") for k in range(1, 5)]
    for s, layer in enumerate(layers):
        for i, block in enumerate(layer):
            if not (
                derives_from(block, block_module, "BasicBlock")
                or derives_from(block, block_module, "Bottleneck")
            ):
                raise unknown_part(model, block, f"{block_module} BasicBlock/Bottleneck blocks")
            out.append(
                Block(
                    f"stage{s}.block{i}.conv", "conv", s, block, "output", branch_end(block), NCHW
                )
            )
    out.append(Block("head", "head", len(layers) - 1, model.fc, "output", None, VECTOR))
    return out
