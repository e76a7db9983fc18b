"""Where pretrained weights are cached, read from the environment when asked (not when a hub
library was imported), so that a cache moved by an environment variable is the one used."""

from __future__ import annotations

import os
from pathlib import Path

from vitlens.errors import VitlensError

_TRUE = {"1", "ON", "YES", "TRUE"}


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    env = os.environ
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) forbids downloads: only the cache is read."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in _TRUE


def torch_checkpoints_dir() -> Path:
    """torch.hub's checkpoint cache: TORCH_HOME/hub/checkpoints (~/.cache/torch by default)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def not_cached(what: str, folder: Path, cause: object) -> VitlensError:
    """The error for weights that are neither cached nor downloadable: where vitlens looked and
    which variables move that place."""
    reason = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    return VitlensError(
        f"{what} is not in the cache at {folder}, and it could not be downloaded"
        f"{' (HF_HUB_OFFLINE is set)' if hub_offline() else ''}: {reason}. Fetch it once with "
        "network into that cache, or point HF_HUB_CACHE (or HF_HOME; Hugging Face and timm) or "
        "TORCH_HOME (torchvision) at a cache that has it. Nothing was written."
    )
