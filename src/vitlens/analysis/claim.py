"""The paper's claims (reference paper.md §5) as checks on a study's saved Results.

A check takes a `StudyView` — the study's Results, its training rows and each model's family —
and returns a `Claim` row for the report. Analysis modules declare the checks of the claims they
measure in their spec; the checks that need only training runs live in `vitlens.report.claims`.
Short runs on small data can test directions, not the paper's magnitudes, and only where the
models have learned what a claim is about: each check may declare `Precondition`s (`requires`),
and a claim whose precondition fails reads "not testable at this scale" with the number that
failed, instead of holds or does not hold.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vitlens.analysis.result import Result

# Families the claims compare. A zoo model's family is its ModelSpec's; an outside model's is
# read from its block kinds (see `vitlens.plan.model_family`).
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
    # Why the direction cannot be read although it was measured: "tied" values, a difference
    # "within noise" of its sampling, or a failed precondition ("not testable at this
    # scale: ..."). The verdict then says so.
    unreadable: str | None = None


@dataclass(frozen=True)
class Verdict:
    """A claim over all seeds of a study: the first seed's row, the verdict and the spread."""

    claim: Claim
    # "holds", "does not hold", "inconclusive", "not testable at this scale" or "not measured"
    verdict: str
    spread: str  # "single seed", or the margin's mean ± std over the seeds


UNTESTABLE = "not testable at this scale"


def combine(per_seed: list[Claim]) -> Verdict:
    """The verdict over seeds: inconclusive when the direction differs between seeds, or when
    the mean margin is within one standard deviation of zero."""
    measured = [c for c in per_seed if c.holds is not None]
    first = measured[0] if measured else per_seed[0]
    if not measured:
        return Verdict(first, "not measured", "")
    unreadable = [c for c in measured if c.unreadable]
    if any(c.unreadable.startswith(UNTESTABLE) for c in unreadable):
        why = next(c.unreadable for c in unreadable if c.unreadable.startswith(UNTESTABLE))
        return Verdict(first, UNTESTABLE, why[len(UNTESTABLE) :].lstrip(": "))
    if unreadable:  # tied, or within noise, in at least one seed: the direction is unread
        return Verdict(first, "inconclusive", unreadable[0].unreadable)
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
        """The study's first model of the first family in `families` that it has: the
        families' order is a preference, so the answer does not depend on `--models` order."""
        for family in families:
            found = self.of_family(family)
            if found:
                return found[0]
        return None

    def of_family(self, *families: str) -> list[str]:
        """Every model of the study whose family is one of `families`, in study order."""
        return [m for m in self.models if self.families.get(m) in families]

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


def not_measured(cid: str, claim: str, paper: str, why: str = "") -> Claim:
    """A claim the study could not measure; `why` says what it lacked."""
    return Claim(cid, claim, paper, f"not measured: {why}" if why else "not measured", None)


def block_deltas(values: list[float], kinds: list[str], kind: str) -> list[float]:
    """Change of a per-block quantity across each block of `kind` (from the block before)."""
    return [values[i] - values[i - 1] for i in range(1, len(values)) if kinds[i] == kind]


def claim_order(claim: Claim) -> tuple[int, str]:
    """C2 before C10: sort by the number after the letter."""
    digits = "".join(ch for ch in claim.id if ch.isdigit())
    return (int(digits) if digits else 0, claim.id)


def average_ranks(values: list[float]) -> list[float]:
    """Ranks 1..n, tied values sharing the mean of the ranks they span (as scipy's `rankdata`)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):  # positions start..end hold one tied value
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rank correlation with tie-aware (average) ranks; None when either side is
    all tied, where no correlation is defined (scipy returns nan there)."""
    ra, rb = average_ranks(a), average_ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    var = sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)
    return cov / math.sqrt(var) if var > 0 else None


def tied(claim: Claim, what: str) -> Claim:
    """`claim` marked unreadable because the values it ranks are all tied."""
    return dataclasses.replace(claim, holds=False, margin=0.0, unreadable=f"tied: {what}")


# A difference is read as an effect only when it exceeds this many standard errors of its own
# sampling (about 95 % two-sided for a normal estimate); within it, the verdict is inconclusive.
NOISE_Z = 2.0


@dataclass(frozen=True)
class Difference:
    """`value` = mean(a) - mean(b) of two independent samples, and its standard error."""

    value: float
    stderr: float  # NaN when a side has a single sample: its noise is unknown

    @property
    def resolved(self) -> bool:
        """Whether the difference exceeds `NOISE_Z` standard errors. Where the noise is unknown
        (one sample), the direction is read as measured and `describe` says so."""
        return math.isnan(self.stderr) or abs(self.value) > NOISE_Z * self.stderr

    def describe(self, fmt: str = ".3g") -> str:
        if math.isnan(self.stderr):
            return f"{self.value:+{fmt}}, noise unknown"
        return f"{self.value:+{fmt}} ± {self.stderr:{fmt}} (1 SE)"


def standard_error(values: list[float]) -> float:
    """The standard error of the mean of `values` (NaN for fewer than two)."""
    if len(values) < 2:
        return float("nan")
    return statistics.stdev(values) / math.sqrt(len(values))


def difference(a: list[float], b: list[float], value: float | None = None) -> Difference:
    """The difference of the means of `a` and `b` (or `value`, an estimate of it pooled another
    way) with the standard error of independent samples, sqrt(SE_a² + SE_b²)."""
    se = math.hypot(standard_error(a), standard_error(b))
    return Difference(statistics.fmean(a) - statistics.fmean(b) if value is None else value, se)


def binomial_se(row: dict[str, Any]) -> float:
    """The standard error of a training row's test accuracy over its test images (NaN when the
    row does not say how many)."""
    p, n = row["test_acc"], row.get("test_samples")
    return math.sqrt(p * (1 - p) / n) if n else float("nan")


def accuracy_difference(a: dict[str, Any], b: dict[str, Any]) -> Difference:
    """Test accuracy of training row `a` minus that of `b`, with the binomial standard error of
    the difference as if their test splits were independent. Two models scored on the same
    images err together on the hard ones, so this overstates the noise: a difference it
    resolves is real; one it does not may still be."""
    return Difference(a["test_acc"] - b["test_acc"], math.hypot(binomial_se(a), binomial_se(b)))


def judged(claim: Claim, diff: Difference, what: str, fmt: str = ".3g") -> Claim:
    """`claim`, read as inconclusive when `diff` (its margin) is within the sampling noise."""
    if diff.resolved:
        return claim
    return within_noise(claim, f"{what} differs by {diff.describe(fmt)}")


def within_noise(claim: Claim, what: str) -> Claim:
    """`claim` marked unreadable because its difference is within the sampling noise."""
    return dataclasses.replace(claim, unreadable=f"within noise: {what}")


# -- preconditions: does the model at this scale have what the claim is about? -----------------

# A block "attends" when its mean attention entropy is below this share of log N (uniform
# attention over N keys has entropy log N): attention within 2 % of uniform mixes tokens like an
# average pool, and claims about what MSAs do cannot be read from it.
ATTENDING_SHARE = 0.98
# A model is above chance when its test accuracy is at least twice the chance level 1/classes.
CHANCE_FACTOR = 2.0


@dataclass(frozen=True)
class Check:
    """One precondition checked on one model: `ok` None when the study has no data for it."""

    model: str
    name: str
    ok: bool | None
    detail: str


Precondition = Callable[[StudyView], list[Check]]
Judged = Callable[[StudyView], list[str]]  # which models of the study a claim judges


def the_vit(view: StudyView) -> list[str]:
    return [view.vit] if view.vit else []


def the_vit_and_cnn(view: StudyView) -> list[str]:
    return [m for m in (view.vit, view.cnn) if m]


def every_model(view: StudyView) -> list[str]:
    return list(view.models)


def requires(*preconditions: Precondition):
    """Declare the preconditions of a claim check: when one fails, the measured row is kept but
    reads "not testable at this scale", with the failed check's numbers."""

    def wrap(check: Callable[[StudyView], Claim]) -> Callable[[StudyView], Claim]:
        @functools.wraps(check)
        def checked(view: StudyView) -> Claim:
            claim = check(view)
            if claim.holds is None:
                return claim
            failed = [c for p in preconditions for c in p(view) if c.ok is False]
            if not failed:
                return claim
            why = "; ".join(f"{c.model}: {c.detail}" for c in failed)
            return dataclasses.replace(claim, unreadable=f"{UNTESTABLE}: {why}")

        checked.preconditions = preconditions
        return checked

    return wrap


def attention_share(result: Any) -> list[float]:
    """Per MSA block of an attention Result: mean entropy over heads as a share of log N."""
    shares = []
    keys = getattr(result, "keys", None) or result.windows  # older Results: keys = window
    for entropy, window, prefix in zip(result.entropy, keys, result.prefix, strict=True):
        n_keys = prefix + window[0] * window[1]
        shares.append(statistics.fmean(entropy) / math.log(n_keys) if n_keys > 1 else 1.0)
    return shares


def msas_attend(judged: Judged) -> Precondition:
    """The judged models' MSAs are not uniform: most of their MSA blocks have a mean attention
    entropy below ATTENDING_SHARE of log N (from the study's attention Results)."""

    def check(view: StudyView) -> list[Check]:
        checks = []
        for model in judged(view):
            r = view.result("attention", model)
            name = "MSAs attend"
            if r is None or not r.names:
                checks.append(Check(model, name, None, "no attention Result"))
                continue
            shares = attention_share(r)
            attending = sum(s < ATTENDING_SHARE for s in shares)
            detail = (
                f"{attending} of {len(shares)} MSA blocks attend (entropy below "
                f"{ATTENDING_SHARE:.0%} of log N; mean {statistics.fmean(shares):.1%} of log N)"
            )
            checks.append(Check(model, name, attending * 2 > len(shares), detail))
        return checks

    return check


def above_chance(judged: Judged) -> Precondition:
    """The judged models learned something: test accuracy at least CHANCE_FACTOR x chance."""

    def check(view: StudyView) -> list[Check]:
        checks = []
        for model in judged(view):
            row = view.runs.get(model)
            classes = (row or {}).get("num_classes")
            if row is None or not classes:
                checks.append(Check(model, "above chance", None, "no training record"))
                continue
            chance = 1 / classes
            acc = row["test_acc"]
            detail = f"test accuracy {acc:.1%} against chance {chance:.1%} ({classes} classes)"
            checks.append(Check(model, "above chance", acc >= CHANCE_FACTOR * chance, detail))
        return checks

    return check


def preconditions_checked(
    checks: list[Callable[[StudyView], Claim]], view: StudyView
) -> list[tuple[str, Check]]:
    """(claim ids, check) for every distinct precondition check of `checks` on `view`."""
    seen: dict[tuple[str, str], tuple[list[str], Check]] = {}
    for claim_check in checks:
        for precondition in getattr(claim_check, "preconditions", ()):
            cid = claim_check(view).id
            for c in precondition(view):
                ids, _ = seen.setdefault((c.model, c.name), ([], c))
                if cid not in ids:
                    ids.append(cid)
    return [(", ".join(ids), c) for ids, c in seen.values()]
