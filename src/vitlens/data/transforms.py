"""Per-image augmentation presets, on uint8 `(C, H, W)` tensors (torchvision.transforms.v2).

- "none": to float and normalize.
- "basic": RandomCrop(size, padding=4) + RandomHorizontalFlip (if the dataset allows flips), the
  "weak augmentation" of the official repo's `cifar*_general` configs. The crop is back to the
  input's own size, so a transform built for one size cannot change the size of another.
- "paper": basic + RandAugment with 2 ops at magnitude 9, the strong augmentation of the
  `cifar*_vit` configs the paper mostly uses (Park & Kim 2022, App. A; official repo
  `configs/cifar100_vit.yaml`, timm `rand-m9-n2-mstd1.0`).

Mixup/CutMix and label smoothing act on whole batches and live in `vitlens.data.mixing`.
Test-time transforms (`train=False`) are always just to-float + normalize.

RandAugment is timm's `rand-m9-n2-mstd1.0` exactly (15 ops, each applied with p = 0.5, magnitude
~ N(9, 1) clipped to [0, 10], random bilinear/bicubic resampling, fill = the dataset mean), drawn
from torch's RNG: see `vitlens.data.randaugment`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from vitlens.data.dataset import Normalize
from vitlens.data.info import DatasetInfo
from vitlens.data.randaugment import RandAugment
from vitlens.errors import UnknownNameError

PRESETS = ("none", "basic", "paper")

RANDAUGMENT_OPS = 2  # timm's rand-m9-n2-mstd1.0
RANDAUGMENT_MAGNITUDE = 9
RANDAUGMENT_MAGNITUDE_STD = 1.0


class RandomPadCrop:
    """Zero-pad by `padding` on every side, then crop a random window of the input's size.

    The same distribution as `RandomCrop(size, padding=padding)` with `size` = the input's size,
    drawn from the global torch RNG (which `ArrayDataset` seeds per item).
    """

    def __init__(self, padding: int = 4) -> None:
        self.padding = padding

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        p = self.padding
        padded = TF.pad(img, [p, p, p, p], fill=0)  # (C, H, W) -> (C, H + 2p, W + 2p)
        top = int(torch.randint(0, 2 * p + 1, (1,)))
        left = int(torch.randint(0, 2 * p + 1, (1,)))
        return padded[..., top : top + h, left : left + w]

    def __repr__(self) -> str:
        return f"RandomPadCrop(padding={self.padding})"


def build_transform(
    preset: str, info: DatasetInfo, *, train: bool
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Build the per-image transform of an augmentation preset.

    Args:
        preset: "none", "basic" or "paper".
        info: The dataset (flips, mean/std).
        train: Training transform if True; otherwise the test transform (normalize only).

    Returns:
        A picklable callable from a uint8 `(C, H, W)` tensor to a float32 `(C, H, W)` tensor.

    Raises:
        UnknownNameError: For an unknown preset.
    """
    if preset not in PRESETS:
        raise UnknownNameError(
            f"unknown augmentation preset {preset!r}; choose one of {', '.join(PRESETS)}."
        )
    normalize = Normalize(info.mean, info.std)
    if not train or preset == "none":
        return normalize
    steps: list[Callable] = [RandomPadCrop(padding=4)]
    if info.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if preset == "paper":
        fill = [min(255, round(m * 255)) for m in info.mean]  # timm's img_mean
        steps.append(
            RandAugment(
                fill,
                num_ops=RANDAUGMENT_OPS,
                magnitude=RANDAUGMENT_MAGNITUDE,
                magnitude_std=RANDAUGMENT_MAGNITUDE_STD,
            )
        )
    steps.append(normalize)
    return v2.Compose(steps)
