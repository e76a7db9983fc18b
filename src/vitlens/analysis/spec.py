"""What an analysis declares about itself, so the runner, the CLI, the study and the report need
no list of analyses (docs/ARCHITECTURE.md, "Add an analysis").

Each analysis module ends with `register_analysis(AnalysisSpec(...))`: its name, the function that
runs it on prepared inputs, the data it needs, its options, its budget per study preset, its
figures with their captions, its report section and the paper's claims it measures.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from vitlens.errors import VitlensError

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


OptionKind = Literal["int", "float", "bool", "str", "choice", "any"]


@dataclass(frozen=True)
class Option:
    """A keyword of the analysis function that `vitlens analyze --set KEY=VALUE` may set, with
    what a value must be: `check` refuses anything else before any work starts.

    Attributes:
        kind: the type of the value (of each item when `many`); "any" is not checked.
        minimum, maximum: inclusive bounds of a number (a maximum keeps sizes sane).
        positive: a number must be above 0.
        choices: the allowed values of a "choice".
        many: a list of values (one value stands for a list of one).
        optional: None is allowed (meaning the function's own default).
    """

    name: str
    default: Any
    help: str
    kind: OptionKind = "any"
    minimum: float | None = None
    maximum: float | None = None
    positive: bool = False
    choices: tuple[Any, ...] = ()
    many: bool = False
    optional: bool = False

    def check(self, value: Any, analysis: str = "") -> Any:
        """`value` as the function takes it (a list for `many`), or a VitlensError that names
        the option, the value and what it must be."""
        if value is None and (self.optional or self.default is None):
            return None
        if not self.many:
            return self._one(value, analysis)
        items = list(value) if isinstance(value, list | tuple) else [value]
        if not items:
            raise self._error(value, analysis, "at least one value")
        return [self._one(v, analysis) for v in items]

    def _one(self, value: Any, analysis: str) -> Any:
        if self.kind == "any":
            return value
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise self._error(value, analysis, "true or false")
            return value
        if self.kind in ("str", "choice"):
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                wanted = f"one of {', '.join(map(str, self.choices))}" if self.choices else "text"
                raise self._error(value, analysis, wanted)
            return value
        return self._number(value, analysis)

    def _number(self, value: Any, analysis: str) -> int | float:
        whole = self.kind == "int"
        wanted = self._range("a whole number" if whole else "a number")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._error(value, analysis, wanted)
        if (whole and not isinstance(value, int)) or not math.isfinite(value):
            raise self._error(value, analysis, wanted)
        low_ok = self.minimum is None or value >= self.minimum
        high_ok = self.maximum is None or value <= self.maximum
        if not (low_ok and high_ok) or (self.positive and value <= 0):
            raise self._error(value, analysis, wanted)
        return int(value) if whole else float(value)

    def _range(self, what: str) -> str:
        parts = [what]
        if self.positive:
            parts.append("above 0")
        if self.minimum is not None:
            parts.append(f"at least {self.minimum:g}")
        if self.maximum is not None:
            parts.append(f"at most {self.maximum:g}")
        return ", ".join(parts)

    def _error(self, value: Any, analysis: str, wanted: str) -> VitlensError:
        where = f"{analysis} option" if analysis else "option"
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        return VitlensError(f"{where} {self.name}={shown}: must be {wanted}")


def check_options(
    spec: AnalysisSpec, options: Mapping[str, Any], *, only_declared: bool = True
) -> dict[str, Any]:
    """Every option of `options` checked against its declaration in `spec`; returns the values
    as the function takes them. With `only_declared` (the command line), an undeclared name is
    refused; without (the library, which may pass any keyword of the function), it passes."""
    declared = {o.name: o for o in spec.options}
    unknown = sorted(set(options) - set(declared))
    if unknown and only_declared:
        raise VitlensError(
            f"{spec.name} has no option {', '.join(unknown)}; it takes {sorted(declared) or 'none'}"
        )
    return {k: declared[k].check(v, spec.name) if k in declared else v for k, v in options.items()}


@dataclass(frozen=True)
class Budget:
    """How much data an analysis streams: `batches` of `batch_size` (None: the whole split, or
    the analysis's own size), plus option values for that scale."""

    batches: int | None = None
    batch_size: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


# The per-image views (attention maps, tokens, embeddings): one batch of four images anywhere.
VIEW_BUDGETS = {
    "analyze": Budget(1, 4),
    "quick": Budget(1, 4),
    "standard": Budget(1, 4),
    "paper": Budget(1, 4),
}


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
        ablation_options: None if the study's ablation runs (the ViT variants) skip this
            analysis; else the options they run it with (the ablation claims read its Results).
        held_out: for a `train_augmented` analysis, whether it may run on un-augmented test
            minibatches (no weight decay) where the data has no training split, as for
            ImageNet's validation images; its Results then say split "test".
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
    ablation_options: Mapping[str, Any] | None = None
    held_out: bool = False

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


def streamed(function: Callable[..., Result], *fields: str) -> Callable[[Inputs], Result]:
    """`run` for an analysis that is `function(model, batches, device=, progress=,
    provenance=, **options)`, the feature-map analyses, plus the `Inputs` fields named in
    `fields` passed under their own names (e.g. `streamed(cka, "other")`)."""

    def run(inputs: Inputs) -> Result:
        return function(
            inputs.model,
            inputs.batches,
            device=inputs.device,
            progress=inputs.progress,
            provenance=inputs.provenance,
            **{name: getattr(inputs, name) for name in fields},
            **inputs.options,
        )

    return run
