"""The paper's claims (reference paper.md §5) checked against a study: the checks that need only
the training runs live here; each analysis declares the checks of the claims it measures.

Each check compares the study's transformer (its ViT) with its CNN (its ResNet) in the direction
the paper reports, choosing the models by family, not by name. Short runs on small data can only
test directions, not the paper's magnitudes; the report says so next to the table.
"""

from __future__ import annotations

from collections.abc import Callable

from vitlens.analysis.claim import (
    Check,
    Claim,
    StudyView,
    Verdict,
    above_chance,
    accuracy_difference,
    claim_order,
    combine,
    every_model,
    judged,
    not_measured,
    preconditions_checked,
    requires,
    spearman,
    the_vit_and_cnn,
    tied,
)


@requires(above_chance(the_vit_and_cnn))
def c1_accuracy(view: StudyView) -> Claim:
    claim = "CNNs beat plain ViT on small data from scratch"
    paper = "ResNet-50 82.6 % > ViT-Ti 66.5 % (CIFAR-100)"
    vit, cnn = view.vit, view.cnn
    if not (vit in view.runs and cnn in view.runs):
        return not_measured("C1", claim, paper)
    diff = accuracy_difference(view.runs[cnn], view.runs[vit])
    a, b = view.runs[cnn]["test_acc"], view.runs[vit]["test_acc"]
    row = Claim("C1", claim, paper, f"{cnn} {a:.1%} vs {vit} {b:.1%}", a > b, a - b)
    return judged(row, diff, "test accuracy over the test images", ".1%")


@requires(above_chance(every_model))
def c2_nll_train(view: StudyView) -> Claim:
    claim = "The ViT gap is not overfitting: NLL_train and test error rise together"
    paper = "NLL_train 2.09 -> 2.57 as error 17 -> 35 % across models"
    rows = [view.runs[m] for m in view.models if m in view.runs]
    if len(rows) < 3:
        return not_measured("C2", claim, paper)
    rho = spearman([r["train_nll"] for r in rows], [1 - r["test_acc"] for r in rows])
    if rho is None:
        row = Claim("C2", claim, paper, f"{len(rows)} models", None)
        return tied(row, "every model has the same NLL_train or the same test error")
    measured = (
        f"Spearman rank correlation (average ranks for ties) {rho:+.2f} over {len(rows)} models"
    )
    return Claim("C2", claim, paper, measured, rho > 0, rho)


def c14_alternet(view: StudyView) -> Claim:
    claim = "AlterNet beats its CNN baseline"
    paper = "pre-act ResNet-50 82.48 % -> AlterNet-50 84.02 %"
    alt, cnn = view.first("alternet"), view.cnn
    if not (alt in view.runs and cnn in view.runs):
        return not_measured("C14", claim, paper)
    a, b = view.runs[alt]["test_acc"], view.runs[cnn]["test_acc"]
    # Both are the study's own fixed configurations: nothing here was chosen on the test split.
    measured = f"{alt} {a:.1%} vs {cnn} {b:.1%} (test split; no architecture search)"
    row = Claim("C14", claim, paper, measured, a >= b, a - b)
    diff = accuracy_difference(view.runs[alt], view.runs[cnn])
    return judged(row, diff, "test accuracy over the test images", ".1%")


TRAINING_CHECKS: list[Callable[[StudyView], Claim]] = [c1_accuracy, c2_nll_train, c14_alternet]


def claim_checks() -> list[Callable[[StudyView], Claim]]:
    """Every claim check: training, ablation and each registered analysis's."""
    from vitlens.ablations import CHECKS as ABLATION_CHECKS
    from vitlens.analysis.registry import analyses

    checks = TRAINING_CHECKS + ABLATION_CHECKS
    return checks + [check for spec in analyses() for check in spec.claims]


def scale_checks(view: StudyView) -> list[tuple[str, Check]]:
    """(claim ids, check) for every precondition the claims declare, on one view."""
    return preconditions_checked(claim_checks(), view)


def evaluate_claims(views: list[StudyView]) -> list[Verdict]:
    """Every claim, measured on each seed's view of the study and combined into a verdict, in
    the paper's order."""
    verdicts = [combine([check(view) for view in views]) for check in claim_checks()]
    return sorted(verdicts, key=lambda v: claim_order(v.claim))
