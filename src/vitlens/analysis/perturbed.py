"""What the two robustness analyses share (corruptions and frequency noise): images in [0, 1]
perturbed first and normalised after, metric sums added across torchrun ranks, batch counts for
the progress bar.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch

from vitlens import distributed as dist
from vitlens.errors import VitlensError
from vitlens.train.metrics import MetricSums

Normalization = tuple[Sequence[float], Sequence[float]]


def normalizer(
    normalize: Normalization | None, device: torch.device
) -> tuple[Callable[[torch.Tensor], torch.Tensor], list[float], list[float]]:
    """`(x - mean) / std` per channel (identity for None), and mean and std as lists."""
    if normalize is None:
        return (lambda x: x), [], []
    mean, std = ([float(v) for v in t] for t in normalize)
    if len(mean) != len(std) or not mean or any(s <= 0 for s in std):
        raise VitlensError(
            f"normalize must be (mean, std) with one positive std per channel, got {normalize}"
        )
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    return (lambda x: (x - m) / s), mean, std


def as_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 / 255; float images are checked to lie in [0, 1] (before normalisation)."""
    if images.dtype == torch.uint8:
        return images.float() / 255
    if not images.is_floating_point():
        raise VitlensError(f"images must be uint8 or float in [0, 1], got {images.dtype}")
    if images.numel() and (images.min() < -1e-6 or images.max() > 1 + 1e-6):
        raise VitlensError(
            "robustness analyses take images in [0, 1] before normalisation (pass the dataset's "
            "mean and std as normalize=); got values in "
            f"[{images.min().item():.3g}, {images.max().item():.3g}]"
        )
    return images.float()


def reduce_sums(sums: Sequence[MetricSums]) -> None:
    """Add every MetricSums across torchrun ranks, in place (no-op outside torchrun)."""
    if not sums:
        return
    flat = dist.all_reduce_sum(torch.stack([s.as_tensor() for s in sums]))
    for s, t in zip(sums, flat, strict=True):
        s.load_tensor(t)


def batch_count(batches: Iterable, max_batches: int | None) -> int | None:
    """How many batches will be used, if `batches` has a length (for the progress bar)."""
    try:
        n = len(batches)  # type: ignore[arg-type]
    except TypeError:
        return max_batches
    return n if max_batches is None else min(n, max_batches)
