"""anatomy_of / describe / record / lesion: the anatomy helpers every analysis uses.

`anatomy_of(model)` asks a native vitlens model for its blocks (its `anatomy()` method) or finds an
adapter (`anatomy/adapters/`, one file per family) and returns an `Anatomy`: the blocks, how to get
logits from the model's output, and how to switch its attention to the explicit path. The helpers
work only through it, with forward hooks, so they never depend on a model's attribute names.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from vitlens.anatomy.spec import Anatomy, Block, InputSpec
from vitlens.errors import VitlensError

Describer = Callable[[nn.Module], "Anatomy | list[Block]"]

# Adapters register here: (predicate, describer). Checked newest first, after the native method,
# so a user's adapter can override a built-in one.
_ADAPTERS: list[tuple[Callable[[nn.Module], bool], Describer]] = []


def register_adapter(matches: Callable[[nn.Module], bool], describer: Describer) -> None:
    """Teach `anatomy_of` a model family it does not own.

    Args:
        matches: says whether a model belongs to the family.
        describer: returns the model's `Anatomy` (or just its blocks: the output is then taken
            as logits as `output_logits` does, and attention is assumed to be explicit already).
    """
    _ADAPTERS.insert(0, (matches, describer))


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def anatomy_of(model: nn.Module, *, need_blocks: bool = True) -> Anatomy:
    """The `Anatomy` of `model`: blocks in forward order, logits, explicit attention.

    Args:
        need_blocks: False for analyses that only read logits (robustness): a model no adapter
            knows then gets an Anatomy without blocks instead of an error.

    Raises:
        VitlensError: the model is neither a vitlens model nor one an adapter knows.
    """
    from vitlens.anatomy import adapters  # noqa: F401  (registers the built-in adapters)

    model = unwrap(model)
    if hasattr(model, "anatomy"):
        return _as_anatomy(model.anatomy(), model, native=True)
    for matches, describer in _ADAPTERS:
        if matches(model):
            return _as_anatomy(describer(model), model, native=False)
    if not need_blocks:
        from vitlens.anatomy.attention import every_known_switch

        return Anatomy((), explicit=every_known_switch)
    raise VitlensError(
        f"vitlens cannot see inside a {type(model).__module__}.{type(model).__name__}: it is not a "
        "vitlens model and no adapter describes it (known: timm, torchvision and Hugging Face "
        "vision models). Give the model an `anatomy()` method returning "
        "vitlens.anatomy.Block objects, or register one with vitlens.anatomy.register_adapter."
    )


def _as_anatomy(described: Anatomy | list[Block], model: nn.Module, *, native: bool) -> Anatomy:
    if isinstance(described, Anatomy):
        return described
    if not native:
        return Anatomy(tuple(described))
    from vitlens.anatomy.attention import switch_flag

    # A vitlens model knows its size and channels from `create_model` (or its own attributes).
    built = getattr(model, "vitlens_config", None) or {}
    size = getattr(model, "image_size", built.get("image_size"))
    channels = getattr(model, "in_chans", built.get("in_chans"))
    return Anatomy(
        tuple(described),
        explicit=switch_flag("explicit", True),  # vitlens `Attention` layers
        input=InputSpec(
            channels=channels if isinstance(channels, int) else None,
            size=size if isinstance(size, int) else None,
            fixed_size=True,
        ),
    )


def describe(model: nn.Module) -> list[Block]:
    """The blocks of `model` in forward order (DESIGN.md §2): `anatomy_of(model).blocks`."""
    return list(anatomy_of(model).blocks)


def _tensor_at(value, index: int = 0) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, tuple | list) and len(value) > index and torch.is_tensor(value[index]):
        return value[index]
    raise TypeError(f"tap produced {type(value).__name__}, not a tensor")


@contextlib.contextmanager
def tapping(
    blocks: Iterable[Block], on_tap: Callable[[Block, torch.Tensor], None]
) -> Iterator[None]:
    """Call `on_tap(block, tensor)` with the raw tapped tensor of each block during forwards."""
    handles = []
    try:
        for block in blocks:
            if block.tap_point == "output":

                def hook(_m, _inp, out, block=block):
                    on_tap(block, _tensor_at(out, block.tap_index))

                handles.append(block.tap.register_forward_hook(hook))
            else:

                def pre_hook(_m, inp, block=block):
                    on_tap(block, _tensor_at(inp, block.tap_index))

                handles.append(block.tap.register_forward_pre_hook(pre_hook))
        yield
    finally:
        for h in handles:
            h.remove()


def record(
    model: nn.Module,
    x: torch.Tensor,
    blocks: list[Block] | None = None,
    *,
    detach: bool = True,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Run one forward pass; return every block's output as a `B x C x H x W` map, and the logits.

    Args:
        model: any described model.
        x: the input batch.
        blocks: a subset of `describe(model)` to record (default: all).
        detach: detach the maps from the graph (set False to differentiate through them).
    """
    anatomy = anatomy_of(model)
    blocks = list(anatomy.blocks) if blocks is None else blocks
    maps: dict[str, torch.Tensor] = {}

    def keep(block: Block, t: torch.Tensor) -> None:
        t = block.layout.to_map(t)
        maps[block.name] = t.detach() if detach else t

    with tapping(blocks, keep):
        logits = anatomy.forward(model, x)
    return maps, logits


@contextlib.contextmanager
def lesioned(model: nn.Module, names: Iterable[str]) -> Iterator[None]:
    """Within the context, the residual branches of the named blocks output zeros (paper §4)."""
    names = set(names)
    by_name = {b.name: b for b in describe(model)}
    unknown = names - by_name.keys()
    if unknown:
        raise VitlensError(f"no block named {sorted(unknown)}; blocks are {list(by_name)}")
    no_branch = [n for n in names if by_name[n].branch is None]
    if no_branch:
        raise VitlensError(f"blocks {sorted(no_branch)} have no residual branch to lesion")

    def zero(_m, _inp, out):
        if isinstance(out, tuple):
            return (torch.zeros_like(out[0]),) + tuple(out[1:])
        return torch.zeros_like(out)

    handles = [by_name[n].branch.register_forward_hook(zero) for n in names]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def lesionable(model: nn.Module) -> list[str]:
    """Names of the blocks whose residual branch can be lesioned."""
    return [b.name for b in describe(model) if b.branch is not None]
