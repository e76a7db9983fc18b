"""The paper's own definitions and the extra tools of issue 13: frequency-noise eps default and
sweep, Hessian spectral density and trace, Hessian-eigenvector and interpolation landscapes, PCA
trajectories."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

from vitlens.analysis import load_result
from vitlens.analysis.freqnoise import DEFAULT_EPS, FreqNoiseResult, frequency_noise_robustness
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
    frequency_noise_robustness(
        model, batches[:1], eps=(0.1, 0.7), frequencies=[0.3], energy="authors"
    )
    clean, at_small, at_large = model.seen
    for seen, e in ((at_small, 0.1), (at_large, 0.7)):
        g = torch.Generator().manual_seed(mix_seed(0, 300000, 0))
        torch.testing.assert_close(seen - clean, band_noise(clean.shape, e, 0.3, 0.1, generator=g))
    # At equal energy (the default) the same sign pattern is rescaled to the common RMS.
    model.seen.clear()
    frequency_noise_robustness(model, batches[:1], eps=0.7, frequencies=[0.3, 0.9])
    clean, at_low, at_high = model.seen
    g = torch.Generator().manual_seed(mix_seed(0, 300000, 0))
    authors = band_noise(clean.shape, 0.7, 0.3, 0.1, generator=g)
    scale = (at_low - clean).flatten(1).norm(dim=1) / authors.flatten(1).norm(dim=1)
    torch.testing.assert_close(at_low - clean, authors * scale.view(-1, 1, 1, 1))
    rms_low, rms_high = ((d - clean).flatten(1).square().mean(1).sqrt() for d in (at_low, at_high))
    torch.testing.assert_close(rms_low, rms_high)
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
        energy="equal",
        provenance=Provenance(model=model),
    )


def test_c10_is_judged_at_the_largest_eps():
    from vitlens.analysis.claim import StudyView
    from vitlens.analysis.freqnoise import c10_frequency_noise

    # At 0.1 the ViT looks worse at high frequency (noise); at 0.7 it is clearly better.
    vit = _freq_result("vit_nano", {0.1: [0.0, -0.02], 0.7: [-0.20, -0.04]})
    cnn = _freq_result("resnet_nano", {0.1: [0.0, -0.01], 0.7: [-0.02, -0.15]})
    results = {"freqnoise": {"vit_nano": vit, "resnet_nano": cnn}}
    families = {"vit_nano": "vit", "resnet_nano": "resnet"}
    claim = c10_frequency_noise(StudyView(results, {}, list(families), families))
    assert claim.holds is True and "ε = 0.7" in claim.measured
    assert "-4.0 pp" in claim.measured and "-15.0 pp" in claim.measured


def test_freqnoise_figure_draws_every_eps(tmp_path):
    from vitlens.report.plots.freqnoise import plot_frequency_noise

    vit = _freq_result("vit_nano", {0.1: [0.0, -0.02], 0.3: [-0.05, -0.03], 0.7: [-0.2, -0.04]})
    single = _freq_result("vit_nano", {0.7: [-0.2, -0.04]})
    sweep_png = plot_frequency_noise(vit, tmp_path / "sweep.png")
    single_png = plot_frequency_noise(single, tmp_path / "single.png")
    for p in (sweep_png, single_png):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(p).size[0] > 300
    assert sweep_png.read_bytes() != single_png.read_bytes()


# -- Hessian: SLQ spectral density and Hutch++ trace ----------------------------------------


@pytest.fixture(scope="module")
def small_hessian():
    """A 51-parameter MLP, one batch, and its dense Hessian (NLL + L2) built column by column."""
    from vitlens.analysis.curvature import HessianOperator

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.randn(16, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (16,))
    with HessianOperator(model, (x, y), objective="nll+l2", weight_decay=0.05) as op:
        dense = torch.stack([op.matvec(e) for e in torch.eye(op.size, dtype=torch.float64)], 1)
        loss = op.loss
    dense = (dense + dense.T) / 2
    return model, [(x, y)], dense, loss


def _spectrum(model, data, **kw):
    from vitlens.analysis.hessian import hessian_spectrum

    return hessian_spectrum(model, data, weight_decay=0.05, k=3, batch_size=16, n_batches=1, **kw)


def test_slq_density_integrates_to_one_and_matches_the_dense_histogram(small_hessian, tmp_path):
    import numpy as np

    model, data, dense, loss = small_hessian
    eigenvalues = torch.linalg.eigvalsh(dense).numpy()
    r = _spectrum(model, data, density_vectors=64, density_steps=20, trace=False)
    assert r.loss == [pytest.approx(loss)]  # the same batch and objective as the dense one
    assert (r.density_vectors, r.density_steps, r.trace, r.trace_matvecs) == (64, 20, [], 0)
    nodes, weights = np.array(r.density_nodes[0]), np.array(r.density_weights[0])
    assert weights.sum() == pytest.approx(1.0) and len(nodes) == 64 * 20
    grid = np.linspace(eigenvalues.min() - 1, eigenvalues.max() + 1, 4001)
    smooth = np.array(r.spectral_density(grid.tolist(), sigma=0.02))
    assert np.trapezoid(smooth, grid) == pytest.approx(1.0, abs=1e-6)
    # Probability mass per histogram bin: SLQ's quadrature against the dense eigenvalues.
    edges = np.linspace(eigenvalues.min() - 1e-6, eigenvalues.max() + 1e-6, 9)
    slq_mass = np.histogram(nodes, edges, weights=weights)[0]
    dense_mass = np.histogram(eigenvalues, edges)[0] / len(eigenvalues)
    assert np.abs(slq_mass - dense_mass).sum() / 2 < 0.06  # total variation
    # The smoothed densities agree too (same Gaussian width on the dense eigenvalues).
    kernel = np.exp(-0.5 * ((grid[:, None] - eigenvalues[None]) / 0.2) ** 2)
    dense_smooth = kernel.sum(1) / (len(eigenvalues) * 0.2 * np.sqrt(2 * np.pi))
    slq_smooth = np.array(r.spectral_density(grid.tolist(), sigma=0.2))
    assert np.abs(slq_smooth - dense_smooth).max() < 0.1 * dense_smooth.max()
    # With as many Lanczos steps as parameters, the nodes are the exact eigenvalues.
    full = _spectrum(model, data, density_vectors=4, density_steps=51, trace=False)
    live = np.array(full.density_nodes[0])[np.array(full.density_weights[0]) > 1e-12]
    assert np.abs(live[:, None] - eigenvalues[None]).min(axis=1).max() < 1e-8
    assert load_result(r.save(tmp_path / "hessian.json")) == r


def test_hutchpp_trace_is_within_its_bound_of_the_dense_trace(small_hessian):
    model, data, dense, _ = small_hessian
    exact = float(dense.trace())
    r = _spectrum(model, data, density=False, trace_matvecs=30)
    assert r.density_nodes == [] and r.density_vectors == 0 and r.trace_matvecs == 30
    (estimate,), (stderr,) = r.trace, r.trace_stderr
    assert stderr > 0 and abs(estimate - exact) <= 3 * stderr
    assert r.mean_trace == estimate
    # A budget of 3 x n sketches the whole space: the estimate is exact.
    full = _spectrum(model, data, density=False, trace_matvecs=3 * 51)
    assert full.trace[0] == pytest.approx(exact, rel=1e-9)


def test_density_and_trace_options_are_checked(small_hessian):
    from vitlens.errors import ConfigError

    model, data, _, _ = small_hessian
    with pytest.raises(ConfigError, match="Hutch"):
        _spectrum(model, data, trace_matvecs=3)
    off = _spectrum(model, data, density=False, trace=False)
    assert off.density_nodes == [] and off.trace == [] and off.eigenvalues
    assert off.curvature_batch_index == []
    # Only the first `curvature_batches` minibatches pay for the density and trace.
    from vitlens.analysis.hessian import hessian_spectrum

    x, y = data[0]
    three = hessian_spectrum(
        model, [(x, y)] * 3, weight_decay=0.05, k=2, batch_size=16, curvature_batches=2,
        density_vectors=1, density_steps=8, trace_matvecs=12,
    )  # fmt: skip
    assert three.batch_index == [0, 1, 2] and three.curvature_batch_index == [0, 1]
    assert len(three.density_nodes) == len(three.trace) == 2
    with pytest.raises(Exception, match="no spectral density"):
        off.spectral_density([0.0], 0.1)


def test_hessian_figure_shows_the_density_beside_the_spectra(small_hessian, tmp_path):
    from vitlens.report.plots.hessian import plot_hessian_spectra

    model, data, _, _ = small_hessian
    with_density = _spectrum(model, data, density_vectors=2, density_steps=10)
    without = _spectrum(model, data, density=False, trace=False)
    wide = plot_hessian_spectra([with_density], tmp_path / "wide.png")
    narrow = plot_hessian_spectra([without], tmp_path / "narrow.png")
    assert Image.open(wide).size[0] > 1.7 * Image.open(narrow).size[0]  # a second panel


def test_cli_set_options_parse_to_analysis_options():
    from vitlens.analysis.registry import get_analysis
    from vitlens.analysis.runner import parse_options
    from vitlens.errors import VitlensError

    freqnoise, hessian, landscape = (get_analysis(n) for n in ("freqnoise", "hessian", "landscape"))
    assert parse_options(freqnoise, ["eps=0.1,0.3,0.7"]) == {"eps": [0.1, 0.3, 0.7]}
    assert parse_options(hessian, ["density=false", "k=3"]) == {"density": False, "k": 3}
    assert parse_options(landscape, ["directions=hessian"]) == {"directions": "hessian"}
    for bad in ("eps", "=1", "two words=1", "nope=1"):
        with pytest.raises(VitlensError, match="KEY=VALUE"):
            parse_options(freqnoise, [bad])


# -- landscapes along Hessian eigenvectors, and between two runs -------------------------------


def _flat(direction: dict[str, torch.Tensor], model: nn.Module) -> torch.Tensor:
    return torch.cat([direction[n].reshape(-1) for n, _ in model.named_parameters()])


def test_hessian_directions_are_orthonormal_top_eigenvectors(small_hessian):
    from vitlens.analysis.landscape import hessian_directions

    model, data, dense, _ = small_hessian
    directions, values = hessian_directions(model, data[0], 2, seed=3)
    d = torch.stack([_flat(v, model) for v in directions], dim=1)  # (n, 2)
    torch.testing.assert_close(d.T @ d, torch.eye(2, dtype=d.dtype), atol=1e-8, rtol=0)
    evals, evecs = torch.linalg.eigh(dense)  # dense = NLL Hessian + 0.05 I
    assert values == pytest.approx((evals.flip(0)[:2] - 0.05).tolist(), rel=1e-6)
    overlap = (evecs[:, -2:].flip(1).T @ d).abs().diagonal()
    assert overlap.min() > 1 - 1e-6  # the same eigenvectors, up to sign


def test_landscape_along_hessian_eigenvectors_curves_by_the_eigenvalue(small_hessian):
    from vitlens.analysis.landscape import loss_landscape

    model, data, _, _ = small_hessian
    before = [p.detach().clone() for p in model.parameters()]
    h = 1e-3
    r = loss_landscape(model, data, dims=2, steps=3, span=h, directions="hessian", seed=3)
    assert r.direction_kind == "hessian" and r.normalization == "none" and r.direction_seeds == []
    assert r.excluded == [] and r.n_perturbed == 51
    nll = r.grid("nll")
    # Second differences of the NLL along d1 and d2 are the two top eigenvalues.
    along_x = (nll[1, 2] - 2 * nll[1, 1] + nll[1, 0]) / h**2
    along_y = (nll[2, 1] - 2 * nll[1, 1] + nll[0, 1]) / h**2
    assert [along_x, along_y] == pytest.approx(r.direction_eigenvalues, rel=1e-3)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_linear_interpolation_between_two_runs(small_hessian, tmp_path):
    from vitlens.analysis.landscape import loss_landscape
    from vitlens.analysis.loss_surface import nll_loss
    from vitlens.errors import ConfigError

    model, data, _, _ = small_hessian
    torch.manual_seed(5)
    other = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    r = loss_landscape(model, data, dims=1, steps=7, other=other, margin=0.25)
    assert r.direction_kind == "interpolation" and r.dims == 1
    assert r.xs == pytest.approx([-0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25])
    x, y = data[0]
    with torch.no_grad():
        ends = [nll_loss(m(x), y).item() for m in (model, other)]
        half = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
        for p, a, b in zip(half.parameters(), model.parameters(), other.parameters(), strict=True):
            p.copy_((a + b) / 2)
        middle = nll_loss(half(x), y).item()
    assert [r.nll[0][1], r.nll[0][3], r.nll[0][5]] == pytest.approx([ends[0], middle, ends[1]])
    assert load_result(r.save(tmp_path / "interp.json")) == r
    with pytest.raises(ConfigError, match="same architecture"):
        loss_landscape(model, data, dims=1, other=nn.Sequential(nn.Linear(4, 3)).double())
    with pytest.raises(ConfigError, match="1-D"):
        loss_landscape(model, data, dims=2, other=other)


# -- PCA trajectories --------------------------------------------------------------------------


def _write_snapshots(folder, n=6, seed=0):
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    snaps = []
    for epoch in range(n):
        tensors = {
            "a": torch.randn(4, 5, generator=g) * (n - epoch),  # shrinking towards w*
            "b": torch.randn(7, generator=g) + epoch,
            "bn.running_var": torch.rand(3, generator=g),  # excluded: a BatchNorm statistic
        }
        save_file(tensors, str(folder / f"epoch{epoch:04d}.safetensors"))
        snaps.append(torch.cat([tensors["a"].reshape(-1), tensors["b"]]).double())
    return torch.stack(snaps)  # (n, 27), w* = last row


@pytest.mark.parametrize("center", [True, False])
def test_pca_directions_equal_an_svd_of_the_snapshot_differences(tmp_path, center):
    from vitlens.analysis.trajectory import find_snapshots, polar_trajectory, trajectory_pca

    weights = _write_snapshots(tmp_path / "run" / "snapshots")
    diffs = weights - weights[-1]
    fitted = diffs[:-1] - diffs[:-1].mean(0) if center else diffs[:-1]  # w* itself not fitted
    _, s, vh = torch.linalg.svd(fitted, full_matrices=False)
    want = vh[:2]
    want = want * torch.where(diffs[0] @ want.T < 0, -1.0, 1.0)[:, None]  # first point >= 0
    paths = [p for _, p in find_snapshots(tmp_path / "run")]
    pca = trajectory_pca(paths, paths[-1], ["a", "b"], center, return_directions=True)
    got = torch.cat([pca.directions["a"].reshape(2, -1), pca.directions["b"]], dim=1)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    torch.testing.assert_close(pca.singular_values, s[:2], atol=1e-10, rtol=0)
    torch.testing.assert_close(pca.coordinates, diffs @ want.T, atol=1e-10, rtol=0)
    torch.testing.assert_close(pca.explained, s[:2] ** 2 / (s**2).sum(), atol=1e-12, rtol=0)
    result = polar_trajectory(tmp_path / "run", pca_center=center)
    assert result.pca_center is center and result.excluded == ["bn.running_var"]
    coordinates = torch.tensor(result.pca_coordinates, dtype=torch.float64)
    torch.testing.assert_close(coordinates, pca.coordinates, atol=1e-12, rtol=0)
    assert result.pca_coordinates[-1] == [0.0, 0.0]  # w* at the origin
    assert load_result(result.save(tmp_path / "trajectory.json")) == result
    assert polar_trajectory(tmp_path / "run", pca=False).pca_coordinates == []


def test_trajectory_figure_shows_the_pca_path_beside_the_polar_one(tmp_path):
    from vitlens.analysis.trajectory import polar_trajectory
    from vitlens.report.plots.trajectory import plot_trajectory

    _write_snapshots(tmp_path / "run" / "snapshots")
    with_pca = polar_trajectory(tmp_path / "run")
    without = polar_trajectory(tmp_path / "run", pca=False)
    wide = plot_trajectory([with_pca], tmp_path / "wide.png")
    narrow = plot_trajectory([without], tmp_path / "narrow.png")
    assert Image.open(wide).size[0] > 1.7 * Image.open(narrow).size[0]


# -- through the runner ------------------------------------------------------------------------


def _fake_run(folder, seed: int):
    """A checkpoint of an untrained vit_nano for fashion-mnist-mini, as the trainer records it."""
    import dataclasses

    from vitlens.config import make_config
    from vitlens.models import create_model
    from vitlens.train.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    spec = {"name": "vit_nano", "num_classes": 10, "image_size": 28, "in_chans": 1, "args": {}}
    model = create_model("vit_nano", num_classes=10, image_size=28, in_chans=1)
    config = dataclasses.asdict(make_config("quick", model="vit_nano"))
    return save_checkpoint(folder, "final", model, None, {"model_spec": spec, "config": config})


def test_runner_defaults_eps_to_the_authors_and_interpolates_towards_other(tmp_path):
    from vitlens.analysis.runner import run_analysis
    from vitlens.report.figures import draw

    a, b = _fake_run(tmp_path / "a", 0), _fake_run(tmp_path / "b", 1)
    kw = dict(batches=1, batch_size=8, device="cpu", progress=False)
    noise = run_analysis("freqnoise", a, options={"frequencies": [0.5]}, **kw)
    assert noise.eps == 0.7 and noise.eps_values == [0.7]
    line = run_analysis("landscape", a, other=b, options={"steps": 3, "margin": 0.0}, **kw)
    assert line.direction_kind == "interpolation" and line.xs == [0.0, 0.5, 1.0]
    assert line.nll[0][0] != line.nll[0][2]  # the two ends are two different models
    assert [p.name for p in draw([line], tmp_path / "fig")] == ["landscape_1d.png"]
