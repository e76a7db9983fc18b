"""RandAugment as the paper ran it: timm's `rand-m9-n2-mstd1.0`, drawn from torch's RNG.

The paper's CIFAR recipe (official repo `configs/cifar*_vit.yaml`, `ops/datasets.py`) is timm's
`transforms_imagenet_train(img_size=32, auto_augment="rand-m9-n2-mstd1.0",
interpolation="random")`. For that string timm's RandAugment

- picks 2 of its 15 default ops (`_RAND_TRANSFORMS`) uniformly, with replacement;
- applies each picked op with probability 0.5;
- draws the op's magnitude from N(9, 1), clipped to [0, 10] (timm's `_LEVEL_DENOM`);
- maps the magnitude to the op's argument with timm's level functions (`level / 10` scaled to
  the op's range); rotate, shear and translate are negated with probability 0.5;
- fills geometric ops with the dataset mean (`round(255 * mean)`) and resamples them bilinearly
  or bicubically at random (timm's `_RANDOM_INTERPOLATION`, since the recipe asks for "random").

The ops here call the same PIL functions on the same arguments, so an op gives the same pixels
as timm's (tests/test_randaugment.py checks each one). What differs is where the randomness
comes from: timm draws from Python's `random` and NumPy's global RNG; this class draws only from
a torch generator (the CPU default one unless another is given), which `ArrayDataset` seeds per
(seed, epoch, index) so that a resumed run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

# timm's `_RAND_TRANSFORMS`, in timm's order.
OP_NAMES = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)
# Ops whose argument timm negates with probability 0.5.
SIGNED_OPS = frozenset({"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"})
GEOMETRIC_OPS = SIGNED_OPS
MAGNITUDE_MAX = 10.0  # timm's _LEVEL_DENOM: magnitudes are on a 0..10 scale
TRANSLATE_PCT = 0.45  # timm's default `translate_pct`
INTERPOLATIONS = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)


def op_argument(name: str, magnitude: float, negate: bool = False) -> float | int | None:
    """The argument timm's level function gives op `name` at `magnitude` (None: no argument).

    Args:
        name: One of `OP_NAMES`.
        magnitude: On timm's 0..10 scale (already clipped).
        negate: For `SIGNED_OPS`, whether the argument is negated.
    """
    level = magnitude / MAGNITUDE_MAX
    sign = -1.0 if negate and name in SIGNED_OPS else 1.0
    if name in ("AutoContrast", "Equalize", "Invert"):
        return None
    if name == "Rotate":
        return sign * level * 30.0  # degrees, [-30, 30]
    if name == "Posterize":
        return int(level * 4)  # bits kept, 0..4
    if name == "Solarize":
        return min(256, int(level * 256))  # threshold
    if name == "SolarizeAdd":
        return min(128, int(level * 110))  # added below 128
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return level * 1.8 + 0.1  # enhancement factor, [0.1, 1.9]
    if name in ("ShearX", "ShearY"):
        return sign * level * 0.3
    if name in ("TranslateXRel", "TranslateYRel"):
        return sign * level * TRANSLATE_PCT  # fraction of the width/height
    raise ValueError(f"unknown RandAugment op {name!r}")


def _solarize_add(img: Image.Image, add: int, threshold: int = 128) -> Image.Image:
    lut = [min(255, i + add) if i < threshold else i for i in range(256)]
    return img.point(lut * len(img.getbands()))


def _posterize(img: Image.Image, bits: int) -> Image.Image:
    # Keep the top `bits` bits. PIL >= 12 rejects bits = 0, which timm's level function gives
    # below magnitude 2.5; the PIL the paper ran on (and timm then) turned it into a black image.
    if bits >= 8:
        return img
    mask = ~(2 ** (8 - bits) - 1)
    return img.point([i & mask for i in range(256)] * len(img.getbands()))


def _affine(img: Image.Image, coeffs: tuple, fill, resample) -> Image.Image:
    return img.transform(
        img.size, Image.Transform.AFFINE, coeffs, resample=resample, fillcolor=fill
    )


_ENHANCERS = {
    "Color": ImageEnhance.Color,
    "Contrast": ImageEnhance.Contrast,
    "Brightness": ImageEnhance.Brightness,
    "Sharpness": ImageEnhance.Sharpness,
}


def apply_op(img: Image.Image, name: str, arg, fill, resample) -> Image.Image:
    """Apply op `name` with argument `arg` (from `op_argument`) to a PIL image."""
    if name == "AutoContrast":
        return ImageOps.autocontrast(img)
    if name == "Equalize":
        return ImageOps.equalize(img)
    if name == "Invert":
        return ImageOps.invert(img)
    if name == "Posterize":
        return _posterize(img, arg)
    if name == "Solarize":
        return ImageOps.solarize(img, arg)
    if name == "SolarizeAdd":
        return _solarize_add(img, arg)
    if name in _ENHANCERS:
        return _ENHANCERS[name](img).enhance(arg)
    if name == "Rotate":
        return img.rotate(arg, resample=resample, fillcolor=fill)
    w, h = img.size
    affine = {
        "ShearX": (1, arg, 0, 0, 1, 0),
        "ShearY": (1, 0, 0, arg, 1, 0),
        "TranslateXRel": (1, 0, arg * w, 0, 1, 0),
        "TranslateYRel": (1, 0, 0, 0, 1, arg * h),
    }
    if name not in affine:
        raise ValueError(f"unknown RandAugment op {name!r}")
    return _affine(img, affine[name], fill, resample)


@dataclass(frozen=True)
class OpDraw:
    """One layer's random draw: the op, whether it applies, and its magnitude, sign, resampling."""

    name: str
    applied: bool
    magnitude: float = 0.0
    negate: bool = False
    resample: int = INTERPOLATIONS[0]


def _to_pil(img: torch.Tensor) -> Image.Image:
    array = img.permute(1, 2, 0).contiguous().numpy()  # (C, H, W) -> (H, W, C)
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def _from_pil(pil: Image.Image, channels: int) -> torch.Tensor:
    array = torch.from_numpy(np.array(pil, dtype=np.uint8))
    return array.unsqueeze(0) if channels == 1 else array.permute(2, 0, 1).contiguous()


class RandAugment:
    """timm's RandAugment (`rand-m{magnitude}-n{num_ops}-mstd{magnitude_std}`) on uint8 tensors.

    Picklable (DataLoader workers get a copy); all randomness comes from a torch generator.
    """

    def __init__(
        self,
        fill: Sequence[int],
        num_ops: int = 2,
        magnitude: float = 9.0,
        magnitude_std: float = 1.0,
        prob: float = 0.5,
    ) -> None:
        """Configure the transform.

        Args:
            fill: Per-channel fill of geometric ops, 0..255 (timm: `round(255 * mean)`).
            num_ops: Ops picked per image (timm's `n`).
            magnitude: Mean magnitude on the 0..10 scale (timm's `m`).
            magnitude_std: Std of the gaussian magnitude noise (timm's `mstd`); 0 for none,
                `inf` for uniform on [0, magnitude], as in timm.
            prob: Probability of applying each picked op (timm's `p`, default 0.5).
        """
        self.fill = tuple(int(v) for v in fill)
        self.num_ops = num_ops
        self.magnitude = float(magnitude)
        self.magnitude_std = float(magnitude_std)
        self.prob = float(prob)

    def _magnitude(self, noise: float, uniform: float) -> float:
        m = self.magnitude
        if self.magnitude_std == float("inf"):
            m = uniform * m  # timm: uniform on [0, magnitude]
        elif self.magnitude_std > 0:
            m = m + self.magnitude_std * noise
        return max(0.0, min(m, MAGNITUDE_MAX))  # timm clips to [0, _LEVEL_DENOM]

    def draw(self, generator: torch.Generator | None = None) -> list[OpDraw]:
        """Draw the ops of one image (from `generator`, or the CPU default generator).

        Two draws per image, whatever happens (one call per scalar cost ~5x more): per layer,
        uniforms for the op, whether it applies, its sign, its resampling and a uniform
        magnitude, and a standard normal for the magnitude noise.
        """
        u = torch.rand(self.num_ops, 5, generator=generator, dtype=torch.float64).tolist()
        z = torch.randn(self.num_ops, generator=generator, dtype=torch.float64).tolist()
        draws = []
        for (pick, apply, sign, interp, uniform), noise in zip(u, z, strict=True):
            name = OP_NAMES[min(int(pick * len(OP_NAMES)), len(OP_NAMES) - 1)]
            if apply >= self.prob:
                draws.append(OpDraw(name, applied=False))
                continue
            negate = name in SIGNED_OPS and sign < 0.5
            resample = (
                INTERPOLATIONS[int(interp < 0.5)] if name in GEOMETRIC_OPS else INTERPOLATIONS[0]
            )
            draws.append(OpDraw(name, True, self._magnitude(noise, uniform), negate, resample))
        return draws

    def apply(self, img: torch.Tensor, draws: Sequence[OpDraw]) -> torch.Tensor:
        """Apply drawn ops to a uint8 `(C, H, W)` tensor."""
        if not any(d.applied for d in draws):
            return img
        channels = img.shape[0]
        fill = self.fill[0] if channels == 1 else self.fill
        pil = _to_pil(img)
        for d in draws:
            if d.applied:
                arg = op_argument(d.name, d.magnitude, d.negate)
                pil = apply_op(pil, d.name, arg, fill, d.resample)
        return _from_pil(pil, channels)

    def __call__(self, img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.apply(img, self.draw(generator))

    def __repr__(self) -> str:
        return (
            f"RandAugment(rand-m{self.magnitude:g}-n{self.num_ops}-mstd{self.magnitude_std:g}, "
            f"p={self.prob:g}, ops={len(OP_NAMES)}, fill={self.fill})"
        )
