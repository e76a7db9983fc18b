"""The study presets, typed: which models a study trains, on what, for how long.

How much data each analysis streams at each preset is declared by the analysis itself
(`AnalysisSpec.budgets`); the training recipe a preset names lives in `vitlens.config`.
"""

from __future__ import annotations

from dataclasses import dataclass

NANO = ("vit_nano", "pit_nano", "swin_nano", "resnet_nano", "alternet_nano")
PAPER = ("vit_ti", "pit_ti", "swin_ti", "resnet50", "alternet50")


@dataclass(frozen=True)
class StudyPreset:
    models: tuple[str, ...]
    dataset: str
    train_preset: str  # a training preset of `vitlens.config`
    epochs: int
    fraction: float = 1.0


STUDY_PRESETS: dict[str, StudyPreset] = {
    "quick": StudyPreset(NANO, "fashion-mnist-mini", "quick", epochs=5),
    "standard": StudyPreset(NANO, "fashion-mnist-mini", "quick", epochs=20),
    "paper": StudyPreset(PAPER, "cifar100", "paper", epochs=300),
}
