"""Blur corruptions: defocus, glass, motion and zoom blur.

Hendrycks & Dietterich (ICLR 2019); algorithms as in `cifar_c_params.md` §2.1, §2.2, §2.4 and
§4.6-4.9. Inputs and outputs are `(B, C, H, W)` float images in [0, 1].

Glass blur reproduces the reference's sequential pixel shuffle exactly for the same offsets (one
gather per pass for max_delta 1, a row-by-row pass otherwise).

Deviation from the reference: for motion blur the reference calls ImageMagick through Wand; here
ImageMagick's kernel (a one-sided half-Gaussian of 2*ceil(R)+1 taps along the angle, edge pixels
repeated; cifar_c_params.md §2.4) is applied in torch, without ImageMagick's 8-bit PNG round-trip
(which rounds the output to 1/255). It equals the numpy re-implementation in imagecorruptions.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from vitlens.robustness.ops import clipped_zoom, gaussian_blur
from vitlens.robustness.ops import motion_blur as _motion
from vitlens.robustness.params import zoom_factors


@lru_cache(maxsize=32)
def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """The reference defocus kernel: an aliased disk, normalised, then smoothed by a Gaussian.

    The grid is -8..8 (or -r..r for r > 8); the disk is the points with x^2 + y^2 <= r^2; the
    smoothing is OpenCV `GaussianBlur` (3x3, or 5x5 for r > 8, sigma `alias_blur`) with a
    reflect-101 border, so a disk that touches the grid edge gives a kernel summing slightly above
    1, as in the reference. All-zero border rows and columns are trimmed (exact).

    Returns:
        A square float64 kernel of odd side.
    """
    if radius <= 8:
        coords = torch.arange(-8, 9, dtype=torch.float64)
        ksize = 3
    else:
        coords = torch.arange(-radius, radius + 1, dtype=torch.float64)
        ksize = 5
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    disk = ((xx**2 + yy**2) <= radius**2).to(torch.float32).double()
    disk = disk / disk.sum()
    t = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    g = torch.exp(-(t**2) / (2 * float(alias_blur) ** 2))
    g = g / g.sum()
    pad = ksize // 2
    k = F.pad(disk[None, None], (pad, pad, pad, pad), mode="reflect")  # reflect-101, as OpenCV
    k = F.conv2d(k, g.view(1, 1, 1, -1))
    k = F.conv2d(k, g.view(1, 1, -1, 1))[0, 0]
    mid = k.shape[0] // 2
    r = int((k.nonzero() - mid).abs().max())  # half-side of the non-zero support
    return k[mid - r : mid + r + 1, mid - r : mid + r + 1].contiguous()


def defocus_blur(
    x: torch.Tensor, param: tuple[float, float], *, generator: torch.Generator
) -> torch.Tensor:
    """Convolve with the `disk_kernel(radius, alias_blur)`, reflect-101 border (OpenCV filter2D).

    Args:
        x: `(B, C, H, W)` images in [0, 1].
        param: (disk radius, alias blur sigma).
        generator: Unused (deterministic corruption); kept for a uniform signature.
    """
    k = disk_kernel(float(param[0]), float(param[1]))
    b, c, h, w = x.shape
    p = k.shape[0] // 2
    if p == 0:
        return (x * k[0, 0].item()).clamp(0, 1)
    xp = F.pad(x, (p, p, p, p), mode="reflect")
    if k.shape[0] <= 5:
        # The CIFAR kernels (3x3, 5x5): a few shifted adds beat a conv over B*C 1-channel maps.
        out = torch.zeros_like(x)
        for (i, j), v in np.ndenumerate(k.numpy()):
            if v:
                out.add_(xp[..., i : i + h, j : j + w], alpha=float(v))
        return out.clamp(0, 1)
    # The ImageNet disks (up to 21x21): correlate through the FFT of the padded image. The kernel
    # is symmetric and the padding covers its radius, so the circular product has no wrap-around
    # inside the kept window.
    hp, wp = h + 2 * p, w + 2 * p
    kp = torch.zeros(hp, wp, dtype=torch.float64)
    kp[: 2 * p + 1, : 2 * p + 1] = k
    kf = torch.fft.rfft2(kp.roll((-p, -p), dims=(0, 1)).to(x.dtype)).to(x.device)
    out = torch.fft.irfft2(torch.fft.rfft2(xp) * kf, s=(hp, wp))
    return out[..., p : p + h, p : p + w].clamp(0, 1)


def _shuffle_rows(y: torch.Tensor, off: torch.Tensor, d: int) -> torch.Tensor:
    """One reference shuffle pass, exactly, one row at a time from the bottom up.

    The reference visits targets bottom-right to top-left and copies y[h+dy, w+dx] into y[h, w]
    in place, so a source below (dy > 0) or to the right in the same row (dy = 0, dx > 0) has
    already been overwritten in this pass. Rows below are done before a row starts; within the row,
    a pixel that copies a target to its right takes that target's new value, which is resolved by
    pointer jumping along those right-pointing chains.
    """
    b, c, h, w = y.shape
    y = y.clone()
    cols = torch.arange(d + 1, w - d + 1, device=y.device)  # target columns
    nw = len(cols)
    idx = torch.arange(nw, device=y.device).expand(b, nw)
    for ri in range(off.shape[2] - 1, -1, -1):
        row = d + 1 + ri
        dx, dy = off[0][:, ri], off[1][:, ri]  # (B, nw)
        src_r, src_c = row + dy, cols + dx
        flat = (src_r * w + src_c)[:, None, :].expand(b, c, nw)
        vals = y.reshape(b, c, h * w).gather(2, flat)  # (B, C, nw): current values
        chained = (dy == 0) & (dx > 0) & (src_c <= w - d)  # copies a target already redone
        nxt = torch.where(chained, idx + dx, idx)
        for _ in range(max(nw, 1).bit_length()):  # pointer doubling to the chain's end
            nxt = nxt.gather(1, nxt)
        y[:, :, row, d + 1 : w - d + 1] = vals.gather(2, nxt[:, None, :].expand(b, c, nw))
    return y


def glass_blur(
    x: torch.Tensor, param: tuple[float, int, int], *, generator: torch.Generator
) -> torch.Tensor:
    """Gaussian blur, local pixel shuffling, Gaussian blur again (exactly the reference's).

    Reference: y = uint8(255 * G_sigma(x)); `iterations` times, for h from H-d down to d+1 and w
    from W-d down to d+1, pixel (h, w) takes the current value of pixel (h+dy, w+dx), with dx, dy
    uniform in {-d, ..., d-1}; out = clip(G_sigma(y / 255)). G is scikit-image's Gaussian (nearest
    border). The reference's tuple "swap" of two numpy views is a copy (cifar_c_params.md §4.6).

    For d = 1 (every CIFAR severity) every source is a pixel the scan has not reached yet, so a
    pass is one gather from the image before the pass. For d > 1 (ImageNet) sources below or to the
    right may already be overwritten; `_shuffle_rows` reproduces that row by row. Either way the
    result equals the sequential loop for the same offsets.

    Args:
        x: `(B, C, H, W)` images in [0, 1].
        param: (sigma, max delta d, iterations).
        generator: Source of the offsets, drawn as `(2, B, H - 2d, W - 2d)` (dx, dy) per pass.
    """
    sigma, d, iterations = float(param[0]), int(param[1]), int(param[2])
    b, c, h, w = x.shape
    # The reference stores the first blur as uint8 (truncation); the epsilon keeps k/255 at k.
    y = torch.floor(gaussian_blur(x, sigma) * 255 + 1e-3).clamp(0, 255) / 255
    nh, nw = h - 2 * d, w - 2 * d
    if nh <= 0 or nw <= 0:
        return gaussian_blur(y, sigma).clamp(0, 1)
    rows = torch.arange(d + 1, h - d + 1, device=x.device)
    cols = torch.arange(d + 1, w - d + 1, device=x.device)
    for _ in range(iterations):
        off = torch.randint(-d, d, (2, b, nh, nw), generator=generator, device=generator.device).to(
            x.device
        )
        if d > 1:
            y = _shuffle_rows(y, off, d)
            continue
        src_r = rows[None, :, None] + off[1]  # (B, nh, nw)
        src_c = cols[None, None, :] + off[0]
        flat = (src_r * w + src_c).reshape(b, 1, -1).expand(b, c, -1)
        picked = y.reshape(b, c, -1).gather(2, flat).reshape(b, c, nh, nw)
        y = y.clone()
        y[:, :, d + 1 : h - d + 1, d + 1 : w - d + 1] = picked
    return gaussian_blur(y, sigma).clamp(0, 1)


def motion_blur(
    x: torch.Tensor, param: tuple[float, float], *, generator: torch.Generator
) -> torch.Tensor:
    """ImageMagick motion blur at (radius, sigma), angle uniform in [-45, 45) degrees per image.

    Args:
        x: `(B, C, H, W)` images in [0, 1].
        param: (ImageMagick radius, sigma).
        generator: Source of the angles.
    """
    angle = torch.rand(x.shape[0], generator=generator, device=generator.device) * 90 - 45
    return _motion(x, float(param[0]), float(param[1]), angle).clamp(0, 1)


def zoom_blur(
    x: torch.Tensor, param: tuple[float, float, float], *, generator: torch.Generator
) -> torch.Tensor:
    """Average of the image and its centre zooms: clip((x + sum_z zoom_z(x)) / (|Z| + 1)).

    Args:
        x: `(B, C, H, W)` images in [0, 1].
        param: (start, stop, step) of the zoom factors, expanded like `np.arange`.
        generator: Unused (deterministic corruption).
    """
    factors = zoom_factors(*param)
    out = x.clone()
    for z in factors:
        out = out + clipped_zoom(x, z)
    return (out / (len(factors) + 1)).clamp(0, 1)
