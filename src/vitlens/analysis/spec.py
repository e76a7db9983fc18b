"""What an analysis declares about itself, so the runner, the CLI, the study and the report need
no list of analyses (docs/ARCHITECTURE.md, "Add an analysis").

Each analysis module ends with `register_analysis(AnalysisSpec(...))`: its name, the function that
runs it on prepared inputs, the data it needs, its options, its budget per study preset, its
figures with their captions, its report section and the paper's claims it measures.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

    from vitlens.analysis.claim import Claim, StudyView
    from vitlens.analysis.result import Provenance, Result

# What an analysis streams (the runner prepares it):
# - "test": clean, normalised test images;
# - "test_unit": clean test images in [0, 1] (robustness analyses normalise inside);
# - "train_augmented": the run's own augmented training batches, with its mixer and weight
#   decay (paper §2: Hessians and landscapes on augmented data with NLL + L2);
# - "snapshots": no images, the run's weight snapshots.
DataKind = Literal["test", "test_unit", "train_augmented", "snapshots"]

# The report's sections: how a ViT sees one image, then the paper's three questions.
SECTIONS = {
    "inside": "How does a ViT see?",
    "optimization": "What do MSAs do to optimization?",
    "features": "Do MSAs act like Convs?",
    "harmonize": "How do we harmonize MSAs with Convs?",
}


@dataclass(frozen=True)
class Option:
    """A keyword of the analysis function that `vitlens analyze --option KEY=VALUE` may set."""

    name: str
    default: Any
    help: str


@dataclass(frozen=True)
class Budget:
    """How much data an analysis streams: `batches` of `batch_size` (None: the whole split, or
    the analysis's own size), plus option values for that scale."""

    batches: int | None = None
    batch_size: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Figure:
    """One figure drawn from the Results of one analysis (all models of a study overlaid where
    the figure supports it). `draw(results, path)` writes a PNG and returns its path."""

    name: str
    draw: str | Callable[[list[Result], Path], Path]  # or "module:function", imported on use
    caption: str

    def drawer(self) -> Callable[[list[Result], Path], Path]:
        if callable(self.draw):
            return self.draw
        module, _, function = self.draw.partition(":")
        return getattr(importlib.import_module(module), function)


@dataclass(frozen=True)
class Column:
    """A column this analysis adds to the report's accuracy table: `value(result)` as text."""

    header: str
    value: Callable[[Result], str]


@dataclass(frozen=True)
class Inputs:
    """What the runner prepared for one analysis of one model."""

    model: torch.nn.Module
    batches: Iterable | None
    device: torch.device
    seed: int
    progress: bool
    options: dict[str, Any]
    n_batches: int | None = None
    batch_size: int | None = None
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # (mean, std)
    mixer: Callable | None = None
    weight_decay: float = 0.0
    checkpoint: Path | None = None
    name: str = ""  # the model's name
    other: torch.nn.Module | None = None  # a second model (CKA between two models)
    provenance: Provenance | None = None  # model, checkpoint, data; the analysis adds wall time


@dataclass(frozen=True)
class AnalysisSpec:
    """Everything vitlens knows about one analysis.

    Attributes:
        name: the CLI and folder name (`vitlens analyze NAME`, `results/NAME/`).
        summary: one line for `vitlens analyze --help`.
        run: computes the Result from prepared `Inputs`.
        data: what it streams (see `DataKind`).
        section: the report section (a key of `SECTIONS`); `order` sorts within the study.
        budgets: per study preset ("quick", "standard", "paper"), plus "analyze" for
            `vitlens analyze` without --batches/--batch-size.
        options: the keywords a user may set, with defaults and help.
        figures: drawn by the report and by `vitlens analyze`.
        function: the public function `run` calls (its options' defaults are its own).
        claims: checks of the paper's claims (`vitlens.analysis.claim`) this analysis measures.
        columns: what it adds to the report's accuracy table.
        needs: block kinds a model must have for the analysis to apply (the study skips others).
    """

    name: str
    summary: str
    run: Callable[[Inputs], Result]
    data: DataKind
    section: str
    order: int
    budgets: Mapping[str, Budget] = field(default_factory=dict)
    options: tuple[Option, ...] = ()
    figures: tuple[Figure, ...] = ()
    function: Callable[..., Result] | None = None
    claims: tuple[Callable[[StudyView], Claim], ...] = ()
    columns: tuple[Column, ...] = ()
    needs: frozenset[str] = frozenset()

    def __post_init__(self):
        if self.section not in SECTIONS:
            raise ValueError(f"section {self.section!r} is not one of {list(SECTIONS)}")

    @property
    def split(self) -> str:
        return {"train_augmented": "train", "snapshots": "-"}.get(self.data, "test")

    def budget(self, preset: str) -> Budget:
        return self.budgets.get(preset) or self.budgets.get("analyze") or Budget()

    def option_defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}


# The feature-map analyses stream the same clean test batches at each scale.
FEATURE_BUDGETS = {
    "analyze": Budget(None, 128),
    "quick": Budget(4, 128),
    "standard": Budget(10, 128),
    "paper": Budget(None, 256),
}


def streamed(function: Callable[..., Result]) -> Callable[[Inputs], Result]:
    """`run` for an analysis that is `function(model, batches, device=, progress=,
    provenance=, **options)`: the feature-map analyses."""

    def run(inputs: Inputs) -> Result:
        return function(
            inputs.model,
            inputs.batches,
            device=inputs.device,
            progress=inputs.progress,
            provenance=inputs.provenance,
            **inputs.options,
        )

    return run
