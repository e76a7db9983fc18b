"""All sixteen claims of the paper in one tiny study, and verdicts that know their noise."""

from __future__ import annotations

import pytest

from vitlens.analysis.claim import UNTESTABLE, Claim, combine
from vitlens.analysis.result import load_result
from vitlens.analysis.runner import ANALYSES
from vitlens.study import Study, StudyPlan

MODELS = ["vit_nano", "resnet_nano", "alternet_nano"]


@pytest.fixture(scope="module")
def sixteen(tmp_path_factory):
    folder = tmp_path_factory.mktemp("claims") / "study"
    budget = {name: [1, 16] for name in ANALYSES}
    budget["trajectory"] = [None, None]
    plan = StudyPlan.from_preset(
        "quick", models=MODELS, epochs=1, fraction=0.05, budget=budget, landscape_steps=3
    )
    Study.create(folder, plan, quiet=True).run()
    return folder


def test_a_tiny_study_measures_all_sixteen_claims(sixteen):
    page = (sixteen / "report.html").read_text()
    for i in range(1, 17):
        assert f"<td>C{i}</td>" in page
    assert "not measured" not in page
    # Each claim is measured: with its single seed's verdict; "inconclusive" with the reason
    # (tied, or a gap within its sampling noise); or, where a precondition fails at one epoch,
    # "not testable at this scale" with the number that failed.
    inconclusive = page.count("class=na>inconclusive<")
    assert inconclusive == page.count("<small>within noise: ") + page.count("<small>tied")
    assert page.count("single seed") + inconclusive + page.count(f"class=na>{UNTESTABLE}<") == 16
    assert "Can this scale test the claims?" in page
    # How does a ViT see? The per-image views of the study's transformers, and the sanity line.
    assert "How does a ViT see?" in page and "Has each model learned to attend?" in page
    for name in ("attention_maps", "embeddings", "tokens"):
        assert (sixteen / "figures" / f"{name}.png").stat().st_size > 3000
        assert not (sixteen / "results" / name / "resnet_nano.json").exists()  # no MSA: skipped
        assert (sixteen / "results" / name / "vit_nano.json").exists()
    for name in ("ablation_fraction", "ablation_window", "ablation_pool", "ablation_heads"):
        assert (sixteen / "figures" / f"{name}.png").stat().st_size > 5000
    # The variants are ordinary runs of the study, trained as configured.
    gap = load_result(sixteen / "results" / "hessian" / "vit_nano+gap@0.25.json")
    assert 0 <= gap.nep <= 1
    import yaml

    cfg = yaml.safe_load((sixteen / "runs" / "vit_nano+win3@0.25" / "config.yaml").read_text())
    assert cfg["model_args"] == {"local_window": 3} and cfg["fraction"] == pytest.approx(0.0125)


def _claim(holds: bool, margin: float) -> Claim:
    return Claim("C0", "c", "p", f"{margin:+.2f}", holds, margin)


def test_verdicts_over_seeds():
    consistent = combine([_claim(True, 0.30), _claim(True, 0.25), _claim(True, 0.35)])
    assert consistent.verdict == "holds" and "3 of 3 seeds hold" in consistent.spread
    assert "+0.3 ± 0.05" in consistent.spread
    against = combine([_claim(False, -0.30), _claim(False, -0.28)])
    assert against.verdict == "does not hold"
    flipped = combine([_claim(True, 0.30), _claim(False, -0.02), _claim(True, 0.1)])
    assert flipped.verdict == "inconclusive"
    # The same direction every time, but the mean is within one standard deviation of zero.
    noisy = combine([_claim(True, 0.01), _claim(True, 0.6), _claim(True, 0.001)])
    assert noisy.verdict == "inconclusive"
    single = combine([_claim(False, -0.5)])
    assert single.verdict == "does not hold" and single.spread == "single seed"
    missing = combine([Claim("C0", "c", "p", "not measured", None)])
    assert missing.verdict == "not measured"


def test_seeds_repeat_every_run():
    from vitlens.ablations import study_members

    plan = StudyPlan.from_preset("quick", models=["vit_nano", "resnet_nano"], seeds=2)
    keys = [m.key for m in study_members(plan)]
    assert "vit_nano.seed1" in keys and "resnet_nano.seed1" in keys
    assert "vit_nano+gap@0.25.seed1" in keys
    # Two fractions, then at a quarter of the data (whose fraction run is their baseline):
    # two windows, two head counts and the GAP head.
    assert len(keys) == 2 * (2 + 7) and "vit_nano+base@0.25" not in keys
    configs = {m.key: plan.train_config(m) for m in study_members(plan)}
    assert configs["vit_nano.seed1"].seed == configs["vit_nano"].seed + 1
    assert StudyPlan.from_preset("standard").seeds == 3
