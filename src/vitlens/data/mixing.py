"""Batch-level Mixup / CutMix with label smoothing: the paper's training recipe.

The paper trains every model, CNNs included, with DeiT's strong regularization (Park & Kim 2022,
App. A; official repo `configs/cifar100_vit.yaml`): timm's `Mixup` with mixup alpha 1.0, cutmix
alpha 0.8, prob 1.0, switch prob 0.5, "batch" mode and label smoothing 0.1. `BatchMixer`
reproduces those semantics (Zhang et al. 2018, Mixup; Yun et al. 2019, CutMix):

1. With probability `prob`, mix; then choose CutMix with probability `switch_prob`, else Mixup.
2. Mixup: lam ~ Beta(mixup_alpha, mixup_alpha), x <- lam * x + (1 - lam) * x.flip(0).
3. CutMix: lam ~ Beta(cutmix_alpha, cutmix_alpha); a box with sides sqrt(1 - lam) * (H, W) around
   a uniform centre, clipped to the image, gets pasted from x.flip(0); lam is then corrected to
   1 - box area / image area.
4. Targets = lam * smooth(y) + (1 - lam) * smooth(y.flip(0)), where smooth gives off value s / K
   and on value 1 - s + s / K.

All randomness comes from the `torch.Generator` passed per call, so a resumed run that restores the
generator's state mixes exactly as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vitlens.errors import ConfigError


def smooth_targets(y: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """One-hot targets with label smoothing (Szegedy et al. 2016), timm's convention.

    Args:
        y: Integer labels `(B,)`.
        num_classes: K.
        smoothing: s in [0, 1); the off value is s / K, the on value 1 - s + s / K.

    Returns:
        float32 `(B, K)` rows summing to 1, on `y`'s device.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ConfigError(
            f"label smoothing must be in [0, 1), got {smoothing}; the paper uses 0.1."
        )
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    onehot = F.one_hot(y.long(), num_classes).to(torch.float32)
    return onehot * (on - off) + off


@dataclass(frozen=True)
class MixParams:
    """One batch's mixing decision.

    Attributes:
        lam: Weight of the original images/labels (1.0 means no mixing).
        box: CutMix box `(y_lo, y_hi, x_lo, x_hi)` pasted from the flipped batch, or None for Mixup.
    """

    lam: float
    box: tuple[int, int, int, int] | None = None


class BatchMixer:
    """Mixup/CutMix and label smoothing on a batch, with timm `Mixup` semantics ("batch" mode).

    Attributes:
        last: The `MixParams` of the most recent call (for logging), or None.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        mixup_alpha: float = 1.0,
        cutmix_alpha: float = 0.8,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.1,
        prob: float = 1.0,
    ) -> None:
        """Configure the mixer; the defaults are the paper's.

        Args:
            num_classes: K, the width of the soft targets.
            mixup_alpha: Beta parameter of Mixup's lam; 0 disables Mixup.
            cutmix_alpha: Beta parameter of CutMix's lam; 0 disables CutMix.
            switch_prob: Chance of CutMix rather than Mixup when both are enabled.
            label_smoothing: s in [0, 1).
            prob: Chance that a batch is mixed at all.
        """
        if num_classes < 1:
            raise ConfigError(f"num_classes must be positive, got {num_classes}.")
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ConfigError(
                f"mixup/cutmix alpha must be >= 0 (0 disables), got {mixup_alpha}, {cutmix_alpha}."
            )
        for name, p in (("switch_prob", switch_prob), ("prob", prob)):
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {p}.")
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(
                f"label smoothing must be in [0, 1), got {label_smoothing}; the paper uses 0.1."
            )
        self.num_classes = num_classes
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        self.switch_prob = float(switch_prob)
        self.label_smoothing = float(label_smoothing)
        self.prob = float(prob)
        self.last: MixParams | None = None

    def sample(self, generator: torch.Generator, height: int, width: int) -> MixParams:
        """Draw one batch's mixing decision.

        Args:
            generator: Source of all randomness; advanced by exactly one draw.
            height: Image height (for the CutMix box).
            width: Image width.

        Returns:
            The decision; `lam == 1.0` and no box when the batch is left unmixed.
        """
        # One draw from the torch generator seeds numpy, which has the Beta distribution that
        # torch cannot sample from a Generator.
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        rng = np.random.default_rng(seed)
        enabled = self.mixup_alpha > 0 or self.cutmix_alpha > 0
        if not enabled or rng.random() >= self.prob:
            return MixParams(1.0)
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = bool(rng.random() < self.switch_prob)
        else:
            use_cutmix = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = float(rng.beta(alpha, alpha))
        if not use_cutmix:
            return MixParams(lam)
        ratio = np.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * ratio), int(width * ratio)
        cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
        y_lo, y_hi = (
            int(np.clip(cy - cut_h // 2, 0, height)),
            int(np.clip(cy + cut_h // 2, 0, height)),
        )
        x_lo, x_hi = (
            int(np.clip(cx - cut_w // 2, 0, width)),
            int(np.clip(cx + cut_w // 2, 0, width)),
        )
        # Correct lam to the area actually pasted (the box may be clipped at the border).
        lam = 1.0 - (y_hi - y_lo) * (x_hi - x_lo) / float(height * width)
        return MixParams(lam, (y_lo, y_hi, x_lo, x_hi))

    def apply(
        self, x: torch.Tensor, y: torch.Tensor, params: MixParams
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix a batch with a given decision (does not modify `x`).

        Args:
            x: Images `(B, C, H, W)`, floating point.
            y: Integer labels `(B,)`.
            params: From `sample`, or built by hand.

        Returns:
            Mixed images `(B, C, H, W)` and soft targets float32 `(B, K)` summing to 1 per row.
        """
        lam = params.lam
        targets = smooth_targets(y, self.num_classes, self.label_smoothing)
        if lam == 1.0:
            return x.clone(), targets
        if params.box is not None:
            y_lo, y_hi, x_lo, x_hi = params.box
            x = x.clone()
            x[:, :, y_lo:y_hi, x_lo:x_hi] = x.flip(0)[:, :, y_lo:y_hi, x_lo:x_hi]
        else:
            x = x * lam + x.flip(0) * (1.0 - lam)
        return x, targets * lam + targets.flip(0) * (1.0 - lam)

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample a decision from `generator` and mix the batch with it.

        Args:
            x: Images `(B, C, H, W)`, floating point.
            y: Integer labels `(B,)`.
            generator: Source of all randomness.

        Returns:
            Mixed images and soft targets `(B, K)` (see `apply`).
        """
        self.last = self.sample(generator, x.shape[-2], x.shape[-1])
        return self.apply(x, y, self.last)

    def __repr__(self) -> str:
        return (
            f"BatchMixer(num_classes={self.num_classes}, mixup_alpha={self.mixup_alpha}, "
            f"cutmix_alpha={self.cutmix_alpha}, switch_prob={self.switch_prob}, "
            f"label_smoothing={self.label_smoothing}, prob={self.prob})"
        )
