"""Typed training configuration: presets, YAML load/save and validation.

The `paper` preset is the authors' CIFAR recipe (official_repo.md §6.1): AdamW lr 1.25e-4, weight
decay 0.05, batch 96, 300 epochs with 5 of linear warm-up then cosine, gradient clipping at 5,
RandAugment + mixup/cutmix + label smoothing 0.1, stochastic depth 0.1. Unlike the authors'
notebook, warm-up counts inside the 300 epochs (as in DeiT), stochastic depth is applied, and the
schedule steps per iteration. `quick` trains a nano model in minutes on a laptop CPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from vitlens.errors import ConfigError
from vitlens.presets import TRAIN_PRESETS

# Sizes beyond any vision model's: refused before anything is allocated.
MAX_IMAGE_SIZE = 4096
MAX_BATCH_BYTES = 16 * 2**30


def batch_bytes(batch_size: int, image_size: int, channels: int = 3) -> int:
    """Bytes of one float32 batch of input images."""
    return batch_size * channels * image_size * image_size * 4


@dataclass
class TrainConfig:
    """Everything that defines a training run. Field docs are the CLI's help."""

    model: str = "vit_nano"
    model_args: dict[str, Any] = field(default_factory=dict)  # constructor overrides
    dataset: str = "fashion-mnist-mini"
    data_dir: str | None = None
    download: bool = False
    fraction: float = 1.0  # class-balanced share of the training set (paper: 0.02, 0.06)
    image_size: int | None = None  # resize inputs to this side (None: the dataset's own)
    augment: Literal["none", "basic", "paper"] = "basic"
    mixup: bool = False  # mixup (alpha 1.0) / cutmix (alpha 0.8) with soft targets
    label_smoothing: float = 0.0
    epochs: int = 5
    warmup_epochs: float = 1.0
    batch_size: int = 128
    eval_batch_size: int = 256
    lr: float = 1e-3
    min_lr: float = 0.0
    weight_decay: float = 0.05
    decay_exempt: bool = True  # no weight decay on norms, biases and position embeddings
    clip_grad: float | None = 5.0
    drop_path: float = 0.0
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # bf16 autocast (see train/precision.py)
    workers: int = 0
    checkpoint_every: int = 0  # also checkpoint every N steps within an epoch (0: epoch ends)
    snapshot_every: int = 0  # keep weight snapshots every N epochs for trajectories (0: none)
    init: str | None = None  # start from the weights of this checkpoint or run (fine-tuning)
    freeze: Literal["none", "backbone"] = "none"  # "backbone": train only the head (probe)
    ece_bins: int = 10

    def validate(self) -> TrainConfig:
        """Check types and ranges; raise ConfigError naming the field."""
        hints = typing.get_type_hints(TrainConfig)
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), hints[f.name])
        inputs = batch_bytes(max(self.batch_size, self.eval_batch_size), self.image_size or 32)
        checks = [
            (0 < self.fraction <= 1, "fraction must be in (0, 1]"),
            (self.epochs >= 1, "epochs must be at least 1"),
            (0 <= self.warmup_epochs <= self.epochs, "warmup_epochs must be in [0, epochs]"),
            (self.batch_size >= 1 and self.eval_batch_size >= 1, "batch sizes must be positive"),
            (self.lr > 0, "lr must be positive"),
            (self.weight_decay >= 0, "weight_decay must be non-negative"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (0 <= self.drop_path < 1, "drop_path must be in [0, 1)"),
            (self.clip_grad is None or self.clip_grad > 0, "clip_grad must be positive or null"),
            (self.checkpoint_every >= 0 and self.snapshot_every >= 0, "*_every must be >= 0"),
            (self.workers >= 0, "workers must be >= 0"),
            (
                self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:"),
                "device must be auto, cpu, cuda[:N] or mps",
            ),
            (self.ece_bins >= 1, "ece_bins must be positive"),
            (self.seed >= 0, "seed must be >= 0"),
            (
                self.image_size is None or 1 <= self.image_size <= MAX_IMAGE_SIZE,
                f"image_size must be between 1 and {MAX_IMAGE_SIZE} pixels",
            ),
            (
                inputs <= MAX_BATCH_BYTES,
                f"one batch of images (batch size x 3 channels x image_size^2, float32) would "
                f"take {inputs / 2**30:.0f} GiB; the limit is {MAX_BATCH_BYTES // 2**30} GiB: "
                "lower --batch-size or --image-size",
            ),
            (math.isfinite(self.lr) and math.isfinite(self.min_lr), "lr must be a finite number"),
        ]
        reserved = sorted(
            set(self.model_args) & {"drop_path", "num_classes", "image_size", "in_chans"}
        )
        checks.append(
            (
                not reserved,
                f"model_args may not set {reserved}: config fields or taken from the dataset",
            )
        )
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"bad config: {message}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def trajectory_hash(self) -> str:
        """Hash of the fields that decide the weights; a resumed run must match it."""
        ignore = {
            "device",
            "precision",
            "workers",
            "checkpoint_every",
            "snapshot_every",
            "epochs",
            "data_dir",
        }
        data = {k: v for k, v in self.to_dict().items() if k not in ignore}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# The training presets live with the study presets, in one place.
PRESETS = TRAIN_PRESETS


def check_field_types(cls: type, values: dict[str, Any], where: str) -> None:
    """Check that `values` are known fields of dataclass `cls` with values of the right type."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known keys: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        try:
            _check_type(key, value, hints[key])
        except ConfigError as err:
            raise ConfigError(f"{where}: {str(err).removeprefix('bad config: ')}") from None


def _check_type(name: str, value: Any, hint: Any) -> None:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(hint):
            try:
                _check_type(name, value, option)
                return
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(f"bad config: {name} = {value!r} is not {_describe(hint)}")
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(
                f"bad config: {name} = {value!r}; choose from {typing.get_args(hint)}"
            )
        return
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"bad config: {name} = {value!r} is not null")
        return
    base = origin or hint
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return
    if base is int and isinstance(value, bool):
        raise ConfigError(f"bad config: {name} = {value!r} is not an integer")
    if not isinstance(value, base):
        raise ConfigError(f"bad config: {name} = {value!r} is not {_describe(hint)}")


def _describe(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def make_config(preset: str = "quick", **overrides: Any) -> TrainConfig:
    """A validated config: the preset's values, then the overrides (None means 'keep')."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    values = {**PRESETS[preset]}
    known = {f.name for f in fields(TrainConfig)}
    for key, value in overrides.items():
        if key not in known:
            raise ConfigError(f"unknown config key {key!r}; known keys: {sorted(known)}")
        if value is not None:
            values[key] = value
    # Floats given as ints (e.g. from YAML) are accepted and normalized.
    return TrainConfig(**values).validate()


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of config overrides (string keys, UTF-8 text)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder, not a YAML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text (a binary file?)") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    except (OSError, ValueError) as err:  # unreadable, or YAML it cannot hold (NUL bytes)
        raise ConfigError(f"config file {path} cannot be read: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"config file {path} has keys that are not names: {bad[:5]}")
    return data


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Rebuild a saved config (e.g. a run's config.yaml)."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown config keys {unknown}")
    return TrainConfig(**data).validate()


def config_field_names() -> set[str]:
    """The names of TrainConfig's fields."""
    return {f.name for f in fields(TrainConfig)}


def parse_model_args(items: list[str]) -> dict[str, Any]:
    """`--model-arg KEY=VALUE` items (VALUE read as YAML) as constructor overrides."""
    args = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--model-arg needs KEY=VALUE, got {item!r}")
        try:
            args[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(
                f"--model-arg {item!r}: the value is not valid YAML ({err})"
            ) from None
    return args


def dump_yaml(config: TrainConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
