"""A fallback anatomy for timm and torchvision models that no dedicated adapter knows.

It is registered before every other adapter, so it is asked last. It understands:

- a timm model with `forward_intermediates()`: its trunk is the container that holds the modules
  timm's `feature_info` names (`stages`, `blocks`, ...); each stage of that trunk is unrolled into
  its blocks (a `blocks` list, or a plain `Sequential` of composite modules);
- a torchvision classification model with a `features` trunk (MobileNet, EfficientNet, ConvNeXt,
  VGG, ...): `features[0]` is the stem, the rest is unrolled the same way.

What each unit is, is learnt from one probe forward pass (batch 1, eval mode, no grad), cached per
model: the layout of its output (NCHW, NHWC or tokens), its resolution stage (a new stage where the
map gets smaller), the module whose output *is* the model's output (the `head`), and whether its
residual branch is where we think it is. Kinds are inferred:

- a unit containing attention is split into `msa` + `mlp` when it is a pre-norm block
  (`norm1 -> attn`, `norm2 -> mlp`, checked on the probe's tensors), otherwise it is one `block`;
- other units are `conv`, or `pool` when they shrink the map with at most two layers and no skip.

A residual branch is named only where the block says it has a skip (timm `drop_path` with
`has_skip`, torchvision `stochastic_depth` / `use_res_connect`) and zeroing it passes the stream on
unchanged in a second probe; other units cannot be lesioned. Attention maps are readable for
timm-style attention (`fused_attn` + `attn_drop`). Analyses that need what a model lacks say so:
`attention` needs `msa` blocks with readable maps, `lesion` needs residual branches.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from vitlens.anatomy.attention import force_mha_weights, switch_flag
from vitlens.anatomy.core import register_adapter, unwrap
from vitlens.anatomy.spec import NCHW, NHWC, VECTOR, Anatomy, Block, InputSpec, Layout, tokens
from vitlens.errors import VitlensError

# A model that does not fix its input size is probed at 64 px (cheap; enough for stride 32); one
# that needs more is probed again at 224.
_PROBE_SIDES = (64, 224)
_CACHE: weakref.WeakKeyDictionary[nn.Module, Anatomy] = weakref.WeakKeyDictionary()


def _timm_input(model: nn.Module) -> InputSpec:
    # Imported here: importing timm_models at the top would register its adapters before this one.
    from vitlens.anatomy.adapters.timm_models import timm_input

    return timm_input(model)


def is_timm(model: nn.Module) -> bool:
    return type(model).__module__.startswith("timm.") and hasattr(model, "forward_intermediates")


def is_torchvision(model: nn.Module) -> bool:
    return type(model).__module__.startswith("torchvision.models.") and isinstance(
        getattr(model, "features", None), nn.Sequential
    )


def _composite(module: nn.Module) -> bool:
    """A block (several layers), as opposed to a single layer."""
    return len(list(module.children())) >= 2


def _unroll(path: str, module: nn.Module) -> list[tuple[str, nn.Module]]:
    """A stage becomes its blocks; a block stays itself."""
    blocks = getattr(module, "blocks", None)
    if isinstance(blocks, nn.Sequential | nn.ModuleList) and len(blocks):
        return [(f"{path}.blocks.{n}", b) for n, b in blocks.named_children()]
    plain = type(module) in (nn.Sequential, nn.ModuleList)
    if plain and all(_composite(c) for c in module.children()):
        return [(f"{path}.{n}", b) for n, b in module.named_children()]
    return [(path, module)]


def _timm_units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    paths = [f["module"] for f in getattr(model, "feature_info", None) or [] if "." in f["module"]]
    if not paths:
        raise VitlensError(f"timm {type(model).__name__} has no feature_info to find its trunk")
    trunk = Counter(p.rsplit(".", 1)[0] for p in paths).most_common(1)[0][0]
    units = []
    for name, child in model.get_submodule(trunk).named_children():
        units += _unroll(f"{trunk}.{name}", child)
    return units


def _torchvision_units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    units = []
    for name, child in list(model.features.named_children())[1:]:
        units += _unroll(f"features.{name}", child)
    return units


@dataclass
class _Probe:
    """What one forward pass showed: each recorded module's first input and its output."""

    seen: dict[int, tuple[torch.Tensor | None, torch.Tensor | None]]
    output: torch.Tensor

    def input(self, m: nn.Module) -> torch.Tensor | None:
        return self.seen.get(id(m), (None, None))[0]

    def out(self, m: nn.Module) -> torch.Tensor | None:
        return self.seen.get(id(m), (None, None))[1]


def _first(value) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, tuple | list) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


def _probe(model, watch: list[nn.Module], side: int, zero: list[nn.Module] = ()) -> _Probe:
    seen: dict[int, tuple] = {}

    def hook(m, inp, out):
        seen[id(m)] = (_first(inp), _first(out))

    def zeroed(_m, _inp, out):
        return torch.zeros_like(out)

    handles = [m.register_forward_hook(hook) for m in watch]
    handles += [m.register_forward_hook(zeroed) for m in zero]
    was_training = model.training
    channels = (_timm_input(model).channels or 3) if is_timm(model) else 3
    x = torch.randn(1, channels, side, side, generator=torch.Generator().manual_seed(0))
    param = next(model.parameters())
    try:
        model.eval()
        with torch.no_grad():
            output = _first(model(x.to(param.device, param.dtype)))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return _Probe(seen, output)


def _layout(model: nn.Module, t: torch.Tensor) -> Layout:
    if t.ndim == 2:
        return VECTOR
    if t.ndim == 3:
        prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
        if math.isqrt(t.shape[1] - prefix) ** 2 != t.shape[1] - prefix:
            raise VitlensError(
                f"{t.shape[1]} tokens of {type(model).__name__} are not a square grid"
            )
        return tokens(prefix)
    # Square probe: the two equal axes are the spatial ones.
    return NHWC if t.shape[1] == t.shape[2] != t.shape[3] else NCHW


def _has_attention(module: nn.Module) -> bool:
    return any(
        isinstance(m, nn.MultiheadAttention) or "Attention" in type(m).__name__
        for m in module.modules()
    )


def _pre_norm_parts(unit: nn.Module, probe: _Probe):
    """(attn, norm2, mlp) of a block that computes x + attn(norm1(x)); x + mlp(norm2(x))."""
    parts = [getattr(unit, n, None) for n in ("norm1", "attn", "norm2", "mlp")]
    if not all(isinstance(p, nn.Module) for p in parts):
        return None
    norm1, attn, norm2, mlp = parts
    chained = (
        probe.input(norm1) is probe.input(unit)
        and probe.input(attn) is probe.out(norm1)
        and probe.input(mlp) is probe.out(norm2)
    )
    return (attn, norm2, mlp) if chained else None


def _skip_branch(unit: nn.Module) -> nn.Module | None:
    """The module that ends a block's residual branch, where the block says it has one."""
    if not getattr(unit, "has_skip", True) or not getattr(unit, "use_res_connect", True):
        return None
    for name in ("drop_path", "stochastic_depth"):
        if isinstance(getattr(unit, name, None), nn.Module):
            return getattr(unit, name)
    if getattr(unit, "use_res_connect", False) and isinstance(
        getattr(unit, "block", None), nn.Module
    ):
        return unit.block  # torchvision InvertedResidual: result = block(x); result += x
    return None


def _maps_readable(attn: nn.Module) -> nn.Module | None:
    # timm attention routes explicit probabilities through `attn_drop` once `fused_attn` is off.
    ok = isinstance(getattr(attn, "fused_attn", None), bool) and hasattr(attn, "attn_drop")
    return attn.attn_drop if ok else None


def _verified(model, units, branches: dict[int, nn.Module], side: int) -> dict[int, nn.Module]:
    """Keep the branches whose zeroing makes their block pass on its input unchanged."""
    if not branches:
        return branches
    probe = _probe(model, [u for _, u in units], side, zero=list(branches.values()))
    kept = {}
    for _, unit in units:
        if id(unit) not in branches:
            continue
        inp, out = probe.input(unit), probe.out(unit)
        if inp is None or out is None or inp.shape != out.shape or torch.equal(inp, out):
            kept[id(unit)] = branches[id(unit)]  # a projection shortcut cannot be compared
    return kept


def _head(model: nn.Module, probe: _Probe) -> nn.Module | None:
    """The outermost module whose output is the model's output."""
    for _, m in model.named_modules():
        if m is not model and probe.out(m) is probe.output:
            return m
    return None


def _first_probe(model: nn.Module) -> tuple[_Probe, int]:
    """The probe of every module, at the model's own size if it fixes one, and that size."""
    size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    fixed = getattr(getattr(model, "patch_embed", None), "strict_img_size", True)
    sides = (int(size[0]),) if isinstance(size, tuple | list) and fixed else _PROBE_SIDES
    for side in sides:
        try:
            return _probe(model, list(model.modules())[1:], side), side
        except Exception as err:  # any failure of a model we do not know: say what was tried
            failure = err
    raise VitlensError(
        f"the generic adapter could not run {type(model).__name__} on "
        f"{' or '.join(map(str, sides))} px images to learn its layout: {failure}"
    ) from failure


def _names(stages: list[int], kinds: list[str]) -> list[str]:
    single = len(set(stages)) == 1
    out, index = [], Counter()
    for stage, kind in zip(stages, kinds, strict=True):
        i = index[stage]
        if kind != "mlp":  # msa and mlp share their block's number
            index[stage] += 1
        else:
            i -= 1
        out.append(f"block{i}.{kind}" if single else f"stage{stage}.block{i}.{kind}")
    return out


def _unit_blocks(model, units, probe: _Probe, branches) -> list[tuple]:
    """(kind, tap, tap_point, branch, tensor, attention) for each unit, in forward order."""
    rows = []
    for _, unit in units:
        out = probe.out(unit)
        if out is None:
            raise VitlensError(f"a {type(unit).__name__} in {type(model).__name__} never ran")
        if _has_attention(unit):
            parts = _pre_norm_parts(unit, probe)
            if parts is None:
                rows.append(("block", unit, "output", None, out, None))
                continue
            attn, norm2, mlp = parts
            rows.append(("msa", norm2, "input", attn, probe.input(norm2), _maps_readable(attn)))
            rows.append(("mlp", unit, "output", mlp, out, None))
            continue
        inp, branch = probe.input(unit), branches.get(id(unit))
        shrinks = inp is not None and inp.ndim == 4 and inp.shape[-1] > out.shape[-1]
        layers = sum(1 for m in unit.modules() if not list(m.children()))
        kind = "pool" if branch is None and shrinks and layers <= 2 else "conv"
        rows.append((kind, unit, "output", branch, out, None))
    return rows


def _embed_row(model: nn.Module, units, probe: _Probe) -> tuple:
    if is_timm(model):  # the stream entering the trunk
        first = units[0][1]
        return ("embed", first, "input", None, probe.input(first), None)
    stem = model.features[0]  # torchvision: the stem is the first of `features`
    return ("embed", stem, "output", None, probe.out(stem), None)


def _assemble(model: nn.Module, rows: list[tuple]) -> list[Block]:
    """Blocks from (kind, tap, tap_point, branch, probe tensor, attention) rows; a new stage
    starts wherever the map gets smaller."""
    stages, layouts, stage, last = [], [], 0, None
    for row in rows:
        layout = _layout(model, row[4])
        side = int(layout.to_map(row[4]).shape[-1])
        if last is not None and side < last:
            stage += 1
        last = side
        stages.append(stage)
        layouts.append(layout)
    names = ["embed", *_names(stages[1:], [r[0] for r in rows[1:]])]
    return [
        Block(name, kind, s, tap, point, branch, layout, attention)
        for name, (kind, tap, point, branch, _, attention), s, layout in zip(
            names, rows, stages, layouts, strict=True
        )
    ]


def describe_generic(model: nn.Module) -> Anatomy:
    """The Anatomy of a timm or torchvision model, learnt from a probe (see the module text)."""
    model = unwrap(model)
    if model in _CACHE:
        return _CACHE[model]
    units = _timm_units(model) if is_timm(model) else _torchvision_units(model)
    probe, side = _first_probe(model)
    branches = {id(u): b for _, u in units if (b := _skip_branch(u)) is not None}
    branches = _verified(model, units, branches, side)
    rows = [_embed_row(model, units, probe), *_unit_blocks(model, units, probe, branches)]
    blocks = _assemble(model, rows)
    head = _head(model, probe)
    if head is not None:
        blocks.append(Block("head", "head", blocks[-1].stage, head, "output", None, VECTOR))
    spec = _timm_input(model) if is_timm(model) else InputSpec(channels=3)
    anatomy = Anatomy(tuple(blocks), explicit=_explicit, input=spec)
    _CACHE[model] = anatomy
    return anatomy


def _hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x + 3.0, 0.0, 6.0) / 6.0


def _hard_swish(x: torch.Tensor) -> torch.Tensor:
    return x * _hard_sigmoid(x)


@contextlib.contextmanager
def _twice_differentiable(model: nn.Module) -> Iterator[nn.Module]:
    """Hardsigmoid and Hardswish (MobileNetV3) computed with `clamp`: PyTorch has no double
    backward for `hardsigmoid_backward`, which the Hessian analysis needs."""
    patched = []
    for module in unwrap(model).modules():
        if type(module) in (nn.Hardsigmoid, nn.Hardswish):
            patched.append(module)
            module.forward = _hard_swish if isinstance(module, nn.Hardswish) else _hard_sigmoid
    try:
        yield model
    finally:
        for module in patched:
            del module.forward


@contextlib.contextmanager
def _explicit(model: nn.Module) -> Iterator[nn.Module]:
    """timm attention off its fused path, `nn.MultiheadAttention` returning its weights, and
    hard activations that can be differentiated twice."""
    with (
        switch_flag("fused_attn", False)(model),
        force_mha_weights(model),
        _twice_differentiable(model),
    ):
        yield model


# Registered first, so every dedicated adapter (registered later) is asked before it.
register_adapter(lambda m: is_timm(m) or is_torchvision(m), describe_generic)
