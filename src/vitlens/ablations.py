"""Who a study trains: its models over its seeds, and the ablation runs of its ViT.

Claims C3, C6, C7, C15 and C16 (reference paper.md §5) compare variants of the study's ViT,
trained with the same recipe and epochs: less data (C3, C6), local attention windows (C7), a GAP
head (C15) and other head counts at the same width (C16). Each variant is an ordinary member of
the study with its own run folder `runs/KEY/`; C7/C15/C16 compare within one training scale (see
`vitlens.presets.Ablations`). Their curvature comes from the Hessian analysis.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from vitlens.analysis.claim import (
    Claim,
    Difference,
    StudyView,
    above_chance,
    binomial_se,
    judged,
    not_measured,
    requires,
    spearman,
    the_vit,
    tied,
    within_noise,
)
from vitlens.analysis.hessian import ape_difference, nep_claim, nep_difference


def ablation_analyses() -> dict[str, dict[str, Any]]:
    """The analyses an ablation run gets, with their options (declared by each spec)."""
    from vitlens.analysis.registry import analyses

    return {s.name: dict(s.ablation_options) for s in analyses() if s.ablation_options is not None}


def curvature_results(view: StudyView) -> dict[str, Any]:
    """The ablation runs' Results that carry NEP and APE, by run key."""
    found: dict[str, Any] = {}
    for name in ablation_analyses():
        found.update(view.results.get(name, {}))
    return found


@dataclass(frozen=True)
class Member:
    """One training run of a study.

    Attributes:
        key: its run folder `runs/KEY/` and Result name `results/ANALYSIS/KEY.json`.
        model: the zoo model it trains.
        seed: which of the study's seeds (the training seed is the plan's seed plus this).
        group: "" for the study's own models; else the ablation comparison it belongs to.
        value: its value in that comparison (a data fraction, a window, a pool, a head count).
        fraction: the share of the study's training fraction it trains on.
        model_args: constructor overrides of the variant.
        analyses: the analyses it gets (None: all of the plan's).
        options: analysis -> options of its own (the ablations need no spectral density).
    """

    key: str
    model: str
    seed: int = 0
    group: str = ""
    value: Any = None
    fraction: float = 1.0
    model_args: dict[str, Any] = field(default_factory=dict)
    analyses: tuple[str, ...] | None = None
    options: dict[str, dict[str, Any]] = field(default_factory=dict)


def seeded(key: str, seed: int) -> str:
    return key if seed == 0 else f"{key}.seed{seed}"


def study_members(plan) -> list[Member]:
    """Every training run of `plan`, seed by seed: its models, then its ablation variants."""
    out = []
    for seed in range(plan.seeds):
        out += [Member(seeded(m, seed), m, seed) for m in plan.models]
        out += ablation_members(plan, seed)
    return out


def ablation_model(plan) -> str | None:
    """The study's ViT, whose variants the ablations train (None: the study has no ViT)."""
    if plan.runs or plan.imports:
        return None  # a study of existing runs or pretrained models trains nothing
    return next((m for m in plan.models if plan.family(m) == "vit"), None)


def ablation_members(plan, seed: int) -> list[Member]:
    """The variants of the study's ViT for one seed, in the order they are trained."""
    base = ablation_model(plan)
    abl = plan.ablations
    if base is None or not abl:
        return []
    declared = ablation_analyses()
    hessian, top_k_only = tuple(declared), declared
    smallest = min(abl["fractions"], default=None)
    out = [
        Member(
            seeded(f"{base}+frac{f}", seed),
            base,
            seed,
            "fraction",
            f,
            f,
            analyses=hessian if f == smallest else (),
            options=top_k_only,
        )
        for f in abl["fractions"]
    ]
    scale = abl["scale"]

    def variant(name: str, group: str, value: Any, **args: Any) -> Member:
        key = seeded(f"{base}+{name}" + ("" if scale == 1 else f"@{scale}"), seed)
        return Member(key, base, seed, group, value, scale, args, hessian, top_k_only)

    at_scale = next((i for i, m in enumerate(out) if m.value == scale), None)
    if at_scale is not None:  # the fraction run at their scale is already the baseline run
        out[at_scale] = dataclasses.replace(out[at_scale], analyses=hessian)
    elif scale != 1:  # the baseline of C7/C15/C16, retrained at their scale
        out.append(variant("base", "baseline", None))
    out += [variant(f"win{w}", "window", w, local_window=w) for w in abl["windows"]]
    out += [variant(f"heads{h}", "heads", h, heads=h) for h in abl["heads"]]
    if abl["gap"]:
        out.append(variant("gap", "pool", "gap", pool="gap"))
    return out


def comparisons(plan, seed: int) -> dict[str, list[tuple[Any, str]]]:
    """comparison -> [(value, member key)], the study's ViT included as each baseline."""
    from vitlens.models import MODELS

    base = ablation_model(plan)
    variants = ablation_members(plan, seed)
    if base is None or not variants:
        return {}
    main = seeded(base, seed)
    at_scale = [m.key for m in variants if m.group == "baseline"]
    at_scale += [
        m.key for m in variants if m.group == "fraction" and m.value == plan.ablations["scale"]
    ]
    scaled = at_scale[0] if at_scale else main
    heads = MODELS[base].config.get("heads")
    out: dict[str, list[tuple[Any, str]]] = {
        "fraction": [(1.0, main)],
        "window": [("global", scaled)],
        "heads": [(heads, scaled)],
        "pool": [("cls", scaled)],
    }
    for m in variants:
        if m.group in out:
            out[m.group].append((m.value, m.key))
    return out


# -- the claims the ablations measure -----------------------------------------------------------


def _rows(view: StudyView, group: str) -> list[tuple[Any, dict]]:
    return [(v, view.runs[k]) for v, k in view.comparisons.get(group, []) if k in view.runs]


def _curvature(view: StudyView, group: str) -> list[tuple[Any, Any]]:
    found = [(v, curvature_results(view).get(k)) for v, k in view.comparisons.get(group, [])]
    return [(v, r) for v, r in found if r is not None]


@requires(above_chance(the_vit))
def c3_less_data(view: StudyView) -> Claim:
    claim = "Less data raises ViT's test error and NLL_train together (not overfitting)"
    paper = "both rise monotonically as the training set shrinks (2 % … 100 %)"
    rows = sorted(_rows(view, "fraction"), key=lambda p: -p[0])
    if len(rows) < 3:
        return not_measured("C3", claim, paper)
    err = [1 - r["test_acc"] for _, r in rows]
    nll = [r["train_nll"] for _, r in rows]
    margin = min(err[-1] - err[0], nll[-1] - nll[0])
    measured = " → ".join(
        f"{f:.0%}: err {e:.1%}, NLL {n:.3f}" for (f, _), e, n in zip(rows, err, nll, strict=True)
    )
    return Claim("C3", claim, paper, measured, margin > 0, margin)


def c6_less_data_curvature(view: StudyView) -> Claim:
    claim = "Less data gives ViT more negative Hessian eigenvalues"
    paper = "NEP(6 %) > NEP(100 %)"
    found = sorted(_curvature(view, "fraction"), key=lambda p: -p[0])
    if len(found) < 2:
        return not_measured("C6", claim, paper)
    (f_full, full), (f_small, small) = found[0], found[-1]
    measured = f"NEP {f_small:.0%}: {small.nep:.1%} vs {f_full:.0%}: {full.nep:.1%}"
    return nep_claim("C6", claim, paper, measured, small, full)


def c7_locality(view: StudyView) -> Claim:
    claim = "A locality constraint beats global attention (error, NLL_train, NEP)"
    paper = "error 27.89 / 28.05 / 28.94 %, NLL 2.451 / 2.406 / 2.473 for 3×3 / 5×5 / global"
    rows, curv = dict(_rows(view, "window")), dict(_curvature(view, "window"))
    local = [w for w in rows if w != "global"]
    if "global" not in rows or not local or set(curv) != set(rows):
        return not_measured("C7", claim, paper)
    err = {w: 1 - r["test_acc"] for w, r in rows.items()}
    nll = {w: r["train_nll"] for w, r in rows.items()}
    margin = err["global"] - statistics.fmean(err[w] for w in local)
    # The mean local error against the global one, each over its own test images.
    local_se = math.sqrt(sum(binomial_se(rows[w]) ** 2 for w in local)) / len(local)
    diff = Difference(margin, math.hypot(binomial_se(rows["global"]), local_se))
    nep_lower = statistics.fmean(curv[w].nep for w in local) < curv["global"].nep
    measured = "; ".join(
        f"{w if w == 'global' else f'{w}×{w}'}: err {err[w]:.1%}, NLL {nll[w]:.3f}, "
        f"NEP {curv[w].nep:.1%}"
        for w in [*local, "global"]
    )
    nll_lower = statistics.fmean(nll[w] for w in local) < nll["global"]
    row = Claim("C7", claim, paper, measured, margin > 0 and nll_lower and nep_lower, margin)
    return judged(row, diff, "test error (global - local) over the test images", ".1%")


def c15_gap_head(view: StudyView) -> Claim:
    claim = "A GAP classifier convexifies the loss compared with the CLS token"
    paper = "NEP(GAP) < NEP(CLS)"
    curv = dict(_curvature(view, "pool"))
    if set(curv) != {"cls", "gap"}:
        return not_measured("C15", claim, paper)
    measured = f"NEP GAP {curv['gap'].nep:.1%} vs CLS {curv['cls'].nep:.1%}"
    return nep_claim("C15", claim, paper, measured, curv["cls"], curv["gap"])


def c16_more_heads(view: StudyView) -> Claim:
    claim = "More heads make the loss flatter and more convex (lower NEP and APE)"
    paper = "NEP and APE decrease with more heads (1 / 3 / 6 / 12 heads)"
    found = sorted(_curvature(view, "heads"), key=lambda p: p[0])
    if len(found) < 3:
        return not_measured("C16", claim, paper)
    heads = [float(h) for h, _ in found]
    rho_nep = spearman(heads, [r.nep for _, r in found])
    rho_ape = spearman(heads, [r.ape for _, r in found])
    measured = ", ".join(f"{h:g} heads NEP {r.nep:.1%} APE {r.ape:.3g}" for h, r in found)
    if rho_nep is None or rho_ape is None:
        flat = "NEP" if rho_nep is None else "APE"
        return tied(
            Claim("C16", claim, paper, measured, None), f"{flat} equal for every head count"
        )
    measured += f" (rank correlation with heads: NEP {rho_nep:+.2f}, APE {rho_ape:+.2f})"
    margin = -(rho_nep + rho_ape) / 2
    row = Claim("C16", claim, paper, measured, rho_nep < 0 and rho_ape < 0, margin)
    # Fewest minus most heads: positive where the quantity falls as heads are added. A fall
    # or rise within the minibatch noise cannot carry the verdict; a clear rise refutes it.
    (h_few, few), (h_many, many) = found[0], found[-1]
    ends = {"NEP": nep_difference(few, many), "APE": ape_difference(few, many)}
    if any(d.resolved and d.value < 0 for d in ends.values()):
        return row
    noisy = [
        f"{name} {d.describe('.1%' if name == 'NEP' else '.3g')}"
        for name, d in ends.items()
        if not d.resolved
    ]
    if noisy:
        return within_noise(row, f"{h_few:g} vs {h_many:g} heads: " + ", ".join(noisy))
    return row


CHECKS = [c3_less_data, c6_less_data_curvature, c7_locality, c15_gap_head, c16_more_heads]
