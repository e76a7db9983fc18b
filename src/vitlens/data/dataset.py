"""An in-memory image dataset whose random augmentation is a pure function of (seed, epoch, index).

Every dataset vitlens trains on fits in memory as a uint8 tensor, so one class serves them all.
Determinism is what makes a resumed run bit-identical to an uninterrupted one: with a seed, the
augmentation of item i in epoch e is drawn from a CPU RNG seeded with `mix_seed(seed, e, i)` inside
`torch.random.fork_rng`, so it depends on neither the worker that loads it, nor the items loaded
before it, nor the global RNG, which it leaves untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch.utils.data import Dataset

from vitlens.data.info import DatasetInfo

Transform = Callable[[torch.Tensor], torch.Tensor]

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    # SplitMix64 finalizer (Steele et al. 2014): a bijective, well-mixing 64-bit hash.
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix_seed(*values: int) -> int:
    """Combine integers into one 64-bit seed, the same in every process and Python version.

    Unlike `hash()`, this is not salted per process; unlike `seed + epoch * n + i`, nearby inputs
    give unrelated seeds.

    Args:
        *values: Integers (negative ones are taken modulo 2**64).

    Returns:
        An integer in [0, 2**64), accepted by `torch.manual_seed`.
    """
    h = 0x243F6A8885A308D3  # arbitrary non-zero start (digits of pi)
    for v in values:
        h = _splitmix64(h ^ _splitmix64(int(v) & _MASK64))
    return h


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch ops on one intra-op thread, then restore the previous setting.

    Per-image augmentation is hundreds of tiny ops; on a busy 2-core machine, intra-op threading
    made RandAugment ~100x slower (22 ms vs 0.2 ms per 32x32 image). DataLoader workers already
    run single-threaded, so this also makes the main process compute exactly what workers do.
    """
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class Normalize:
    """uint8 `(C, H, W)` -> float32 `(x / 255 - mean) / std`, the test-time transform everywhere."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return (img.to(torch.float32) / 255.0 - self.mean) / self.std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


class ArrayDataset(Dataset):
    """Images held as one uint8 tensor, with an optional seeded per-item transform.

    Attributes:
        images: uint8 `(N, C, H, W)`.
        labels: int64 `(N,)`.
        info: The dataset's `DatasetInfo`.
        transform: Callable from a uint8 `(C, H, W)` tensor to a float tensor, or None for
            normalization only.
        seed: If not None, augmentation is a pure function of (seed, epoch, index).
        epoch: The epoch set by `set_epoch` (0 initially).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        info: DatasetInfo,
        transform: Transform | None = None,
        seed: int | None = None,
    ) -> None:
        """Wrap tensors as a dataset.

        Args:
            images: uint8 `(N, C, H, W)` with `C == info.in_chans`.
            labels: Integer `(N,)` in `[0, info.num_classes)`; stored as int64.
            info: Dataset description (normalization, classes).
            transform: Per-item transform; None means `Normalize(info.mean, info.std)`.
            seed: Seed for deterministic augmentation, or None to use the global RNG.
        """
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {images.dtype} {images.shape}"
            )
        if images.shape[1] != info.in_chans:
            raise ValueError(f"images have {images.shape[1]} channels, info says {info.in_chans}")
        labels = torch.as_tensor(labels).to(torch.int64)
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels {tuple(labels.shape)} do not match {images.shape[0]} images")
        self.images = images
        self.labels = labels
        self.info = info
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self._normalize = Normalize(info.mean, info.std)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if i < 0:
            i += len(self)
        img, label = self.images[i], int(self.labels[i])
        if self.transform is None:
            return self._normalize(img), label
        if self.seed is None:
            with single_thread():
                return self.transform(img), label
        # Augmentations draw from the CPU default generator only. Saving and restoring its state
        # directly costs ~2 us; torch.random.fork_rng + manual_seed cost ~90 us per image.
        generator = torch.default_generator
        saved = generator.get_state()
        try:
            generator.manual_seed(mix_seed(self.seed, self.epoch, i))
            with single_thread():
                out = self.transform(img)
        finally:
            generator.set_state(saved)
        return out, label

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentations `__getitem__` draws.

        Call it before creating the epoch's DataLoader iterator: worker processes get a copy of
        the dataset when the iterator starts, so with `persistent_workers=True` they would keep
        the old epoch.
        """
        self.epoch = int(epoch)

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ArrayDataset:
        """The items at `indices` (positions are renumbered), with the same info/transform/seed."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        out = ArrayDataset(self.images[idx], self.labels[idx], self.info, self.transform, self.seed)
        out.epoch = self.epoch
        return out

    def with_transform(self, transform: Transform | None) -> ArrayDataset:
        """The same data (shared, not copied) with another transform."""
        out = ArrayDataset(self.images, self.labels, self.info, transform, self.seed)
        out.epoch = self.epoch
        return out

    def with_seed(self, seed: int | None) -> ArrayDataset:
        """The same data (shared, not copied) with another augmentation seed."""
        out = ArrayDataset(self.images, self.labels, self.info, self.transform, seed)
        out.epoch = self.epoch
        return out

    def __repr__(self) -> str:
        c, h, w = self.images.shape[1:]
        return (
            f"ArrayDataset({self.info.name!r}, n={len(self)}, shape=({c}, {h}, {w}), "
            f"transform={self.transform!r}, seed={self.seed})"
        )
