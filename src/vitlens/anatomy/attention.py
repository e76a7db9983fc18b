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
from vitlens.anatomy.spec import Block


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
    """While active, keeps every attention map computed: softmaxes over the last axis of 4-D
    (B, heads, N, M) or 5-D (B, heads, windows, N, M) tensors, and the probabilities of
    `F.scaled_dot_product_attention`, which is replaced by its explicit (math) computation so
    that its map exists and it has a double backward."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            out, probs = explicit_sdpa(*args, **kwargs)
            # SDPA's heads are the third axis from the end; any axes before are batch axes
            # (Twins' windows: (B, windows, heads, N, M)).
            self.seen.append(probs.reshape(-1, *probs.shape[-3:]))
            return out
        out = func(*args, **kwargs)
        if func in _SOFTMAXES and isinstance(out, torch.Tensor) and out.ndim in (4, 5):
            dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            if dim in (-1, out.ndim - 1):
                self.seen.append(out)
        return out


def windows_on_batch(probs: torch.Tensor, heads: int | None) -> torch.Tensor:
    """Windowed maps as (B * W, heads, N, M), windows on the batch axis. Implementations put
    the windows before the heads (Twins: (B, W, heads, N, M)) or after them (NesT: (B, heads,
    W, N, M)); the module's head count tells which, and heads-first is assumed without it."""
    if probs.ndim == 4:
        return probs
    if heads is not None and probs.shape[2] == heads != probs.shape[1]:
        return probs.reshape(-1, *probs.shape[2:])
    b, h, w, n, m = probs.shape
    return probs.permute(0, 2, 1, 3, 4).reshape(b * w, h, n, m)


def heads_of(block: Block) -> int | None:
    """The head count the block's attention modules declare (None when none does)."""
    for module in (block.attention, block.mixer, block.branch):
        for attr in ("num_heads", "heads", "n_heads"):
            value = getattr(module, attr, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


def explicit_sdpa(
    query,
    key,
    value,
    attn_mask=None,
    dropout_p=0.0,
    is_causal=False,
    scale=None,
    enable_gqa=False,
):
    """`F.scaled_dot_product_attention` computed explicitly: (output, probabilities)."""
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        repeat = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(repeat, -3), value.repeat_interleave(repeat, -3)
    logits = query @ key.transpose(-2, -1) * scale
    if is_causal:
        n, m = query.shape[-2], key.shape[-2]
        causal = torch.ones(n, m, dtype=torch.bool, device=query.device).tril()
        logits = logits.masked_fill(~causal, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attn_mask, float("-inf"))
        else:
            logits = logits + attn_mask
    probs = logits.softmax(dim=-1)
    dropped = F.dropout(probs, dropout_p) if dropout_p > 0 else probs
    return dropped @ value, probs


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


def map_source(block: Block) -> nn.Module | None:
    """The module whose forward computes an MSA block's attention map: its attention module,
    else the mixer or branch inside which the one softmax over keys runs."""
    return block.attention or block.mixer or block.branch


def hook_maps(
    blocks: list[Block],
    keep: Callable[[Block, list[torch.Tensor]], None],
    unread: dict[str, str],
) -> list:
    """Hooks that hand `keep(block, candidates)` the (B * windows, heads, N, M) attention maps
    each block's forward produces: the attention module's output; else the map of a module
    inside the block that computes its own (`get_attention(x)`, ConViT's gated positional
    attention, whose two softmaxes are mixed after); else every softmax over keys caught inside
    the block's mixer, of which the reader keeps the one that fits the block's grid (TNT: the
    patch attention, not the pixel attention within a patch). A block whose mixer computed none
    is named in `unread`. Returns the hook handles (remove them when done)."""

    def emitted(block: Block):
        heads = heads_of(block)

        def hook(_m, _inp, out):
            keep(block, [windows_on_batch(out[1] if isinstance(out, tuple) else out, heads)])

        return hook

    def own(block: Block):
        def hook(module, inp, _out):
            keep(block, [module.get_attention(inp[0])])

        return hook

    def caught(block: Block):
        heads = heads_of(block)

        def found(seen: list[torch.Tensor]) -> None:
            if seen:
                keep(block, [windows_on_batch(t, heads) for t in seen])
            else:
                unread[block.name] = "its branch computed no softmax over keys"

        return found

    handles = []
    for b in blocks:
        source = map_source(b)
        computes = [m for m in source.modules() if callable(getattr(m, "get_attention", None))]
        if b.attention is not None:
            handles.append(b.attention.register_forward_hook(emitted(b)))
        elif len(computes) == 1:
            handles.append(computes[0].register_forward_hook(own(b)))
        else:
            handles += catching_softmax(source, caught(b))
    return handles
