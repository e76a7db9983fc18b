"""Explicit-softmax attention switches, and reading attention maps from any described model.

Fused `F.scaled_dot_product_attention` is fast but has no double backward and hides its
probabilities. Inside `explicit_attention(model)` every attention layer computes
softmax(q k^T / sqrt(d) + bias) v explicitly, so Hessian-vector products work and each `msa`
block's `attention` module emits its (B, heads, N, N) map. How a family is switched is part of its
`Anatomy` (`Anatomy.explicit`); this module holds the switches the built-in adapters share.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from vitlens.anatomy.core import anatomy_of, unwrap


def switch_flag(attr: str, value: bool) -> Callable[[nn.Module], contextlib.AbstractContextManager]:
    """A switch that sets the boolean attribute `attr` to `value` on every module that has one
    (vitlens `Attention.explicit`, timm's `fused_attn`), and restores it afterwards."""

    @contextlib.contextmanager
    def switch(model: nn.Module) -> Iterator[nn.Module]:
        restore = []
        for module in unwrap(model).modules():
            if isinstance(getattr(module, attr, None), bool):
                restore.append((module, getattr(module, attr)))
                setattr(module, attr, value)
        try:
            yield model
        finally:
            for module, old in reversed(restore):
                setattr(module, attr, old)

    return switch


@contextlib.contextmanager
def force_mha_weights(model: nn.Module) -> Iterator[nn.Module]:
    """Every `nn.MultiheadAttention` returns per-head weights, which makes PyTorch compute the
    softmax explicitly instead of through SDPA (torchvision ViT)."""
    patched = []
    for module in unwrap(model).modules():
        if isinstance(module, nn.MultiheadAttention):
            patched.append((module, module.__dict__.get("forward")))
            module.forward = _weights_forcing_forward(module)
    try:
        yield model
    finally:
        for module, old in reversed(patched):
            if old is None:
                del module.forward
            else:
                module.forward = old


def _weights_forcing_forward(mha: nn.MultiheadAttention):
    original = type(mha).forward

    def forward(*args, **kwargs):
        kwargs["need_weights"] = True
        kwargs["average_attn_weights"] = False
        return original(mha, *args, **kwargs)

    return forward


@contextlib.contextmanager
def every_known_switch(model: nn.Module) -> Iterator[nn.Module]:
    """For a model no adapter describes: turn every attention layer vitlens knows (vitlens,
    timm, `nn.MultiheadAttention`) to the explicit path."""
    with (
        switch_flag("explicit", True)(model),
        switch_flag("fused_attn", False)(model),
        force_mha_weights(model),
    ):
        yield model


def explicit_attention(model: nn.Module) -> contextlib.AbstractContextManager:
    """Within the context, all attention in `model` takes the explicit, differentiable path."""
    return anatomy_of(model, need_blocks=False).explicit(model)


def attention_maps(
    model: nn.Module, x: torch.Tensor
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Attention probabilities (B, heads, N_query, N_key) of every `msa` block, and the logits.

    For windowed attention the batch axis is (B * windows).
    """
    anatomy = anatomy_of(model)
    maps: dict[str, torch.Tensor] = {}
    handles = []
    for block in anatomy.blocks:
        if block.kind != "msa" or block.attention is None:
            continue

        def hook(_m, _inp, out, name=block.name):
            maps[name] = (out[1] if isinstance(out, tuple) else out).detach()

        handles.append(block.attention.register_forward_hook(hook))
    try:
        with anatomy.explicit(model):
            logits = anatomy.forward(model, x)
    finally:
        for h in handles:
            h.remove()
    return maps, logits


# The softmax entry points an attention implementation calls (F.softmax reaches Tensor.softmax
# inside its own handler, where the mode is off, so each call is seen once).
_SOFTMAXES = {torch.softmax, F.softmax, torch.Tensor.softmax}


class SoftmaxCatcher(TorchFunctionMode):
    """While active, keeps every 4-D softmax result over the last axis: the attention
    probabilities (B, heads, N, N) of an implementation that has no module emitting them
    (torchvision's Swin computes them inside a function)."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _SOFTMAXES and isinstance(out, torch.Tensor) and out.ndim == 4:
            dim = (kwargs or {}).get("dim", args[1] if len(args) > 1 else None)
            if dim in (-1, 3):
                self.seen.append(out)
        return out


def catching_softmax(module: nn.Module, found: Callable[[list[torch.Tensor]], None]) -> list:
    """Hooks that run `module`'s forward under a SoftmaxCatcher and hand `found` what it saw;
    returns the hook handles (remove them when done)."""
    catcher: list[SoftmaxCatcher] = []

    def before(_m, _inp):
        catcher.append(SoftmaxCatcher())
        catcher[-1].__enter__()

    def after(_m, _inp, _out):
        mode = catcher.pop()
        mode.__exit__(None, None, None)
        found(mode.seen)

    return [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
