"""Frequency-band noise: random sign noise band-passed to an annulus of the 2-D spectrum.

Park & Kim (ICLR 2022), Fig. 2b: Convs are vulnerable to high-frequency noise and MSAs to low-
frequency noise. The authors' `FreqAttack(Random)` (`ops/adversarial.py`; paper.md §1.10,
official_repo.md §4.5) draws eps * sign(N(0, 1)) per pixel and channel, takes the centred 2-D FFT,
keeps the band between two centred squares around frequency f, and adds the real part of the
inverse FFT to the (already normalised) inputs, without clamping.

Frequencies are in units of pi: a spatial frequency of k cycles per H pixels is 2k/H, so the
Nyquist frequency is 1.0. As the authors' masks are squares, the "radius" of a frequency (ky, kx)
is the Chebyshev one, r = max(|ky| / (H/2), |kx| / (W/2)), and the band is
`frequency - window/2 <= r < frequency + window/2`.

Deviation from the authors' code: their squares have sides 2 floor((f +- s) H / 2) and are taken
over indices [c - a, c + a) of the centred spectrum, which is not symmetric under k -> -k; taking
the real part afterwards halves the outermost ring. Here the mask is symmetric, so the filtered
noise is real and lies entirely inside the band. `window` is the band's full width; the authors'
`s` is a half-width (default 0.2), and the paper's caption says "frequency window size of 0.1 pi",
which is the default here.

Equal energy: band-passing white noise keeps the share of its power that falls in the band, and
on a small image the bands hold very different numbers of frequencies (on 28 x 28 pixels the
0.9pi band holds 8x as many as the 0.1pi band, so the authors' noise there has 2.9x the RMS).
`rescale_rms` gives every band's noise one RMS per image, `equal_energy_rms`: the RMS the authors'
construction has on average over the bands evaluated, so the total energy of a sweep is theirs,
spread evenly across the bands.
"""

from __future__ import annotations

import torch

from vitlens.errors import ConfigError

#: The paper's noise frequencies, 0.1 pi ... 0.9 pi.
DEFAULT_FREQUENCIES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def radial_frequency(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """`(H, W)` Chebyshev frequency radius in units of pi, in the centred (fftshift) layout.

    Index i of the centred spectrum holds frequency k = i - H // 2 (as `torch.fft.fftshift`).
    """
    ky = (torch.arange(height, device=device) - height // 2).abs() / (height / 2)
    kx = (torch.arange(width, device=device) - width // 2).abs() / (width / 2)
    return torch.maximum(ky[:, None], kx[None, :])


def band_mask(
    height: int,
    width: int,
    frequency: float,
    window: float,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Boolean `(H, W)` mask of the band `frequency +- window / 2` in the centred spectrum.

    Raises:
        ConfigError: the band holds no frequency of an H x W image (too small an image or window).
    """
    if window <= 0:
        raise ConfigError(f"window must be positive, got {window}")
    r = radial_frequency(height, width, device)
    mask = (r >= frequency - window / 2 - 1e-9) & (r < frequency + window / 2 - 1e-9)
    if not mask.any():
        raise ConfigError(
            f"the band {frequency:g}pi +- {window / 2:g}pi holds no frequency of a "
            f"{height}x{width} image (frequencies are multiples of "
            f"{2 / max(height, width):.3g}pi); widen the window"
        )
    return mask


def sign_noise(
    shape: tuple[int, ...] | torch.Size, eps: float, *, generator: torch.Generator
) -> torch.Tensor:
    """eps * sign(N(0, 1)): every element is +eps or -eps with probability 1/2 (float32, CPU).

    Args:
        shape: Output shape, e.g. `(B, C, H, W)`.
        eps: Amplitude.
        generator: Source of the draws.
    """
    n = torch.randn(tuple(shape), generator=generator, device=generator.device)
    return torch.where(n >= 0, eps, -eps).to(torch.float32)


def band_pass(noise: torch.Tensor, frequency: float, window: float) -> torch.Tensor:
    """Keep only the band `frequency +- window / 2` (units of pi) of each `(..., H, W)` map.

    Args:
        noise: Real tensor `(..., H, W)`.
        frequency: Band centre in units of pi.
        window: Band full width in units of pi.

    Returns:
        The real band-passed tensor, same shape and dtype.
    """
    h, w = noise.shape[-2:]
    mask = band_mask(h, w, frequency, window, noise.device)
    spec = torch.fft.fftshift(torch.fft.fft2(noise.double()), dim=(-2, -1))
    spec = spec * mask
    out = torch.fft.ifft2(torch.fft.ifftshift(spec, dim=(-2, -1)))
    return out.real.to(noise.dtype)  # the mask is symmetric, so the imaginary part is rounding


def band_fraction(height: int, width: int, frequency: float, window: float) -> float:
    """Share of an H x W spectrum inside the band: the expected share of white noise's power
    that band-passing keeps."""
    return float(band_mask(height, width, frequency, window).sum()) / (height * width)


def equal_energy_rms(
    height: int, width: int, eps: float, frequencies: list[float], window: float
) -> float:
    """The RMS every band's noise gets at equal energy: eps * sqrt(mean band fraction), which is
    the RMS of the authors' eps-sign noise band-passed, averaged in power over the bands."""
    shares = [band_fraction(height, width, f, window) for f in frequencies]
    return eps * (sum(shares) / len(shares)) ** 0.5


def rms(noise: torch.Tensor) -> torch.Tensor:
    """(B,) root mean square of each sample of a (B, ...) tensor."""
    return noise.double().flatten(1).square().mean(1).sqrt()


def rescale_rms(noise: torch.Tensor, target: float) -> torch.Tensor:
    """Each sample of `noise` (B, ...) scaled to RMS `target` exactly."""
    scale = target / rms(noise).clamp_min(1e-30)
    return (noise.double() * scale.view(-1, *[1] * (noise.ndim - 1))).to(noise.dtype)


def band_noise(
    shape: tuple[int, ...] | torch.Size,
    eps: float,
    frequency: float,
    window: float,
    *,
    generator: torch.Generator,
) -> torch.Tensor:
    """The authors' FreqAttack(Random) noise: band_pass(sign_noise(shape, eps), frequency, window).

    Args:
        shape: `(B, C, H, W)`.
        eps: Amplitude of the sign noise before band-passing.
        frequency: Band centre in units of pi.
        window: Band full width in units of pi.
        generator: Source of the sign noise.
    """
    return band_pass(sign_noise(shape, eps, generator=generator), frequency, window)
