"""Checkpoints: weights and optimizer state as safetensors, run state as JSON, written atomically.

A checkpoint `TAG` in a folder is a record `TAG.json` and the tensor files it names: the weights
(`*.model.safetensors`) and, while training, the optimizer state (`*.optim.safetensors`). The
record is written last and holds the SHA-256 of both tensor files, so a checkpoint is either
complete and verified or refused with a clear error. No pickles are ever read.

With `generations=True` (the training loop's `last` checkpoint) each save writes its tensor files
under new names (`TAG-000007.model.safetensors`), then switches the record to them with one
atomic rename, then removes the previous generation: at every instant, whatever interrupts the
write (a kill, a full disk), one complete, verified checkpoint exists.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from vitlens.atomic import (
    file_digest,
    remove_temporaries,
    write_error,
    write_safetensors,
    write_text,
)
from vitlens.errors import VitlensError

FORMAT = "vitlens-checkpoint/1"


class CheckpointError(VitlensError):
    """A checkpoint that is missing, truncated, corrupt, or of another model."""


def _atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> str:
    write_safetensors(path, tensors, meta)
    return file_digest(path)


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
    *,
    generations: bool = False,
) -> Path:
    """Write checkpoint `tag` into `folder`; returns the path of its JSON record.

    With `generations`, the tensor files get new names and the previous generation is removed
    only after the record points at the new one.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{tag}-{_next_generation(folder, tag):06d}" if generations else tag
    path = folder / f"{tag}.json"
    had_record = path.exists()
    written: list[Path] = []
    try:
        record = _write_tensors(folder, stem, model, optimizer, state, written)
        write_text(path, json.dumps(record, indent=1))  # the switch to the new generation
    except BaseException:
        # A failed write (a full disk) leaves no tensor file that no record names: new
        # generations are never named yet; a first checkpoint has no record at all.
        if generations or not had_record:
            for file in written:
                file.unlink(missing_ok=True)
        raise
    if generations:
        _remove_other_generations(
            folder, tag, keep={record["model_file"], record.get("optim_file")}
        )
    return path


def _write_tensors(folder, stem, model, optimizer, state, written: list[Path]) -> dict[str, Any]:
    """Write the model (and optimizer) tensors; the record that names them and their hashes.
    Each file is appended to `written` once it exists."""
    meta = {"format": FORMAT}
    record: dict[str, Any] = dict(state)
    record["format"] = FORMAT
    record["model_file"] = f"{stem}.model.safetensors"
    written.append(folder / record["model_file"])
    record["model_sha256"] = _atomic_save_tensors(written[-1], model.state_dict(), meta)
    if optimizer is not None:
        tensors, groups = optimizer_tensors(optimizer)
        record["optim_file"] = f"{stem}.optim.safetensors"
        written.append(folder / record["optim_file"])
        record["optim_sha256"] = _atomic_save_tensors(written[-1], tensors, meta)
        record["optim_groups"] = groups
    record["torch_rng"] = base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()
    return record


def _generation_files(folder: Path, tag: str) -> dict[Path, int]:
    pattern = re.compile(rf"^{re.escape(tag)}-(\d+)\.(model|optim)\.safetensors$")
    found = {}
    for p in folder.iterdir():
        match = pattern.match(p.name)
        if match:
            found[p] = int(match.group(1))
    return found


def _next_generation(folder: Path, tag: str) -> int:
    """One more than any generation in the folder, so no write touches a file in use."""
    return max(_generation_files(folder, tag).values(), default=0) + 1


def _remove_other_generations(folder: Path, tag: str, keep: set) -> None:
    stale = [p for p in _generation_files(folder, tag) if p.name not in keep]
    stale += [folder / f"{tag}.model.safetensors", folder / f"{tag}.optim.safetensors"]
    for p in stale:  # older generations, files of an interrupted save, the pre-generation names
        if p.exists():
            try:
                p.unlink(missing_ok=True)
            except OSError as err:
                raise write_error(p, err) from None
    remove_temporaries(folder)


def tidy_generations(folder: Path, tag: str) -> None:
    """Remove what an interrupted save of `tag` left (generations its record does not name).

    Nothing is removed unless the record is a valid checkpoint record.
    """
    path = Path(folder) / f"{tag}.json"
    if not path.exists():
        return
    record = read_record(path)
    _remove_other_generations(folder, tag, keep={record["model_file"], record.get("optim_file")})


RECORD_KEYS = {"model_file": str, "model_sha256": str}


def read_record(json_path: Path) -> dict[str, Any]:
    """A checkpoint record, checked to be one (not its tensor files)."""
    try:
        record = json.loads(Path(json_path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {json_path}") from None
    except IsADirectoryError:
        raise CheckpointError(f"{json_path} is a folder, not a checkpoint record") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"checkpoint record {json_path} is corrupt (not JSON)") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{json_path} is not a vitlens checkpoint record")
    for key in ("model_file", "model_sha256", "optim_file", "optim_sha256"):
        value = record.get(key)
        if (key in RECORD_KEYS or value is not None) and not _plain_name(value, key):
            raise CheckpointError(
                f"checkpoint record {json_path} is damaged or hand-edited: {key} is "
                f"{'missing' if value is None else repr(value)}; use another checkpoint or retrain"
            )
    return record


def _plain_name(value: Any, key: str) -> bool:
    if not isinstance(value, str) or not value:
        return False
    return key.endswith("sha256") or Path(value).name == value  # a file beside the record


def read_checkpoint(json_path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The checkpoint's record and model tensors, verified against their recorded hashes."""
    record = read_record(json_path)
    weights = _load_verified(Path(json_path).parent / record["model_file"], record["model_sha256"])
    return record, weights


def read_optimizer(json_path: Path, record: dict[str, Any]) -> dict[str, torch.Tensor]:
    if not record.get("optim_file"):
        raise CheckpointError(f"{json_path} holds no optimizer state (a final checkpoint?)")
    return _load_verified(Path(json_path).parent / record["optim_file"], record["optim_sha256"])


def _load_verified(path: Path, sha256: str) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} is missing")
    if file_digest(path) != sha256:
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
