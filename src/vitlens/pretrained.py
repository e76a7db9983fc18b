"""Pretrained weights by name, from the caches the hub libraries use (`vitlens import`):

- `hf:ORG/NAME[@REVISION]`: the repository's snapshot in the Hugging Face hub cache (downloaded
  into it unless HF_HUB_OFFLINE is set); the commit it resolved to is recorded;
- `timm:NAME[.TAG] --pretrained`: the tag's weights as timm finds them (its Hugging Face hub
  repository, or for a few tags a URL into the torch.hub cache), loaded by timm itself so that
  it adapts the head, the input channels and the position embeddings;
- `torchvision:NAME --weights DEFAULT|ENUM_NAME`: a weights enum's file in the torch.hub cache.

Each returns the weights' file, its SHA-256 and the model's own preprocessing. Nothing here
writes outside those caches; a missing file is a `VitlensError` naming the cache and the
variables that move it (`vitlens.caches`).
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from torch import nn

from vitlens.atomic import file_digest
from vitlens.caches import hf_cache_dir, hub_offline, not_cached, torch_checkpoints_dir
from vitlens.data.preprocess import Preprocessing, from_timm, from_torchvision
from vitlens.errors import UnknownNameError, VitlensError
from vitlens.models.foreign import _library

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
ENUM = re.compile(r"^([A-Za-z0-9_]+\.)?[A-Z0-9_]+$")


@dataclass
class Found:
    """A pretrained source resolved to files in a cache."""

    path: Path  # the weights file (or, for Hugging Face, the snapshot folder)
    origin: dict[str, Any] = field(default_factory=dict)
    preprocessing: Preprocessing | None = None


# --------------------------------------------------------------------------- Hugging Face


def hub_repo(name: str) -> tuple[str, str | None] | None:
    """(repo, revision) for `ORG/NAME[@REV]`; None for a local folder."""
    if Path(name).expanduser().is_dir():
        return None
    if not HUB_ID.match(name):
        raise VitlensError(
            f"hf:{name} is neither a folder nor a hub id ORG/NAME[@REVISION] "
            "(e.g. hf:google/vit-base-patch16-224)"
        )
    repo, _, revision = name.partition("@")
    return repo, revision or None


def hf_snapshot(repo: str, revision: str | None) -> Found:
    """The repository's cached snapshot folder (config, weights, image processor)."""
    from huggingface_hub import snapshot_download

    cache = hf_cache_dir()
    try:
        folder = snapshot_download(
            repo,
            revision=revision,
            cache_dir=cache,
            local_files_only=hub_offline(),
            allow_patterns=["*.json", "*.safetensors", "*.txt"],
        )
    except Exception as err:  # the hub's errors: not cached, no network, no such revision
        what = f"hf:{repo}" + (f"@{revision}" if revision else "")
        raise not_cached(what, cache, err) from None
    folder = Path(folder)
    origin = {"repo": repo, "revision": folder.name, "cache": str(cache)}
    return Found(folder, origin)


# ----------------------------------------------------------------------------------- timm


def timm_pretrained_cfg(name: str):
    """timm's pretrained config for NAME[.TAG] (the default tag when none is given)."""
    timm = _library("timm", "timm")
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError:  # an architecture timm knows, with a tag it does not
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        arch = name.split(".")[0]
        tags = timm.list_pretrained(f"{arch}.*") or timm.list_pretrained()
        close = difflib.get_close_matches(name, tags, n=5, cutoff=0.4) or tags[:5]
        raise UnknownNameError(
            f"timm has no pretrained weights named {name!r}; tags like it: {', '.join(close)}"
        )
    return cfg


def timm_weights(name: str) -> Found:
    """The cached file of a timm tag's weights (what `create_model(pretrained=True)` reads)."""
    cfg = timm_pretrained_cfg(name)
    tag = f"{cfg.architecture}.{cfg.tag}" if cfg.tag else cfg.architecture
    if cfg.file:
        path = Path(cfg.file)
    elif cfg.hf_hub_id:
        path = _hub_file(cfg.hf_hub_id, cfg.hf_hub_filename, f"timm:{tag}")
    else:
        path = torch_hub_file(cfg.url, f"timm:{tag}")
    origin = {"tag": tag, "weights": path.name, "weights_sha256": file_digest(path)}
    if cfg.hf_hub_id:
        origin["repo"] = cfg.hf_hub_id
        origin["revision"] = path.parent.name
    return Found(path, origin)


def _hub_file(hub_id: str, filename: str | None, what: str) -> Path:
    from huggingface_hub import hf_hub_download

    repo, _, revision = hub_id.partition("@")
    names = [filename] if filename else ["model.safetensors", "pytorch_model.bin"]
    cache, last = hf_cache_dir(), None
    for name in names:
        try:
            return Path(
                hf_hub_download(
                    repo,
                    name,
                    revision=revision or None,
                    cache_dir=cache,
                    local_files_only=hub_offline(),
                )
            )
        except Exception as err:  # not cached / not on the hub: try the next file name
            last = err
    raise not_cached(f"{what} ({repo}: {' or '.join(names)})", cache, last)


def build_timm_pretrained(
    name: str, found: Found, *, num_classes: int, in_chans: int, image_size: int
) -> nn.Module:
    """timm's model with the cached weights, adapted by timm to the classes, channels and size."""
    timm = _library("timm", "timm")
    overlay = {"file": str(found.path), "custom_load": False}
    kwargs = dict(num_classes=num_classes, in_chans=in_chans, pretrained_cfg_overlay=overlay)
    try:
        try:
            return timm.create_model(name, pretrained=True, img_size=image_size, **kwargs)
        except TypeError as err:  # a model without a fixed input size takes no img_size
            if "img_size" not in str(err):
                raise
            return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as err:  # timm's loaders raise what torch and safetensors raise
        raise VitlensError(f"the weights of timm:{name} do not load: {err}") from None


def timm_preprocessing(model: nn.Module, image_size: int, tag: str) -> Preprocessing:
    timm = _library("timm", "timm")
    config = timm.data.resolve_model_data_config(model)
    return from_timm(config, image_size, f"timm pretrained_cfg of {tag}")


# ---------------------------------------------------------------------------- torchvision


def is_weights_enum(value: str) -> bool:
    return not Path(value).exists() and bool(ENUM.match(value))


def torchvision_weights(model: str, choice: str):
    """The weights enum member `choice` (DEFAULT, IMAGENET1K_V1 or ResNet18_Weights.X)."""
    models = _library("torchvision.models", "dev")
    try:
        enum = models.get_model_weights(model)
    except (ValueError, KeyError):
        raise VitlensError(f"torchvision has no weights for a model named {model!r}") from None
    prefix, _, member = choice.rpartition(".")
    names = list(enum.__members__)
    if (prefix and prefix != enum.__name__) or member not in names:
        close = difflib.get_close_matches(member, names, n=3, cutoff=0.3)
        raise UnknownNameError(
            f"{choice!r} is not a weights enum of torchvision:{model}; {enum.__name__} has "
            f"{', '.join(names)} (DEFAULT is {enum.DEFAULT.name})"
            + (f"; close: {', '.join(close)}" if close else "")
        )
    return enum[member]


def torchvision_found(model: str, choice: str, image_size: int | None) -> Found:
    weights = torchvision_weights(model, choice)
    path = torch_hub_file(weights.url, f"torchvision:{model} {weights}")
    size = image_size or int(weights.transforms().crop_size[0])
    origin = {
        "enum": str(weights),
        "weights": path.name,
        "weights_sha256": file_digest(path),
        "categories": len(weights.meta["categories"]),
    }
    pre = from_torchvision(weights.transforms(), size, f"torchvision {weights} transforms")
    return Found(path, origin, pre)


def torch_hub_file(url: str, what: str) -> Path:
    """torch.hub's cached file for `url` (downloaded there, with its hash prefix checked, unless
    offline); the file name is the URL's, as `load_state_dict_from_url` names it."""
    import torch

    path = torch_checkpoints_dir() / os.path.basename(urlparse(url).path)
    if path.is_file():
        return path
    if hub_offline():
        raise not_cached(f"{what} ({path.name})", path.parent, "HF_HUB_OFFLINE is set")
    prefix = re.search(r"-([a-f0-9]*)\.", path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(
            url, str(path), hash_prefix=prefix.group(1) if prefix else None, progress=False
        )
    except Exception as err:  # URLError, a hash mismatch, a full disk
        raise not_cached(f"{what} ({url})", path.parent, err) from None
    return path


def load_with_new_head(model: nn.Module, state: dict[str, Any], what: str) -> list[str]:
    """Load `state`, leaving out the classifier tensors whose shape differs (a new head for
    another number of classes); returns the keys left at random init."""
    own = model.state_dict()
    dropped = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    kept = {k: v for k, v in state.items() if k not in dropped}
    result = model.load_state_dict(kept, strict=False)
    if result.unexpected_keys or set(result.missing_keys) != set(dropped):
        raise VitlensError(
            f"the weights of {what} do not fit the model: missing "
            f"{sorted(set(result.missing_keys) - set(dropped))[:5]}, unexpected "
            f"{sorted(result.unexpected_keys)[:5]}"
        )
    return dropped
