"""Anatomy of timm models: ViT/DeiT, PiT, Swin and ResNet (DESIGN.md §2).

Each describer returns the vitlens blocks of a timm model in forward order, found through timm's
own submodule names (timm 1.x). A transformer block `x + attn(norm1(x)); x + mlp(norm2(x))` becomes
an `msa` block read at the input of `norm2` and an `mlp` block read at the block's output; its
attention probabilities pass through `attn.attn_drop` once `explicit_attention` turns timm's
`fused_attn` off. ResNet blocks are `conv` blocks whose branch ends at the last batch norm (or the
squeeze-excite / drop-path after it).
"""

from __future__ import annotations

from torch import nn

from vitlens.anatomy.adapters._common import (
    conv_grid,
    derives_from,
    input_channels,
    resnet_blocks,
    unknown_part,
)
from vitlens.anatomy.attention import switch_flag
from vitlens.anatomy.core import register_adapter
from vitlens.anatomy.spec import NCHW, NHWC, VECTOR, Anatomy, Block, InputSpec, Layout, tokens

_VIT = "timm.models.vision_transformer"
_PIT = "timm.models.pit"
_SWIN = "timm.models.swin_transformer"
_RESNET = "timm.models.resnet"


def _logits_module(model: nn.Module) -> nn.Module:
    # Distilled DeiT / PiT average two heads inside forward_head, so no submodule outputs the
    # logits; the model itself does.
    return model if getattr(model, "head_dist", None) is not None else model.head


def _vit_blocks(model: nn.Module, prefix: str, stage: int, block: nn.Module, layout: Layout):
    """The `msa` and `mlp` blocks of one timm pre-norm `Block`."""
    if not derives_from(block, _VIT, "Block"):
        raise unknown_part(model, block, f"pre-norm {_VIT}.Block blocks")
    attn = block.attn
    # Only attention layers with the `fused_attn` switch route explicit probabilities through
    # `attn_drop`; for others the maps cannot be read.
    maps = attn.attn_drop if hasattr(attn, "fused_attn") and hasattr(attn, "attn_drop") else None
    return [
        Block(f"{prefix}.msa", "msa", stage, block.norm2, "input", attn, layout, maps),
        Block(f"{prefix}.mlp", "mlp", stage, block, "output", block.mlp, layout),
    ]


def describe_vit(model: nn.Module) -> list[Block]:
    """timm `VisionTransformer` and its subclasses (DeiT, distilled DeiT)."""
    # With dynamic image sizes the grid follows the input; Layout then assumes it is square.
    grid = None if getattr(model, "dynamic_img_size", False) else tuple(model.patch_embed.grid_size)
    layout = tokens(model.num_prefix_tokens, grid)
    # `norm_pre` (an Identity unless pre_norm) is the last step before the blocks.
    out = [Block("embed", "embed", 0, model.norm_pre, "output", None, layout)]
    for i, block in enumerate(model.blocks):
        out += _vit_blocks(model, f"block{i}", 0, block, layout)
    out.append(Block("head", "head", 0, _logits_module(model), "output", None, VECTOR))
    return out


def describe_pit(model: nn.Module) -> list[Block]:
    """timm `PoolingVisionTransformer`: stages of ViT blocks joined by depthwise-conv pooling."""
    n_prefix = model.cls_token.shape[1]  # class (+ distillation) tokens
    grid = tuple(model.patch_embed.grid_size)
    out = [Block("embed", "embed", 0, model.pos_drop, "output", None, NCHW)]  # (B, C, H, W)
    for s, stage in enumerate(model.transformers):
        if stage.pool is not None:
            grid = conv_grid(grid, stage.pool.conv)
            # Pooling returns (feature map, class tokens); the tap reads the first, (B, C, H, W).
            out.append(Block(f"stage{s}.pool", "pool", s, stage.pool, "output", None, NCHW))
        layout = tokens(n_prefix, grid)
        for i, block in enumerate(stage.blocks):
            out += _vit_blocks(model, f"stage{s}.block{i}", s, block, layout)
    last = len(model.transformers) - 1
    out.append(Block("head", "head", last, _logits_module(model), "output", None, VECTOR))
    return out


def describe_swin(model: nn.Module) -> list[Block]:
    """timm `SwinTransformer` (v1), which keeps (B, H, W, C) between blocks."""
    out = [Block("embed", "embed", 0, model.patch_embed, "output", None, NHWC)]
    for s, stage in enumerate(model.layers):
        if not isinstance(stage.downsample, nn.Identity):
            out.append(Block(f"stage{s}.pool", "pool", s, stage.downsample, "output", None, NHWC))
        for i, block in enumerate(stage.blocks):
            if not derives_from(block, _SWIN, "SwinTransformerBlock"):
                raise unknown_part(model, block, f"{_SWIN}.SwinTransformerBlock blocks")
            # After the attention add the block flattens (B, H, W, C) -> (B, H*W, C) for norm2.
            msa = tokens(0, tuple(block.input_resolution))
            name = f"stage{s}.block{i}"
            maps = block.attn.attn_drop  # (B * windows, heads, N, N) on the explicit path
            out += [
                Block(f"{name}.msa", "msa", s, block.norm2, "input", block.attn, msa, maps),
                Block(f"{name}.mlp", "mlp", s, block, "output", block.mlp, NHWC),
            ]
    last = len(model.layers) - 1
    out.append(Block("head", "head", last, model.head, "output", None, VECTOR))
    return out


def _resnet_branch_end(block: nn.Module) -> nn.Module:
    # The residual branch runs ... bn2 (BasicBlock) / bn3 (Bottleneck) -> se -> drop_path -> add.
    end = block.bn3 if hasattr(block, "bn3") else block.bn2
    for name in ("se", "drop_path"):
        if getattr(block, name, None) is not None:
            end = getattr(block, name)
    return end


def describe_resnet(model: nn.Module) -> list[Block]:
    """timm `ResNet` with BasicBlock or Bottleneck blocks."""
    return resnet_blocks(model, _RESNET, _resnet_branch_end)


def timm_input(model: nn.Module) -> InputSpec:
    """Channels, side and normalisation from a timm model's `pretrained_cfg`."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size")
    mean, std = cfg.get("mean"), cfg.get("std")
    return InputSpec(
        channels=input_channels(model) or (size[0] if size else None),
        size=size[-1] if size else None,
        mean=tuple(mean) if mean else None,
        std=tuple(std) if std else None,
    )


# timm attention layers take the explicit path when their `fused_attn` flag is off.
timm_explicit = switch_flag("fused_attn", False)


def _timm(describer):
    def anatomy(model: nn.Module) -> Anatomy:
        return Anatomy(tuple(describer(model)), explicit=timm_explicit, input=timm_input(model))

    return anatomy


def _plain_resnet(model: nn.Module) -> bool:
    """A timm ResNet of BasicBlock/Bottleneck blocks; its variants with other blocks (Res2Net,
    ResNeSt, SKNet) are left to the generic adapter."""
    if not derives_from(model, _RESNET, "ResNet"):
        return False
    return all(
        derives_from(b, _RESNET, "BasicBlock") or derives_from(b, _RESNET, "Bottleneck")
        for k in range(1, 5)
        for b in getattr(model, f"layer{k}", ())
    )


register_adapter(_plain_resnet, _timm(describe_resnet))
register_adapter(lambda m: derives_from(m, _SWIN, "SwinTransformer"), _timm(describe_swin))
register_adapter(lambda m: derives_from(m, _PIT, "PoolingVisionTransformer"), _timm(describe_pit))


def _pre_norm_vit(model: nn.Module) -> bool:
    """A timm ViT of pre-norm Blocks; others (ResPostBlock, parallel blocks) go generic."""
    if not derives_from(model, _VIT, "VisionTransformer"):
        return False
    return all(derives_from(b, _VIT, "Block") for b in getattr(model, "blocks", ()))


register_adapter(_pre_norm_vit, _timm(describe_vit))
