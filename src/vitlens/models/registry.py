"""Create models by name: the paper's CIFAR configurations and `nano` sizes for a laptop CPU.

Like timm, every model is made through one registry; keyword overrides flow unchanged to the
family's constructor (`create_model("vit_ti", num_classes=10, patch_size=4, pos_embed="none")`).
Defaults are the paper's CIFAR-100 setting: 32x32 RGB input, 100 classes.
"""

from __future__ import annotations

import fnmatch
import inspect
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from vitlens.errors import ConfigError, UnknownNameError
from vitlens.models.alternet import AlterNet
from vitlens.models.pit import PiT
from vitlens.models.resnet import ResNet
from vitlens.models.swin import Swin
from vitlens.models.vit import ViT


@dataclass(frozen=True)
class ModelSpec:
    family: type[nn.Module]
    config: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


_VIT_NANO = dict(patch_size=4, dim=96, depth=6, heads=3, mlp_dim=192)
_RESNET_NANO = dict(block="basic", depths=(2, 2, 2, 2), widths=(16, 32, 64, 128))

MODELS: dict[str, ModelSpec] = {
    # ViT: patch 2 on CIFAR (a 16x16 token grid), no qkv bias, CLS head (paper §B / official repo).
    "vit_ti": ModelSpec(ViT, dict(dim=192, depth=12, heads=3, mlp_dim=768), "ViT-Ti, patch 2"),
    "vit_s": ModelSpec(ViT, dict(dim=384, depth=12, heads=6, mlp_dim=1536), "ViT-S, patch 2"),
    "vit_b": ModelSpec(ViT, dict(dim=768, depth=12, heads=12, mlp_dim=3072), "ViT-B, patch 2"),
    "vit_nano": ModelSpec(ViT, _VIT_NANO, "ViT, patch 4, dim 96, depth 6"),
    # PiT: patch 2, stride 1 on CIFAR (token grids 31 -> 16 -> 8).
    "pit_ti": ModelSpec(PiT, dict(base_dim=32, heads=(2, 4, 8)), "PiT-Ti, patch 2 stride 1"),
    "pit_xs": ModelSpec(PiT, dict(base_dim=48, heads=(2, 4, 8)), "PiT-XS, patch 2 stride 1"),
    "pit_s": ModelSpec(PiT, dict(base_dim=48, heads=(3, 6, 12)), "PiT-S, patch 2 stride 1"),
    "pit_nano": ModelSpec(
        PiT,
        dict(patch_size=2, stride=2, base_dim=16, depths=(1, 2, 2), heads=(2, 4, 8), mlp_ratio=2),
        "PiT, patch 2 stride 2, dims 32/64/128",
    ),
    # Swin: patch 1 and window 4 on CIFAR (maps 32 -> 16 -> 8 -> 4).
    "swin_ti": ModelSpec(Swin, dict(depths=(2, 2, 6, 2)), "Swin-Ti, patch 1, window 4"),
    "swin_s": ModelSpec(Swin, dict(depths=(2, 2, 18, 2)), "Swin-S, patch 1, window 4"),
    "swin_nano": ModelSpec(
        Swin,
        dict(patch_size=2, dim=32, depths=(2, 2, 2), heads=(1, 2, 4), window=4, mlp_ratio=2),
        "Swin, patch 2, dims 32/64/128, window 4",
    ),
    # ResNet: CIFAR stem (3x3 conv, no max-pool) unless stem="imagenet".
    "resnet18": ModelSpec(ResNet, dict(block="basic", depths=(2, 2, 2, 2)), "ResNet-18"),
    "resnet34": ModelSpec(ResNet, dict(block="basic", depths=(3, 4, 6, 3)), "ResNet-34"),
    "resnet50": ModelSpec(ResNet, dict(block="bottleneck", depths=(3, 4, 6, 3)), "ResNet-50"),
    "preresnet18": ModelSpec(
        ResNet, dict(block="basic", depths=(2, 2, 2, 2), preact=True), "pre-act ResNet-18"
    ),
    "preresnet34": ModelSpec(
        ResNet, dict(block="basic", depths=(3, 4, 6, 3), preact=True), "pre-act ResNet-34"
    ),
    "preresnet50": ModelSpec(
        ResNet, dict(block="bottleneck", depths=(3, 4, 6, 3), preact=True), "pre-act ResNet-50"
    ),
    "resnet_nano": ModelSpec(ResNet, _RESNET_NANO, "ResNet-18 layout at 1/4 width"),
    # AlterNet: the paper's CIFAR-100 Alter-ResNet-50 and smaller relatives.
    "alternet50": ModelSpec(AlterNet, dict(), "AlterNet-50, MSA 0/1/1/2, window 4"),
    "alternet18": ModelSpec(
        AlterNet,
        dict(block="basic", depths=(2, 2, 2, 2), msa=(0, 1, 1, 1)),
        "AlterNet-18, MSA 0/1/1/1, window 4",
    ),
    "alternet_nano": ModelSpec(
        AlterNet,
        dict(
            block="basic",
            depths=(2, 2, 2, 2),
            msa=(0, 1, 1, 1),
            widths=(16, 32, 64, 128),
            heads=(1, 2, 4, 8),
            head_dim=16,
        ),
        "AlterNet-18 layout at 1/4 width, 16-dim heads",
    ),
}


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a glob pattern, sorted."""
    return sorted(n for n in MODELS if fnmatch.fnmatch(n, pattern))


def create_model(
    name: str,
    *,
    num_classes: int = 100,
    image_size: int = 32,
    in_chans: int = 3,
    **overrides: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from `list_models()`.
        num_classes: size of the classifier output.
        image_size: side of the square input the model is built for.
        in_chans: input channels (1 for grayscale).
        **overrides: constructor arguments that replace the registered configuration.

    Raises:
        UnknownNameError: `name` is not registered.
        ConfigError: an override the family does not accept, or a value it rejects.
    """
    if not isinstance(name, str) or not name:
        raise UnknownNameError(f"a model name is text such as 'vit_nano', not {name!r}")
    if ":" in name:  # an outside model (`vitlens import`): timm:NAME, torchvision:NAME, hf:DIR
        from vitlens.models.foreign import build_foreign

        sizes = dict(num_classes=num_classes, image_size=image_size, in_chans=in_chans)
        return build_foreign(name, **sizes, **overrides)
    if name not in MODELS:
        close = fnmatch.filter(MODELS, f"*{name.split('_')[0]}*") or list(MODELS)
        raise UnknownNameError(f"unknown model {name!r}; did you mean one of {close}?")
    spec = MODELS[name]
    kwargs = {**spec.config, **overrides}
    kwargs.update(num_classes=num_classes, image_size=image_size, in_chans=in_chans)
    accepted = inspect.signature(spec.family.__init__).parameters
    unknown = sorted(k for k in kwargs if k not in accepted)
    if unknown:
        raise ConfigError(
            f"{name} ({spec.family.__name__}) does not take {unknown}; "
            f"it takes {sorted(k for k in accepted if k != 'self')}"
        )
    check_model_args(name, kwargs)
    try:
        model = spec.family(**kwargs)
    except (ValueError, TypeError, ZeroDivisionError, RuntimeError) as err:
        raise ConfigError(f"cannot build {name} with {overrides or 'defaults'}: {err}") from err
    model.vitlens_name = name
    model.vitlens_config = kwargs
    return model


# Sizes that must be positive (each element, for per-stage tuples); None means "not used".
_POSITIVE = (
    "image_size",
    "patch_size",
    "stride",
    "in_chans",
    "num_classes",
    "dim",
    "base_dim",
    "depth",
    "depths",
    "heads",
    "widths",
    "mlp_dim",
    "head_dim",
    "window",
    "local_window",
    "mlp_ratio",
)


def check_model_args(name: str, kwargs: dict[str, Any]) -> None:
    """Refuse sizes of zero or below and drop_path outside [0, 1), naming the argument.

    Raises:
        ConfigError: naming the argument and its value.
    """
    for key in _POSITIVE:
        value = kwargs.get(key)
        if value is None:
            continue
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        ok = all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in items
        ) and (bool(items) or key not in ("depths", "heads", "widths"))
        if not ok:
            raise ConfigError(
                f"cannot build {name}: {key} = {value!r}; it must be a positive number"
                + (" for every stage" if isinstance(value, (list, tuple)) else "")
            )
    msa = kwargs.get("msa")
    if msa is not None and not all(isinstance(v, int) and v >= 0 for v in msa):
        raise ConfigError(f"cannot build {name}: msa = {msa!r}; MSA counts must be >= 0")
    drop = kwargs.get("drop_path", 0.0)
    if not isinstance(drop, (int, float)) or isinstance(drop, bool) or not 0 <= drop < 1:
        raise ConfigError(f"cannot build {name}: drop_path = {drop!r}; it must be in [0, 1)")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
