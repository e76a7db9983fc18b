"""Digital corruptions: contrast, elastic transform, pixelate and JPEG compression.

Hendrycks & Dietterich (ICLR 2019); algorithms as in `cifar_c_params.md` §4.13-4.15, §4.17.
Inputs and outputs are `(B, C, H, W)` float images in [0, 1].

- contrast, pixelate: exact (pixelate reproduces Pillow's BOX weights in float, without Pillow's
  8-bit intermediate rounding, so it can differ from Pillow by 1/255).
- elastic transform: the hendrycks algorithm (random affine jitter, then a smoothed random
  displacement field), both resamplings bilinear with `grid_sample`; with the same draws it
  matches OpenCV `warpAffine` + scipy `map_coordinates` to 4e-6.
- JPEG: Pillow at the given quality with its defaults (4:2:0 chroma subsampling), one image at a
  time; grey images are encoded as 8-bit grey JPEGs. Float input is rounded to 8 bits first.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vitlens.robustness.ops import gaussian_blur, pillow_box_matrix, rand


def contrast(x: torch.Tensor, factor: float, *, generator: torch.Generator) -> torch.Tensor:
    """Shrink every channel towards its mean: clip((x - mean_c) * factor + mean_c).

    Args:
        x: `(B, C, H, W)` images in [0, 1].
        factor: Contrast factor (smaller is stronger).
        generator: Unused (deterministic corruption).
    """
    mean = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mean) * factor + mean).clamp(0, 1)


def pixelate(x: torch.Tensor, factor: float, *, generator: torch.Generator) -> torch.Tensor:
    """Pillow BOX resize to floor(factor * side) and BOX (= nearest) resize back.

    Args:
        x: `(B, C, H, W)` images in [0, 1].
        factor: Downscale factor.
        generator: Unused (deterministic corruption).
    """
    h, w = x.shape[-2:]
    sh, sw = int(h * factor), int(w * factor)
    # Both resizes are linear along each axis: one (H, H) and one (W, W) matrix.
    mh = (pillow_box_matrix(sh, h) @ pillow_box_matrix(h, sh)).to(x.device, x.dtype)
    mw = (pillow_box_matrix(sw, w) @ pillow_box_matrix(w, sw)).to(x.device, x.dtype)
    return (mh @ x @ mw.T).clamp(0, 1)


def _jpeg_pillow(u: torch.Tensor, quality: int) -> torch.Tensor:
    # One image at a time: Pillow has no batch API. (torchvision.io's batched encode/decode gave
    # the same bytes 3x faster, but is deprecated since torchvision 0.29.)
    arr = u.permute(0, 2, 3, 1).contiguous().numpy()  # (B, H, W, C)
    out = np.empty_like(arr)
    for i, img in enumerate(arr):
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf)).reshape(img.shape)
    return torch.from_numpy(out).permute(0, 3, 1, 2)


def jpeg_compression(x: torch.Tensor, quality: int, *, generator: torch.Generator) -> torch.Tensor:
    """Encode and decode with Pillow's JPEG at `quality` (Pillow's defaults otherwise).

    Args:
        x: `(B, C, H, W)` images in [0, 1]; rounded to 8 bits before encoding.
        quality: JPEG quality, 1..95.
        generator: Unused (deterministic corruption).
    """
    u = torch.round(x.detach() * 255).clamp(0, 255).to(torch.uint8).cpu()
    return _jpeg_pillow(u, quality).to(x.device).to(x.dtype) / 255


def _affine_grid(x: torch.Tensor, beta: float, generator: torch.Generator) -> torch.Tensor:
    # OpenCV getAffineTransform maps three control points to jittered copies; warpAffine samples
    # the source at M^-1 (col, row). Solve for M^-1 directly: it maps the targets to the sources.
    b, _, h, w = x.shape
    cx, cy, s = w // 2, h // 2, min(h, w) // 3
    src = torch.tensor(
        [[cx + s, cy + s], [cx + s, cy - s], [cx - s, cy - s]], dtype=torch.float64
    ).expand(b, 3, 2)
    jitter = rand((b, 3, 2), generator, torch.empty(0, dtype=torch.float64)) * 2 * beta - beta
    dst = src + jitter
    ones = torch.ones(b, 3, 1, dtype=torch.float64)
    inv = torch.linalg.solve(torch.cat([dst, ones], dim=2), src)  # (B, 3, 2): [col row 1] @ inv
    rows, cols = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    pix = torch.stack([cols, rows, torch.ones_like(rows)], dim=-1).reshape(1, h * w, 3)
    at = (pix @ inv).reshape(b, h, w, 2)  # source (col, row) per output pixel
    # align_corners=True: -1 and 1 are the centres of the edge pixels, and the reflection
    # border is then OpenCV's reflect-101.
    scale = torch.tensor([2 / max(w - 1, 1), 2 / max(h - 1, 1)], dtype=torch.float64)
    return (at * scale - 1).to(x.device, x.dtype)


def elastic_transform(
    x: torch.Tensor, param: tuple[float, float, float], *, generator: torch.Generator
) -> torch.Tensor:
    """Random affine jitter, then a smooth random displacement field (hendrycks elastic).

    1. Three control points (centre +- side // 3) are moved by U(-beta, beta) per coordinate and
       the image is warped by the affine map between them (bilinear, reflect-101 border).
    2. dx, dy = alpha * G_sigma(U(-1, 1)) (scikit-image Gaussian, reflect border, truncate 3), and
       the warped image is sampled at (row + dy, col + dx) (bilinear, half-sample reflect border).

    Args:
        x: `(B, C, H, W)` images in [0, 1].
        param: (alpha, sigma, beta) in pixels at this image size.
        generator: Source of the jitter and the fields.
    """
    alpha, sigma, beta = (float(v) for v in param)
    b, _, h, w = x.shape
    grid = _affine_grid(x, beta, generator)
    warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    field = rand((2, b, h, w), generator, x) * 2 - 1
    field = alpha * gaussian_blur(field, sigma, truncate=3.0, mode="reflect")
    dx, dy = field[0], field[1]
    rows, cols = torch.meshgrid(
        torch.arange(h, device=x.device, dtype=x.dtype),
        torch.arange(w, device=x.device, dtype=x.dtype),
        indexing="ij",
    )
    # align_corners=False: -1 and 1 are the outer pixel edges, so the reflection border is
    # half-sample symmetric, as scipy's map_coordinates(mode="reflect").
    gx = (2 * (cols + dx) + 1) / w - 1
    gy = (2 * (rows + dy) + 1) / h - 1
    grid = torch.stack([gx, gy], dim=-1)  # (B, H, W, 2)
    out = F.grid_sample(
        warped, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    return out.clamp(0, 1)
