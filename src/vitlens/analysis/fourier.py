"""Fourier analysis of feature maps (paper §3, Figs. 2a, 8 and D.2; official_repo.md §4.1).

For every block's feature map (B, C, H, W) the authors take log(|FFT2| + 1e-6) of each channel (the
unnormalized 2-D DFT over H and W), centre it, average over images and channels, read the
half-diagonal from frequency 0 towards (π, π), and subtract the value at 0: the *ΔLog amplitude*.
MSAs lower the high-frequency value (low-pass), Convs and MLPs raise it (high-pass).

Which entries the half-diagonal reads. The DFT of a real map is Hermitian, |F(-u, -v)| = |F(u, v)|,
so the centred spectrum's half-diagonal holds the amplitudes of the entries F[k, k] of the
*uncentred* spectrum. Entry k has frequency k · 2π / H on both axes. The curve we store runs
k = 0 … K with K = H // 2: to exactly 1.0π (the Nyquist frequency) for even H, to (H - 1)/H · π for
odd H. The authors' notebook takes `diag()[H/2:]` of the shifted spectrum, k = 0 … ⌈H/2⌉ - 1: on an
even map it stops one step short of Nyquist, at (1 - 2/H)π, and that last point is what their Fig. 8
calls "1.0π". `FourierResult.high_frequency` is the notebook's point (what the claim and the
figure use); `FourierResult.nyquist` keeps the Nyquist value of even maps. On odd maps the two
definitions agree and `nyquist` is None. For a non-square map we take K = min(H, W) // 2 points and
on each axis the nearest index to the same fraction of that axis' Nyquist index; the reported
frequency is the mean of the two axes' frequencies.

How the diagonal is computed without a 2-D FFT. Only K + 1 of the H·W spectral entries are needed:
F[r, c] = sum_{m,n} x[m, n] e^{-2πi (r m / H + c n / W)} is one matrix product of the flattened map
with a (H·W, 2(K + 1)) table of cosines and sines. (For a square map the phase depends only on
(m + n) mod H, so this is the 1-D DFT of the sums along the folded anti-diagonals m + n ≡ s.) For
small maps (side ≤ `DIRECT_MAX_SIDE`) that product is cheaper than `rfft2`; larger maps use
`rfft2`. Both agree to rounding (tests check 1e-10 in float64).

The log amplitude is computed in float64 so that rounding in the DFT stays far below `eps`: a
constant map then has an exactly flat curve beyond DC, and the all-zero map a flat zero one.
Statistics are streamed: a running float64 sum of each block's curve over images and channels.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from vitlens.analysis.claim import (
    Claim,
    StudyView,
    block_deltas,
    msas_attend,
    not_measured,
    requires,
    the_vit,
)
from vitlens.analysis.registry import register_analysis
from vitlens.analysis.result import Provenance, Result
from vitlens.analysis.spec import FEATURE_BUDGETS, AnalysisSpec, Figure, Option, streamed
from vitlens.analysis.streaming import (
    Batch,
    float64_device,
    normalized_depths,
    provenance_for,
    resolve_device,
    stream_map_sums,
)
from vitlens.errors import VitlensError

EPS = 1e-6  # the authors' log(|F| + 1e-6)
DIRECT_MAX_SIDE = 16  # up to this side the diagonal is one matrix product; above it, rfft2


@dataclass(frozen=True)
class FourierResult(Result):
    """ΔLog amplitude along the half-diagonal of every feature map's spectrum.

    Attributes:
        names, kinds, stages: the blocks analysed, in forward order (maps of side < 2 skipped).
        depths: normalized depth of each block over the model's feature-map blocks.
        map_sizes: (H, W) of each block's map.
        frequencies: per block, the frequency of each curve point in units of π (0 … ≈1).
        delta_log_amplitude: per block, the mean log amplitude minus its value at frequency 0.
        dc_log_amplitude: per block, the mean log amplitude at frequency 0 (to rebuild the raw
            curve).
        high_frequency: per block, the ΔLog amplitude at the authors' last half-diagonal point
            (their Fig. 8 "1.0π"): k = H/2 - 1, i.e. (1 - 2/H)π, on an even map; k = (H - 1)/2,
            i.e. (1 - 1/H)π, on an odd one. This is the value the claim (C9) and the figure use.
        high_frequency_at: per block, the frequency of that point in units of π.
        nyquist: per block, the ΔLog amplitude at the Nyquist entry (π, π) (the last point of
            `delta_log_amplitude`) when both sides are even; None on maps with an odd side, which
            have no such entry.
        eps: the amplitude offset inside the log.
        n_images, n_batches: how much data the statistics were streamed over.
    """

    analysis: ClassVar[str] = "fourier"
    schema: ClassVar[int] = 2  # 2: high_frequency is the notebook's point; nyquist added

    names: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    stages: list[int] = field(default_factory=list)
    depths: list[float] = field(default_factory=list)
    map_sizes: list[list[int]] = field(default_factory=list)
    frequencies: list[list[float]] = field(default_factory=list)
    delta_log_amplitude: list[list[float]] = field(default_factory=list)
    dc_log_amplitude: list[float] = field(default_factory=list)
    high_frequency: list[float] = field(default_factory=list)
    high_frequency_at: list[float] = field(default_factory=list)
    nyquist: list[float | None] = field(default_factory=list)
    eps: float = EPS
    n_images: int = 0
    n_batches: int = 0


def diagonal(height: int, width: int) -> tuple[list[int], list[int], list[float]]:
    """Indices (rows, columns) of the half-diagonal entries and their frequencies in units of π.

    See the module docstring: for a square map of side H, entry k is (k, k) at k · 2/H · π.

    Raises:
        VitlensError: a side is shorter than 2 (a 1x1 map has no frequencies but 0).
    """
    if min(height, width) < 2:
        raise VitlensError(f"a {height}x{width} map has no spatial frequencies to analyse")
    K = min(height, width) // 2
    rows = [round(k * (height // 2) / K) for k in range(K + 1)]
    cols = [round(k * (width // 2) / K) for k in range(K + 1)]
    freqs = [
        (r / height + c / width) for r, c in zip(rows, cols, strict=True)
    ]  # mean of 2r/H, 2c/W
    return rows, cols, freqs


def notebook_point(height: int, width: int) -> int:
    """Index into the curve of the authors' last half-diagonal point (`high_frequency`).

    `diag()[H/2:]` of the shifted spectrum stops one step before the Nyquist index on an even
    side; on a map with odd sides our last point already is theirs (see the module docstring).
    """
    K = min(height, width) // 2
    return K - 1 if height % 2 == 0 or width % 2 == 0 else K


def has_nyquist(height: int, width: int) -> bool:
    """Whether the curve's last point is the Nyquist entry (π, π): both sides even."""
    return height % 2 == 0 and width % 2 == 0


@functools.lru_cache(maxsize=64)
def _dft_table(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(H·W, 2(K + 1)) float64 cos | sin table: flat map @ table = (Re, -Im) of F[rows, cols]."""
    rows, cols, _ = diagonal(height, width)
    m = torch.arange(height, dtype=torch.float64)[:, None, None]
    n = torch.arange(width, dtype=torch.float64)[None, :, None]
    r = torch.tensor(rows, dtype=torch.float64)
    c = torch.tensor(cols, dtype=torch.float64)
    # Phase modulo one turn in exact integer arithmetic keeps the angles small and exact.
    turns = torch.remainder(m * r * width + n * c * height, height * width) / (height * width)
    angle = (2 * math.pi * turns).reshape(height * width, -1)
    return torch.cat([torch.cos(angle), torch.sin(angle)], dim=1).to(device)


def diagonal_spectrum_unsigned(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Re, -Im) of F[rows[k], cols[k]] for every map, each (B, C, K + 1) float64.

    One float64 matrix product with `_dft_table`, contracted along whichever axis of the map's
    memory is contiguous (token models hand over (B, C, H, W) views of (B, H·W, C) tensors).
    """
    B, C, H, W = maps.shape
    table = _dft_table(H, W, float64_device(maps.device))
    points = table.shape[1] // 2
    x = maps.to(float64_device(maps.device), torch.float64).reshape(B, C, H * W)
    if x.stride(1) == 1 and C > 1:  # channels innermost: contract (B, HW, C) from the left
        y = torch.matmul(table.T, x.transpose(1, 2)).transpose(1, 2)
    else:
        y = x @ table
    return y[..., :points], y[..., points:]


def diagonal_spectrum(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts of F[rows[k], cols[k]] for every map, without a 2-D FFT.

    Args:
        maps: (B, C, H, W) maps, any dtype and strides.

    Returns:
        (re, im), each (B, C, K + 1) float64.
    """
    re, minus_im = diagonal_spectrum_unsigned(maps)
    return re, -minus_im


def _log_amplitude_sum(maps: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Sum over images and channels of log(|F[k, k]| + eps) along the half-diagonal: (K + 1,).

    Few, in-place operations per map: on a loaded machine every multi-threaded op waits for all
    its threads, so the op count matters as much as the arithmetic.
    """
    H, W = maps.shape[-2:]
    if max(H, W) <= DIRECT_MAX_SIDE:
        re, minus_im = diagonal_spectrum_unsigned(maps)
        amplitude = torch.hypot(re, minus_im)  # the sign of Im does not change |F|
    else:
        rows, cols, _ = diagonal(H, W)
        x = maps.to(float64_device(maps.device), torch.float64)
        amplitude = torch.fft.rfft2(x)[..., rows, cols].abs()  # (B, C, K + 1), unnormalized
    return amplitude.add_(eps).log_().sum(dim=(0, 1))


def log_amplitude_curve(maps: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Mean over images and channels of the log amplitude along the half-diagonal.

    Args:
        maps: (B, C, H, W) feature maps.
        eps: offset inside the log.

    Returns:
        A float64 tensor of K + 1 values, frequency 0 first (see `diagonal`).
    """
    return _log_amplitude_sum(maps, eps) / (maps.shape[0] * maps.shape[1])


def delta_log_amplitude(maps: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """`log_amplitude_curve(maps) - log_amplitude_curve(maps)[0]`: the paper's ΔLog amplitude."""
    curve = log_amplitude_curve(maps, eps)
    return curve - curve[0]


def fourier(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    max_batches: int | None = None,
    device: str | torch.device = "cpu",
    eps: float = EPS,
    progress: bool = False,
    provenance: Provenance | None = None,
) -> FourierResult:
    """ΔLog amplitude of every block's feature maps, averaged over all images streamed.

    Args:
        model: any model `vitlens.anatomy.describe` knows; moved to `device`, run in eval mode.
        batches: (images, labels) pairs, e.g. a DataLoader.
        max_batches: use at most this many batches (None: all).
        device: `cpu`, `cuda`, `mps` or `auto`.
        eps: offset inside the log (the authors use 1e-6).
        progress: show a progress bar.
        provenance: what to record about the model and data; wall time and device are filled in.
    """
    started = time.perf_counter()
    device = resolve_device(device)
    model.to(device)
    sums = stream_map_sums(
        model,
        batches,
        lambda m: _log_amplitude_sum(m, eps),
        accepts=lambda size: min(size) >= 2,
        max_batches=max_batches,
        device=device,
        progress=progress,
        description="fourier",
    )
    depths = normalized_depths(sums.model_blocks)
    means = sums.means()
    curves, freqs, points = [], [], []
    for b in sums.blocks:
        curve = means[b.name].cpu()
        curves.append((curve - curve[0]).tolist())
        freqs.append(diagonal(*sums.sizes[b.name])[2])
        points.append(notebook_point(*sums.sizes[b.name]))
    sizes = [sums.sizes[b.name] for b in sums.blocks]
    return FourierResult(
        provenance=provenance_for(provenance, model, device, started),
        names=[b.name for b in sums.blocks],
        kinds=[b.kind for b in sums.blocks],
        stages=[b.stage for b in sums.blocks],
        depths=[depths[b.name] for b in sums.blocks],
        map_sizes=[list(sums.sizes[b.name]) for b in sums.blocks],
        frequencies=freqs,
        delta_log_amplitude=curves,
        dc_log_amplitude=[float(means[b.name][0]) for b in sums.blocks],
        high_frequency=[c[i] for c, i in zip(curves, points, strict=True)],
        high_frequency_at=[f[i] for f, i in zip(freqs, points, strict=True)],
        nyquist=[c[-1] if has_nyquist(*hw) else None for c, hw in zip(curves, sizes, strict=True)],
        eps=eps,
        n_images=sums.n_images,
        n_batches=sums.n_batches,
    )


# -- the paper's claim this analysis measures, and its spec -------------------------------------


@requires(msas_attend(the_vit))
def c9_low_pass(view: StudyView) -> Claim:
    claim = "MSAs are low-pass: they lower high-frequency amplitude; Convs and MLPs raise it"
    paper = "most ViT MSA blocks lower ΔLog amplitude at 1.0π; MLPs/Convs raise it"
    f = view.result("fourier", view.vit)
    msa = block_deltas(f.high_frequency, f.kinds, "msa") if f else []
    mlp = block_deltas(f.high_frequency, f.kinds, "mlp") if f else []
    if not msa or not mlp:
        return not_measured("C9", claim, paper)
    down = sum(d < 0 for d in msa) / len(msa)
    measured = (
        f"{down:.0%} of MSA blocks lower it (mean {statistics.fmean(msa):+.3f}); "
        f"MLP mean {statistics.fmean(mlp):+.3f}"
    )
    margin = statistics.fmean(mlp) - statistics.fmean(msa)
    return Claim("C9", claim, paper, measured, margin > 0, margin)


SPEC = register_analysis(
    AnalysisSpec(
        name="fourier",
        summary="relative log amplitude of the feature maps' Fourier transform (paper §3)",
        run=streamed(fourier),
        function=fourier,
        data="test",
        section="features",
        order=10,
        budgets=FEATURE_BUDGETS,
        options=(
            Option(
                "eps",
                EPS,
                "offset inside the log of the amplitude",
                kind="float",
                positive=True,
                maximum=1e3,
            ),
        ),
        figures=(
            Figure(
                "fourier",
                "vitlens.report.plots.fourier:plot_fourier",
                "Relative log amplitude of the feature maps' Fourier transform (paper Fig. 2a, "
                "8). Left: curves along the spectrum's half-diagonal, up to the Nyquist "
                "frequency 1.0π on even-sized maps. Right, against depth with MSA blocks "
                "shaded: the value the authors' notebook calls 1.0π, its last half-diagonal "
                "point (1 − 2/H)π on an even H×H map ((1 − 1/H)π on an odd one); the Nyquist "
                "value is stored separately in the result.",
            ),
        ),
        claims=(c9_low_pass,),
    )
)
