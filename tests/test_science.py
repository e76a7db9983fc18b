"""The paper's own definitions and the extra tools of issue 13: frequency-noise eps default and
sweep, Hessian spectral density and trace, Hessian-eigenvector and interpolation landscapes, PCA
trajectories."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

from vitlens.analysis import load_result
from vitlens.analysis.freqnoise_eval import DEFAULT_EPS, FreqNoiseResult, frequency_noise_robustness
from vitlens.analysis.result import Provenance
from vitlens.data.dataset import mix_seed
from vitlens.robustness.freqnoise import band_noise


def _noise_batches(n=2, size=20):
    g = torch.Generator().manual_seed(0)
    return [
        (torch.rand(16, 1, size, size, generator=g), torch.randint(0, 3, (16,), generator=g))
        for _ in range(n)
    ]


class _Recorder(nn.Module):
    """A fixed random linear classifier that records its inputs."""

    def __init__(self, size=20):
        super().__init__()
        torch.manual_seed(1)
        self.fc = nn.Linear(size * size, 3)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.clone())
        return self.fc(x.flatten(1)) * 20


# -- frequency-noise eps ----------------------------------------------------------------------


def test_freqnoise_defaults_to_the_authors_eps_and_records_it():
    r = frequency_noise_robustness(_Recorder(), _noise_batches(), frequencies=[0.3, 0.9])
    assert DEFAULT_EPS == 0.7 and r.eps == 0.7 and r.eps_values == [0.7]
    assert [e["eps"] for e in r.by_eps] == [0.7]
    assert r.by_eps[0]["delta_accuracy"] == r.delta_accuracy


def test_freqnoise_sweep_keeps_band_curves_per_eps_and_round_trips(tmp_path):
    batches, freqs = _noise_batches(), [0.3, 0.9]
    model = _Recorder()
    sweep = frequency_noise_robustness(model, batches, eps=(0.7, 0.1, 0.3), frequencies=freqs)
    assert sweep.eps_values == [0.1, 0.3, 0.7] and sweep.eps == 0.7
    assert [e["eps"] for e in sweep.by_eps] == [0.1, 0.3, 0.7]
    # The top-level curves are the largest eps's.
    assert sweep.delta_accuracy == sweep.curves(0.7)["delta_accuracy"]
    # Each eps gives exactly what a run at that eps alone gives (the same noise, same seeds).
    for e in (0.1, 0.3, 0.7):
        single = frequency_noise_robustness(model, batches, eps=e, frequencies=freqs)
        entry = sweep.curves(e)
        assert entry["accuracy"] == single.accuracy and entry["nll"] == single.nll
        assert entry["delta_accuracy"] == single.delta_accuracy
    # Batch 0 at frequency 0.3: the noise the model saw is band_noise at each eps.
    model.seen.clear()
    frequency_noise_robustness(model, batches[:1], eps=(0.1, 0.7), frequencies=[0.3])
    clean, at_small, at_large = model.seen
    for seen, e in ((at_small, 0.1), (at_large, 0.7)):
        g = torch.Generator().manual_seed(mix_seed(0, 300000, 0))
        torch.testing.assert_close(seen - clean, band_noise(clean.shape, e, 0.3, 0.1, generator=g))
    torch.testing.assert_close((at_large - clean) / 7, at_small - clean)  # one sign pattern
    saved = load_result(sweep.save(tmp_path / "freqnoise.json"))
    assert saved == sweep and isinstance(saved, FreqNoiseResult)
    with pytest.raises(Exception, match="not evaluated"):
        sweep.curves(0.5)


@pytest.mark.parametrize("eps", [0.0, -0.1, (), (0.1, 0.0)])
def test_freqnoise_rejects_non_positive_eps(eps):
    from vitlens.errors import VitlensError

    with pytest.raises(VitlensError, match="eps must be positive"):
        frequency_noise_robustness(_Recorder(), _noise_batches(1), eps=eps)


def _freq_result(model: str, curves: dict[float, list[float]]) -> FreqNoiseResult:
    eps_values = sorted(curves)
    by_eps = [
        {"eps": e, "accuracy": {model: [0.5] * 2}, "nll": {model: [1.0] * 2},
         "delta_accuracy": {model: curves[e]}}
        for e in eps_values
    ]  # fmt: skip
    return FreqNoiseResult(
        models=[model],
        frequencies=[0.3, 0.9],
        eps=eps_values[-1],
        eps_values=eps_values,
        accuracy=by_eps[-1]["accuracy"],
        nll=by_eps[-1]["nll"],
        delta_accuracy=by_eps[-1]["delta_accuracy"],
        by_eps=by_eps,
        provenance=Provenance(model=model),
    )


def test_c10_is_judged_at_the_largest_eps():
    from vitlens.report.claims import c10_freqnoise

    # At 0.1 the ViT looks worse at high frequency (noise); at 0.7 it is clearly better.
    vit = _freq_result("vit_nano", {0.1: [0.0, -0.02], 0.7: [-0.20, -0.04]})
    cnn = _freq_result("resnet_nano", {0.1: [0.0, -0.01], 0.7: [-0.02, -0.15]})
    results = {"freqnoise": {"vit_nano": vit, "resnet_nano": cnn}}
    claim = c10_freqnoise(results, {}, ["vit_nano", "resnet_nano"])
    assert claim.holds is True and "ε = 0.7" in claim.measured
    assert "-4.0 pp" in claim.measured and "-15.0 pp" in claim.measured


def test_freqnoise_figure_draws_every_eps(tmp_path):
    from vitlens.report.figures_robustness import plot_frequency_noise

    vit = _freq_result("vit_nano", {0.1: [0.0, -0.02], 0.3: [-0.05, -0.03], 0.7: [-0.2, -0.04]})
    single = _freq_result("vit_nano", {0.7: [-0.2, -0.04]})
    sweep_png = plot_frequency_noise(vit, tmp_path / "sweep.png")
    single_png = plot_frequency_noise(single, tmp_path / "single.png")
    for p in (sweep_png, single_png):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(p).size[0] > 300
    assert sweep_png.read_bytes() != single_png.read_bytes()
