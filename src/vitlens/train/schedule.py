"""Learning-rate schedule: linear warm-up from 0, then cosine decay, stepped per iteration."""

from __future__ import annotations

import math


def warmup_cosine(step: int, *, total: int, warmup: int, base_lr: float, min_lr: float) -> float:
    """The learning rate at iteration `step` (0-based) of `total`."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))
