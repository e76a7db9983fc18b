"""Switch any described model to explicit-softmax attention, and read its attention maps.

Fused `F.scaled_dot_product_attention` is fast but has no double backward and hides its
probabilities. Inside `explicit_attention(model)` every attention layer computes
softmax(q k^T / sqrt(d) + bias) v explicitly, so Hessian-vector products work and each `msa`
block's `attention` module emits its (B, heads, N, N) map. Knows vitlens `Attention`, timm
attention layers (their `fused_attn` switch) and `nn.MultiheadAttention` (torchvision ViT).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from vitlens.anatomy.core import describe, unwrap


@contextlib.contextmanager
def explicit_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Within the context, all attention in `model` takes the explicit, differentiable path."""
    restore = []
    for module in unwrap(model).modules():
        if hasattr(module, "explicit") and isinstance(module.explicit, bool):  # vitlens
            restore.append((module, "explicit", module.explicit))
            module.explicit = True
        elif hasattr(module, "fused_attn"):  # timm
            restore.append((module, "fused_attn", module.fused_attn))
            module.fused_attn = False
        elif isinstance(module, nn.MultiheadAttention):
            restore.append((module, "forward", module.__dict__.get("forward")))
            module.forward = _weights_forcing_forward(module)
    try:
        yield model
    finally:
        for module, attr, value in reversed(restore):
            if attr == "forward" and value is None:
                del module.forward
            else:
                setattr(module, attr, value)


def _weights_forcing_forward(mha: nn.MultiheadAttention):
    # With need_weights=True, PyTorch computes the softmax explicitly instead of through SDPA.
    original = type(mha).forward

    def forward(*args, **kwargs):
        kwargs["need_weights"] = True
        kwargs["average_attn_weights"] = False
        return original(mha, *args, **kwargs)

    return forward


def attention_maps(
    model: nn.Module, x: torch.Tensor
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Attention probabilities (B, heads, N_query, N_key) of every `msa` block, and the logits.

    For windowed attention the batch axis is (B * windows).
    """
    maps: dict[str, torch.Tensor] = {}
    handles = []
    for block in describe(model):
        if block.kind != "msa" or block.attention is None:
            continue

        def hook(_m, _inp, out, name=block.name):
            maps[name] = (out[1] if isinstance(out, tuple) else out).detach()

        handles.append(block.attention.register_forward_hook(hook))
    try:
        with explicit_attention(model):
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
    return maps, logits
