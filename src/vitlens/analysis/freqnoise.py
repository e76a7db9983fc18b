"""Robustness to frequency-band noise: the change in accuracy per noise frequency (paper Fig. 2b).

Park & Kim (ICLR 2022), §3 / Fig. 2b: ViTs lose most accuracy under low-frequency noise (peak near
0.3pi), ResNets under high-frequency noise (0.9pi). The noise is the authors' FreqAttack(Random)
(paper.md §1.10): eps * sign(N(0, 1)) per pixel and channel, band-passed to the annulus
`frequency +- window / 2` (units of pi) of the centred spectrum (`vitlens.robustness.freqnoise`).

Input convention: `batches` yield images in [0, 1] (float) or uint8, before normalisation, and
`normalize=(mean, std)` is applied inside. Where the noise goes (`space`):

- "normalized" (default, as the authors): added to the normalised inputs, no clamping; eps is in
  normalised units (the authors' `Random` default is 0.007; their issue-#44 sketch uses 0.7).
- "pixel": added to the [0, 1] images, clamped to [0, 1], then normalised; eps is in pixel units.

eps defaults to the authors' 0.7 (their issue #44): at 0.1 the accuracy changes of a small CIFAR
model stay within noise (|Δacc| <= 2.3 pp on the quick vit_nano), at 0.7 they reach the paper's
order of magnitude. Several eps can be swept in one pass (`eps=(0.1, 0.3, 0.7)`): the Result keeps
one set of band curves per eps (`by_eps`), and its top-level curves are those of the largest eps.
At every eps a batch gets the same sign pattern; only its amplitude changes.

Energy (`energy`): on small images the bands hold very different numbers of frequencies, so the
authors' noise is much stronger in some bands than in others (2.9x the RMS at 0.9pi as at 0.1pi on
28 x 28 pixels); that, not the models, shapes the curve. By default ("equal") every image's noise
in every band is rescaled to one RMS, `equal_energy_rms`: the RMS the authors' noise has averaged
in power over the bands, so a sweep carries their total energy spread evenly. "authors" keeps
their unnormalised construction. The Result records which, and the RMS of the noise per band.
The RMS is measured where the noise is added (`space`): with the authors' "normalized" space it
is in units of the normalised image, which is a fixed multiple of pixel units on a one-channel
dataset (one std) and a per-channel mix of them on RGB; `space="pixel"` equalises it in pixels.

Every model sees the same noise: batch b at frequency f uses the seed `mix_seed(seed, f, b)`.
Frequencies are split across torchrun ranks; metric sums are added across ranks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from vitlens import distributed as dist
from vitlens.analysis.claim import (
    Claim,
    Difference,
    StudyView,
    judged,
    msas_attend,
    not_measured,
    requires,
    the_vit,
)
from vitlens.analysis.perturbed import (
    Normalization,
    as_unit_float,
    batch_count,
    normalizer,
    reduce_sums,
)
from vitlens.analysis.registry import register_analysis
from vitlens.analysis.result import Provenance, Result
from vitlens.analysis.spec import AnalysisSpec, Budget, Figure, Inputs, Option
from vitlens.analysis.streaming import Batch, evaluating, model_name, resolve_device, stream
from vitlens.analysis.streaming import progress_bar as work_bar
from vitlens.anatomy import anatomy_of
from vitlens.data.dataset import mix_seed
from vitlens.errors import VitlensError
from vitlens.robustness.freqnoise import (
    DEFAULT_FREQUENCIES,
    band_mask,
    band_noise,
    equal_energy_rms,
    rescale_rms,
    rms,
)
from vitlens.train.metrics import MetricSums

#: The authors' amplitude (their issue #44), in normalised units.
DEFAULT_EPS = 0.7


@dataclass(frozen=True)
class FreqNoiseResult(Result):
    """Accuracy of one or more models under frequency-band noise.

    Attributes:
        models: model names, in order.
        frequencies: band centres in units of pi.
        eps: amplitude of the sign noise before band-passing; with a sweep, the largest eps,
            the one `accuracy`, `nll` and `delta_accuracy` belong to.
        eps_values: every eps evaluated, ascending.
        window: full width of the band in units of pi.
        space: "normalized" or "pixel" (where the noise was added; see the module docstring).
        energy: "equal" (every band's noise rescaled to one RMS) or "authors" (unnormalised:
            the band's share of the sign noise's power). Results saved before the option
            existed read "authors".
        noise_rms: mean RMS over images of the noise added in each band (units of `space`),
            at the largest eps.
        seed: seed of the noise.
        image_size: (H, W).
        normalize_mean, normalize_std: the normalisation ([] for none).
        n_images: images evaluated per frequency.
        clean_accuracy, clean_nll: model -> value on the clean images.
        accuracy, nll: model -> one value per frequency.
        delta_accuracy: model -> accuracy minus clean accuracy, per frequency (fractions).
        by_eps: one entry per eps of `eps_values`: {"eps", "accuracy", "nll", "delta_accuracy",
            "rms"}, shaped as the top-level fields (`rms` as `noise_rms`).
    """

    analysis: ClassVar[str] = "freqnoise"
    schema: ClassVar[int] = 1

    models: list[str] = field(default_factory=list)
    frequencies: list[float] = field(default_factory=list)
    eps: float = 0.0
    eps_values: list[float] = field(default_factory=list)
    window: float = 0.1
    space: str = "normalized"
    energy: str = "authors"
    noise_rms: list[float] = field(default_factory=list)
    seed: int = 0
    image_size: list[int] = field(default_factory=list)
    normalize_mean: list[float] = field(default_factory=list)
    normalize_std: list[float] = field(default_factory=list)
    n_images: int = 0
    clean_accuracy: dict[str, float] = field(default_factory=dict)
    clean_nll: dict[str, float] = field(default_factory=dict)
    accuracy: dict[str, list[float]] = field(default_factory=dict)
    nll: dict[str, list[float]] = field(default_factory=dict)
    delta_accuracy: dict[str, list[float]] = field(default_factory=dict)
    by_eps: list[dict[str, Any]] = field(default_factory=list)

    def curves(self, eps: float) -> dict[str, Any]:
        """The `by_eps` entry of `eps` (a VitlensError if it was not evaluated)."""
        for entry in self.by_eps:
            if entry["eps"] == eps:
                return entry
        raise VitlensError(f"eps {eps:g} was not evaluated; the result has {self.eps_values}")


def _named(models: nn.Module | Sequence[nn.Module] | Mapping[str, nn.Module]) -> dict:
    if isinstance(models, nn.Module):
        models = [models]
    if isinstance(models, Mapping):
        named = {str(k): m for k, m in models.items()}
    else:
        named = {}
        for m in models:
            name = model_name(m)
            k, i = name, 2
            while k in named:  # two models of one class: name#2, name#3
                k, i = f"{name}#{i}", i + 1
            named[k] = m
    if not named:
        raise VitlensError("no models to evaluate")
    return named


def frequency_noise_robustness(
    models: nn.Module | Sequence[nn.Module] | Mapping[str, nn.Module],
    batches: Iterable[Batch],
    *,
    eps: float | Sequence[float] = DEFAULT_EPS,
    frequencies: Sequence[float] = DEFAULT_FREQUENCIES,
    window: float = 0.1,
    space: Literal["normalized", "pixel"] = "normalized",
    energy: Literal["equal", "authors"] = "equal",
    normalize: Normalization | None = None,
    seed: int = 0,
    max_batches: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    provenance: Provenance | None = None,
) -> FreqNoiseResult:
    """Accuracy change of each model when band-limited sign noise is added to its inputs.

    Args:
        models: One model, a list (named by `model_name`) or a mapping name -> model.
        batches: `(images, labels)`; images in [0, 1] (float) or uint8, not normalised.
        eps: Amplitude of the sign noise before band-passing (units of `space`), or several
            amplitudes to sweep (default: the authors' 0.7).
        frequencies: Band centres in units of pi (default 0.1 ... 0.9).
        window: Full width of each band in units of pi (the paper's 0.1pi).
        space: "normalized" (the authors': added after normalisation, no clamp) or "pixel"
            (added to the [0, 1] image, clamped, then normalised).
        energy: "equal" (default): every band's noise rescaled per image to one RMS,
            `equal_energy_rms` (the authors' average); "authors": their unnormalised noise.
        normalize: `(mean, std)` per channel; None feeds [0, 1] images.
        seed: Seed of the noise (combined with frequency and batch index).
        max_batches: Use at most this many batches (None: all).
        device: "cpu", "cuda", "mps" or "auto".
        progress: Show a progress bar.
        provenance: What to record; wall time and device are filled in (model: the names).

    Raises:
        VitlensError: bad eps, window or space, a band with no frequency of the image, images
            outside [0, 1], or empty data.
    """
    started = time.perf_counter()
    setting = _Setting.checked(frequencies, eps, window, space, seed, energy)
    named = _named(models)
    device = resolve_device(device)
    for m in named.values():
        m.to(device)
    sums = _evaluate(named, batches, setting, normalize, max_batches, device, progress)
    provenance = dataclasses.replace(
        provenance or Provenance.now(),
        device=str(device),
        wall_seconds=time.perf_counter() - started,
    )
    if not provenance.model:
        provenance = dataclasses.replace(provenance, model=", ".join(named))
    return _result(list(named), setting, sums, provenance)


@dataclass(frozen=True)
class _Setting:
    frequencies: list[float]
    eps_values: list[float]
    window: float
    space: str
    seed: int
    energy: str

    @staticmethod
    def checked(frequencies, eps, window, space, seed, energy) -> _Setting:
        values = [float(eps)] if isinstance(eps, (int, float)) else [float(e) for e in eps]
        if not values or not all(e > 0 for e in values):
            raise VitlensError(f"eps must be positive (one value or several), got {eps}")
        if space not in ("normalized", "pixel"):
            raise VitlensError(f"space must be 'normalized' or 'pixel', got {space!r}")
        if energy not in ("equal", "authors"):
            raise VitlensError(f"energy must be 'equal' or 'authors', got {energy!r}")
        freqs = [float(f) for f in frequencies]
        if not freqs:
            raise VitlensError("no frequencies to evaluate")
        return _Setting(freqs, sorted(set(values)), float(window), space, seed, energy)

    def noise(self, shape, j: int, i: int, batch: int) -> torch.Tensor:
        """The noise of eps `j`, frequency `i`, batch `batch`: the same for every model and (up
        to amplitude) every eps, as the seed depends on frequency and batch only."""
        f = self.frequencies[i]
        g = torch.Generator().manual_seed(mix_seed(self.seed, round(f * 1e6), batch))
        delta = band_noise(shape, self.eps_values[j], f, self.window, generator=g)
        if self.energy == "authors":
            return delta
        target = equal_energy_rms(*shape[-2:], self.eps_values[j], self.frequencies, self.window)
        return rescale_rms(delta, target)


@dataclass
class _Sums:
    """What one pass over the data adds up: metric sums clean[model] and noisy[model, eps
    index, frequency index], the summed noise RMS per (eps index, frequency index), and the
    image size and normalisation seen."""

    clean: dict
    noisy: dict
    rms: dict
    size: list[int] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)


def _evaluate(named, batches, setting: _Setting, normalize, max_batches, device, progress) -> _Sums:
    """One pass over the data: every model clean and under every band and eps."""
    freqs, eps_values = setting.frequencies, setting.eps_values
    norm, mean, std = normalizer(normalize, device)
    mine = list(range(len(freqs)))[dist.rank() :: dist.world()]
    bands = [(j, i) for i in range(len(freqs)) for j in range(len(eps_values))]
    sums = _Sums(
        clean={k: MetricSums() for k in named},
        noisy={(k, j, i): MetricSums() for k in named for j, i in bands},
        rms=torch.zeros(len(eps_values), len(freqs), dtype=torch.float64),
        mean=mean,
        std=std,
    )
    n_batches = batch_count(batches, max_batches)
    total = None if n_batches is None else n_batches * (len(mine) * len(eps_values) + 1)
    with contextlib.ExitStack() as stack:
        for m in named.values():
            stack.enter_context(evaluating(m))
        stack.enter_context(torch.no_grad())
        advance = stack.enter_context(work_bar("frequency noise", total, progress))
        data = stream(batches, max_batches=max_batches, device=device)
        for b, (images, labels) in enumerate(data):
            x = as_unit_float(images)
            if not sums.size:
                sums.size = [int(x.shape[-2]), int(x.shape[-1])]
                for f in freqs:
                    band_mask(*sums.size, f, setting.window)  # fail early on an empty band
            xn = norm(x)
            if dist.is_main():  # the clean pass is counted once across ranks
                for k, m in named.items():
                    sums.clean[k].add(_logits(m, xn), labels)
            advance()
            for j, i in ((j, i) for j, i in bands if i in mine):
                delta = setting.noise(x.shape, j, i, b)
                sums.rms[j, i] += float(rms(delta).sum())
                delta = delta.to(device)
                noisy = (
                    xn + delta if setting.space == "normalized" else norm((x + delta).clamp(0, 1))
                )
                for k, m in named.items():
                    sums.noisy[k, j, i].add(_logits(m, noisy), labels)
                advance()
    reduce_sums([*sums.clean.values(), *sums.noisy.values()])
    sums.rms = dist.all_reduce_sum(sums.rms)
    return sums


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return anatomy_of(model, need_blocks=False).forward(model, x).float()


def _result(names, setting: _Setting, sums: _Sums, provenance) -> FreqNoiseResult:
    c0 = {k: s.result() for k, s in sums.clean.items()}
    rows = {key: s.result() for key, s in sums.noisy.items()}
    n_freqs = len(setting.frequencies)
    n_images = rows[names[0], 0, 0]["samples"]
    by_eps = []
    for j, e in enumerate(setting.eps_values):
        acc = {k: [rows[k, j, i]["acc"] for i in range(n_freqs)] for k in names}
        by_eps.append(
            {
                "eps": e,
                "accuracy": acc,
                "nll": {k: [rows[k, j, i]["nll"] for i in range(n_freqs)] for k in names},
                "delta_accuracy": {k: [a - c0[k]["acc"] for a in acc[k]] for k in names},
                "rms": [float(v) / max(n_images, 1) for v in sums.rms[j]],
            }
        )
    top = by_eps[-1]  # the largest eps
    return FreqNoiseResult(
        models=names,
        frequencies=setting.frequencies,
        eps=top["eps"],
        eps_values=list(setting.eps_values),
        window=float(setting.window),
        space=setting.space,
        energy=setting.energy,
        noise_rms=top["rms"],
        seed=setting.seed,
        image_size=sums.size,
        normalize_mean=sums.mean,
        normalize_std=sums.std,
        n_images=n_images,
        clean_accuracy={k: c0[k]["acc"] for k in names},
        clean_nll={k: c0[k]["nll"] for k in names},
        accuracy=top["accuracy"],
        nll=top["nll"],
        delta_accuracy=top["delta_accuracy"],
        by_eps=by_eps,
        provenance=provenance,
    )


# -- the paper's claim this analysis measures, and its spec -------------------------------------


@requires(msas_attend(the_vit))
def c10_frequency_noise(view: StudyView) -> Claim:
    claim = "ViT is robust to high-frequency noise, ResNet to low-frequency noise"
    paper = "at 0.8–0.9π ViT −4.3/−4.8 pp vs ResNet −13.6/−15.4 pp"
    r_vit, r_cnn = view.pair("freqnoise")
    if r_vit is None or r_cnn is None:
        return not_measured("C10", claim, paper)
    if r_vit.energy != "equal" or r_cnn.energy != "equal":
        why = "not measured: C10 is judged on bands of equal energy; these Results used the "
        return Claim("C10", claim, paper, why + "authors' unnormalised bands", None)

    # Judged at the largest eps both were swept over: where the noise bites, not within noise.
    common = set(r_vit.eps_values or [r_vit.eps]) & set(r_cnn.eps_values or [r_cnn.eps])
    if not common:
        return not_measured("C10", claim, paper)
    eps = max(common)

    v, c = _high_band_drop(r_vit, eps), _high_band_drop(r_cnn, eps)
    measured = (
        f"Δacc at ≥0.8π, ε = {eps:g}, bands of equal energy: ViT {v.value * 100:+.1f} pp vs "
        f"ResNet {c.value * 100:+.1f} pp"
    )
    diff = Difference(v.value - c.value, math.hypot(v.stderr, c.stderr))
    claim = Claim("C10", claim, paper, measured, diff.value > 0, diff.value)
    return judged(claim, diff, "the high-band accuracy drop over the test images", ".1%")


def _high_band_drop(r: FreqNoiseResult, eps: float) -> Difference:
    """The accuracy change from clean to noisy, averaged over the bands at ≥0.75π, and its
    binomial standard error over the `n_images` images (NaN when the Result does not say how
    many). The bands and the clean pass are treated as independent samples; they share the
    images, so this overstates the noise, as `accuracy_difference` does."""
    curves = (
        r.curves(eps) if r.by_eps else {"accuracy": r.accuracy, "delta_accuracy": r.delta_accuracy}
    )
    model = r.models[0] if r.models else next(iter(curves["delta_accuracy"]))
    high = [i for i, f in enumerate(r.frequencies) if f >= 0.75]
    drop = statistics.fmean(curves["delta_accuracy"][model][i] for i in high)
    if not r.n_images:
        return Difference(drop, float("nan"))
    accs = [curves["accuracy"][model][i] for i in high]
    noisy_var = sum(a * (1 - a) for a in accs) / r.n_images / len(accs) ** 2
    clean = r.clean_accuracy.get(model, statistics.fmean(accs) - drop)
    return Difference(drop, math.sqrt(noisy_var + clean * (1 - clean) / r.n_images))


EPS_SWEEP = [0.1, 0.3, DEFAULT_EPS]


def _run(inputs: Inputs) -> FreqNoiseResult:
    return frequency_noise_robustness(
        {inputs.name: inputs.model},
        inputs.batches,
        normalize=inputs.normalize,
        seed=inputs.seed,
        device=inputs.device,
        progress=inputs.progress,
        provenance=inputs.provenance,
        **inputs.options,
    )


SPEC = register_analysis(
    AnalysisSpec(
        name="freqnoise",
        summary="accuracy under frequency-band noise (paper Fig. 2b)",
        run=_run,
        function=frequency_noise_robustness,
        data="test_unit",
        section="features",
        order=90,
        # The study sweeps eps so the report shows where the noise bites (issue #44's 0.7).
        budgets={
            "analyze": Budget(None, 256),
            "quick": Budget(2, 250, {"eps": EPS_SWEEP}),
            "standard": Budget(8, 250, {"eps": EPS_SWEEP}),
            "paper": Budget(None, 256, {"eps": EPS_SWEEP}),
        },
        options=(
            Option(
                "eps",
                DEFAULT_EPS,
                "noise amplitude before band-passing, or a list to sweep",
                kind="float",
                positive=True,
                maximum=100,
                many=True,
            ),
            Option(
                "window",
                0.1,
                "full width of each band, in units of π",
                kind="float",
                positive=True,
                maximum=2,
            ),
            Option(
                "energy",
                "equal",
                "equal: every band's noise at one RMS; authors: unscaled",
                kind="choice",
                choices=("equal", "authors"),
            ),
        ),
        figures=(
            Figure(
                "freqnoise",
                "vitlens.report.plots.freqnoise:plot_frequency_noise",
                "Change in accuracy under frequency-band noise, models overlaid (paper Fig. 2b). "
                "By default every band's noise has the same RMS (equal energy; the authors' "
                "unscaled bands differ in strength on small images); the title says which.",
            ),
        ),
        claims=(c10_frequency_noise,),
    )
)

__all__ = ["DEFAULT_EPS", "FreqNoiseResult", "frequency_noise_robustness"]
