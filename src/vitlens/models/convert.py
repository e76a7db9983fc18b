"""Load weights trained elsewhere (timm, torchvision, the paper's authors) into vitlens models.

The paper's released CIFAR-100 checkpoints are timm `VisionTransformer`,
`PoolingVisionTransformer` and `SwinTransformer` models, and a torchvision-style ResNet with a
CIFAR stem. Our models are laid out like those, so conversion is renaming keys: each `from_*`
function maps a foreign state dict onto the key names of the matching vitlens family and drops
the buffers we compute ourselves (Swin's relative-position index and shift mask). Keys that no rule
knows pass through unchanged, so `load_converted` can name them as unexpected instead of silently
losing weights.

    model = create_model("swin_ti")
    state = torch.load("swin_ti_cifar100.pth.tar", map_location="cpu", weights_only=True)
    load_converted(model, state, "timm_swin")

Both timm layouts are accepted: timm >= 0.9 (PiT pools inside `transformers.{i}.pool`, Swin patch
merging at the start of a stage, head under `head.fc`) and the older layout the paper's
checkpoints were saved with (`pools.{i}`, merging at the end of a stage, bare `head`).

The authors' release (`AUTHORS`): ViT-Ti, PiT-Ti and Swin-Ti are timm 0.5.4 models (the old timm
layouts above); ResNet-50 and AlterNet-50 are the authors' own classes in xxxnell/how-do-vits-work
`models/` (`layer0`, `conv1.0`, `shortcut.*`, `classifier.0.dense`, ...), converted by
`from_authors_resnet` / `from_authors_alternet`.

One deliberate difference: on maps that the Swin window does not tile (never at 32x32), timm lets
queries attend to the zero padding tokens, while vitlens masks them; outputs then differ.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from vitlens.errors import UnknownNameError, VitlensError

StateDict = dict[str, torch.Tensor]
Rule = tuple[str, str | Callable[[re.Match[str]], str]]

# Training scripts often wrap the weights: {"state_dict": ...}, {"model": ...}, DataParallel.
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
_PARALLEL_PREFIX = "module."


def _unwrap(state_dict: Mapping[str, object]) -> StateDict:
    """The bare tensor dict inside a checkpoint, without a DataParallel `module.` prefix."""
    for key in _WRAPPER_KEYS:
        inner = state_dict.get(key)
        if isinstance(inner, Mapping):
            state_dict = inner
            break
    sd = {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    if sd and all(k.startswith(_PARALLEL_PREFIX) for k in sd):
        sd = {k[len(_PARALLEL_PREFIX) :]: v for k, v in sd.items()}
    return sd


def _rename(state_dict: StateDict, rules: list[Rule], skip: tuple[str, ...] = ()) -> StateDict:
    """Apply the first matching (regex, replacement) rule to each key; drop keys ending in `skip`.

    Unmatched keys are kept as they are so that a strict load reports them.
    """
    out: StateDict = {}
    for key, value in state_dict.items():
        if key.endswith(skip):
            continue
        new = key
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, key, count=1)
            if n:
                break
        if new in out:
            raise VitlensError(f"two checkpoint keys map onto {new!r} (the second is {key!r})")
        out[new] = value
    return out


def from_timm_vit(state_dict: Mapping[str, object]) -> StateDict:
    """timm `VisionTransformer` (class token, learned position embedding) -> vitlens `ViT`.

    Blocks, final norm and head already share timm's names; only the patch embedding differs.
    """
    rules: list[Rule] = [(r"^patch_embed\.proj\.", "patch_embed.")]
    return _rename(_unwrap(state_dict), rules)


def from_timm_pit(state_dict: Mapping[str, object]) -> StateDict:
    """timm `PoolingVisionTransformer` -> vitlens `PiT`.

    Position embeddings are (1, C, H, W) in both. timm >= 0.9 pools at the start of stage i >= 1
    (`transformers.{i}.pool`); timm 0.5.4 (the authors' release) pools at the end of stage i < last
    (`transformers.{i}.pool` from i = 0). Ours is `pools.{k}` between stages k and k + 1.
    """
    sd = _unwrap(state_dict)
    offset = 0 if any(k.startswith("transformers.0.pool.") for k in sd) else 1
    rules: list[Rule] = [
        (r"^patch_embed\.conv\.", "patch_embed."),
        (r"^transformers\.(\d+)\.blocks\.", r"stages.\1."),
        (r"^transformers\.(\d+)\.pool\.", lambda m: f"pools.{int(m.group(1)) - offset}."),
    ]
    return _rename(sd, rules)


def from_timm_swin(state_dict: Mapping[str, object]) -> StateDict:
    """timm `SwinTransformer` (no absolute position embedding) -> vitlens `Swin`.

    The relative-position index and shift masks are rebuilt by our model, so they are dropped.
    Patch merging before stage i (i >= 1) is `layers.{i}.downsample` in timm >= 0.9 and
    `layers.{i-1}.downsample` in older timm (and Microsoft's original code); ours is `merges.{i-1}`.
    """
    sd = _unwrap(state_dict)
    # Old checkpoints merge at the end of a stage, so stage 0 owns a downsample (timm's own test).
    merge_offset = 0 if any(k.startswith("layers.0.downsample.") for k in sd) else 1
    rules: list[Rule] = [
        (r"^patch_embed\.proj\.", "patch_embed."),
        (r"^patch_embed\.norm\.", "embed_norm."),
        (r"^layers\.(\d+)\.blocks\.(\d+)\.attn\.(qkv|proj)\.", r"stages.\1.\2.attn.attn.\3."),
        (r"^layers\.(\d+)\.blocks\.", r"stages.\1."),
        (
            r"^layers\.(\d+)\.downsample\.",
            lambda m: f"merges.{int(m.group(1)) - merge_offset}.",
        ),
        (r"^head\.fc\.", "head."),
    ]
    return _rename(sd, rules, skip=("relative_position_index", "attn_mask"))


def from_torchvision_resnet(state_dict: Mapping[str, object]) -> StateDict:
    """torchvision-style `ResNet` (conv1, bn1, layer1..4, fc) -> vitlens `ResNet` (post-activation).

    Block internals (conv1/bn1/.../downsample.0/1) already share torchvision's names; BatchNorm
    running statistics travel with the weights.
    """
    rules: list[Rule] = [
        (r"^conv1\.", "stem.0."),
        (r"^bn1\.", "stem.1."),
        (r"^layer(\d+)\.", lambda m: f"stages.{int(m.group(1)) - 1}."),
        (r"^fc\.", "head."),
    ]
    return _rename(_unwrap(state_dict), rules)


# The authors' own ResNet (models/resnet.py + resnet_dnn_block.py): layer0 stem, blocks with
# conv{k} = Sequential(conv, bn), `shortcut` = Sequential(conv, bn), GAP classifier.
_AUTHORS_RESNET: list[Rule] = [
    (r"^layer0\.0\.", "stem.0."),
    (r"^layer0\.1\.", "stem.1."),
    (r"^layer(\d+)\.(\d+)\.conv(\d)\.0\.", lambda m: f"{_stage(m)}.conv{m.group(3)}."),
    (r"^layer(\d+)\.(\d+)\.conv(\d)\.1\.", lambda m: f"{_stage(m)}.bn{m.group(3)}."),
    (r"^layer(\d+)\.(\d+)\.shortcut\.", lambda m: f"{_stage(m)}.downsample."),
    (r"^classifier\.0\.dense\.", "head."),
]

# The authors' AlterNet (models/alternet.py + preresnet_dnn_block.py): pre-activation blocks with
# `bn` on the input and conv{2,3} = Sequential(bn, relu, conv); MSA blocks (AttentionBlockB) with
# norm1 / conv / norm2 / attn; StemB nests its Sequential as layer0.layer0; BNGAP classifier.
_AUTHORS_ALTERNET: list[Rule] = [
    (r"^layer0\.layer0\.0\.", "stem.0."),
    (r"^layer(\d+)\.(\d+)\.bn\.", lambda m: f"{_stage(m)}.bn1."),
    (r"^layer(\d+)\.(\d+)\.conv1\.weight", lambda m: f"{_stage(m)}.conv1.weight"),
    (r"^layer(\d+)\.(\d+)\.conv(\d)\.0\.", lambda m: f"{_stage(m)}.bn{m.group(3)}."),
    (r"^layer(\d+)\.(\d+)\.conv(\d)\.2\.", lambda m: f"{_stage(m)}.conv{m.group(3)}."),
    (r"^layer(\d+)\.(\d+)\.shortcut\.0\.", lambda m: f"{_stage(m)}.downsample."),
    (r"^layer(\d+)\.(\d+)\.norm1\.", lambda m: f"{_stage(m)}.bn1."),
    (r"^layer(\d+)\.(\d+)\.conv\.", lambda m: f"{_stage(m)}.conv1."),
    (r"^layer(\d+)\.(\d+)\.norm2\.", lambda m: f"{_stage(m)}.bn2."),
    (r"^layer(\d+)\.(\d+)\.attn\.pos_embedding$", lambda m: f"{_stage(m)}.attn.rel_pos_bias"),
    (r"^layer(\d+)\.(\d+)\.attn\.attn\.to_out\.0\.", lambda m: f"{_stage(m)}.attn.attn.proj."),
    (r"^layer(\d+)\.(\d+)\.attn\.", lambda m: f"{_stage(m)}.attn."),  # the merged qkv
    (r"^classifier\.0\.bn\.", "final_act.0."),
    (r"^classifier\.0\.dense\.", "head."),
]


def _stage(m: re.Match[str]) -> str:
    """`stages.{L-1}.{i}` for the authors' `layer{L}.{i}` (layer0 is the stem)."""
    return f"stages.{int(m.group(1)) - 1}.{m.group(2)}"


def from_authors_resnet(state_dict: Mapping[str, object]) -> StateDict:
    """The authors' post-activation ResNet (`resnet_dnn_50`, CIFAR stem) -> vitlens `ResNet`."""
    return _rename(_unwrap(state_dict), _AUTHORS_RESNET)


def _authors_attention(sd: StateDict) -> StateDict:
    """Attention2d's 1x1 convs `to_q` and `to_kv` become one qkv Linear; the (2p-1, 2p-1) table,
    indexed by key - query offsets, becomes our flat table indexed by query - key offsets."""
    out = dict(sd)
    for key in [k for k in sd if k.endswith(".attn.attn.to_q.weight")]:
        stem = key[: -len("to_q.weight")]
        q, kv = out.pop(key), out.pop(f"{stem}to_kv.weight")
        out[f"{stem}qkv.weight"] = torch.cat([q, kv]).flatten(1)  # rows: q, k, v
    for key in [k for k in out if k.endswith(".attn.to_out.0.weight")]:
        out[key] = out[key].flatten(1)  # (out, inner, 1, 1) -> (out, inner)
    for key in [k for k in out if k.endswith(".attn.pos_embedding")]:
        out[key] = out[key].flip(0, 1).flatten()
    return out


def from_authors_alternet(state_dict: Mapping[str, object]) -> StateDict:
    """The authors' AlterNet (pre-activation bottlenecks, AttentionBlockB) -> vitlens `AlterNet`."""
    sd = _authors_attention(_unwrap(state_dict))
    return _rename(sd, _AUTHORS_ALTERNET)


@dataclass(frozen=True)
class AuthorsRelease:
    """A layout of the authors' CIFAR-100 release (official_repo.md §2.11) and its vitlens model."""

    model: str  # vitlens registry name
    source: str  # key of CONVERTERS
    layout: str  # where the key names come from


AUTHORS: dict[str, AuthorsRelease] = {
    "vit_ti": AuthorsRelease("vit_ti", "timm_vit", "timm 0.5.4 VisionTransformer"),
    "pit_ti": AuthorsRelease("pit_ti", "timm_pit", "timm 0.5.4 PoolingVisionTransformer"),
    "swin_ti": AuthorsRelease("swin_ti", "timm_swin", "timm 0.5.4 SwinTransformer"),
    "resnet50": AuthorsRelease("resnet50", "authors_resnet", "models/resnet.py resnet_dnn_50"),
    "alternet50": AuthorsRelease("alternet50", "authors_alternet", "models/alternet.py AlterNet"),
}


CONVERTERS: dict[str, Callable[[Mapping[str, object]], StateDict]] = {
    "native": _unwrap,  # the model's own key names (timm, torchvision weights for their models)
    "timm_vit": from_timm_vit,
    "timm_pit": from_timm_pit,
    "timm_swin": from_timm_swin,
    "torchvision_resnet": from_torchvision_resnet,
    "authors_resnet": from_authors_resnet,
    "authors_alternet": from_authors_alternet,
}


def _listing(keys: list[str], limit: int = 10) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_converted(model: nn.Module, state_dict: Mapping[str, object], source: str) -> nn.Module:
    """Convert `state_dict` from `source` (a key of `CONVERTERS`) and load it strictly into `model`.

    Returns the model. Raises `VitlensError` naming every missing key, unexpected key and shape
    mismatch, so a checkpoint built for a different configuration fails with one clear message
    instead of a partial load.
    """
    if source not in CONVERTERS:
        raise UnknownNameError(f"unknown weight source {source!r}; use one of {sorted(CONVERTERS)}")
    converted = CONVERTERS[source](state_dict)
    expected = model.state_dict()
    missing = [k for k in expected if k not in converted]
    unexpected = [k for k in converted if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in converted.items()
        if k in expected and v.shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): {_listing(mismatched)}")
    name = getattr(model, "vitlens_name", type(model).__name__)
    if problems:
        raise VitlensError(
            f"{'the' if source == 'native' else source} weights do not fit {name}; check that the "
            "model was created with the checkpoint's configuration (sizes, depths, heads, window, "
            "classes).\n  " + "\n  ".join(problems)
        )
    try:
        model.load_state_dict(converted, strict=True)
    except RuntimeError as err:  # e.g. a dtype torch cannot copy; keys and shapes were checked
        raise VitlensError(f"cannot load {source} weights into {name}: {err}") from err
    return model
