"""The 15 common corruptions of CIFAR-10-C / ImageNet-C, generated on the fly, batched and seeded.

Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" (ICLR 2019). The paper (Park & Kim 2022, §1.3 / repo `robustness.ipynb`) reports
robustness as the mean accuracy over these 15 corruptions x 5 severities.

Conventions:

- **Input** is a batch `(B, C, H, W)` (or one image `(C, H, W)`) with C = 1 or 3, either float
  in [0, 1] (**before** normalisation by the dataset mean/std) or uint8 in 0..255. The output has
  the same shape, dtype and device. uint8 output truncates, as `np.uint8` does in the reference
  generators, so uint8 in / uint8 out reproduces how CIFAR-10-C was stored.
- **Grey images** (C = 1, e.g. Fashion-MNIST): per-element corruptions (noise, blurs, contrast,
  pixelate, elastic, JPEG) work per channel; brightness uses V = the grey value; fog, snow and frost
  add a grey layer; snow brightens with the grey value as luminance.
- **Parameters**: `params="auto"` uses the CIFAR-10-C table for images up to 32x32 and the
  ImageNet-C table for larger ones; "cifar" or "imagenet" forces one. Pixel-size parameters are
  used as given, except elastic transform, whose reference constants are fractions of the image
  side: they are scaled by min(H, W) / 32 (CIFAR) or min(H, W) / 224 (ImageNet).
- **Randomness** comes only from `seed` or `generator`; the same seed gives the same images.

Deviations from the reference definitions (details in each module):

- frost uses a synthetic, seeded texture: the reference frost photographs are not shipped, so
  frost is an approximation, not the reference corruption;
- motion blur (and snow's streaks) applies ImageMagick's kernel in torch, without its 8-bit PNG
  round-trip (up to 1/255);
- pixelate applies Pillow's BOX weights in float, without Pillow's 8-bit intermediate rounding (up
  to 1/255); JPEG goes through Pillow itself (float input is rounded to 8 bits first);
- the random draws are torch's, so outputs equal the reference's only in distribution (the
  released arrays are not reproducible either: the reference never seeds its RNG).

Everything else was checked against the reference libraries with the same random draws (scipy,
OpenCV, scikit-image, imagecorruptions' plasma and motion-blur code): equal to float rounding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from vitlens.data.dataset import single_thread
from vitlens.errors import ConfigError, UnknownNameError
from vitlens.robustness.blur import defocus_blur, glass_blur, motion_blur, zoom_blur
from vitlens.robustness.digital import contrast, elastic_transform, jpeg_compression, pixelate
from vitlens.robustness.noise import gaussian_noise, impulse_noise, shot_noise
from vitlens.robustness.params import REFERENCE_SIZE, ParamSet, parameter, resolve_params
from vitlens.robustness.weather import brightness, fog, frost, snow

CorruptionFn = Callable[..., torch.Tensor]

#: Corruption functions by name, in the reference order (noise, blur, weather, digital).
FUNCTIONS: dict[str, CorruptionFn] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "snow": snow,
    "frost": frost,
    "fog": fog,
    "brightness": brightness,
    "contrast": contrast,
    "elastic_transform": elastic_transform,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
}

#: The 15 benchmark corruptions.
CORRUPTIONS: tuple[str, ...] = tuple(FUNCTIONS)

#: The four families of Hendrycks & Dietterich.
GROUPS: dict[str, tuple[str, ...]] = {
    "noise": CORRUPTIONS[0:3],
    "blur": CORRUPTIONS[3:7],
    "weather": CORRUPTIONS[7:11],
    "digital": CORRUPTIONS[11:15],
}

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

#: CPU batches up to this many elements are corrupted on one intra-op thread (about 340 RGB
#: 32x32 images, or 6 RGB 224x224 ones); larger ones use torch's thread setting.
SINGLE_THREAD_NUMEL = 1 << 20

#: Corruptions that draw random numbers (the others ignore the generator).
RANDOM = frozenset(
    {
        "gaussian_noise",
        "shot_noise",
        "impulse_noise",
        "glass_blur",
        "motion_blur",
        "snow",
        "frost",
        "fog",
        "elastic_transform",
    }
)


def check_corruptions(names: list[str] | tuple[str, ...]) -> list[str]:
    """Validate corruption names (a `UnknownNameError` listing the known ones otherwise)."""
    unknown = [n for n in names if n not in FUNCTIONS]
    if unknown:
        raise UnknownNameError(f"unknown corruption(s) {unknown}; known: {list(CORRUPTIONS)}")
    return list(names)


def corruption_parameter(
    name: str, severity: int, height: int, width: int, params: ParamSet = "auto"
) -> object:
    """The parameter `corrupt` uses for `name` at `severity` on `height` x `width` images."""
    check_corruptions([name])
    if severity not in SEVERITIES:
        raise ConfigError(f"severity must be one of 1..5, got {severity!r}")
    table = resolve_params(params, height, width)
    p = parameter(name, severity, table)
    if name == "elastic_transform":  # reference constants are fractions of the image side
        scale = min(height, width) / REFERENCE_SIZE[table]
        p = tuple(v * scale for v in p)
    return p


def _as_float_batch(images: torch.Tensor) -> tuple[torch.Tensor, bool, bool]:
    # -> (float (B, C, H, W) in [0, 1], was uint8, was a single image)
    if not isinstance(images, torch.Tensor):
        raise ConfigError(f"images must be a torch.Tensor, got {type(images).__name__}")
    single = images.ndim == 3
    x = images[None] if single else images
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ConfigError(
            f"images must be (B, C, H, W) or (C, H, W) with C = 1 or 3, got {tuple(images.shape)}"
        )
    if x.dtype == torch.uint8:
        return x.float() / 255, True, single
    if not x.is_floating_point():
        raise ConfigError(f"images must be uint8 or floating point, got {x.dtype}")
    if x.numel() and (x.min() < -1e-6 or x.max() > 1 + 1e-6):
        raise ConfigError(
            "corruptions take images in [0, 1] before normalisation (or uint8 0..255); got values "
            f"in [{x.min().item():.3g}, {x.max().item():.3g}]. Corrupt first, then normalise."
        )
    return x.clamp(0, 1), False, single


def corrupt(
    images: torch.Tensor,
    corruption: str,
    severity: int,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    params: ParamSet = "auto",
) -> torch.Tensor:
    """Apply one of the 15 common corruptions at severity 1..5 to a batch of images.

    Args:
        images: `(B, C, H, W)` or `(C, H, W)`, C = 1 or 3; float in [0, 1] (before normalisation)
            or uint8.
        corruption: One of `CORRUPTIONS`.
        severity: 1 (mildest) to 5.
        seed: Seed of a fresh CPU generator (0 when neither `seed` nor `generator` is given).
        generator: A `torch.Generator` to draw from instead (advanced by the call).
        params: "auto" (CIFAR-10-C table up to 32x32, ImageNet-C above), "cifar" or "imagenet".

    Returns:
        The corrupted images: same shape, dtype and device; values in [0, 1] (float) or 0..255
        (uint8, truncated like the reference's `np.uint8`).

    Raises:
        UnknownNameError: `corruption` is not one of the 15.
        ConfigError: bad severity, shape, dtype or value range.
    """
    # Small CPU batches are many small ops: intra-op threads save little, and on a busy 2-core
    # machine they collapse (100-image batches ran 40x slower on two threads than on one).
    small = images.device.type == "cpu" and images.numel() <= SINGLE_THREAD_NUMEL
    with single_thread() if small else contextlib.nullcontext():
        x, was_uint8, single = _as_float_batch(images)
        p = corruption_parameter(corruption, severity, x.shape[-2], x.shape[-1], params)
        if generator is None:
            generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
        out = FUNCTIONS[corruption](x, p, generator=generator)
        if was_uint8:
            # The epsilon keeps float values that are k/255 up to rounding at k.
            out = torch.floor(out * 255 + 1e-3).clamp(0, 255).to(torch.uint8)
        else:
            out = out.to(images.dtype)
    return out[0] if single else out
