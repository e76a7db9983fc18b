"""What the loss-surface analyses (Hessian spectra, landscapes) share: the objective, minibatches
augmented from their own seeds, seeded global RNG, and the model state they must leave as found.

Paper §2: curvature and landscapes are measured on the run's own augmented training data with
NLL (+ L2); every minibatch is drawn the same way whatever the order or the number of ranks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from vitlens.anatomy.spec import check_targets
from vitlens.data.dataset import mix_seed
from vitlens.errors import ConfigError

Augment = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def nll_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean NLL: cross-entropy against integer labels `(B,)` or soft targets `(B, K)`."""
    check_targets(logits, targets)
    if targets.is_floating_point() and targets.ndim == logits.ndim:
        return -(targets.to(logits.dtype) * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    return F.cross_entropy(logits, targets)


@contextlib.contextmanager
def seeded_rng(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch's global generators for the duration (dropout, drop-path), then restore them.

    `None` leaves the global generators alone.
    """
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed) % 2**63)
        yield


def save_buffers(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(b, b.detach().clone()) for b in model.buffers()]


def restore_buffers(saved: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Put saved buffers back, writing only those that changed (a write bumps the version)."""
    with torch.no_grad():
        for b, value in saved:
            if not torch.equal(b, value):
                b.copy_(value)


@contextlib.contextmanager
def model_state(model: nn.Module, train_mode: bool, restore: bool = True) -> Iterator[None]:
    """Set train/eval mode for the duration; restore every module's mode and (with `restore`)
    every buffer, which keeps BatchNorm running statistics bit-exact when train mode updates them.
    """
    modes = [(m, m.training) for m in model.modules()]
    saved = save_buffers(model)
    model.train(train_mode)
    try:
        yield
    finally:
        if restore:
            restore_buffers(saved)
        for m, mode in modes:
            m.training = mode


def fixed_batches(
    data: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    batch_size: int | None = None,
    n_batches: int | None = None,
    augment: Augment | None = None,
    seed: int = 0,
    skip: Callable[[int], bool] | None = None,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yield `(index, inputs, targets)` minibatches, each augmented from its own seeded generator.

    Minibatch i is augmented with a generator seeded by mix_seed(seed, i), so every minibatch is
    the same whatever the order, the number of ranks, or which other minibatches are skipped.

    Args:
        data: (inputs, labels) pairs of any size, e.g. a DataLoader without shuffling or a list.
        batch_size: Re-chunk into minibatches of exactly this size (carrying the remainder over
            to the next input batch); None keeps the input batches as they are.
        n_batches: Stop after this many minibatches (None: all).
        augment: `augment(x, y, generator) -> (x, soft_targets)`, e.g. `vitlens.data.BatchMixer`;
            None keeps integer labels.
        seed: Base seed.
        skip: `skip(i)` True means yield nothing for minibatch i (its augmentation is not drawn).
    """
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")

    def chunks() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if batch_size is None:
            for x, y, *_ in data:
                yield x, y
            return
        xs: list[torch.Tensor] = []
        ys: list[torch.Tensor] = []
        held = 0
        for x, y, *_ in data:
            xs.append(x)
            ys.append(y)
            held += x.shape[0]
            if held < batch_size:
                continue
            bx, by = torch.cat(xs), torch.cat(ys)
            n_full = held // batch_size * batch_size
            for s in range(0, n_full, batch_size):
                yield bx[s : s + batch_size], by[s : s + batch_size]
            xs, ys, held = [bx[n_full:]], [by[n_full:]], held - n_full

    for i, (x, y) in enumerate(chunks()):
        if n_batches is not None and i >= n_batches:
            return
        if skip is not None and skip(i):
            continue
        if augment is not None:
            gen = torch.Generator().manual_seed(mix_seed(seed, i) % 2**63)
            x, y = augment(x.float() if not x.is_floating_point() else x, y, gen)
        yield i, x, y
