"""Checkpoints: weights and optimizer state as safetensors, run state as JSON, written atomically.

A checkpoint `TAG` in a folder is three files: `TAG.model.safetensors`, `TAG.optim.safetensors`
and `TAG.json`. The JSON is written last and records the SHA-256 of both tensor files, so a
checkpoint is either complete and verified or refused with a clear error; every file goes to a
temporary name first and is renamed into place. No pickles are ever read.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from vitlens.atomic import write_safetensors, write_text
from vitlens.errors import VitlensError

FORMAT = "vitlens-checkpoint/1"


class CheckpointError(VitlensError):
    """A checkpoint that is missing, truncated, corrupt, or of another model."""


def _atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> str:
    write_safetensors(path, tensors, meta)
    return _sha256(path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    """Split an optimizer state into flat tensors and JSON-able parameter groups."""
    sd = optimizer.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            tensors[f"state.{idx}.{key}"] = torch.as_tensor(value)
    return tensors, sd["param_groups"]


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict, groups: list) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"optimizer state does not fit this model: {err}") from None


def save_checkpoint(
    folder: Path,
    tag: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
) -> Path:
    """Write checkpoint `tag` into `folder`; returns the path of its JSON."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT}
    record: dict[str, Any] = dict(state)
    record["format"] = FORMAT
    record["model_file"] = f"{tag}.model.safetensors"
    record["model_sha256"] = _atomic_save_tensors(
        folder / record["model_file"], model.state_dict(), meta
    )
    if optimizer is not None:
        tensors, groups = optimizer_tensors(optimizer)
        record["optim_file"] = f"{tag}.optim.safetensors"
        record["optim_sha256"] = _atomic_save_tensors(folder / record["optim_file"], tensors, meta)
        record["optim_groups"] = groups
    record["torch_rng"] = base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()
    path = folder / f"{tag}.json"
    write_text(path, json.dumps(record, indent=1))
    return path


def read_checkpoint(json_path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The checkpoint's record and model tensors, verified against their recorded hashes."""
    try:
        record = json.loads(Path(json_path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {json_path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"checkpoint record {json_path} is corrupt (not JSON)") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{json_path} is not a vitlens checkpoint record")
    weights = _load_verified(Path(json_path).parent / record["model_file"], record["model_sha256"])
    return record, weights


def read_optimizer(json_path: Path, record: dict[str, Any]) -> dict[str, torch.Tensor]:
    return _load_verified(Path(json_path).parent / record["optim_file"], record["optim_sha256"])


def _load_verified(path: Path, sha256: str) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} is missing")
    if _sha256(path) != sha256:
        raise CheckpointError(
            f"checkpoint file {path} is truncated or modified (SHA-256 mismatch); "
            "use an earlier checkpoint or retrain"
        )
    try:
        return load_file(str(path))
    except SafetensorError as err:
        raise CheckpointError(f"checkpoint file {path} cannot be read: {err}") from None


def restore_rng(record: dict[str, Any]) -> None:
    if "torch_rng" in record:
        raw = base64.b64decode(record["torch_rng"])
        torch.set_rng_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8))


def load_weights_strict(model: nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """Load weights that must fit the model exactly, or explain what does not fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    wrong = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {keys[:4]}{' ...' if len(keys) > 4 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong))
            if keys
        )
        raise CheckpointError(
            f"{source} holds the weights of another model or class count ({detail})"
        )
    model.load_state_dict(weights, strict=True)
