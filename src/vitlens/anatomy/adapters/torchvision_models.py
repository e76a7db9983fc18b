"""Anatomy of torchvision models: ResNet, VisionTransformer and SwinTransformer (DESIGN.md §2).

Each describer returns the vitlens blocks of a torchvision model in forward order, found through
torchvision's own submodule names. ViT attention is an `nn.MultiheadAttention`, whose second output
is the attention map once `explicit_attention` asks it for per-head weights. Swin computes its
attention inside a function (`shifted_window_attention`), so its maps cannot be read (`attention`
is None) although its branches can be recorded and lesioned.
"""

from __future__ import annotations

from torch import nn

from vitlens.anatomy.adapters._common import (
    derives_from,
    input_channels,
    resnet_blocks,
    unknown_part,
)
from vitlens.anatomy.attention import force_mha_weights
from vitlens.anatomy.core import register_adapter
from vitlens.anatomy.spec import NHWC, VECTOR, Anatomy, Block, InputSpec, tokens

_RESNET = "torchvision.models.resnet"
_VIT = "torchvision.models.vision_transformer"
_SWIN = "torchvision.models.swin_transformer"


def describe_resnet(model: nn.Module) -> list[Block]:
    """torchvision `ResNet`; a block's branch ends at bn2 (BasicBlock) or bn3 (Bottleneck)."""
    return resnet_blocks(model, _RESNET, lambda b: b.bn3 if hasattr(b, "bn3") else b.bn2)


def describe_vit(model: nn.Module) -> list[Block]:
    """torchvision `VisionTransformer`: a class token, then `encoder.layers` of `EncoderBlock`s."""
    side = model.image_size // model.patch_size
    layout = tokens(1, (side, side))
    # The encoder's dropout follows the position embedding: its output enters the first block.
    out = [Block("embed", "embed", 0, model.encoder.dropout, "output", None, layout)]
    for i, block in enumerate(model.encoder.layers):
        if not derives_from(block, _VIT, "EncoderBlock"):
            raise unknown_part(model, block, f"{_VIT}.EncoderBlock blocks")
        attn = block.self_attention  # returns (output, weights); a lesion zeroes the output
        out += [
            Block(f"block{i}.msa", "msa", 0, block.ln_2, "input", attn, layout, attn),
            Block(f"block{i}.mlp", "mlp", 0, block, "output", block.mlp, layout),
        ]
    out.append(Block("head", "head", 0, model.heads, "output", None, VECTOR))
    return out


def _swin_blocks(name: str, stage: int, block: nn.Module) -> list[Block]:
    if derives_from(block, _SWIN, "SwinTransformerBlockV2"):
        # Res-post-norm: x + norm1(attn(x)), then x + norm2(mlp(x)); each branch ends at its norm,
        # and the stream after the attention add is what enters the mlp.
        msa = Block(
            f"{name}.msa", "msa", stage, block.mlp, "input", block.norm1, NHWC, None, block.attn
        )
        mlp = Block(f"{name}.mlp", "mlp", stage, block, "output", block.norm2, NHWC)
    else:
        # Pre-norm: x + attn(norm1(x)), then x + mlp(norm2(x)).
        msa = Block(
            f"{name}.msa", "msa", stage, block.norm2, "input", block.attn, NHWC, None, block.attn
        )
        mlp = Block(f"{name}.mlp", "mlp", stage, block, "output", block.mlp, NHWC)
    return [msa, mlp]


def describe_swin(model: nn.Module) -> list[Block]:
    """torchvision `SwinTransformer` (v1 and v2), which keeps (B, H, W, C) throughout.

    `model.features` is [patch embedding, stage 0, merging, stage 1, merging, ...].
    """
    out = [Block("embed", "embed", 0, model.features[0], "output", None, NHWC)]
    stage = 0
    for part in model.features[1:]:
        if derives_from(part, _SWIN, "PatchMerging") or derives_from(part, _SWIN, "PatchMergingV2"):
            stage += 1
            out.append(Block(f"stage{stage}.pool", "pool", stage, part, "output", None, NHWC))
            continue
        if not isinstance(part, nn.Sequential):
            raise unknown_part(model, part, "stages of Swin blocks joined by PatchMerging")
        for i, block in enumerate(part):
            if not derives_from(block, _SWIN, "SwinTransformerBlock"):
                raise unknown_part(model, block, f"{_SWIN}.SwinTransformerBlock(V2) blocks")
            out += _swin_blocks(f"stage{stage}.block{i}", stage, block)
    out.append(Block("head", "head", stage, model.head, "output", None, VECTOR))
    return out


def _vit_anatomy(model: nn.Module) -> Anatomy:
    size = InputSpec(channels=input_channels(model) or 3, size=model.image_size)
    return Anatomy(tuple(describe_vit(model)), explicit=force_mha_weights, input=size)


# torchvision's Swin computes its softmax explicitly already, and a ResNet has no attention.
register_adapter(lambda m: derives_from(m, _SWIN, "SwinTransformer"), describe_swin)
register_adapter(lambda m: derives_from(m, _VIT, "VisionTransformer"), _vit_anatomy)
register_adapter(lambda m: derives_from(m, _RESNET, "ResNet"), describe_resnet)
