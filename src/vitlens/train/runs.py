"""Run folders: find a run's checkpoint, rebuild its model, and start new models from old weights.

A run folder (from `vitlens train`) holds `config.yaml`, `metrics.jsonl`, TensorBoard events,
`checkpoints/` (`last.*` while training, `final.*` at the end) and optionally `snapshots/`. Anywhere
a checkpoint is asked for, a run folder can stand in: its final (else last) checkpoint is used.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitlens.anatomy import describe
from vitlens.data.preprocess import Preprocessing
from vitlens.errors import VitlensError
from vitlens.train.checkpoint import CheckpointError, load_weights_strict, read_checkpoint


def resolve_checkpoint(path: str | Path) -> Path:
    """The JSON record of the checkpoint that `path` (a run folder or a record) names."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "checkpoints" / "final.json", path / "checkpoints" / "last.json"):
            if candidate.exists():
                return candidate
        raise CheckpointError(
            f"{path} is not a run folder with checkpoints (no checkpoints/*.json)"
        )
    if path.suffix == ".json":
        if not path.exists():
            raise CheckpointError(f"no checkpoint at {path}")
        return path
    if path.name.endswith(".model.safetensors"):  # TAG.model... or a generation TAG-000007.model...
        tag = re.sub(r"-\d+$", "", path.name.removesuffix(".model.safetensors"))
        return path.with_name(f"{tag}.json")
    raise CheckpointError(f"{path} is neither a run folder nor a checkpoint .json")


def build_model_from_record(record: dict[str, Any]) -> nn.Module:
    from vitlens.models import create_model

    spec = record.get("model_spec")
    keys = ("name", "num_classes", "image_size", "in_chans")
    if not isinstance(spec, dict) or not all(k in spec for k in keys):
        raise CheckpointError(
            f"the checkpoint record's model_spec is missing or incomplete ({spec!r:.80}); "
            "it is damaged or hand-edited"
        )
    if not isinstance(spec.get("args", {}), dict):
        raise CheckpointError("the checkpoint record's model_spec.args is not a mapping")
    return create_model(
        spec["name"],
        num_classes=spec["num_classes"],
        image_size=spec["image_size"],
        in_chans=spec["in_chans"],
        **spec.get("args", {}),
    )


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a trained model from a run folder or checkpoint; returns (model in eval, record)."""
    json_path = resolve_checkpoint(path)
    record, weights = read_checkpoint(json_path)
    model = build_model_from_record(record)
    load_weights_strict(model, weights, str(json_path))
    return model.to(device).eval(), record


def interpolate_pos_embed(src: torch.Tensor, dst_shape: torch.Size, prefix: int) -> torch.Tensor:
    """Resize a position embedding to another token grid in 2-D (bicubic), as ViT fine-tuning does.

    Handles token layout (1, prefix + H*W, D) and map layout (1, D, H, W) (PiT).
    """
    if src.ndim == 4:  # (1, D, H, W)
        return F.interpolate(src, size=dst_shape[-2:], mode="bicubic", align_corners=False)
    head, grid = src[:, :prefix], src[:, prefix:]
    side_src = int(round(grid.shape[1] ** 0.5))
    side_dst = int(round((dst_shape[1] - prefix) ** 0.5))
    if side_src**2 != grid.shape[1] or side_dst**2 != dst_shape[1] - prefix:
        raise CheckpointError("position embeddings of non-square grids cannot be interpolated")
    grid = grid.reshape(1, side_src, side_src, -1).permute(0, 3, 1, 2)  # -> (1, D, H, W)
    grid = F.interpolate(grid, size=(side_dst, side_dst), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, side_dst * side_dst, -1)  # -> (1, H*W, D)
    return torch.cat([head, grid], dim=1)


def init_from_checkpoint(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Copy a compatible model's weights into `model` for fine-tuning.

    The classifier head is left freshly initialized when the class count differs; position
    embeddings are interpolated in 2-D when the token grid differs. Any other mismatch means the
    checkpoint belongs to another architecture and is refused.

    Returns:
        Which keys were copied, interpolated and left new.
    """
    json_path = resolve_checkpoint(path)
    _, weights = read_checkpoint(json_path)
    own = model.state_dict()
    head = describe(model)[-1].tap
    head_keys = {
        f"{n}" for n, p in model.named_parameters() if any(p is q for q in head.parameters())
    }
    prefix = getattr(model, "prefix", 1)
    copied, interpolated, fresh = [], [], []
    new_state = {}
    problems = sorted(set(own) ^ set(weights))
    for key, value in own.items():
        if key not in weights:
            continue
        src = weights[key]
        if src.shape == value.shape:
            new_state[key] = src
            copied.append(key)
        elif key in head_keys:
            fresh.append(key)
        elif key.endswith("pos_embed"):
            new_state[key] = interpolate_pos_embed(src, value.shape, prefix).to(value.dtype)
            interpolated.append(key)
        else:
            problems.append(f"{key}: {tuple(src.shape)} vs {tuple(value.shape)}")
    if problems:
        raise CheckpointError(
            f"{json_path} is not a compatible model to start from: {problems[:4]}"
            f"{' ...' if len(problems) > 4 else ''}"
        )
    model.load_state_dict({**own, **new_state}, strict=True)
    return {"copied": copied, "interpolated": interpolated, "new": fresh}


def freeze_backbone(model: nn.Module) -> int:
    """Train only the classifier head (linear probing); returns the trainable parameter count."""
    head = describe(model)[-1].tap
    keep = {id(p) for p in head.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def run_preprocessing(record: dict[str, Any]) -> Preprocessing | None:
    """The pretrained model's own preprocessing an imported run recorded (None: the dataset's)."""
    recorded = (record.get("import") or {}).get("preprocessing")
    return Preprocessing.from_dict(recorded) if recorded else None


def load_run_data(
    record: dict[str, Any], split: str, dataset: str | None = None, data_dir: str | None = None
):
    """A split of the run's dataset (or `dataset`) as the run's model takes it: at its image size,
    with an imported model's own resize, crop and mean/std; a clear error if it does not fit."""
    from vitlens.data import load_dataset

    spec, config = record["model_spec"], record["config"]
    name = dataset or config["dataset"]
    data = load_dataset(
        name,
        split,
        data_dir=data_dir or config.get("data_dir"),
        image_size=spec["image_size"],
        preprocessing=run_preprocessing(record),
    )
    if data.info.in_chans != spec["in_chans"] or data.info.num_classes != spec["num_classes"]:
        raise VitlensError(
            f"{name} ({data.info.in_chans} channels, {data.info.num_classes} classes) does not fit "
            f"{spec['name']} ({spec['in_chans']} channels, {spec['num_classes']} classes)"
        )
    return data
