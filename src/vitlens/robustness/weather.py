"""Weather corruptions: snow, frost, fog and brightness.

Hendrycks & Dietterich (ICLR 2019); algorithms as in `cifar_c_params.md` §2.3 and §4.10-4.12,
§4.16. Inputs and outputs are `(B, C, H, W)` float images in [0, 1]; grey images (C = 1) are their
own luminance, and grey fog, snow and frost are added to them as to every channel of an RGB image.

**Frost is an approximation, not the reference definition.** The reference blends the image with a
crop of one of five frost photographs shipped with hendrycks/robustness; vitlens does not ship or
download them. `frost_texture` synthesises a seeded, frost-like texture instead (cloudy ice,
ridged veins and needle crystals, tinted blue-white), blended with the reference weights. Pass a
`texture=` (for example crops of the reference photographs, decimated by 5 for CIFAR) to get the
reference formula exactly. Frost numbers from vitlens are therefore comparable between vitlens
models, but not with published CIFAR-10-C / ImageNet-C frost numbers.

Snow follows the reference, with the motion blur of `ops.motion_blur` standing in for ImageMagick
(see `blur.py`); the 8-bit truncation of the snow layer and the 8-bit rounding of ImageMagick's PNG
output are kept.
"""

from __future__ import annotations

import torch

from vitlens.robustness.ops import (
    clipped_zoom,
    motion_blur,
    plasma_fractal,
    rand,
    randn,
    to_gray,
)


def _next_pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def brightness(x: torch.Tensor, shift: float, *, generator: torch.Generator) -> torch.Tensor:
    """Add `shift` to the HSV value channel (clipped to 1), keeping hue and saturation.

    The reference converts to HSV with scikit-image, sets V = clip(V + shift), and converts back.
    For fixed hue and saturation RGB is proportional to V, so this is x * clip(V + shift) / V with
    V = max over channels; a black pixel (V = 0, saturation 0) becomes grey `shift`.

    Args:
        x: `(B, C, H, W)` images in [0, 1].
        shift: Value added to V.
        generator: Unused (deterministic corruption).
    """
    v = x.amax(dim=1, keepdim=True)
    v_new = (v + shift).clamp(0, 1)
    scaled = x * (v_new / v.clamp_min(torch.finfo(x.dtype).tiny))
    return torch.where(v > 0, scaled, v_new.expand_as(x)).clamp(0, 1)


def fog(x: torch.Tensor, param: tuple[float, float], *, generator: torch.Generator) -> torch.Tensor:
    """Add a grey plasma-fractal fog and compress contrast: clip((x + A P) m / (m + A)).

    m is the image's maximum over pixels and channels; P is `plasma_fractal` on the smallest
    power-of-two square covering the image (32 for CIFAR, 256 for ImageNet's 224, as the
    reference), cropped top-left.

    Args:
        x: `(B, C, H, W)` images in [0, 1].
        param: (fog amount A, wibble decay).
        generator: Source of the plasma draws.
    """
    amount, decay = float(param[0]), float(param[1])
    b, _, h, w = x.shape
    p = plasma_fractal(b, _next_pow2(max(h, w)), decay, generator, device=x.device)
    p = p[:, None, :h, :w].to(x.dtype)
    m = x.amax(dim=(1, 2, 3), keepdim=True)
    return ((x + amount * p) * m / (m + amount)).clamp(0, 1)


def snow(
    x: torch.Tensor,
    param: tuple[float, float, float, float, float, float, float],
    *,
    generator: torch.Generator,
) -> torch.Tensor:
    """Streaks of snow over a brightened image (the reference algorithm, cifar_c_params.md §4.10).

    A grey layer L ~ N(mu, sigma^2) is centre-zoomed, zeroed below the threshold, stored as 8 bits,
    motion-blurred at an angle uniform in [-135, -45) degrees and rounded to 8 bits; the image is
    brightened to blend * x + (1 - blend) * max(x, 1.5 * gray + 0.5); out = clip(x' + L + rot180 L).

    Args:
        x: `(B, C, H, W)` images in [0, 1].
        param: (mu, sigma, zoom, threshold, blur radius, blur sigma, blend).
        generator: Source of the layer and the angles.
    """
    mu, sigma, zoom, threshold, radius, blur_sigma, blend = (float(v) for v in param)
    b, _, h, w = x.shape
    layer = mu + sigma * randn((b, 1, h, w), generator, x)
    layer = clipped_zoom(layer, zoom)
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer)
    layer = torch.floor(layer.clamp(0, 1) * 255) / 255  # stored as an 8-bit PNG
    angle = torch.rand(b, generator=generator, device=generator.device) * 90 - 135
    layer = motion_blur(layer, radius, blur_sigma, angle)
    layer = torch.round(layer * 255) / 255  # ImageMagick writes an 8-bit PNG
    bright = torch.maximum(x, 1.5 * to_gray(x) + 0.5)
    x = blend * x + (1 - blend) * bright
    return (x + layer + layer.flip(-2, -1)).clamp(0, 1)


def frost_texture(
    batch: int,
    channels: int,
    height: int,
    width: int,
    *,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """A seeded, synthetic frost texture in [0, 1] (NOT the reference frost photographs).

    Cloudy ice density (plasma fractal, decay 2), thin bright veins (ridged plasma fractal, decay
    1.5) and needle crystals (sparse seeds motion-blurred both ways along two random directions,
    about 1/8 of the image side long), tinted blue-white (RGB gains 0.85, 0.93, 1.0). Mean about
    0.62 at 32 px and 0.68 at 224 px, standard deviation 0.15-0.19.

    Args:
        batch: Number of textures.
        channels: 1 (luminance of the tinted texture) or 3.
        height: Texture height.
        width: Texture width.
        generator: Source of all draws.
        device: Where the texture lives.

    Returns:
        `(batch, channels, height, width)` float32 tensor.
    """
    n = _next_pow2(max(height, width))
    clouds = plasma_fractal(batch, n, 2.0, generator, device=device)[:, None, :height, :width]
    ridged = plasma_fractal(batch, n, 1.5, generator, device=device)[:, None, :height, :width]
    veins = (1 - (2 * ridged - 1).abs()) ** 4
    like = torch.empty(0, device=device)
    seeds = rand((batch, 1, height, width), generator, like)
    seeds = (seeds > 0.95).float() * rand((batch, 1, height, width), generator, like)
    length = max(max(height, width) / 8, 1.0)
    needles = torch.zeros_like(seeds)
    for _ in range(2):
        angle = torch.rand(batch, generator=generator, device=generator.device) * 360
        for turn in (0.0, 180.0):  # a one-sided kernel both ways: a symmetric needle
            needles += motion_blur(seeds, length, length / 2, angle + turn)
    tex = (0.25 + 0.35 * clouds + 0.35 * veins + 2.0 * needles).clamp(0, 1)
    tint = torch.tensor([0.85, 0.93, 1.0], device=device).view(1, 3, 1, 1)
    if channels == 1:
        tint = to_gray(tint)
    return tex * tint


def frost(
    x: torch.Tensor,
    param: tuple[float, float],
    *,
    generator: torch.Generator,
    texture: torch.Tensor | None = None,
) -> torch.Tensor:
    """clip(a * x + b * F) with F a frost texture in [0, 1] (synthetic unless `texture` is given).

    See the module docstring: with the default synthetic texture this is an approximation of the
    reference frost corruption.

    Args:
        x: `(B, C, H, W)` images in [0, 1].
        param: (image weight a, frost weight b).
        generator: Source of the synthetic texture.
        texture: Optional `(B, C, H, W)` or `(C, H, W)` texture in [0, 1], used instead.
    """
    a, b = float(param[0]), float(param[1])
    if texture is None:
        texture = frost_texture(*x.shape, generator=generator, device=x.device)
    return (a * x + b * texture.to(x)).clamp(0, 1)
