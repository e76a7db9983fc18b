"""Load weights trained elsewhere (timm, torchvision) into vitlens models.

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

One deliberate difference: on maps that the Swin window does not tile (never at 32x32), timm lets
queries attend to the zero padding tokens, while vitlens masks them; outputs then differ.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

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

    Position embeddings are (1, C, H, W) in both. timm's pool before stage i (i >= 1) is
    `transformers.{i}.pool` (timm >= 0.9) or `pools.{i-1}` (older timm); ours is `pools.{i-1}`.
    """
    rules: list[Rule] = [
        (r"^patch_embed\.conv\.", "patch_embed."),
        (r"^transformers\.(\d+)\.blocks\.", r"stages.\1."),
        (r"^transformers\.(\d+)\.pool\.", lambda m: f"pools.{int(m.group(1)) - 1}."),
    ]
    return _rename(_unwrap(state_dict), rules)


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


CONVERTERS: dict[str, Callable[[Mapping[str, object]], StateDict]] = {
    "timm_vit": from_timm_vit,
    "timm_pit": from_timm_pit,
    "timm_swin": from_timm_swin,
    "torchvision_resnet": from_torchvision_resnet,
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
            f"{source} weights do not fit {name}; check that the model was created with the "
            "checkpoint's configuration (sizes, depths, heads, window, classes).\n  "
            + "\n  ".join(problems)
        )
    try:
        model.load_state_dict(converted, strict=True)
    except RuntimeError as err:  # e.g. a dtype torch cannot copy; keys and shapes were checked
        raise VitlensError(f"cannot load {source} weights into {name}: {err}") from err
    return model
