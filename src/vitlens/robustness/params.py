"""Severity parameters of the 15 common corruptions (Hendrycks & Dietterich, ICLR 2019).

Two tables, copied from the generators in hendrycks/robustness (`make_cifar_c.py` for 32x32
CIFAR-10-C / CIFAR-100-C, `make_imagenet_c.py` for 224x224 ImageNet-C) as summarised in
`shared/reference/cifar_c_params.md` §3. Each entry holds the five severities in order; what a
tuple means is documented by the corruption that reads it.

`table_for` picks the CIFAR table for images of at most 32x32 and the ImageNet table for larger
ones, unless the caller names one.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from vitlens.errors import ConfigError

ParamSet = Literal["auto", "cifar", "imagenet"]

#: Reference image side of each table: size-relative parameters are scaled from it.
REFERENCE_SIZE = {"cifar": 32, "imagenet": 224}

# Elastic constants are written in the reference as IMSIZE x fraction: IMSIZE=32 for CIFAR and
# 244 (a typo for 224, kept because it is what generated ImageNet-C) for ImageNet.
_ELASTIC_IMSIZE = {"cifar": 32, "imagenet": 244}
_ELASTIC_FRACTIONS = {
    "cifar": ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
              (0.1, 0.03, 0.03)),
    "imagenet": ((2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02),
                 (0.12, 0.01, 0.02)),
}  # fmt: skip

CIFAR: dict[str, tuple[Any, ...]] = {
    # noise: std on [0,1]; Poisson photon count at full scale; salt-and-pepper fraction
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    # blur: (disk radius, alias sigma); (sigma, max delta, iterations); (radius, sigma);
    # zoom factors as np.arange(start, stop, step)
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    "zoom_blur": ((1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01),
                  (1, 1.26, 0.01)),
    # weather: (mu, sigma, zoom, threshold, blur radius, blur sigma, blend);
    # (image weight, frost weight); (fog amount, wibble decay); value added to HSV V
    "snow": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
             (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
             (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    # digital: contrast factor; (alpha, sigma, beta) at 32 px; downscale factor; JPEG quality
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "elastic_transform": tuple(
        tuple(_ELASTIC_IMSIZE["cifar"] * f for f in fr) for fr in _ELASTIC_FRACTIONS["cifar"]
    ),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "jpeg_compression": (80, 65, 58, 50, 40),
}  # fmt: skip

IMAGENET: dict[str, tuple[Any, ...]] = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "shot_noise": (60, 25, 12, 5, 3),
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
    "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    "zoom_blur": ((1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02),
                  (1, 1.31, 0.03)),
    "snow": ((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
             (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
             (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)),
    "frost": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
    "fog": ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "elastic_transform": tuple(
        tuple(_ELASTIC_IMSIZE["imagenet"] * f for f in fr)
        for fr in _ELASTIC_FRACTIONS["imagenet"]
    ),
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
    "jpeg_compression": (25, 18, 15, 10, 7),
}  # fmt: skip

TABLES = {"cifar": CIFAR, "imagenet": IMAGENET}


def resolve_params(params: ParamSet, height: int, width: int) -> Literal["cifar", "imagenet"]:
    """The table to use: `params` itself, or for "auto" CIFAR up to 32x32 and ImageNet above.

    Args:
        params: "auto", "cifar" or "imagenet".
        height: Image height in pixels.
        width: Image width in pixels.
    """
    if params == "auto":
        return "cifar" if max(height, width) <= 32 else "imagenet"
    if params not in TABLES:
        raise ConfigError(f"params must be 'auto', 'cifar' or 'imagenet', got {params!r}")
    return params


def parameter(name: str, severity: int, params: Literal["cifar", "imagenet"]) -> Any:
    """The reference parameter of corruption `name` at `severity` (1..5) in table `params`."""
    return TABLES[params][name][severity - 1]


def zoom_factors(start: float, stop: float, step: float) -> list[float]:
    """`np.arange(start, stop, step)` in float64, as the reference computes its zoom lists.

    The length is ceil((stop - start) / step), so rounding can include the nominal stop (1, 1.06,
    0.01 gives 7 values, 1.00 ... 1.06). Like numpy's `fill`, element i is start + i * delta with
    delta = (start + step) - start (1.15 comes out as 1.1500000000000001).
    """
    n = math.ceil((stop - start) / step)
    delta = (start + step) - start
    return [float(start)] + [start + i * delta for i in range(1, n)]
