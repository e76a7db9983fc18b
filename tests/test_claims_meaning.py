"""Claims that mean what the paper means (issue 20): C13 stage by stage, tie-aware ranks, noise
of equal energy, and claims that say when the scale cannot test them.

Every case here is built by hand so that the old rule and the paper's rule disagree.
"""

from __future__ import annotations

import dataclasses
import math
import statistics

import pytest
import torch

from vitlens.analysis.attention import AttentionResult
from vitlens.analysis.claim import (
    UNTESTABLE,
    Claim,
    StudyView,
    average_ranks,
    combine,
    spearman,
)
from vitlens.analysis.freqnoise import frequency_noise_robustness
from vitlens.analysis.landscape import c8_flat_landscape
from vitlens.analysis.lesion import LesionResult, c13_stage_end_msa, stage_lesions
from vitlens.analysis.variance import VarianceResult, c11_variance
from vitlens.robustness.freqnoise import (
    band_mask,
    band_noise,
    equal_energy_rms,
    rescale_rms,
    rms,
)

# -- tie-aware rank correlation -----------------------------------------------------------------


def test_average_ranks_share_ties():
    assert average_ranks([0.1, 0.1, 0.1]) == [2.0, 2.0, 2.0]
    assert average_ranks([3.0, 1.0, 3.0, 2.0]) == [3.5, 1.0, 3.5, 2.0]


def test_all_tied_values_have_no_correlation():
    # The old ranks gave [0, 1, 2] to three equal values and so +1.0 here.
    assert spearman([0.1, 0.1, 0.1], [1.0, 2.0, 3.0]) is None


@pytest.mark.parametrize(
    "a, b",
    [
        ([0.02, 0.02, 0.04, 0.02, 0.06], [1, 3, 6, 12, 24]),
        ([1.0, 2.0, 2.0, 3.0, 3.0, 3.0], [6.0, 5.0, 5.0, 1.0, 2.0, 2.0]),
        ([0.5, 0.1, 0.9, 0.3], [0.2, 0.2, 0.8, 0.2]),
    ],
)
def test_spearman_equals_scipy_with_ties(a, b):
    stats = pytest.importorskip("scipy.stats", reason="scipy is the oracle of this test")
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)


def test_a_claim_on_tied_values_is_inconclusive_not_holds():
    from vitlens.ablations import c16_more_heads

    class Curv:
        def __init__(self, nep, ape):
            self.nep, self.ape = nep, ape

    results = {f"h{h}": Curv(0.02, 10.0 / h) for h in (1, 2, 4)}  # NEP equal for all
    view = StudyView(
        {"hessian": results},
        {},
        ["vit_nano"],
        {"vit_nano": "vit"},
        {"heads": [(h, f"h{h}") for h in (1, 2, 4)]},
    )
    verdict = combine([c16_more_heads(view)])
    assert verdict.verdict == "inconclusive" and "tied" in verdict.spread


def test_c2_on_tied_training_losses_is_inconclusive_not_holds():
    from vitlens.report.claims import c2_nll_train

    runs = {m: {"train_nll": 0.5, "test_acc": acc} for m, acc in
            (("vit_nano", 0.6), ("resnet_nano", 0.8), ("swin_nano", 0.7))}  # fmt: skip
    view = StudyView({}, runs, list(runs), {"vit_nano": "vit", "resnet_nano": "resnet"})
    verdict = combine([c2_nll_train(view)])
    assert verdict.verdict == "inconclusive" and "tied" in verdict.spread
    runs["swin_nano"]["train_nll"] = 0.9  # one loss apart: ranks exist, the claim is judged
    assert combine([c2_nll_train(view)]).verdict in ("holds", "does not hold")


# -- C13 stage by stage ---------------------------------------------------------------------


def lesion_result(units: list[tuple[str, str, int, float]]) -> LesionResult:
    return LesionResult(
        names=[u[0] for u in units],
        kinds=[u[1] for u in units],
        stages=[u[2] for u in units],
        depths=[i / len(units) for i in range(len(units))],
        delta_accuracy=[u[3] for u in units],
    )


# swin_nano's stages 1 and 2 from the issue: the last MSA matters less than the first MSA of
# the stage, yet all MSA lesions together hurt more than all others (the old rule: holds).
SWIN = lesion_result(
    [
        ("s0.b0.msa", "msa", 0, -0.30),
        ("s0.b0.mlp", "mlp", 0, -0.01),
        ("s1.b0.msa", "msa", 1, -0.1406),
        ("s1.b0.mlp", "mlp", 1, -0.02),
        ("s1.b1.msa", "msa", 1, -0.0195),
        ("s1.b1.mlp", "mlp", 1, -0.01),
        ("s2.b0.msa", "msa", 2, -0.2383),
        ("s2.b0.mlp", "mlp", 2, -0.03),
        ("s2.b1.msa", "msa", 2, -0.0781),
        ("s2.b1.mlp", "mlp", 2, -0.02),
    ]
)
# An AlterNet whose stage-end MSAs hurt more than the convs before them in each stage.
ALTERNET = lesion_result(
    [
        ("s0.b0.conv", "conv", 0, -0.05),
        ("s0.b1.msa", "msa", 0, -0.10),
        ("s1.b0.conv", "conv", 1, -0.02),
        ("s1.b1.conv", "conv", 1, -0.04),
        ("s1.b2.msa", "msa", 1, -0.08),
    ]
)


def test_stage_lesions_pair_each_stage_end_msa_with_the_units_before_it():
    stages = stage_lesions(SWIN)
    assert [s.stage for s in stages] == [1, 2]  # stage 0's last MSA has nothing before it
    assert stages[0].msa == "s1.b1.msa" and stages[0].msa_delta == -0.0195
    assert stages[0].before == [-0.1406, -0.02] and stages[0].outranks == 0
    assert stages[0].margin == pytest.approx((-0.1406 - 0.02) / 2 + 0.0195)


def _view(models: list[str], results: dict[str, LesionResult]) -> StudyView:
    families = {"swin_nano": "swin", "alternet_nano": "alternet"}
    return StudyView({"lesion": results}, {}, models, families)


def test_c13_is_judged_stage_by_stage():
    pairs = list(zip(SWIN.delta_accuracy, SWIN.kinds, strict=True))
    msa = [d for d, k in pairs if k == "msa"]
    other = [d for d, k in pairs if k != "msa"]
    assert sum(msa) / len(msa) < sum(other) / len(other)  # the old rule: "holds"
    claim = c13_stage_end_msa(_view(["swin_nano"], {"swin_nano": SWIN}))
    assert claim.holds is False and "holds in 0 of 2 stages" in claim.measured
    good = c13_stage_end_msa(_view(["alternet_nano"], {"alternet_nano": ALTERNET}))
    assert good.holds is True and good.margin == pytest.approx(min([0.05, 0.05]))


def test_c13_judges_every_model_whatever_the_order_of_models():
    results = {"swin_nano": SWIN, "alternet_nano": ALTERNET}
    one = c13_stage_end_msa(_view(["swin_nano", "alternet_nano"], results))
    two = c13_stage_end_msa(_view(["alternet_nano", "swin_nano"], results))
    assert one.holds is two.holds is False  # it fails for Swin, so not for both
    assert "swin_nano" in one.measured and "alternet_nano" in one.measured
    assert one.margin == two.margin


def test_the_first_model_of_a_family_follows_the_familys_preference():
    families = {"swin_nano": "swin", "alternet_nano": "alternet"}
    view = StudyView({}, {}, ["swin_nano", "alternet_nano"], families)
    assert view.first("alternet", "swin") == "alternet_nano"


# -- preconditions: not testable at this scale --------------------------------------------------


def attention(entropy_share: float, blocks: int = 4, n_keys: int = 50) -> AttentionResult:
    h = entropy_share * math.log(n_keys)
    return AttentionResult(
        names=[f"block{i}.msa" for i in range(blocks)],
        windows=[[7, 7]] * blocks,
        prefix=[1] * blocks,
        entropy=[[h, h]] * blocks,
    )


VARIANCE = VarianceResult(
    names=["embed", "b0.msa", "b0.mlp", "b1.msa", "b1.mlp"],
    kinds=["embed", "msa", "mlp", "msa", "mlp"],
    variance=[1.0, 0.8, 1.2, 1.0, 1.3],
)


def test_a_claim_on_uniform_attention_is_not_testable_with_its_number():
    def verdict(share):
        view = StudyView(
            {"variance": {"vit_nano": VARIANCE}, "attention": {"vit_nano": attention(share)}},
            {},
            ["vit_nano"],
            {"vit_nano": "vit"},
        )
        return combine([c11_variance(view)])

    uniform = verdict(0.999)
    assert uniform.verdict == UNTESTABLE
    assert "0 of 4 MSA blocks attend" in uniform.spread and "99.9% of log N" in uniform.spread
    assert verdict(0.80).verdict == "holds"


def test_claims_need_models_above_chance():
    from vitlens.report.claims import c1_accuracy

    def view(vit_acc):
        rows = {
            "vit_nano": {"test_acc": vit_acc, "num_classes": 10},
            "resnet_nano": {"test_acc": 0.8, "num_classes": 10},
        }
        return StudyView({}, rows, ["vit_nano", "resnet_nano"],
                         {"vit_nano": "vit", "resnet_nano": "resnet"})  # fmt: skip

    at_chance = combine([c1_accuracy(view(0.11))])
    assert at_chance.verdict == UNTESTABLE and "chance 10.0%" in at_chance.spread
    assert combine([c1_accuracy(view(0.6))]).verdict == "holds"


def test_untestable_in_any_seed_is_untestable():
    ok = Claim("C0", "c", "p", "m", True, 0.3)
    bad = Claim("C0", "c", "p", "m", True, 0.3, f"{UNTESTABLE}: model x: reason")
    assert combine([ok, bad]).verdict == UNTESTABLE


def test_the_landscape_claim_prints_negative_rises_with_one_sign():
    from vitlens.analysis.landscape import LandscapeResult

    def flat(rise):
        return LandscapeResult(dims=1, xs=[-1.0, 0.0, 1.0], loss=[[rise, 0.0, rise]])

    view = StudyView({"landscape": {"v": flat(-0.3), "r": flat(0.5)}}, {}, ["v", "r"],
                     {"v": "vit", "r": "resnet"})  # fmt: skip
    measured = c8_flat_landscape(view).measured
    assert "+-" not in measured and "-0.2" in measured


# -- frequency noise of equal energy --------------------------------------------------------


@pytest.mark.parametrize("side", [28, 32])
def test_every_band_has_the_requested_rms_and_keeps_its_band(side):
    shape = (4, 3, side, side)
    freqs = [0.1, 0.3, 0.5, 0.7, 0.9]
    target = equal_energy_rms(side, side, 0.7, freqs, 0.1)
    for f in freqs:
        g = torch.Generator().manual_seed(int(f * 10))
        noise = rescale_rms(band_noise(shape, 0.7, f, 0.1, generator=g), target)
        assert rms(noise).tolist() == pytest.approx([target] * 4, abs=1e-6)
        spectrum = torch.fft.fftshift(torch.fft.fft2(noise.double()), dim=(-2, -1)).abs()
        outside = spectrum[..., ~band_mask(side, side, f, 0.1)]
        assert outside.max() < 1e-6 * spectrum.max()  # float32 rounding only


def test_the_authors_bands_differ_in_energy_on_small_images():
    g = torch.Generator().manual_seed(0)
    low = rms(band_noise((64, 1, 28, 28), 0.7, 0.1, 0.1, generator=g)).mean()
    high = rms(band_noise((64, 1, 28, 28), 0.7, 0.9, 0.1, generator=g)).mean()
    assert float(high / low) == pytest.approx(2.9, rel=0.05)  # the 0.121 vs 0.354


def test_the_result_records_the_energy_and_the_rms_per_band():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 4))
    g = torch.Generator().manual_seed(0)
    data = [(torch.rand(6, 3, 16, 16, generator=g), torch.randint(0, 4, (6,), generator=g))]
    freqs = [0.25, 0.5, 0.75]
    equal = frequency_noise_robustness(model, data, eps=0.5, frequencies=freqs)
    authors = frequency_noise_robustness(model, data, eps=0.5, frequencies=freqs, energy="authors")
    assert equal.energy == "equal" and authors.energy == "authors"
    target = equal_energy_rms(16, 16, 0.5, freqs, 0.1)
    assert equal.noise_rms == pytest.approx([target] * 3, rel=1e-9)
    assert authors.noise_rms[2] > 1.5 * authors.noise_rms[0]  # more frequencies, more energy
    # C10 compares bands of equal strength only: the authors' bands leave it unmeasured.
    from vitlens.analysis.freqnoise import c10_frequency_noise

    for pair, verdict in (((equal, equal), None), ((authors, authors), "not measured")):
        view = StudyView({"freqnoise": dict(zip(("vit", "cnn"), pair, strict=True))}, {},
                         ["vit", "cnn"], {"vit": "vit", "cnn": "resnet"})  # fmt: skip
        claim = c10_frequency_noise(view)
        if verdict:
            assert claim.holds is None and "bands of equal energy" in claim.measured
        else:
            assert claim.holds is not None and "equal energy" in claim.measured


# -- differences within their sampling noise ----------------------------------------------------


def hessian(negatives_per_batch: list[int], k: int = 5, positive: float = 10.0):
    """A Hessian Result whose minibatch i has `negatives_per_batch[i]` negative eigenvalues."""
    from vitlens.analysis.hessian import HessianResult, nep_ape

    rows = [[-1.0] * n + [positive] * (k - n) for n in negatives_per_batch]
    nep, ape = nep_ape(v for row in rows for v in row)
    return HessianResult(eigenvalues=rows, nep=nep, ape=ape, k=k)


def test_difference_has_the_standard_error_of_two_independent_means():
    from vitlens.analysis.claim import NOISE_Z, difference

    a, b = [0.2, 0.0, 0.4, 0.2], [0.0, 0.2, 0.0, 0.0]
    d = difference(a, b)
    se_a = statistics.stdev(a) / 2
    se_b = statistics.stdev(b) / 2
    assert d.value == pytest.approx(0.15)
    assert d.stderr == pytest.approx(math.sqrt(se_a**2 + se_b**2), abs=1e-15)
    assert d.resolved == (NOISE_Z * d.stderr < 0.15)
    assert math.isnan(difference([1.0], [0.0]).stderr)  # one sample: noise unknown
    assert difference([1.0], [0.0]).resolved  # the direction is then read as measured


def test_one_eigenvalue_of_fifty_is_within_noise_not_an_effect():
    from vitlens.ablations import c15_gap_head

    # CLS 5 negatives of 50, GAP 4 of 50: the old rule said "holds" (10 % > 8 %).
    cls = hessian([1, 0, 1, 0, 1, 0, 1, 0, 1, 0])
    gap = hessian([1, 0, 1, 0, 1, 0, 1, 0, 0, 0])
    view = StudyView({"hessian": {"c": cls, "g": gap}}, {}, ["vit_nano"], {"vit_nano": "vit"})
    view = dataclasses.replace(view, comparisons={"pool": [("cls", "c"), ("gap", "g")]})
    row = c15_gap_head(view)
    assert row.holds and row.unreadable.startswith("within noise: NEP over minibatches")
    assert combine([row]).verdict == "inconclusive"
    # Every CLS minibatch with two negatives, none for GAP: resolved, and the claim holds.
    clear = dataclasses.replace(
        view, results={"hessian": {"c": hessian([2] * 10), "g": hessian([0] * 10)}}
    )
    assert combine([c15_gap_head(clear)]).verdict == "holds"


def test_c4_reads_the_nep_gap_against_its_minibatch_noise():
    from vitlens.analysis.hessian import c4_nep

    def view(vit, cnn):
        return StudyView(
            {"hessian": {"v": vit, "r": cnn}}, {}, ["v", "r"], {"v": "vit", "r": "resnet"}
        )

    # 10 % vs 4 % over 10 minibatches (the quick study's fp32 run): within noise.
    noisy = c4_nep(view(hessian([1, 0, 1, 1, 0, 0, 1, 0, 1, 0]), hessian([1, 0, 0, 0, 1] * 2)))
    assert noisy.unreadable and "± " in noisy.unreadable
    clear = c4_nep(view(hessian([1] * 10), hessian([0] * 10)))
    assert clear.holds and clear.unreadable is None


def test_accuracy_claims_use_the_binomial_noise_of_the_test_split():
    from vitlens.analysis.claim import accuracy_difference
    from vitlens.report.claims import c14_alternet

    def run(acc, n=2000):
        return {"test_acc": acc, "test_samples": n, "train_nll": 0.5}

    d = accuracy_difference(run(0.835), run(0.838))
    assert d.stderr == pytest.approx(math.sqrt(0.835 * 0.165 / 2000 + 0.838 * 0.162 / 2000))
    families = {"alternet_nano": "alternet", "resnet_nano": "resnet"}
    models = list(families)
    close = StudyView(
        {}, {"alternet_nano": run(0.835), "resnet_nano": run(0.838)}, models, families
    )
    assert combine([c14_alternet(close)]).verdict == "inconclusive"
    far = StudyView({}, {"alternet_nano": run(0.80), "resnet_nano": run(0.85)}, models, families)
    assert combine([c14_alternet(far)]).verdict == "does not hold"
    # Without the number of test images the noise is unknown: the direction is read.
    unknown = {
        m: {"test_acc": a, "train_nll": 0.5} for m, a in zip(models, (0.835, 0.838), strict=True)
    }
    row = c14_alternet(StudyView({}, unknown, models, families))
    assert row.unreadable is None and not row.holds


def test_c16_is_inconclusive_when_its_ends_are_within_noise_and_refuted_by_a_clear_rise():
    from vitlens.ablations import c16_more_heads

    def view(*per_heads):
        results = {f"h{h}": r for h, r in zip((1, 3, 6), per_heads, strict=True)}
        pairs = [(h, f"h{h}") for h in (1, 3, 6)]
        return StudyView({"hessian": results}, {}, ["v"], {"v": "vit"}, {"heads": pairs})

    # NEP 12 / 10 / 8 % and APE falling: the old rule said holds; 6 vs 1 heads is one
    # eigenvalue in fifty apart, within noise.
    falling = [
        hessian(n, positive=p)
        for n, p in (
            ([1, 1, 1, 1, 1, 1, 0, 0, 0, 0], 12.0),
            ([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], 11.0),
            ([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], 10.0),
        )
    ]
    row = c16_more_heads(view(*falling))
    assert row.holds and row.unreadable.startswith("within noise: 1 vs 6 heads: NEP")
    # A clear rise of NEP with heads refutes the claim whatever the noise of APE.
    rising = [hessian([0] * 10, positive=12.0), hessian([1, 0] * 5, positive=11.0)]
    rising.append(hessian([2] * 10, positive=10.0))
    row = c16_more_heads(view(*rising))
    assert row.unreadable is None and not row.holds


def test_c10_weighs_the_high_band_drop_against_its_binomial_noise():
    from vitlens.analysis.freqnoise import FreqNoiseResult, c10_frequency_noise

    def result(model: str, noisy: float, clean: float = 0.9, n: int = 2000) -> FreqNoiseResult:
        acc = {model: [clean, noisy, noisy]}  # bands 0.1π, 0.8π, 0.9π
        delta = {model: [a - clean for a in acc[model]]}
        entry = {"eps": 0.7, "accuracy": acc, "nll": {model: [1.0] * 3}, "delta_accuracy": delta}
        return FreqNoiseResult(models=[model], frequencies=[0.1, 0.8, 0.9], eps=0.7,
                               eps_values=[0.7], n_images=n, clean_accuracy={model: clean},
                               accuracy=acc, nll=entry["nll"], delta_accuracy=delta,
                               by_eps=[entry], energy="equal")  # fmt: skip

    families = {"vit_nano": "vit", "resnet_nano": "resnet"}

    def c10(vit_noisy: float, cnn_noisy: float, n: int = 2000):
        pair = {"vit_nano": result("vit_nano", vit_noisy, n=n),
                "resnet_nano": result("resnet_nano", cnn_noisy, n=n)}  # fmt: skip
        return c10_frequency_noise(StudyView({"freqnoise": pair}, {}, list(families), families))

    # Drops of -4.0 and -4.4 pp on 2000 images: SE of each drop sqrt(2·0.86·0.14/2000/4 +
    # 0.9·0.1/2000) ≈ 0.0078, of the gap ≈ 0.011 > 0.004 / 2.
    close = c10(0.86, 0.856)
    assert close.unreadable.startswith("within noise") and close.margin == pytest.approx(0.004)
    se_vit = math.sqrt(2 * 0.86 * 0.14 / 2000 / 4 + 0.09 / 2000)
    assert f"± {math.hypot(se_vit, math.sqrt(2 * 0.856 * 0.144 / 2000 / 4 + 0.09 / 2000)):.1%}" in (
        close.unreadable
    )
    clear = c10(0.86, 0.76)  # -4 pp vs -14 pp, the paper's picture
    assert clear.unreadable is None and clear.holds
    # A Result that does not say how many images: the direction is read, as before.
    assert c10(0.86, 0.856, n=0).unreadable is None
