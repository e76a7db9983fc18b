"""The paper's claims (reference paper.md §5) as checks on a study's saved Results.

A check takes a `StudyView` — the study's Results, its training rows and each model's family —
and returns a `Claim` row for the report. Analysis modules declare the checks of the claims they
measure in their spec; the checks that need only training runs live in `vitlens.report.claims`.
Short runs on small data can test directions, not the paper's magnitudes.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from vitlens.analysis.result import Result

# Families the claims compare. A zoo model's family is its ModelSpec's; an outside model's is
# read from its block kinds (see `vitlens.study.model_family`).
TRANSFORMERS = ("vit", "transformer")
CNNS = ("resnet", "cnn")


@dataclass(frozen=True)
class Claim:
    """One claim as measured on one seed of a study.

    `margin` is the signed size of the effect in the claim's direction (positive: the claim's
    direction), so verdicts over several seeds can tell an effect from noise.
    """

    id: str
    claim: str
    paper: str
    measured: str
    holds: bool | None  # None: not measured in this study
    margin: float | None = None


@dataclass(frozen=True)
class Verdict:
    """A claim over all seeds of a study: the first seed's row, the verdict and the spread."""

    claim: Claim
    verdict: str  # "holds", "does not hold", "inconclusive" or "not measured"
    spread: str  # "single seed", or the margin's mean ± std over the seeds


def combine(per_seed: list[Claim]) -> Verdict:
    """The verdict over seeds: inconclusive when the direction differs between seeds, or when
    the mean margin is within one standard deviation of zero."""
    measured = [c for c in per_seed if c.holds is not None]
    first = measured[0] if measured else per_seed[0]
    if not measured:
        return Verdict(first, "not measured", "")
    word = {True: "holds", False: "does not hold"}
    if len(measured) == 1:
        return Verdict(first, word[first.holds], "single seed")
    n = len(measured)
    margins = [c.margin for c in measured if c.margin is not None]
    spread = f"{sum(c.holds for c in measured)} of {n} seeds hold"
    if len(margins) == n:
        mean, std = statistics.fmean(margins), statistics.stdev(margins)
        spread = f"margin {mean:+.3g} ± {std:.2g} over {n} seeds; " + spread
    if len({c.holds for c in measured}) > 1:
        return Verdict(first, "inconclusive", spread)
    if len(margins) == n and abs(mean) <= std:
        return Verdict(first, "inconclusive", spread)
    return Verdict(first, word[first.holds], spread)


@dataclass(frozen=True)
class StudyView:
    """What a claim check may read: analysis -> model -> Result, model -> last training row,
    the study's models in order, and model -> family (`vit`, `pit`, `swin`, `resnet`,
    `alternet`, or a kind-based guess such as `transformer`/`cnn` for outside models)."""

    results: dict[str, dict[str, Result]]
    runs: dict[str, dict[str, Any]]
    models: list[str]
    families: dict[str, str] = field(default_factory=dict)
    # Ablation comparisons: name -> [(value, member key)] (see `vitlens.ablations`).
    comparisons: dict[str, list[tuple[Any, str]]] = field(default_factory=dict)

    def first(self, *families: str) -> str | None:
        """The first model of the study whose family is one of `families`."""
        return next((m for m in self.models if self.families.get(m) in families), None)

    @property
    def vit(self) -> str | None:
        return self.first(*TRANSFORMERS)

    @property
    def cnn(self) -> str | None:
        return self.first(*CNNS)

    def result(self, analysis: str, model: str | None) -> Any:
        return self.results.get(analysis, {}).get(model) if model else None

    def pair(self, analysis: str) -> tuple[Any, Any]:
        """The Results of `analysis` for the study's ViT and CNN (None where missing)."""
        return self.result(analysis, self.vit), self.result(analysis, self.cnn)


def not_measured(cid: str, claim: str, paper: str) -> Claim:
    return Claim(cid, claim, paper, "not measured", None)


def block_deltas(values: list[float], kinds: list[str], kind: str) -> list[float]:
    """Change of a per-block quantity across each block of `kind` (from the block before)."""
    return [values[i] - values[i - 1] for i in range(1, len(values)) if kinds[i] == kind]


def claim_order(claim: Claim) -> tuple[int, str]:
    """C2 before C10: sort by the number after the letter."""
    digits = "".join(ch for ch in claim.id if ch.isdigit())
    return (int(digits) if digits else 0, claim.id)


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        for rank, i in enumerate(order):
            r[i] = float(rank)
        return r

    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    var = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return cov / var if var else 0.0
