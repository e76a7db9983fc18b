"""The paper's claims (reference paper.md §5), each checked against a study's saved Results.

Each check compares the study's transformer (the ViT, or the first model with MSA blocks) with its
CNN (the first ResNet) in the direction the paper reports. Short runs on small data can only test
directions, not the paper's magnitudes; the report says so next to the table.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vitlens.analysis.result import Result


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str
    paper: str
    measured: str
    holds: bool | None  # None: not measured in this study


Results = dict[str, dict[str, Result]]  # analysis -> model -> Result


def _pick(models: list[str], prefix: tuple[str, ...]) -> str | None:
    return next((m for m in models if m.startswith(prefix)), None)


def _vit(models: list[str]) -> str | None:
    return _pick(models, ("vit",))


def _cnn(models: list[str]) -> str | None:
    return _pick(models, ("resnet", "preresnet"))


def _get(results: Results, analysis: str, model: str | None) -> Any:
    return results.get(analysis, {}).get(model) if model else None


def _missing(cid: str, claim: str, paper: str) -> Claim:
    return Claim(cid, claim, paper, "not measured", None)


def c1_accuracy(results: Results, runs: dict[str, dict], models: list[str]) -> Claim:
    claim = "CNNs beat plain ViT on small data from scratch"
    paper = "ResNet-50 82.6 % > ViT-Ti 66.5 % (CIFAR-100)"
    vit, cnn = _vit(models), _cnn(models)
    if not (vit in runs and cnn in runs):
        return _missing("C1", claim, paper)
    a, b = runs[cnn]["test_acc"], runs[vit]["test_acc"]
    return Claim("C1", claim, paper, f"{cnn} {a:.1%} vs {vit} {b:.1%}", a > b)


def c2_nll_train(results: Results, runs: dict[str, dict], models: list[str]) -> Claim:
    claim = "The ViT gap is not overfitting: NLL_train and test error rise together"
    paper = "NLL_train 2.09 -> 2.57 as error 17 -> 35 % across models"
    rows = [runs[m] for m in models if m in runs]
    if len(rows) < 3:
        return _missing("C2", claim, paper)
    nll = [r["train_nll"] for r in rows]
    err = [1 - r["test_acc"] for r in rows]
    rho = _spearman(nll, err)
    return Claim(
        "C2", claim, paper, f"Spearman rank correlation {rho:+.2f} over {len(rows)} models", rho > 0
    )


def c4_nep(results: Results, runs, models) -> Claim:
    claim = "ViT has negative Hessian eigenvalues; ResNet almost none"
    paper = "NEP ViT > NEP ResNet ≈ 0"
    h_vit, h_cnn = _get(results, "hessian", _vit(models)), _get(results, "hessian", _cnn(models))
    if h_vit is None or h_cnn is None:
        return _missing("C4", claim, paper)
    return Claim(
        "C4", claim, paper, f"NEP {h_vit.nep:.1%} vs {h_cnn.nep:.1%}", h_vit.nep > h_cnn.nep
    )


def c5_ape(results: Results, runs, models) -> Claim:
    claim = "ViT's positive Hessian eigenvalues are smaller (flatter) than ResNet's"
    paper = "APE ViT ≈ 36 vs ResNet ≈ 294 at warm-up"
    h_vit, h_cnn = _get(results, "hessian", _vit(models)), _get(results, "hessian", _cnn(models))
    if h_vit is None or h_cnn is None:
        return _missing("C5", claim, paper)
    return Claim(
        "C5", claim, paper, f"APE {h_vit.ape:.3g} vs {h_cnn.ape:.3g}", h_vit.ape < h_cnn.ape
    )


def landscape_rise(result, radius: float) -> float:
    """Mean of loss - centre loss over the L-infinity box of `radius` (paper.md §5, C8)."""
    xs, ys, loss = result.xs, result.ys or [0.0], result.loss
    cx, cy = (
        min(range(len(xs)), key=lambda i: abs(xs[i])),
        min(range(len(ys)), key=lambda j: abs(ys[j])),
    )
    centre = loss[cy][cx] if result.dims == 2 else loss[0][cx]
    rows = loss if result.dims == 2 else [loss[0]]
    vals = [
        rows[j][i] - centre
        for j in range(len(rows))
        for i in range(len(xs))
        if abs(xs[i]) <= radius + 1e-9 and (result.dims == 1 or abs(ys[j]) <= radius + 1e-9)
    ]
    return statistics.fmean(vals)


def c8_landscape(results: Results, runs, models) -> Claim:
    claim = "The loss landscape (NLL + L2, augmented data) is flatter for ViT"
    paper = "mean rise at radius 0.5 / 1.0: ViT +5.8 / +15.1 vs ResNet +9.5 / +24.9"
    l_vit, l_cnn = (
        _get(results, "landscape", _vit(models)),
        _get(results, "landscape", _cnn(models)),
    )
    if l_vit is None or l_cnn is None:
        return _missing("C8", claim, paper)
    v, c = landscape_rise(l_vit, 1.0), landscape_rise(l_cnn, 1.0)
    v5, c5 = landscape_rise(l_vit, 0.5), landscape_rise(l_cnn, 0.5)
    return Claim(
        "C8", claim, paper, f"ViT +{v5:.3g} / +{v:.3g} vs ResNet +{c5:.3g} / +{c:.3g}", v < c
    )


def _block_deltas(values: list[float], kinds: list[str], kind: str) -> list[float]:
    """Change of a per-block quantity across each block of `kind` (from the block before)."""
    return [values[i] - values[i - 1] for i in range(1, len(values)) if kinds[i] == kind]


def c9_fourier(results: Results, runs, models) -> Claim:
    claim = "MSAs are low-pass: they lower high-frequency amplitude; Convs and MLPs raise it"
    paper = "most ViT MSA blocks lower ΔLog amplitude at 1.0π; MLPs/Convs raise it"
    f = _get(results, "fourier", _vit(models))
    if f is None:
        return _missing("C9", claim, paper)
    msa = _block_deltas(f.high_frequency, f.kinds, "msa")
    mlp = _block_deltas(f.high_frequency, f.kinds, "mlp")
    if not msa or not mlp:
        return _missing("C9", claim, paper)
    down = sum(d < 0 for d in msa) / len(msa)
    return Claim(
        "C9",
        claim,
        paper,
        f"{down:.0%} of MSA blocks lower it (mean {statistics.fmean(msa):+.3f}); "
        f"MLP mean {statistics.fmean(mlp):+.3f}",
        statistics.fmean(msa) < statistics.fmean(mlp),
    )


def c10_freqnoise(results: Results, runs, models) -> Claim:
    claim = "ViT is robust to high-frequency noise, ResNet to low-frequency noise"
    paper = "at 0.8–0.9π ViT −4.3/−4.8 pp vs ResNet −13.6/−15.4 pp"
    r_vit, r_cnn = (
        _get(results, "freqnoise", _vit(models)),
        _get(results, "freqnoise", _cnn(models)),
    )
    if r_vit is None or r_cnn is None:
        return _missing("C10", claim, paper)

    # Judged at the largest eps both were swept over: where the noise bites, not within noise.
    common = set(r_vit.eps_values or [r_vit.eps]) & set(r_cnn.eps_values or [r_cnn.eps])
    if not common:
        return _missing("C10", claim, paper)
    eps = max(common)

    def high(r) -> float:
        curves = r.curves(eps)["delta_accuracy"] if r.by_eps else r.delta_accuracy
        deltas = next(iter(curves.values()))
        hi = [d for f, d in zip(r.frequencies, deltas, strict=True) if f >= 0.75]
        return statistics.fmean(hi)

    v, c = high(r_vit), high(r_cnn)
    return Claim(
        "C10",
        claim,
        paper,
        f"Δacc at ≥0.8π, ε = {eps:g}: ViT {v * 100:+.1f} pp vs ResNet {c * 100:+.1f} pp",
        v > c,
    )


def c11_variance(results: Results, runs, models) -> Claim:
    claim = "MSAs reduce feature-map variance; Convs and MLPs increase it"
    paper = "all 12 ViT-Ti MSA blocks lower the variance"
    r = _get(results, "variance", _vit(models))
    if r is None:
        return _missing("C11", claim, paper)
    msa = _block_deltas(r.variance, r.kinds, "msa")
    mlp = _block_deltas(r.variance, r.kinds, "mlp")
    if not msa:
        return _missing("C11", claim, paper)
    down = sum(d < 0 for d in msa) / len(msa)
    return Claim(
        "C11",
        claim,
        paper,
        f"{down:.0%} of MSA blocks lower it; "
        f"{sum(d > 0 for d in mlp) / max(len(mlp), 1):.0%} of MLP blocks raise it",
        down > 0.5,
    )


def c12_cka(results: Results, runs, models) -> Claim:
    claim = "Multi-stage models show block-structured CKA; ViT is uniform"
    paper = "block-diagonal for ResNet/PiT/Swin, uniform for ViT"
    r_vit, r_cnn = _get(results, "cka", _vit(models)), _get(results, "cka", _cnn(models))
    if r_vit is None or r_cnn is None:
        return _missing("C12", claim, paper)

    def mean_offdiag(m: list[list[float]]) -> float:
        n = len(m)
        return statistics.fmean(m[i][j] for i in range(n) for j in range(n) if i != j)

    v, c = mean_offdiag(r_vit.matrix), mean_offdiag(r_cnn.matrix)
    return Claim(
        "C12", claim, paper, f"mean CKA between blocks: ViT {v:.2f} vs ResNet {c:.2f}", v > c
    )


def c13_lesion(results: Results, runs, models) -> Claim:
    claim = "MSAs at the end of a stage matter more than the blocks before them"
    paper = "Swin: last MSA of stages 2/3/4 −1.44/−0.56/−1.88 pp; mid-stage units −0.16 … −0.39"
    model = _pick(models, ("alternet", "swin"))
    r = _get(results, "lesion", model)
    if r is None:
        return _missing("C13", claim, paper)
    msa = [d for d, k in zip(r.delta_accuracy, r.kinds, strict=True) if k == "msa"]
    other = [d for d, k in zip(r.delta_accuracy, r.kinds, strict=True) if k != "msa"]
    if not msa or not other:
        return _missing("C13", claim, paper)
    a, b = statistics.fmean(msa), statistics.fmean(other)
    return Claim(
        "C13",
        claim,
        paper,
        f"{model}: MSA lesions {a * 100:+.1f} pp vs other blocks {b * 100:+.1f} pp",
        a < b,
    )


def c14_alternet(results: Results, runs, models) -> Claim:
    claim = "AlterNet beats its CNN baseline"
    paper = "pre-act ResNet-50 82.48 % -> AlterNet-50 84.02 %"
    alt, cnn = _pick(models, ("alternet",)), _cnn(models)
    if not (alt in runs and cnn in runs):
        return _missing("C14", claim, paper)
    a, b = runs[alt]["test_acc"], runs[cnn]["test_acc"]
    return Claim("C14", claim, paper, f"{alt} {a:.1%} vs {cnn} {b:.1%}", a >= b)


CHECKS: list[Callable[..., Claim]] = [
    c1_accuracy,
    c2_nll_train,
    c4_nep,
    c5_ape,
    c8_landscape,
    c9_fourier,
    c10_freqnoise,
    c11_variance,
    c12_cka,
    c13_lesion,
    c14_alternet,
]


def evaluate_claims(results: Results, runs: dict[str, dict], models: list[str]) -> list[Claim]:
    """Every claim, measured on this study (or marked not measured)."""
    return [check(results, runs, models) for check in CHECKS]


def _spearman(a: list[float], b: list[float]) -> float:
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
