"""Batched torch building blocks shared by the corruptions (Hendrycks & Dietterich, ICLR 2019).

Each helper reproduces one library call of the reference generators (hendrycks/robustness,
`make_cifar_c.py` / `make_imagenet_c.py`) on a batch `(B, C, H, W)` of float images in [0, 1], as
described in `shared/reference/cifar_c_params.md` §2:

- `gaussian_blur`: scikit-image / scipy `gaussian_filter` (radius int(truncate*sigma + 0.5)),
  written as one `(H, H)` and one `(W, W)` matrix so that any border mode and any radius (the
  ImageNet elastic field uses sigma 170.8 on 224 px) is exact.
- `pillow_box_matrix`: Pillow's BOX resampling coefficients (used by pixelate).
- `clipped_zoom`: centre crop + scipy `ndimage.zoom(order=1)` (corner-aligned bilinear) + trim.
- `motion_blur`: ImageMagick's `MotionBlurImage` (one-sided half-Gaussian line kernel, edge pixels
  repeated), a different angle per image.
- `plasma_fractal`: the diamond-square fog texture, a batch of maps at once.

Random draws always come from an explicit `torch.Generator` (on the CPU unless the generator lives
elsewhere) and are then moved to the images' device, so a seed gives the same corruption on any
device.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F


def rand(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Uniform [0, 1) draws from `generator`, moved to the device and dtype of `like`."""
    out = torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return out.to(device=like.device, dtype=like.dtype)


def randn(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Standard normal draws from `generator`, moved to the device and dtype of `like`."""
    out = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return out.to(device=like.device, dtype=like.dtype)


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """OpenCV RGB->GRAY luma (0.299, 0.587, 0.114) as `(B, 1, H, W)`; grey images pass through."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


# -- separable Gaussian smoothing (scipy.ndimage semantics) ---------------------------------------


def _fold(index: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    # Where an out-of-range tap reads from, per scipy.ndimage border mode.
    if mode == "nearest":  # aaaa|abcd|dddd
        return index.clamp(0, n - 1)
    if mode == "reflect":  # dcba|abcd|dcba (half-sample symmetric), periodic with 2n
        index = index.remainder(2 * n)
        return torch.where(index >= n, 2 * n - 1 - index, index)
    if mode == "mirror":  # dcb|abcd|cba (whole-sample symmetric, OpenCV reflect-101)
        if n == 1:
            return torch.zeros_like(index)
        index = index.remainder(2 * n - 2)
        return torch.where(index >= n, 2 * n - 2 - index, index)
    raise ValueError(f"unknown border mode {mode!r}")


@lru_cache(maxsize=256)
def gaussian_matrix(n: int, sigma: float, truncate: float, mode: str) -> torch.Tensor:
    """`(n, n)` float64 matrix M with `M @ v` = scipy `gaussian_filter1d(v, sigma, mode, truncate)`.

    Args:
        n: Signal length.
        sigma: Standard deviation in pixels; below 1e-15 the filter is the identity, as in scipy.
        truncate: Kernel radius in standard deviations (radius = int(truncate * sigma + 0.5)).
        mode: "nearest", "reflect" or "mirror" border.
    """
    if sigma <= 1e-15:
        return torch.eye(n, dtype=torch.float64)
    radius = int(truncate * float(sigma) + 0.5)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * taps**2 / float(sigma) ** 2)
    w = w / w.sum()
    rows = torch.arange(n).repeat_interleave(taps.numel())  # (n*K,)
    cols = _fold(torch.arange(n)[:, None] + taps.long()[None, :], n, mode).reshape(-1)
    m = torch.zeros(n, n, dtype=torch.float64)
    m.index_put_((rows, cols), w.repeat(n), accumulate=True)  # folded taps add up
    return m


def gaussian_blur(
    x: torch.Tensor, sigma: float, *, truncate: float = 4.0, mode: str = "nearest"
) -> torch.Tensor:
    """Smooth the last two axes of `x` like scikit-image `filters.gaussian` per channel.

    Args:
        x: `(..., H, W)` float tensor.
        sigma: Standard deviation in pixels (same on both axes).
        truncate: Radius in standard deviations (scikit-image default 4).
        mode: Border mode: "nearest" (scikit-image default), "reflect" or "mirror".
    """
    if int(truncate * float(sigma) + 0.5) == 0:
        return x  # radius 0: scipy applies a one-tap kernel of weight 1
    h, w = x.shape[-2:]
    mh = gaussian_matrix(h, float(sigma), float(truncate), mode).to(x.device, x.dtype)
    mw = gaussian_matrix(w, float(sigma), float(truncate), mode).to(x.device, x.dtype)
    return mh @ x @ mw.T


# -- Pillow BOX resampling -------------------------------------------------------------------------


@lru_cache(maxsize=64)
def pillow_box_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """`(out_size, in_size)` float64 weights of Pillow's BOX resize along one axis.

    Pillow (`Resample.c`, `precompute_coeffs`) centres output pixel i at (i + 0.5) * scale in the
    input, with support 0.5 * max(scale, 1), and gives weight 1 to every input pixel whose centre
    falls in (-0.5, 0.5] of the scaled window; the weights are then normalised. Upsampling therefore
    copies one input pixel (Pillow's BOX equals NEAREST there).
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    m = torch.zeros(out_size, in_size, dtype=torch.float64)
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        for j in range(lo, hi):
            t = (j - center + 0.5) / filterscale
            if -0.5 < t <= 0.5:
                m[i, j] = 1.0
        total = m[i].sum()
        if total > 0:
            m[i] /= total
    return m


# -- centre zoom (scipy.ndimage.zoom, order 1) -----------------------------------------------------


def _zoom_axis(size: int, z: float) -> tuple[int, int, int, int]:
    # Crop side, crop offset, zoomed side (Python round, as scipy sizes its output) and trim.
    crop = math.ceil(size / z)
    top = (size - crop) // 2
    out = int(round(crop * z))
    return crop, top, out, (out - size) // 2


def clipped_zoom(x: torch.Tensor, z: float) -> torch.Tensor:
    """Zoom the centre of each image by `z` and keep the middle, as the reference `clipped_zoom`.

    The reference crops ceil(side / z) pixels around the centre, upsamples with scipy
    `ndimage.zoom(order=1)` to round(crop * z) pixels (corner-aligned bilinear, so the effective
    magnification is (out - 1) / (crop - 1)), and trims (out - side) // 2 from the top/left. It
    reads only the height of a square image; here each axis is done on its own, which is the same
    for square images.

    Args:
        x: `(B, C, H, W)` float tensor.
        z: Zoom factor, at least 1.
    """
    h, w = x.shape[-2:]
    ch, th, oh, trim_h = _zoom_axis(h, z)
    cw, tw, ow, trim_w = _zoom_axis(w, z)
    if (ch, oh, cw, ow) == (h, h, w, w):
        return x  # e.g. z = 1.01 on 32 px: crop and zoom are both the identity
    crop = x[..., th : th + ch, tw : tw + cw]
    up = F.interpolate(crop, size=(oh, ow), mode="bilinear", align_corners=True)
    return up[..., trim_h : trim_h + h, trim_w : trim_w + w]


# -- ImageMagick motion blur -----------------------------------------------------------------------


def motion_kernel(radius: float, sigma: float) -> torch.Tensor:
    """ImageMagick's motion-blur weights exp(-i^2 / 2 sigma^2), i = 0..2 ceil(radius), summing to 1.

    The kernel is one-sided (the largest weight on the pixel itself), which is why a motion-blurred
    point leaves a trail on one side only.
    """
    width = 2 * math.ceil(radius) + 1
    i = torch.arange(width, dtype=torch.float64)
    w = torch.exp(-(i**2) / (2.0 * float(sigma) ** 2))
    return w / w.sum()


def motion_blur(
    x: torch.Tensor, radius: float, sigma: float, angle_deg: torch.Tensor
) -> torch.Tensor:
    """ImageMagick `MotionBlurImage(radius, sigma, angle)` on a batch, one angle per image.

    out(row, col) = sum_i w_i * in(row + oy_i, col + ox_i) with ox_i = ceil(i cos(a) - 0.5),
    oy_i = ceil(i sin(a) - 0.5) (x to the right, y down) and edge pixels repeated outside the image,
    each channel on its own (cifar_c_params.md §2.4).

    Args:
        x: `(B, C, H, W)` float tensor.
        radius: ImageMagick radius; the kernel has 2 * ceil(radius) + 1 taps.
        sigma: ImageMagick sigma of the half-Gaussian weights.
        angle_deg: `(B,)` angles in degrees.
    """
    b, c, h, w = x.shape
    weights = motion_kernel(radius, sigma).tolist()
    a = torch.deg2rad(angle_deg.detach().cpu().to(torch.float64))  # offsets on the CPU in float64
    taps = torch.arange(len(weights), dtype=torch.float64)[:, None]
    oys = torch.ceil(taps * torch.sin(a) - 0.5).long().to(x.device)  # (K, B)
    oxs = torch.ceil(taps * torch.cos(a) - 0.5).long().to(x.device)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    out = torch.zeros_like(x)
    for i, wi in enumerate(weights):
        oy, ox = oys[i], oxs[i]  # (B,)
        r = (rows[None, :] + oy[:, None]).clamp(0, h - 1)  # (B, H)
        q = (cols[None, :] + ox[:, None]).clamp(0, w - 1)  # (B, W)
        shifted = x.gather(2, r[:, None, :, None].expand(b, c, h, w))
        shifted = shifted.gather(3, q[:, None, None, :].expand(b, c, h, w))
        out.add_(shifted, alpha=wi)
    return out


# -- diamond-square plasma fractal -----------------------------------------------------------------


def plasma_fractal(
    batch: int,
    size: int,
    decay: float,
    generator: torch.Generator,
    *,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """A batch of diamond-square height maps, each normalised to [0, 1] (the reference fog texture).

    Same algorithm as the reference `plasma_fractal(mapsize, wibbledecay)`: a toroidal `size` x
    `size` grid (a power of two) starting from 0; per octave a squares step then two diamond
    steps, each adding uniform noise on [-w^2, w^2]; w starts at 100 and is divided by `decay`
    per octave. Each map is then shifted and scaled to [0, 1] over the whole grid.

    Args:
        batch: Number of maps.
        size: Side, a power of two.
        decay: The reference `wibbledecay`.
        generator: Source of the uniform draws.
        device: Where the result lives.

    Returns:
        `(batch, size, size)` float32 tensor.
    """
    if size & (size - 1):
        raise ValueError(f"plasma map size must be a power of two, got {size}")
    m = torch.zeros(batch, size, size, dtype=torch.float64)
    step, wibble = size, 100.0

    def wibbled_mean(total: torch.Tensor) -> torch.Tensor:
        u = torch.rand(total.shape, generator=generator, dtype=torch.float64)
        return total / 4 + wibble * (u * 2 * wibble - wibble)

    while step >= 2:
        half = step // 2
        # Squares: cell centres get the mean of their four corners.
        corners = m[:, 0:size:step, 0:size:step]
        acc = corners + corners.roll(-1, dims=1)
        acc = acc + acc.roll(-1, dims=2)
        m[:, half:size:step, half:size:step] = wibbled_mean(acc)
        # Diamonds: edge midpoints get the mean of the two centres and two corners beside them.
        centres = m[:, half:size:step, half:size:step]
        corners = m[:, 0:size:step, 0:size:step]
        total = centres + centres.roll(1, dims=1) + corners + corners.roll(-1, dims=2)
        m[:, 0:size:step, half:size:step] = wibbled_mean(total)
        total = centres + centres.roll(1, dims=2) + corners + corners.roll(-1, dims=1)
        m[:, half:size:step, 0:size:step] = wibbled_mean(total)
        step //= 2
        wibble /= decay
    m = m - m.amin(dim=(1, 2), keepdim=True)
    m = m / m.amax(dim=(1, 2), keepdim=True)
    return m.to(device=device, dtype=torch.float32)
