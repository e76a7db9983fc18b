"""Anatomy of Hugging Face `transformers` (5.x) vision models: ViT, DeiT, DINOv2, Swin, ResNet.

A model is recognised by the class of its base model (`model.base_model`: `ViTModel`, `DeiTModel`,
`Dinov2Model`, `SwinModel`, `ResNetModel`), so both the bare backbone and its
`...ForImageClassification` wrapper are understood. transformers is never imported: classes are
matched by module and class name, so vitlens imports without it.

Granularity is the paper's: each transformer layer `x + attn(norm(x)); x + mlp(norm(x))` becomes an
`msa` block read where the stream enters the MLP's norm and an `mlp` block read at the layer's
output; each ResNet layer is a `conv` block whose branch is its `layer` stack (zeroing it leaves
`act(shortcut)`).

Logits: a `...ForImageClassification` model's output object carries `logits`, and its `classifier`
is the `head` block. A bare backbone has no classifier: its "logits" are then its pooled features
(`pooler_output`, or the first token of `last_hidden_state`) and it has no `head` block. The feature
analyses (fourier, variance, cka, attention) read the blocks and are meaningful on a backbone; the
ones that compare logits with labels (lesion, hessian, landscape, corruptions, freqnoise, eval)
need a classifier, which is why `vitlens import hf:DIR` always builds the classification model.

Explicit attention: transformers picks an attention function per forward from
`config._attn_implementation` (`"sdpa"` by default on CPU); the switch sets every config in the
model to `"eager"`, whose softmax is explicit (double backward works) and whose attention module
returns `(output, probabilities)`, which is where `Block.attention` maps are read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from vitlens.anatomy.adapters._common import derives_from, unknown_part
from vitlens.anatomy.core import register_adapter, unwrap
from vitlens.anatomy.spec import NCHW, VECTOR, Anatomy, Block, InputSpec, Layout, tokens
from vitlens.errors import VitlensError

_TF = "transformers.models"
_BASES = {
    "vit": (f"{_TF}.vit.modeling_vit", "ViTModel"),
    "deit": (f"{_TF}.deit.modeling_deit", "DeiTModel"),
    "dinov2": (f"{_TF}.dinov2.modeling_dinov2", "Dinov2Model"),
    "dinov2_registers": (
        f"{_TF}.dinov2_with_registers.modeling_dinov2_with_registers",
        "Dinov2WithRegistersModel",
    ),
    "swin": (f"{_TF}.swin.modeling_swin", "SwinModel"),
    "resnet": (f"{_TF}.resnet.modeling_resnet", "ResNetModel"),
}
# Class and distillation tokens in front of the patch tokens (DINOv2 with registers adds its
# `num_register_tokens` after the class token).
_PREFIX = {"vit": 1, "deit": 2, "dinov2": 1, "dinov2_registers": 1}


def family_of(model: nn.Module) -> str | None:
    """The key of `_BASES` whose base model `model` is or wraps; None for other models."""
    if not derives_from(model, "transformers.modeling_utils", "PreTrainedModel"):
        return None
    base = getattr(model, "base_model", model)
    for family, (module, name) in _BASES.items():
        if derives_from(base, module, name):
            return family
    return None


def _classifier(model: nn.Module) -> nn.Module | None:
    """The module whose output is the logits; None for a bare backbone."""
    if model is model.base_model:
        return None
    if derives_from(model, f"{_TF}.deit.modeling_deit", "DeiTForImageClassificationWithTeacher"):
        raise VitlensError(
            "DeiTForImageClassificationWithTeacher averages two classifiers inside its forward, so "
            "no module outputs its logits; load the checkpoint as DeiTForImageClassification "
            "(its `cls_classifier` becomes `classifier`) or as the bare DeiTModel"
        )
    head = getattr(model, "classifier", None)
    if not isinstance(head, nn.Module):
        raise VitlensError(
            f"{type(model).__name__} has no `classifier` module; vitlens understands the bare "
            "backbones and their ...ForImageClassification models"
        )
    return head


def _head(model: nn.Module, stage: int) -> list[Block]:
    head = _classifier(model)
    return [] if head is None else [Block("head", "head", stage, head, "output", None, VECTOR)]


def _layer_list(base: nn.Module) -> nn.ModuleList:
    # transformers 5 keeps ViT/DeiT layers in `layers`, DINOv2's in `encoder.layer`.
    for path in ("layers", "encoder.layer", "encoder.layers"):
        found: Any = base
        for attr in path.split("."):
            found = getattr(found, attr, None)
        if isinstance(found, nn.ModuleList):
            return found
    raise VitlensError(f"cannot find the transformer layers of {type(base).__name__}")


def _mlp_norm(model: nn.Module, layer: nn.Module) -> nn.Module:
    """The norm in front of the MLP: its input is the stream after the attention add."""
    has_mlp = isinstance(getattr(layer, "mlp", None), nn.Module)
    for name in ("layernorm_after", "norm2"):
        if has_mlp and isinstance(getattr(layer, name, None), nn.LayerNorm):
            return getattr(layer, name)
    raise unknown_part(model, layer, "pre-norm layers with `attention`, a norm and `mlp`")


def _layer_blocks(model, prefix: str, stage: int, layer: nn.Module, layout: Layout) -> list[Block]:
    norm, attn = _mlp_norm(model, layer), layer.attention
    # The attention module returns (output, probabilities); a lesion zeroes the output.
    return [
        Block(f"{prefix}.msa", "msa", stage, norm, "input", attn, layout, attn),
        Block(f"{prefix}.mlp", "mlp", stage, layer, "output", layer.mlp, layout),
    ]


def describe_vit(model: nn.Module, family: str) -> list[Block]:
    """ViT, DeiT and DINOv2: embeddings, then one token stream through the layers."""
    base, cfg = model.base_model, model.config
    side = cfg.image_size // cfg.patch_size
    layout = tokens(_PREFIX[family] + getattr(cfg, "num_register_tokens", 0), (side, side))
    out = [Block("embed", "embed", 0, base.embeddings, "output", None, layout)]
    for i, layer in enumerate(_layer_list(base)):
        out += _layer_blocks(model, f"block{i}", 0, layer, layout)
    return out + _head(model, 0)


def describe_swin(model: nn.Module) -> list[Block]:
    """Swin: (B, H*W, C) tokens; a stage's patch merging (at its end) opens the next stage."""
    base = model.base_model
    grid = tuple(base.embeddings.patch_grid)
    out = [Block("embed", "embed", 0, base.embeddings, "output", None, tokens(0, grid))]
    for s, stage in enumerate(base.encoder.layers):
        for i, layer in enumerate(stage.blocks):
            layout = tokens(0, tuple(layer.input_resolution))
            out += _layer_blocks(model, f"stage{s}.block{i}", s, layer, layout)
        if stage.downsample is not None:
            grid = tuple((n + 1) // 2 for n in layer.input_resolution)
            pool = tokens(0, grid)
            out.append(
                Block(f"stage{s + 1}.pool", "pool", s + 1, stage.downsample, "output", None, pool)
            )
    return out + _head(model, len(base.encoder.layers) - 1)


def describe_resnet(model: nn.Module) -> list[Block]:
    """ResNet: embedder, then stages of basic or bottleneck layers."""
    base = model.base_model
    out = [Block("embed", "embed", 0, base.embedder, "output", None, NCHW)]
    module = f"{_TF}.resnet.modeling_resnet"
    for s, stage in enumerate(base.encoder.stages):
        for i, layer in enumerate(stage.layers):
            if not (
                derives_from(layer, module, "ResNetBasicLayer")
                or derives_from(layer, module, "ResNetBottleNeckLayer")
            ):
                raise unknown_part(model, layer, "ResNetBasicLayer/ResNetBottleNeckLayer layers")
            name = f"stage{s}.block{i}.conv"
            out.append(Block(name, "conv", s, layer, "output", layer.layer, NCHW))
    return out + _head(model, len(base.encoder.stages) - 1)


def hf_logits(output: Any) -> torch.Tensor:
    """`logits` of a classification output; the pooled features of a bare backbone's output."""
    for name in ("logits", "pooler_output"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value.flatten(1)  # ResNet pools to (B, C, 1, 1)
    hidden = getattr(output, "last_hidden_state", None)
    if isinstance(hidden, torch.Tensor) and hidden.ndim == 3:
        return hidden[:, 0]
    raise VitlensError(f"cannot find logits or pooled features in a {type(output).__name__}")


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Every config in `model` selects the eager (explicit softmax) attention; restored after."""
    configs: dict[int, Any] = {}
    for module in unwrap(model).modules():
        cfg = getattr(module, "config", None)
        if hasattr(cfg, "_attn_implementation_internal"):
            configs[id(cfg)] = cfg
    # The internal attribute: the public setter would also rewrite sub-configs we restore anyway.
    restore = [(cfg, cfg._attn_implementation_internal) for cfg in configs.values()]
    try:
        for cfg, _ in restore:
            cfg._attn_implementation_internal = "eager"
        yield model
    finally:
        for cfg, old in restore:
            cfg._attn_implementation_internal = old


def hf_input(model: nn.Module) -> InputSpec:
    """Channels and side from the config; normalisation lives in the preprocessor, not here."""
    cfg = model.config
    size = getattr(cfg, "image_size", None)
    return InputSpec(
        channels=getattr(cfg, "num_channels", None), size=size if isinstance(size, int) else None
    )


def describe_hf(model: nn.Module) -> Anatomy:
    family = family_of(model)
    describers: dict[str, Callable[[nn.Module], list[Block]]] = {
        "swin": describe_swin,
        "resnet": describe_resnet,
    }
    describer = describers.get(family) or (lambda m: describe_vit(m, family))
    return Anatomy(
        tuple(describer(model)), logits=hf_logits, explicit=eager_attention, input=hf_input(model)
    )


register_adapter(lambda m: family_of(m) is not None, describe_hf)
