"""Class-balanced (stratified) subsets, for training on a fraction of the data.

The paper trains "ViT (6%)" on a small, class-stratified fraction of CIFAR-100 to show that less
data makes ViT's loss landscape less convex (Park & Kim 2022, Fig. 4; the official
`datasets.subsample` keeps floor(ratio * n_c) images of each class, unseeded). Here the choice is
seeded, and every class keeps at least one image so no class disappears.
"""

from __future__ import annotations

import math

import torch

from vitlens.data.dataset import mix_seed
from vitlens.errors import ConfigError


def class_balanced_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Indices of a seeded, class-stratified subset.

    Each class c with n_c items keeps `max(1, floor(fraction * n_c))` of them, drawn by a
    permutation seeded from (seed, c), so a class's choice does not depend on the other classes.

    Args:
        labels: Integer labels `(N,)`.
        fraction: Share of each class to keep, in (0, 1].
        seed: Seed of the choice; the same seed gives the same indices.

    Returns:
        Sorted int64 indices into `labels`.

    Raises:
        ConfigError: If `fraction` is not in (0, 1].
    """
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(
            f"fraction must be in (0, 1], got {fraction}; e.g. 0.06 keeps 6% of each class."
        )
    labels = torch.as_tensor(labels).flatten()
    keep = []
    for c in torch.unique(labels).tolist():
        rows = torch.nonzero(labels == c).flatten()
        # The epsilon keeps 0.29 * 100 = 28.999999999999996 at 29.
        k = max(1, math.floor(fraction * len(rows) + 1e-9))
        g = torch.Generator().manual_seed(mix_seed(seed, c))
        keep.append(rows[torch.randperm(len(rows), generator=g)[:k]])
    if not keep:
        return torch.empty(0, dtype=torch.int64)
    return torch.sort(torch.cat(keep)).values.to(torch.int64)
