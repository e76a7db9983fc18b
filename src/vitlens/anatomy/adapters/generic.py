"""A fallback anatomy for timm and torchvision models that no dedicated adapter knows.

It is registered before every other adapter, so it is asked last. It understands:

- a timm model with `forward_intermediates()`: its trunk is the container that holds the modules
  timm's `feature_info` names (`stages`, `blocks`, ...); each stage of that trunk is unrolled into
  its blocks (a `blocks` list, or a plain `Sequential` of composite modules);
- a torchvision classification model with a `features` trunk (MobileNet, EfficientNet, ConvNeXt,
  VGG, ...): `features[0]` is the stem, the rest is unrolled the same way;
- any other torchvision or timm model (GoogLeNet, Inception, ShuffleNet, RegNet, MaxViT, Twins,
  Visformer, CrossViT, ...): its top-level children in the order the probe ran them, the first
  being the stem, unrolled through `Sequential`s, `blocks` and `layers`; the head and what
  comes after the last map are left out.

What each unit is, is learnt from one probe forward pass (batch 1, eval mode, no grad), cached per
model: the layout of its output (NCHW, NHWC or tokens), its resolution stage (a new stage where the
map gets smaller), the module whose output *is* the model's output (the `head`), and whether its
residual branch is where we think it is. Kinds are inferred:

- what mixes a unit's tokens is seen in the probe: a unit inside which a softmax over keys (the
  last axis of a >= 3-D tensor) or scaled-dot-product attention runs contains attention. It is
  split into `msa` + `mlp` when it is a pre-norm block (`norm1 -> attn`, `norm2 -> mlp`, checked
  on the probe's tensors), otherwise the whole unit is `msa` (post-norm Swin V2, LeViT, MobileViT,
  EfficientFormer, GCViT, NesT, ...; its maps are read from the softmax inside it). Attention
  over channels rather than positions (XCiT's XCA, DaViT's channel blocks) is `channel_msa`: it
  has no spatial map;
- a token-mixing MLP (MLP-Mixer `mlp_tokens`, ResMLP `linear_tokens`, gMLP's spatial gating)
  is `token_mlp`; a pooling token mixer (PoolFormer) is `pool`;
- other units are `conv`, or `pool` when they shrink the map with at most two layers and no skip.

A residual branch is named only where the block says it has a skip (timm `drop_path` with
`has_skip`, torchvision `stochastic_depth` / `use_res_connect`) and zeroing it passes the stream on
unchanged in a second probe; other units cannot be lesioned. Attention maps are readable for
timm-style attention (`fused_attn` + `attn_drop`). Analyses that need what a model lacks say so:
`attention` needs `msa` blocks with readable maps, `lesion` needs residual branches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import weakref
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from vitlens.anatomy.adapters._common import input_channels
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
    return type(model).__module__.startswith("torchvision.models.")


def is_transformers(model: nn.Module) -> bool:
    """Any Hugging Face `...ForImageClassification` the dedicated adapter does not know."""
    return type(model).__module__.startswith("transformers.models.") and hasattr(model, "config")


def _has_features(model: nn.Module) -> bool:
    return isinstance(getattr(model, "features", None), nn.Sequential)


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


def _timm_units(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """The units of the trunk timm's feature_info names (None: it names none that exists)."""
    paths = [f["module"] for f in getattr(model, "feature_info", None) or [] if "." in f["module"]]
    if not paths:
        return None
    trunk = Counter(p.rsplit(".", 1)[0] for p in paths).most_common(1)[0][0]
    try:
        children = model.get_submodule(trunk).named_children()
    except AttributeError:  # feature_info names a module path the model does not have (Twins)
        return None
    units = []
    for name, child in children:
        units += _unroll(f"{trunk}.{name}", child)
    return units


def _inner_list(module: nn.Module) -> tuple[nn.Module | None, str]:
    """The list a container holds: itself (any `Sequential`/`ModuleList`) or its `blocks` or
    `layers` attribute; (None, "") for a module that is not a container."""
    if isinstance(module, nn.Sequential | nn.ModuleList):
        return module, ""
    for attr in ("blocks", "layers", "layer", "stages"):  # `layer`, `stages`: Hugging Face
        found = getattr(module, attr, None)
        if isinstance(found, nn.Sequential | nn.ModuleList) and len(found):
            return found, f".{attr}"
    return None, ""


def _deep_unroll(path: str, module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Containers become their composite children, recursively."""
    inner, suffix = _inner_list(module)
    if inner is None:
        return [(path, module)]
    children = list(inner.named_children())
    if not children or not all(_composite(c) or _inner_list(c)[0] for _, c in children):
        return [(path, module)]
    return [u for name, c in children for u in _deep_unroll(f"{path}{suffix}.{name}", c)]


def _split_attention(units, probe: _Probe) -> list[tuple[str, nn.Module]]:
    """A unit inside which attention ran more than once (MaxViT's window then grid attention,
    DaViT's spatial then channel block) becomes the children that ran in it, where each of
    them passes the stream on (same rank of tensor in and out)."""
    out = []
    for path, unit in units:
        kids = sorted(
            ((f"{path}.{n}", c) for n, c in unit.named_children() if id(c) in probe.order),
            key=lambda nc: probe.order[id(nc[1])],
        )
        rank = probe.out(unit).ndim if probe.out(unit) is not None else None
        stream = all(
            probe.out(c) is not None
            and probe.input(c) is not None
            and probe.out(c).ndim == probe.input(c).ndim == rank
            for _, c in kids
        )
        attending = [c for _, c in kids if probe.attention_ops.get(id(c), 0)]
        blocks = all(_composite(c) for _, c in kids)  # sub-blocks, not a block's own layers
        if len(attending) >= 2 and blocks and stream:
            out += _split_attention(kids, probe)
        else:
            out.append((path, unit))
    return out


def _called_children(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The children of `module`, with `ModuleList`s (never called themselves) replaced by their
    members, recursively (Twins: `blocks` is a list of lists)."""
    out = []
    for name, child in module.named_children():
        path = f"{prefix}{name}"
        if isinstance(child, nn.ModuleList):
            out += _called_children(child, f"{path}.")
        else:
            out.append((path, child))
    return out


def _top_level_units(model: nn.Module, probe: _Probe) -> tuple[list, nn.Module | None]:
    """Any other model: its top-level children in the order they ran, unrolled; the first is
    the stem (`embed`), and children after the last feature map (pooling to a vector, the head)
    are left out. A model whose trunk is one container (MNASNet's `layers`) is its composite
    children, entered from the stream before the first."""
    children = _called_children(model)
    ran = [
        (name, child)
        for name, child in children
        if id(child) in probe.order and probe.out(child) is not None
    ]
    ran.sort(key=lambda nc: probe.order[id(nc[1])])
    spatial = [(n, c) for n, c in ran if probe.out(c).ndim >= 3]
    if len(spatial) == 1:
        name, trunk = spatial[0]
        inner = [
            (f"{name}.{n}", c)
            for n, c in trunk.named_children()
            if _composite(c) or _inner_list(c)[0] is not None
        ]
        units = [u for path, c in inner for u in _deep_unroll(path, c)]
        if len(units) >= 2:
            return units, None
    if len(spatial) < 2:
        raise VitlensError(
            f"cannot place the parts of {type(model).__name__}: fewer than two of its top-level "
            f"modules ({', '.join(n for n, _ in ran)}) return feature maps"
        )
    units = [u for name, child in spatial for u in _deep_unroll(name, child)]
    return units[1:], model.get_submodule(units[0][0])


def _torchvision_units(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    if not _has_features(model):
        return None
    units = []
    for name, child in list(model.features.named_children())[1:]:
        units += _unroll(f"features.{name}", child)
    return units


# Attention over channels, not positions: it has no spatial map.
CHANNEL_ATTENTION = ("XCA", "CrossCovarianceAttn", "ChannelAttention", "ChannelAttentionV2")
# Token mixers that are MLPs across positions, found by their attribute or class names.
TOKEN_MLP_ATTRS = ("mlp_tokens", "linear_tokens")
TOKEN_MLP_CLASSES = ("SpatialGatingUnit",)
POOL_MIXERS = ("Pooling",)
# Attention whose softmax runs over the tokens of the keys alone (CoaT's factorized attention:
# softmax(K)^T V, no N x N map): self-attention all the same.
FACTORIZED = ("FactorAttnConvRelPosEnc",)
# Attention-made kernels over a k x k neighbourhood (VOLO's outlookers): a dynamic convolution,
# not self-attention over positions.
LOCAL_ATTENTION = ("OutlookAttention",)


@dataclass
class _Probe:
    """What one forward pass showed: each recorded module's first input and its output, the
    order in which modules finished, and the modules inside which attention ran (`spatial` or
    `channel`)."""

    seen: dict[int, tuple[torch.Tensor | None, torch.Tensor | None]]
    output: torch.Tensor
    order: dict[int, int] = field(default_factory=dict)
    attending: dict[int, set[str]] = field(default_factory=dict)
    attention_ops: dict[int, int] = field(default_factory=dict)
    calls: dict[int, int] = field(default_factory=dict)  # how often each module ran
    # (id(module), "input" or "output") -> the stream's position in a tuple (see `_stream`)
    stream_index: dict[tuple[int, str], int] = field(default_factory=dict)

    def input(self, m: nn.Module) -> torch.Tensor | None:
        return self.seen.get(id(m), (None, None))[0]

    def out(self, m: nn.Module) -> torch.Tensor | None:
        return self.seen.get(id(m), (None, None))[1]


def _stream(value) -> tuple[torch.Tensor | None, int]:
    """The residual stream a module returned, and its position in a returned tuple: the first
    tensor with the probe's batch of one (TNT's blocks return the pixel tokens of every patch,
    B x 196 rows, before the patch tokens), else the first."""
    if isinstance(value, tuple | list) and value and isinstance(value[0], torch.Tensor):
        for i, t in enumerate(value):
            if isinstance(t, torch.Tensor) and t.ndim >= 2 and t.shape[0] == 1:
                return t, i
    return _first(value), 0


def _first(value) -> torch.Tensor | None:
    if hasattr(value, "to_tuple"):  # a Hugging Face ModelOutput
        value = value.to_tuple()
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, tuple | list) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


_SOFTMAXES = (torch.softmax, F.softmax, torch.Tensor.softmax)


class _AttentionWatch(TorchFunctionMode):
    """Marks every module on the running stack when a softmax over keys (the last axis of a
    >= 3-D tensor) or scaled-dot-product attention runs inside it."""

    def __init__(self, stack: list[nn.Module], attending: dict[int, set[str]], ops: dict):
        super().__init__()
        self.stack, self.attending, self.ops = stack, attending, ops

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.stack and _is_attention(func, args, kwargs, out):
            inner = type(self.stack[-1]).__name__
            what = "channel" if inner in CHANNEL_ATTENTION else "spatial"
            for m in self.stack:
                self.attending.setdefault(id(m), set()).add(what)
                self.ops[id(m)] = self.ops.get(id(m), 0) + 1
        return out


# Whole attention computations: SDPA, and nn.MultiheadAttention's paths (its fused fast path in
# eval mode runs no softmax the watch could see).
_ATTENTION_OPS = (
    F.scaled_dot_product_attention,
    F.multi_head_attention_forward,
    torch._native_multi_head_attention,
)


def _is_attention(func, args, kwargs, out) -> bool:
    if func in _ATTENTION_OPS:
        return True
    if func not in _SOFTMAXES or not isinstance(out, torch.Tensor) or out.ndim < 3:
        return False
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    return dim in (-1, out.ndim - 1) and out.shape[-1] > 1


def _input_channels(model: nn.Module) -> int:
    """The channels the model takes: its first convolution's, else timm's declared input, else 3."""
    if (channels := input_channels(model)) is not None:
        return channels
    return (_timm_input(model).channels or 3) if is_timm(model) else 3


def _probe(model, watch: list[nn.Module], side: int, zero: list[nn.Module] = ()) -> _Probe:
    seen: dict[int, tuple] = {}
    order: dict[int, int] = {}
    stack: list[nn.Module] = []
    attending: dict[int, set[str]] = {}
    ops: dict[int, int] = {}
    calls: dict[int, int] = {}
    index: dict[tuple[int, str], int] = {}

    def enter(m, _inp):
        stack.append(m)

    def hook(m, inp, out):
        if stack and stack[-1] is m:
            stack.pop()
        (t_in, index[id(m), "input"]), (t_out, index[id(m), "output"]) = _stream(inp), _stream(out)
        seen[id(m)] = (t_in, t_out)
        order.setdefault(id(m), len(order))
        calls[id(m)] = calls.get(id(m), 0) + 1

    def zeroed(_m, _inp, out):
        return torch.zeros_like(out)

    handles = [m.register_forward_pre_hook(enter) for m in watch]
    handles += [m.register_forward_hook(hook) for m in watch]
    handles += [m.register_forward_hook(zeroed) for m in zero]
    was_training = model.training
    channels = _input_channels(model)
    x = torch.randn(1, channels, side, side, generator=torch.Generator().manual_seed(0))
    param = next(model.parameters())
    try:
        model.eval()
        with torch.no_grad(), _AttentionWatch(stack, attending, ops):
            output = _first(model(x.to(param.device, param.dtype)))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return _Probe(seen, output, order, attending, ops, calls, index)


def _layout(model: nn.Module, t: torch.Tensor) -> Layout:
    if t.ndim == 2:
        return VECTOR
    if t.ndim == 3:
        return tokens(_prefix(model, t.shape[1]))
    # Square probe: the two equal axes are the spatial ones.
    return NHWC if t.shape[1] == t.shape[2] != t.shape[3] else NCHW


def _prefix(model: nn.Module, n: int) -> int:
    """Tokens before the square grid: the model's prefix tokens where it says, else what is
    left over a square (a class token added late, inside the trunk: CaiT, XCiT, ConViT)."""
    declared = int(getattr(model, "num_prefix_tokens", 0) or 0)
    for prefix in (declared, n - math.isqrt(n) ** 2):
        if 0 <= prefix <= 16 and n > prefix and math.isqrt(n - prefix) ** 2 == n - prefix:
            return prefix
    raise VitlensError(f"{n} tokens of {type(model).__name__} are not a square grid")


def _mixer(unit: nn.Module, probe: _Probe) -> str | None:
    """What mixes a unit's tokens when it is not a convolution: `msa`, `channel_msa`,
    `token_mlp` or `pool` (None: nothing of these)."""
    found = probe.attending.get(id(unit), set())
    if any(type(m).__name__ in LOCAL_ATTENTION for m in unit.modules()):
        return None
    if "spatial" in found or any(type(m).__name__ in FACTORIZED for m in unit.modules()):
        return "msa"
    if found:
        return "channel_msa"
    for m in unit.modules():
        if any(isinstance(getattr(m, a, None), nn.Module) for a in TOKEN_MLP_ATTRS):
            return "token_mlp"
        if type(m).__name__ in TOKEN_MLP_CLASSES:
            return "token_mlp"
        if type(m).__name__ in POOL_MIXERS or isinstance(
            getattr(m, "token_mixer", None), nn.AvgPool2d
        ):
            return "pool"
    return None


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
    own = _timm_input(model).size if is_timm(model) else None
    if isinstance(size, tuple | list) and fixed:
        sides = (int(size[0]),)
    else:  # cheap sides first; the model's own size where it declares one (MaxViT: 256)
        sides = tuple(dict.fromkeys((*_PROBE_SIDES, *((int(own),) if own else ()))))
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
        mixer, branch = _mixer(unit, probe), branches.get(id(unit))
        if mixer == "msa":
            parts = _pre_norm_parts(unit, probe)
            if parts is None:  # attention and MLP not separable: the whole unit mixes by MSA
                rows.append(("msa", unit, "output", branch, out, None))
                continue
            attn, norm2, mlp = parts
            rows.append(("msa", norm2, "input", attn, probe.input(norm2), _maps_readable(attn)))
            rows.append(("mlp", unit, "output", mlp, out, None))
            continue
        if mixer is not None:
            rows.append((mixer, unit, "output", branch, out, None))
            continue
        if any(type(m).__name__ in LOCAL_ATTENTION for m in unit.modules()):
            rows.append(("conv", unit, "output", branch, out, None))
            continue
        inp = probe.input(unit)
        shrinks = inp is not None and inp.ndim == 4 and inp.shape[-1] > out.shape[-1]
        layers = sum(1 for m in unit.modules() if not list(m.children()))
        kind = "pool" if branch is None and shrinks and layers <= 2 else "conv"
        rows.append((kind, unit, "output", branch, out, None))
    return rows


def _embed_row(model: nn.Module, units, probe: _Probe, stem: nn.Module | None) -> tuple:
    if stem is not None:  # torchvision `features[0]`, or the first top-level child that ran
        return ("embed", stem, "output", None, probe.out(stem), None)
    first = units[0][1]  # timm: the stream entering the trunk
    return ("embed", first, "input", None, probe.input(first), None)


def _assemble(model: nn.Module, rows: list[tuple], probe: _Probe) -> list[Block]:
    """Blocks from (kind, tap, tap_point, branch, probe tensor, attention) rows; a new stage
    starts wherever the map gets smaller."""
    stages, layouts, stage, last = [], [], 0, None
    for row in rows:
        if row[4] is None:
            raise VitlensError(
                f"a {type(row[1]).__name__} in {type(model).__name__} passes something other than "
                "a tensor along its trunk (a list or a dict), which vitlens cannot tap; register "
                "an adapter for it (vitlens.anatomy.register_adapter)"
            )
        layout = _layout(model, row[4])
        side = int(layout.to_map(row[4]).shape[-1])
        if last is not None and side < last:
            stage += 1
        last = side
        stages.append(stage)
        layouts.append(layout)
    names = ["embed", *_names(stages[1:], [r[0] for r in rows[1:]])]
    return [
        Block(
            name,
            kind,
            s,
            tap,
            point,
            branch,
            layout,
            attention,
            _mixer_module(kind, tap, point),
            probe.stream_index.get((id(tap), point), 0),
        )
        for name, (kind, tap, point, branch, _, attention), s, layout in zip(
            names, rows, stages, layouts, strict=True
        )
    ]


def _mixer_module(kind: str, tap: nn.Module, point: str) -> nn.Module | None:
    # A whole unit labelled `msa` is tapped at its output: its attention runs inside it.
    return tap if kind == "msa" and point == "output" else None


def _units(model: nn.Module, probe: _Probe) -> tuple[list[tuple[str, nn.Module]], nn.Module | None]:
    """The trunk's units and the stem module (None: the embedding is the trunk's input)."""
    if is_timm(model) and (units := _timm_units(model)) is not None:
        return units, None
    if not is_timm(model) and (units := _torchvision_units(model)) is not None:
        return units, model.features[0]
    return _top_level_units(model, probe)


def describe_generic(model: nn.Module) -> Anatomy:
    """The Anatomy of a timm or torchvision model, learnt from a probe (see the module text)."""
    model = unwrap(model)
    if model in _CACHE:
        return _CACHE[model]
    probe, side = _first_probe(model)
    units, stem = _units(model, probe)
    # A module run several times per forward (Visformer's one `pos_drop` after each stage) is
    # shared plumbing, not a block: its output would be tapped at every use.
    units = [(n, u) for n, u in units if probe.calls.get(id(u), 1) == 1]
    units = _split_attention(units, probe)
    branches = {id(u): b for _, u in units if (b := _skip_branch(u)) is not None}
    branches = _verified(model, units, branches, side)
    rows = [_embed_row(model, units, probe, stem), *_unit_blocks(model, units, probe, branches)]
    blocks = _assemble(model, rows, probe)
    head = _head(model, probe)
    if head is not None:
        blocks.append(Block("head", "head", blocks[-1].stage, head, "output", None, VECTOR))
    spec = _timm_input(model) if is_timm(model) else InputSpec()
    spec = dataclasses.replace(spec, channels=_input_channels(model))
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
register_adapter(lambda m: is_timm(m) or is_torchvision(m) or is_transformers(m), describe_generic)
