"""Outside models by their run names (`timm:NAME`, `torchvision:NAME`, `hf:DIR`), built at random
init: what `create_model` does for a name with a source prefix, so run folders of imported models
rebuild like any other. `vitlens.importing` (above this layer) loads their weights.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from torch import nn

from vitlens.errors import UnknownNameError, VitlensError

PREFIXES = ("timm", "torchvision", "hf", "authors")
_PICKLES = (".pth", ".pth.tar", ".pt", ".bin", ".ckpt", ".tar")


def parse_source(source: str) -> tuple[str, str]:
    """(`timm`, `vit_tiny_patch16_224`) from `timm:vit_tiny_patch16_224`."""
    prefix, sep, name = source.partition(":")
    if not sep or prefix not in PREFIXES:
        close = difflib.get_close_matches(prefix if sep else source, PREFIXES, n=2)
        hint = f" Did you mean {' or '.join(f'{c}:' for c in close)}?" if close else ""
        raise UnknownNameError(
            f"unknown model source {source!r}.{hint} SOURCE is timm:NAME[.TAG], torchvision:NAME, "
            "hf:ORG/NAME[@REVISION], hf:DIR or authors:NAME"
        )
    if not name:
        raise VitlensError(f"{prefix}: needs a name, e.g. {prefix}:{_EXAMPLES[prefix]}")
    return prefix, name


_EXAMPLES = {
    "timm": "vit_tiny_patch16_224",
    "torchvision": "resnet18",
    "hf": "google/vit-base-patch16-224",
    "authors": "vit_ti",
}


def _library(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise VitlensError(
            f"this source needs {module}: pip install 'vitlens[{extra}]' (or pip install {module})"
        ) from None


def _unknown(kind: str, name: str, known: list[str]) -> UnknownNameError:
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    return UnknownNameError(f"no {kind} model named {name!r}.{hint}")


# ------------------------------------------------------------------------------- building


def build_foreign(
    name: str,
    *,
    num_classes: int,
    image_size: int,
    in_chans: int,
    drop_path: float = 0.0,
    **args: Any,
) -> nn.Module:
    """An outside model by its run name (`timm:...`, `torchvision:...`, `hf:...`), random init.

    `vitlens.models.create_model` hands such names here, so run folders of imported models
    rebuild like any other, and `vitlens train timm:NAME --init RUN` fine-tunes one.
    """
    prefix, rest = parse_source(name)
    if drop_path and prefix != "timm":
        raise VitlensError(f"drop_path is applied to timm models only; set drop_path: 0 for {name}")
    if prefix == "timm":
        model = _timm_model(rest, num_classes, in_chans, image_size, drop_path)
    elif prefix == "torchvision":
        model = _torchvision_model(rest, num_classes, in_chans, image_size)
    elif prefix == "hf":
        config = _hf_config(rest, args.get("config"), num_classes, image_size, in_chans)
        model = _hf_model(config)
    else:
        raise VitlensError(f"{name}: authors' models are vitlens models; build {rest} by name")
    model.vitlens_name = name
    model.vitlens_config = {"num_classes": num_classes, "image_size": image_size, **args}
    return model


def _timm_model(name, num_classes, in_chans, image_size, drop_path) -> nn.Module:
    timm = _library("timm", "timm")
    if name.split(".")[0] not in timm.list_models():  # NAME or NAME.TAG (a pretrained tag)
        raise _unknown("timm", name, timm.list_models())
    kwargs = dict(num_classes=num_classes, in_chans=in_chans)
    if drop_path:
        kwargs["drop_path_rate"] = drop_path
    try:
        model = timm.create_model(name, pretrained=False, img_size=image_size, **kwargs)
    except TypeError as err:  # a model without a fixed input size takes no img_size
        if "img_size" not in str(err):
            raise VitlensError(f"cannot build timm:{name}: {err}") from err
        return timm.create_model(name, pretrained=False, **kwargs)
    _check_patch_grid(f"timm:{name}", model, image_size)
    return model


def _check_patch_grid(name: str, model: nn.Module, image_size: int) -> None:
    """A patch embedding whose patch does not divide the image silently drops the last rows and
    columns (timm floors the grid): refuse the size, naming one that works."""
    embed = getattr(model, "patch_embed", None)
    patch = getattr(embed, "patch_size", None)
    if not patch or getattr(embed, "dynamic_img_pad", False):
        return
    p = int(patch[0] if isinstance(patch, tuple | list) else patch)
    if image_size % p or image_size < 2 * p:
        fit = max(2, round(image_size / p)) * p
        raise VitlensError(
            f"{name}: --image-size {image_size} does not fit its {p}-pixel patches (a "
            f"{image_size // p}x{image_size // p} grid; the last {image_size % p} pixel rows and "
            f"columns would be dropped); use a multiple of {p} of at least {2 * p}, e.g. {fit}"
        )


def _torchvision_model(name, num_classes, in_chans, image_size) -> nn.Module:
    models = _library("torchvision.models", "dev")
    known = models.list_models(module=models)
    if name not in known:
        raise _unknown("torchvision classification", name, known)
    if in_chans != 3:
        raise VitlensError(
            f"torchvision:{name} takes 3-channel images, not {in_chans}; pick an RGB --dataset "
            "(cifar10, cifar100, imagefolder:PATH)"
        )
    try:
        try:
            return models.get_model(
                name, weights=None, num_classes=num_classes, image_size=image_size
            )
        except TypeError:  # only the ViTs fix their input size
            return models.get_model(name, weights=None, num_classes=num_classes)
    except (AssertionError, ValueError) as err:  # e.g. a size its patches do not divide
        raise VitlensError(
            f"torchvision:{name} cannot be built for {image_size} px images: {err}"
        ) from None


def _hf_config(folder: str, saved: dict | None, num_classes=None, image_size=None, in_chans=None):
    """The folder's (or a run's saved) config, with the given sizes (None: keep the saved one)."""
    transformers = _library("transformers", "hf")
    if saved is not None:
        values = dict(saved)
        config = transformers.AutoConfig.for_model(values.pop("model_type"), **values)
    else:
        if not (Path(folder) / "config.json").is_file():
            raise VitlensError(
                f"{folder} is not a Hugging Face model folder: it has no config.json "
                "(write one with model.save_pretrained(folder))"
            )
        try:
            config = transformers.AutoConfig.from_pretrained(folder)
        except (OSError, ValueError, KeyError) as err:  # not JSON, no model_type, unknown type
            raise VitlensError(
                f"{folder}/config.json is not a Hugging Face model config: "
                f"{str(err).splitlines()[0]}"
            ) from None
    if num_classes is not None:
        config.num_labels = num_classes
    if image_size is not None and hasattr(config, "image_size"):
        config.image_size = image_size
    if in_chans is not None:
        config.num_channels = in_chans
    return config


def _hf_model(config) -> nn.Module:
    transformers = _library("transformers", "hf")
    try:
        return transformers.AutoModelForImageClassification.from_config(config)
    except ValueError as err:
        raise VitlensError(
            f"transformers has no image-classification model for {type(config).__name__}: {err}"
        ) from err
