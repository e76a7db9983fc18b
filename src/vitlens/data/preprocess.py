"""A pretrained model's own preprocessing: the resize, centre crop, interpolation and mean/std it
was trained with, read from its source (timm's data config, torchvision's weight transforms, a
Hugging Face image processor), recorded in the run and applied by every later command.

Evaluation follows the usual recipe: the shorter side is resized to `resize`, then the centre
`size` x `size` crop is taken (`resize` None: straight to `size` x `size`), then normalised.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from PIL import Image

from vitlens.errors import VitlensError

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
# PIL's resample numbers, as Hugging Face image processors store them.
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclass(frozen=True)
class Preprocessing:
    """How images reach the model.

    Attributes:
        size: the side of the square input.
        mean, std: per-channel normalisation on the [0, 1] scale (None: the dataset's own).
        resize: the shorter side before the centre crop (None: resize straight to `size`).
        interpolation: one of `INTERPOLATIONS`.
        source: where it was read (e.g. "timm pretrained_cfg", "preprocessor_config.json").
    """

    size: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resize: int | None = None
    interpolation: str = "bilinear"
    source: str = ""

    def __post_init__(self):
        if self.interpolation not in INTERPOLATIONS:
            raise VitlensError(f"unknown interpolation {self.interpolation!r}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["mean"] = list(self.mean) if self.mean else None
        out["std"] = list(self.std) if self.std else None
        return out

    @staticmethod
    def from_dict(values: dict[str, Any]) -> Preprocessing:
        try:
            return Preprocessing(
                size=int(values["size"]),
                mean=tuple(map(float, values["mean"])) if values.get("mean") else None,
                std=tuple(map(float, values["std"])) if values.get("std") else None,
                resize=int(values["resize"]) if values.get("resize") else None,
                interpolation=str(values.get("interpolation", "bilinear")),
                source=str(values.get("source", "")),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise VitlensError(f"a run's recorded preprocessing is damaged: {err!r}") from None

    def for_channels(self, channels: int) -> Preprocessing:
        """Itself, without mean/std when they do not have one value per channel (a timm model
        adapted to grayscale keeps its RGB statistics; the dataset's are used instead)."""
        if self.mean and len(self.mean) == channels and self.std and len(self.std) == channels:
            return self
        return Preprocessing(self.size, None, None, self.resize, self.interpolation, self.source)


def from_timm(config: dict[str, Any], size: int, source: str) -> Preprocessing:
    """From `timm.data.resolve_model_data_config(model)`: crop_pct sets the resize (timm's
    `scale_size = floor(size / crop_pct)`)."""
    crop = config.get("crop_pct")
    resize = math.floor(size / crop) if crop else None
    return Preprocessing(
        size,
        tuple(config["mean"]),
        tuple(config["std"]),
        resize,
        config.get("interpolation", "bilinear") or "bilinear",
        source,
    )


def from_torchvision(transforms: Any, size: int, source: str) -> Preprocessing:
    """From a weights enum's `transforms()` (resize_size, crop_size, mean, std, interpolation)."""
    ratio = transforms.resize_size[0] / transforms.crop_size[0]
    return Preprocessing(
        size,
        tuple(transforms.mean),
        tuple(transforms.std),
        round(size * ratio),
        transforms.interpolation.value,
        source,
    )


def from_hf(values: dict[str, Any], size: int, source: str) -> Preprocessing:
    """From a Hugging Face image processor's saved config (preprocessor_config.json)."""
    shape = values.get("size") or {}
    resize = None
    if isinstance(shape, dict) and "shortest_edge" in shape and values.get("do_center_crop"):
        resize = round(size * shape["shortest_edge"] / _crop_side(values, size))
    mean, std = values.get("image_mean"), values.get("image_std")
    if values.get("do_normalize") is False or not (mean and std):
        mean = std = None
    interpolation = _PIL_RESAMPLE.get(values.get("resample"), "bilinear")
    return Preprocessing(
        size,
        tuple(mean) if mean else None,
        tuple(std) if std else None,
        resize,
        interpolation,
        source,
    )


def _crop_side(values: dict[str, Any], size: int) -> int:
    crop = values.get("crop_size")
    if isinstance(crop, dict):
        return int(crop.get("height") or crop.get("width") or size)
    return int(crop or size)


def resize_tensor(images: torch.Tensor, p: Preprocessing) -> torch.Tensor:
    """(N, C, H, W) uint8 images resized (antialiased) and centre-cropped as `p` says."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    mode = InterpolationMode(p.interpolation)
    if p.resize is None:
        return TF.resize(images, [p.size, p.size], interpolation=mode, antialias=True)
    images = TF.resize(images, p.resize, interpolation=mode, antialias=True)
    return TF.center_crop(images, [p.size, p.size])


def resize_image(image: Image.Image, p: Preprocessing) -> Image.Image:
    """A PIL image resized and centre-cropped as `p` says."""
    resample = Image.Resampling[p.interpolation.upper()]
    w, h = image.size
    if p.resize is None:
        return image.resize((p.size, p.size), resample)
    scale = p.resize / min(w, h)
    nw, nh = max(p.size, round(w * scale)), max(p.size, round(h * scale))
    image = image.resize((nw, nh), resample)
    left, top = (nw - p.size) // 2, (nh - p.size) // 2
    return image.crop((left, top, left + p.size, top + p.size))
