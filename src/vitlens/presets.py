"""Every preset of vitlens in one place: the training recipes (values of `TrainConfig` fields,
checked by `TrainConfig.validate`) and the study presets (typed): which models a study trains,
on what, for how long, over how many seeds, with which ablations.

How much data each analysis streams at each preset is declared by the analysis itself
(`AnalysisSpec.budgets`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Training recipes: `quick` for minutes on a CPU, `paper` the authors' CIFAR-100 recipe.
TRAIN_PRESETS: dict[str, Mapping[str, Any]] = {
    "quick": dict(
        epochs=5,
        warmup_epochs=1,
        batch_size=128,
        lr=1e-3,
        weight_decay=0.05,
        clip_grad=5.0,
        augment="basic",
        mixup=False,
        label_smoothing=0.0,
        drop_path=0.0,
    ),
    "paper": dict(
        epochs=300,
        warmup_epochs=5,
        batch_size=96,
        lr=1.25e-4,
        weight_decay=0.05,
        clip_grad=5.0,
        augment="paper",
        mixup=True,
        label_smoothing=0.1,
        drop_path=0.1,
        decay_exempt=False,  # the authors decay every parameter
    ),
}


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
    imports: tuple[tuple[str, str], ...] = ()  # (label, pretrained source): imported, not trained


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
    # The paper's ImageNet analyses (Figs. 2, 8, 9; reference paper.md §1.9-1.11): the
    # pretrained timm models, nothing trained, on a class-balanced validation subset.
    "imagenet": StudyPreset(
        ("resnet50", "vit_tiny"),
        "imagenet:256",
        "quick",
        epochs=0,
        ablations=None,
        imports=(
            ("resnet50", "timm:resnet50.a1_in1k"),
            ("vit_tiny", "timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k"),
        ),
    ),
    "paper": StudyPreset(
        PAPER,
        "cifar100",
        "paper",
        epochs=300,
        ablations=Ablations(fractions=(0.5, 0.1, 0.02), scale=1.0, heads=(1, 6, 12)),
    ),
}
