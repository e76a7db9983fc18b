"""Noise corruptions: Gaussian, shot (Poisson) and impulse (salt-and-pepper) noise.

Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" (ICLR 2019); algorithms as in `cifar_c_params.md` §4.1-4.3. Every function takes a
batch `(B, C, H, W)` of float images in [0, 1] and the severity's parameter, and returns a tensor of
the same shape and dtype in [0, 1]. Noise is drawn per pixel *and* per channel, as in the reference.

The random draws can be passed in (`noise=`, `uniforms=`) instead of being drawn from `generator`,
so that a test can apply the reference formula to exactly the same draws.
"""

from __future__ import annotations

import torch

from vitlens.robustness.ops import rand, randn


def gaussian_noise(
    x: torch.Tensor,
    std: float,
    *,
    generator: torch.Generator,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """clip(x + std * n), n ~ N(0, 1) i.i.d. per element.

    Args:
        x: `(B, C, H, W)` images in [0, 1].
        std: Noise standard deviation on the [0, 1] scale.
        generator: Source of n.
        noise: Optional standard-normal draws shaped like `x`, used instead of `generator`.
    """
    n = randn(x.shape, generator, x) if noise is None else noise.to(x)
    return (x + std * n).clamp(0, 1)


def shot_noise(x: torch.Tensor, photons: float, *, generator: torch.Generator) -> torch.Tensor:
    """clip(Poisson(x * photons) / photons): photon-counting noise, variance x / photons.

    Args:
        x: `(B, C, H, W)` images in [0, 1].
        photons: Photon count at full scale (smaller is noisier).
        generator: Source of the Poisson draws (drawn on the generator's device).
    """
    rate = (x * photons).to(device=generator.device, dtype=torch.float32)
    counts = torch.poisson(rate, generator=generator).to(x)
    return (counts / photons).clamp(0, 1)


def impulse_noise(
    x: torch.Tensor,
    amount: float,
    *,
    generator: torch.Generator,
    uniforms: torch.Tensor | None = None,
) -> torch.Tensor:
    """Salt and pepper: each element is flipped with probability `amount`, to 1 or 0 equally often.

    This is scikit-image `random_noise(mode="s&p", amount, salt_vs_pepper=0.5)`, which draws two
    uniform arrays u1, u2: flipped = u1 <= amount, salted = u2 <= 0.5.

    Args:
        x: `(B, C, H, W)` images in [0, 1].
        amount: Fraction of elements replaced.
        generator: Source of the uniforms.
        uniforms: Optional `(2, *x.shape)` uniform draws (u1, u2), used instead of `generator`.
    """
    u = rand((2, *x.shape), generator, x) if uniforms is None else uniforms.to(x)
    flipped, salted = u[0] <= amount, u[1] <= 0.5
    out = torch.where(flipped & salted, torch.ones_like(x), x)
    return torch.where(flipped & ~salted, torch.zeros_like(x), out)
