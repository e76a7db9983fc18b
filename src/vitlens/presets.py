"""The study presets, typed: which models a study trains, on what, for how long.

How much data each analysis streams at each preset is declared by the analysis itself
(`AnalysisSpec.budgets`); the training recipe a preset names lives in `vitlens.config`.
"""

from __future__ import annotations

from dataclasses import dataclass

NANO = ("vit_nano", "pit_nano", "swin_nano", "resnet_nano", "alternet_nano")
PAPER = ("vit_ti", "pit_ti", "swin_ti", "resnet50", "alternet50")


@dataclass(frozen=True)
class Ablations:
    """The extra training runs of the study's ViT that claims C3, C6, C7, C15 and C16 need
    (reference paper.md §5), each trained with the study's recipe and epochs.

    Attributes:
        fractions: C3/C6: shares of the study's training set besides the whole of it.
        scale: C7/C15/C16 compare variants trained on this share of the study's training set
            (1.0: the study's own ViT run is their baseline); the baseline is retrained at
            that scale so every comparison is within one scale.
        windows: C7: local attention windows (k x k tokens) against global attention.
        heads: C16: head counts besides the ViT's own, at the same width.
        gap: C15: a global-average-pooling head against the CLS token.
    """

    fractions: tuple[float, ...] = (0.25, 0.1)
    scale: float = 0.25
    windows: tuple[int, ...] = (3, 5)
    heads: tuple[int, ...] = (1, 6)
    gap: bool = True


@dataclass(frozen=True)
class StudyPreset:
    models: tuple[str, ...]
    dataset: str
    train_preset: str  # a training preset of `vitlens.config`
    epochs: int
    fraction: float = 1.0
    seeds: int = 1  # every training run is repeated over this many seeds
    ablations: Ablations | None = Ablations()


STUDY_PRESETS: dict[str, StudyPreset] = {
    "quick": StudyPreset(NANO, "fashion-mnist-mini", "quick", epochs=5),
    "standard": StudyPreset(
        NANO,
        "fashion-mnist-mini",
        "quick",
        epochs=20,
        seeds=3,
        ablations=Ablations(fractions=(0.5, 0.25, 0.1), scale=0.5, heads=(1, 6, 12)),
    ),
    "paper": StudyPreset(
        PAPER,
        "cifar100",
        "paper",
        epochs=300,
        ablations=Ablations(fractions=(0.5, 0.1, 0.02), scale=1.0, heads=(1, 6, 12)),
    ),
}
