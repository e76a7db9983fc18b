"""Loss-surface analyses against analytic oracles: linalg, Hessian, landscape, trajectory, plots."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vitlens.analysis import load_result
from vitlens.analysis.curvature import HessianOperator, ParamSelection, select_parameters
from vitlens.analysis.hessian import HessianResult, hessian_spectrum, nep_ape
from vitlens.analysis.landscape import (
    LandscapeResult,
    loss_landscape,
    normalize_direction,
    random_direction,
)
from vitlens.analysis.linalg import (
    MatrixOperator,
    gaussian_density,
    hutchinson_trace,
    hutchpp_trace,
    lanczos,
    power_iteration,
    slq_density,
)
from vitlens.analysis.trajectory import TrajectoryResult, polar_trajectory
from vitlens.data import BatchMixer
from vitlens.models import create_model

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only spin against each other on a shared 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def spd_with_spectrum(eigenvalues: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Q diag(eigenvalues) Q^T with a seeded random orthogonal Q."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=g, dtype=F64))
    return q @ torch.diag(eigenvalues.to(F64)) @ q.T


# Well-separated ends (for power iteration), a bulk in [-1, 1].
SPECTRUM = torch.cat(
    [
        torch.tensor([10.0, -8.0, 6.0, 4.5, 3.0, -2.5], dtype=F64),
        torch.linspace(-1, 1, 54, dtype=F64),
    ]
)


@pytest.fixture(scope="module")
def matrix() -> torch.Tensor:
    return spd_with_spectrum(SPECTRUM)


# ------------------------------------------------------------------------------------ linalg


@pytest.mark.parametrize("which", ["largest", "smallest", "both", "magnitude"])
def test_lanczos_finds_known_extreme_eigenvalues(matrix, which):
    ordered = torch.sort(SPECTRUM, descending=True).values
    expected = {
        "largest": ordered[:5],
        "smallest": ordered.flip(0)[:5],
        "both": torch.cat([ordered[:5], ordered[-5:]]),
        "magnitude": SPECTRUM[torch.argsort(SPECTRUM.abs(), descending=True)][:5],
    }[which]
    eigs = lanczos(MatrixOperator(matrix), 5, which=which, tol=1e-10, seed=1, return_vectors=True)
    assert eigs.converged
    torch.testing.assert_close(eigs.eigenvalues, expected, atol=1e-8, rtol=0)
    # Ritz vectors are eigenvectors: A y = lambda y.
    torch.testing.assert_close(
        matrix @ eigs.eigenvectors, eigs.eigenvectors * eigs.eigenvalues, atol=1e-7, rtol=0
    )


def test_lanczos_recovers_repeated_eigenvalues_by_restarting():
    spectrum = torch.tensor([5.0, 5.0, 5.0, 1.0, 1.0, 0.0, -3.0] + [0.5] * 13, dtype=F64)
    eigs = lanczos(MatrixOperator(spd_with_spectrum(spectrum, 3)), 4, tol=1e-10)
    torch.testing.assert_close(eigs.eigenvalues, torch.tensor([5.0, 5, 5, 1], dtype=F64))


def test_power_iteration_finds_top_magnitudes(matrix):
    eigs = power_iteration(MatrixOperator(matrix), 5, tol=1e-13, max_iter=3000, seed=1)
    assert eigs.converged
    expected = torch.tensor([10.0, -8.0, 6.0, 4.5, 3.0], dtype=F64)
    torch.testing.assert_close(eigs.eigenvalues, expected, atol=1e-8, rtol=0)
    assert (
        eigs.n_matvecs > lanczos(MatrixOperator(matrix), 5, which="magnitude", tol=1e-10).n_matvecs
    )


def test_trace_estimators_within_their_error_bars():
    decaying = 100.0 * 0.7 ** torch.arange(80, dtype=F64)  # Hutch++ shines on decaying spectra
    op = MatrixOperator(spd_with_spectrum(decaying, 5))
    true = decaying.sum().item()
    plain = hutchinson_trace(op, 60, seed=2)
    plus = hutchpp_trace(op, 60, seed=2)
    assert plus.n_matvecs == 60
    assert abs(plain.estimate - true) < 4 * plain.stderr
    assert abs(plus.estimate - true) < max(4 * plus.stderr, 1e-9 * true)
    assert abs(plus.estimate - true) < abs(plain.estimate - true) + 1e-9
    assert plus.stderr < plain.stderr


def test_slq_moments_and_density(matrix):
    op = MatrixOperator(matrix)
    dens = slq_density(op, n_vectors=40, n_steps=20, seed=0)
    torch.testing.assert_close(dens.weights.sum(dim=1), torch.ones(40, dtype=F64))
    for p in (1, 2, 3):
        est = dens.moment(lambda t, p=p: t**p)
        true = (SPECTRUM**p).sum().item()
        assert abs(est.estimate - true) < 4 * est.stderr, (p, est, true)
        # Gauss quadrature with 20 nodes is exact for degree < 40: per vector z it returns
        # z^T A^p z, i.e. Hutchinson on A^p with the same Rademacher draws.
        same = hutchinson_trace(MatrixOperator(torch.linalg.matrix_power(matrix, p)), 40, seed=0)
        assert est.estimate == pytest.approx(same.estimate, rel=1e-9)
    # With as many steps as dimensions the quadrature is exact per vector; the smoothed density
    # of one normalized Rademacher vector matches the true smoothed density in expectation.
    full = slq_density(op, n_vectors=30, n_steps=60, seed=5)
    grid = torch.linspace(-12, 12, 241, dtype=F64)
    sigma = 0.5
    got = gaussian_density(full, grid, sigma)
    truth = (
        torch.exp(-0.5 * ((grid[:, None] - SPECTRUM) / sigma) ** 2)
        / (sigma * math.sqrt(2 * math.pi))
    ).mean(dim=1)
    assert (got - truth).abs().sum().item() * 0.1 < 0.15  # L1 distance of two densities
    assert abs(got.sum().item() * 0.1 - 1.0) < 1e-3


# ------------------------------------------------------------------------------------ hessian


class Quadratic(nn.Module):
    """f(theta) = 1/(2n) ||X theta - b||^2 as 'model + criterion': Hessian X^T X / n."""

    def __init__(self, d: int):
        super().__init__()
        self.theta = nn.Parameter(torch.randn(d, dtype=F64))

    def forward(self, x):
        return x @ self.theta


def half_mse(pred, target):
    return 0.5 * ((pred - target) ** 2).mean()


def test_hvp_of_a_quadratic_is_exact():
    torch.manual_seed(0)
    x, b = torch.randn(30, 8, dtype=F64), torch.randn(30, dtype=F64)
    model = Quadratic(8)
    op = HessianOperator(model, (x, b), criterion=half_mse)
    H = x.T @ x / 30
    v = torch.randn(8, dtype=F64)
    torch.testing.assert_close(op.matvec(v), H @ v, atol=1e-13, rtol=0)
    top = lanczos(op, 2, which="both", tol=1e-12)
    torch.testing.assert_close(
        top.eigenvalues, torch.linalg.eigvalsh(H)[[-1, -2, 1, 0]], atol=1e-10, rtol=0
    )


def test_hvp_matches_softmax_regression_closed_form():
    torch.manual_seed(1)
    n, d, K = 40, 5, 3
    x, y = torch.randn(n, d, dtype=F64), torch.randint(0, K, (n,))
    model = nn.Linear(d, K).double()
    op = HessianOperator(model, (x, y))
    # Per sample: (diag(p) - p p^T) kron x~ x~^T with x~ = [x, 1], over theta~ = [W | b] row-major.
    p = torch.softmax(model(x), dim=1).detach()
    xt = torch.cat([x, torch.ones(n, 1, dtype=F64)], dim=1)
    A = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    H = torch.einsum("nkl,nj,nm->kjlm", A, xt, xt).reshape(K * (d + 1), K * (d + 1)) / n
    order = [k * (d + 1) + j for k in range(K) for j in range(d)] + [
        k * (d + 1) + d for k in range(K)
    ]
    H = H[order][:, order]  # to the [weight.flatten(), bias] order of named_parameters
    for _ in range(3):
        v = torch.randn(op.size, dtype=F64)
        torch.testing.assert_close(op.matvec(v), H @ v, atol=1e-12, rtol=0)


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return create_model(
        "vit_nano", num_classes=3, image_size=16, in_chans=1, depth=2, dim=16, heads=2, mlp_dim=32
    ).double()


@pytest.fixture(scope="module")
def vit_batch():
    g = torch.Generator().manual_seed(7)
    return torch.randn(6, 1, 16, 16, generator=g, dtype=F64), torch.randint(0, 3, (6,), generator=g)


def test_vit_hvp_matches_finite_differences_of_gradients(vit_batch):
    model = tiny_vit()
    op = HessianOperator(model, vit_batch)
    v = torch.randn(op.size, dtype=F64, generator=torch.Generator().manual_seed(0))
    v = v / v.norm()
    hv = op.matvec(v)
    theta = nn.utils.parameters_to_vector(model.parameters()).detach().clone()

    def grad_at(t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            nn.utils.vector_to_parameters(t, model.parameters())
        with HessianOperator(model, vit_batch) as g:
            return g.gradient()

    eps = 1e-4
    fd = (grad_at(theta + eps * v) - grad_at(theta - eps * v)) / (2 * eps)
    with torch.no_grad():
        nn.utils.vector_to_parameters(theta, model.parameters())
    assert (fd - hv).norm() / hv.norm() < 1e-6


def test_l2_shifts_every_eigenvalue_by_weight_decay(vit_batch):
    model = tiny_vit()
    wd = 0.05
    plain = HessianOperator(model, vit_batch)
    l2 = HessianOperator(model, vit_batch, objective="nll+l2", weight_decay=wd)
    # The L2 operator agrees with double backprop through NLL + wd/2 ||theta||^2 itself.
    params = list(model.parameters())
    from vitlens.analysis.loss_surface import nll_loss
    from vitlens.anatomy import explicit_attention

    with explicit_attention(model):
        loss = nll_loss(model(vit_batch[0]), vit_batch[1])
        loss = loss + 0.5 * wd * sum(p.pow(2).sum() for p in params)
        grads = torch.autograd.grad(loss, params, create_graph=True)
    v = torch.randn(l2.size, dtype=F64, generator=torch.Generator().manual_seed(1))
    sizes = [p.numel() for p in params]
    pieces = [t.view_as(p) for t, p in zip(v.split(sizes), params, strict=True)]
    direct = torch.cat([h.reshape(-1) for h in torch.autograd.grad(grads, params, pieces)])
    torch.testing.assert_close(l2.matvec(v), direct, atol=1e-10, rtol=1e-10)
    assert l2.l2 == pytest.approx(0.5 * wd * sum(float(p.detach().pow(2).sum()) for p in params))
    a = lanczos(plain, 3, which="both", tol=1e-9, seed=3).eigenvalues
    b = lanczos(l2, 3, which="both", tol=1e-9, seed=3).eigenvalues
    torch.testing.assert_close(b - a, torch.full_like(a, wd), atol=1e-8, rtol=0)


def test_parameter_subset_is_the_hessian_sub_block(vit_batch):
    model = tiny_vit()
    chosen = select_parameters(model, ParamSelection(kinds=("msa",)), vit_batch[0])
    names = [n for n, _ in chosen]
    assert names and all(".attn." in n or ".norm1." in n for n in names)
    sub = HessianOperator(model, vit_batch, params=ParamSelection(kinds=("msa",)))
    full = HessianOperator(model, vit_batch)
    mask = torch.cat(
        [
            torch.full((p.numel(),), n in names, dtype=torch.bool)
            for n, p in model.named_parameters()
        ]
    )
    v = torch.randn(sub.size, dtype=F64)
    padded = torch.zeros(full.size, dtype=F64)
    padded[mask] = v
    torch.testing.assert_close(sub.matvec(v), full.matvec(padded)[mask], atol=1e-12, rtol=1e-10)
    stage = select_parameters(model, ParamSelection(stages=(0,), prefixes=("head",)), vit_batch[0])
    assert [n for n, _ in stage] == ["head.weight", "head.bias"]


def test_hessian_spectrum_pools_minibatches_and_round_trips(tmp_path, vit_batch):
    model = tiny_vit()
    data = [
        (vit_batch[0][:4].float(), vit_batch[1][:4]),
        (vit_batch[0][4:].float(), vit_batch[1][4:]),
    ]
    before = [p.detach().clone() for p in model.parameters()]
    result = hessian_spectrum(
        model, data, weight_decay=0.05, k=2, batch_size=3, augment=BatchMixer(3), tol=1e-6, seed=2
    )
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert result.batch_index == [0, 1] and len(result.pooled()) == 4
    assert (result.nep, result.ape) == nep_ape(result.pooled())
    again = hessian_spectrum(
        model, data, weight_decay=0.05, k=2, batch_size=3, augment=BatchMixer(3), tol=1e-6, seed=2
    )
    assert again.eigenvalues == result.eigenvalues  # seeded: augmentation and start vectors
    power = hessian_spectrum(
        model,
        data,
        weight_decay=0.05,
        k=2,
        batch_size=3,
        augment=BatchMixer(3),
        method="power",
        tol=1e-10,
        max_iter=2000,
        seed=2,
    )
    for lan, pw in zip(result.eigenvalues, power.eigenvalues, strict=True):
        assert sorted(lan) == pytest.approx(sorted(pw), rel=1e-4)
    loaded = load_result(result.save(tmp_path / "hessian.json"))
    assert isinstance(loaded, HessianResult) and loaded == result


def test_train_mode_leaves_batchnorm_statistics_and_modes_untouched():
    torch.manual_seed(0)
    model = create_model("resnet_nano", num_classes=3, image_size=16, in_chans=1)
    model.eval()
    x, y = torch.randn(4, 1, 16, 16), torch.randint(0, 3, (4,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with HessianOperator(model, (x, y), train_mode=True, seed=0) as op:
        hv = op.matvec(torch.ones(op.size))
    with HessianOperator(model, (x, y)) as op:  # eval mode: running statistics, another Hessian
        assert not torch.allclose(op.matvec(torch.ones(op.size)), hv)
    loss_landscape(model, [(x, y)], dims=1, steps=2, train_mode=True)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m.training for m in model.modules())


def test_fixed_batches_rechunk_and_seed_each_minibatch():
    from vitlens.analysis.loss_surface import fixed_batches

    data = [(torch.arange(5.0).view(5, 1, 1, 1), torch.arange(5)) for _ in range(2)]
    chunks = list(fixed_batches(data, batch_size=4))
    assert [(i, t.tolist()) for i, _, t in chunks] == [(0, [0, 1, 2, 3]), (1, [4, 0, 1, 2])]
    mixer = BatchMixer(5)
    full = list(fixed_batches(data, batch_size=2, augment=mixer, seed=9))
    odd = list(fixed_batches(data, batch_size=2, augment=mixer, seed=9, skip=lambda i: i % 2 == 0))
    assert [i for i, _, _ in odd] == [1, 3]
    assert all(torch.equal(full[i][2], t) for i, _, t in odd)  # skipping others changes nothing


def test_nep_ape():
    assert nep_ape([-2.0, 1.0, 3.0, -1.0]) == (0.5, 2.0)


# ---------------------------------------------------------------------------------- landscape


def test_filter_normalization_matches_filter_norms():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 4, 3, 3, generator=g, dtype=F64)
    d = torch.randn(6, 4, 3, 3, generator=g, dtype=F64)
    li = normalize_direction(d, w, "filter")
    torch.testing.assert_close(li.flatten(1).norm(dim=1), w.flatten(1).norm(dim=1))
    ours = normalize_direction(d, w, "filter_dim0")  # the authors': norms over dim 0
    torch.testing.assert_close(ours.norm(dim=0), w.norm(dim=0), rtol=1e-6, atol=0)


def test_directions_skip_1d_params_and_position_embeddings():
    model = tiny_vit()
    direction = random_direction(model, seed=0)
    assert "pos_embed" not in direction and not any(n.endswith("bias") for n in direction)
    assert "blocks.0.attn.qkv.weight" in direction
    w = model.blocks[0].attn.qkv.weight
    torch.testing.assert_close(
        direction["blocks.0.attn.qkv.weight"].norm(dim=1), w.detach().norm(dim=1)
    )
    again = random_direction(model, seed=0)
    assert all(torch.equal(direction[n], again[n]) for n in direction)


def test_1d_landscape_of_a_quadratic_is_the_analytic_parabola():
    torch.manual_seed(0)
    x, b = torch.randn(20, 5, dtype=F64), torch.randn(20, dtype=F64)
    model = nn.Linear(5, 1, bias=False).double()
    theta = model.weight.detach().clone()
    d = {"weight": torch.randn(1, 5, dtype=F64)}
    wd = 0.3
    for conv in ("half_squared", "authors"):
        result = loss_landscape(
            model,
            [(x, b)],
            dims=1,
            steps=7,
            span=2.0,
            directions=[d],
            weight_decay=wd,
            l2=conv,
            criterion=lambda out, t: half_mse(out[:, 0], t),
        )
        for a, got in zip(result.xs, result.loss[0], strict=True):
            w = theta + a * d["weight"]
            reg = 0.5 * w.pow(2).sum() if conv == "half_squared" else w.norm()
            expected = half_mse((x @ w.T)[:, 0], b) + wd * reg
            assert got == pytest.approx(expected.item(), rel=1e-12)
    assert torch.equal(model.weight, theta)


def test_2d_landscape_restores_parameters_bit_exactly_and_round_trips(tmp_path, vit_batch):
    model = tiny_vit().float()
    x, y = vit_batch[0].float(), vit_batch[1]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = [(x[:3], y[:3]), (x[3:], y[3:])]
    kw = dict(steps=3, span=0.5, weight_decay=0.05, augment=BatchMixer(3), seed=1)
    result = loss_landscape(model, data, **kw)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    grid_outer = loss_landscape(model, data, order="grid_outer", **kw)
    assert grid_outer.loss == result.loss  # same fixed batches, same points, any loop order
    assert result.grid().shape == (3, 3) and result.n_samples == 6
    centre = result.nll[1][1]
    from vitlens.analysis.loss_surface import fixed_batches, nll_loss

    with torch.no_grad():
        ref = sum(
            nll_loss(model(xb), tb).item() * xb.shape[0]
            for _, xb, tb in fixed_batches(data, augment=BatchMixer(3), seed=1)
        )
    assert centre == pytest.approx(ref / 6, rel=1e-6)
    assert "pos_embed" in result.excluded and "blocks.0.attn.proj.bias" in result.excluded
    loaded = load_result(result.save(tmp_path / "landscape.json"))
    assert isinstance(loaded, LandscapeResult) and loaded == result


# --------------------------------------------------------------------------------- trajectory


def test_polar_trajectory_of_known_snapshots(tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "run" / "snapshots"
    folder.mkdir(parents=True)
    e = torch.eye(3)
    # w* = (1, 1, 1) (+ a BN statistic that must be ignored); w_0 - w* = 2 e1; w_5 - w* = e2.
    star = torch.ones(3)
    snaps = {0: star + 2 * e[0], 5: star + e[1], 7: star - e[0], 9: star}
    for epoch, w in snaps.items():
        save_file(
            {"w": w.reshape(1, 3), "bn.running_mean": torch.randn(3)},
            str(folder / f"epoch{epoch:04d}.safetensors"),
        )
    result = polar_trajectory(tmp_path / "run")
    assert result.epochs == [0, 5, 7, 9]
    assert result.radius == pytest.approx([1.0, 0.5, 0.5, 0.0])
    assert result.angle_deg == pytest.approx([0.0, 90.0, 180.0, 0.0])
    assert result.excluded == ["bn.running_mean"] and result.n_values == 3
    loaded = load_result(result.save(tmp_path / "traj.json"))
    assert isinstance(loaded, TrajectoryResult) and loaded == result


# ------------------------------------------------------------------------------------ figures


def test_figures_are_nonempty_pngs(tmp_path):
    from vitlens.report.plots.hessian import plot_hessian_spectra
    from vitlens.report.plots.landscape import plot_landscape, plot_landscape_curves
    from vitlens.report.plots.trajectory import plot_trajectory

    g = torch.Generator().manual_seed(0)
    spectra = [
        HessianResult(eigenvalues=(torch.randn(20, 5, generator=g) * s + m).tolist(), k=5)
        for s, m in ((10, 30), (50, 300))
    ]
    spectra = [
        HessianResult(eigenvalues=r.eigenvalues, nep=nep_ape(r.pooled())[0], k=5) for r in spectra
    ]
    xs = [-1.0, -0.5, 0.0, 0.5, 1.0]
    bowl = [[x * x + 2 * y * y for x in xs] for y in xs]
    surface = LandscapeResult(dims=2, xs=xs, ys=xs, loss=bowl, nll=bowl, l2=bowl, acc=bowl)
    line = LandscapeResult(dims=1, xs=xs, ys=[], loss=[[x * x for x in xs]])
    traj = TrajectoryResult(epochs=[0, 1, 2], radius=[1.0, 0.6, 0.0], angle_deg=[0.0, 40.0, 0.0])
    paths = [
        plot_hessian_spectra(spectra, tmp_path / "h.png", labels=["ViT", "ResNet"]),
        plot_landscape([surface], tmp_path / "l.png"),
        plot_landscape_curves([line, surface], tmp_path / "c.png", labels=["a", "b"]),
        plot_trajectory([traj], tmp_path / "t.png"),
    ]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


@pytest.mark.parametrize("train_mode", [False, True])
def test_hessian_of_a_batchnorm_model_keeps_its_graph_and_buffers(train_mode):
    # BatchNorm saves its running statistics in the graph: restoring buffers before the last
    # Hessian-vector product would invalidate it; afterwards they must be back bit-exactly.
    from vitlens.analysis.hessian import hessian_spectrum

    torch.manual_seed(0)
    model = create_model("resnet_nano", num_classes=4, image_size=16, in_chans=1).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(16, 1, 16, 16), torch.randint(0, 4, (16,))
    result = hessian_spectrum(
        model, [(x, y)], weight_decay=0.05, k=2, batch_size=8, n_batches=2, train_mode=train_mode
    )
    assert len(result.eigenvalues) == 2 and all(len(e) == 2 for e in result.eigenvalues)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training
