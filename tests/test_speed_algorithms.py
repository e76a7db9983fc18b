"""The faster eigen-solvers (issue 14): batched Hessian-vector products, block Lanczos, gap bound.

Numbers only, never timings: batched products equal single ones, block Lanczos and the gap
stopping rule find the dense spectrum's eigenvalues, and the Hessian spectrum computed with
batched products equals the one computed with single products to 1e-6 relative.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vitlens.analysis.curvature import HessianOperator
from vitlens.analysis.hessian import hessian_spectrum
from vitlens.analysis.linalg import MatrixOperator, block_lanczos, lanczos, matmat
from vitlens.data import BatchMixer
from vitlens.models import create_model

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def matrix_with_spectrum(eigenvalues: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    return q @ torch.diag(eigenvalues.to(F64)) @ q.T


SPECTRUM = torch.cat(
    [torch.tensor([10.0, -8.0, 6.0, 4.5, 3.0, -2.5], dtype=F64), torch.linspace(-1, 1, 54)]
)


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return create_model(
        "vit_nano", num_classes=3, image_size=16, in_chans=1, depth=2, dim=16, heads=2, mlp_dim=32
    ).double()


@pytest.fixture(scope="module")
def vit_batch():
    g = torch.Generator().manual_seed(7)
    return torch.randn(6, 1, 16, 16, generator=g, dtype=F64), torch.randint(0, 3, (6,), generator=g)


class SingleProducts:
    """The same operator with its batched `matmat` hidden: blocks go through one matvec each."""

    def __init__(self, op: HessianOperator) -> None:
        self.op, self.size, self.dtype, self.device = op, op.size, op.dtype, op.device

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.op.matvec(v)


def test_batched_hessian_products_equal_single_ones(vit_batch):
    with HessianOperator(tiny_vit(), vit_batch, objective="nll+l2", weight_decay=0.05) as op:
        block = torch.randn(op.size, 5, generator=torch.Generator().manual_seed(1), dtype=F64)
        batched = op.matmat(block)
        single = torch.stack([op.matvec(block[:, i]) for i in range(5)], dim=1)
        assert op.n_matvecs == 10
    torch.testing.assert_close(batched, single, rtol=1e-12, atol=1e-12)


def test_matmat_falls_back_to_single_products():
    a = matrix_with_spectrum(SPECTRUM)
    v = torch.randn(60, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    op = MatrixOperator(a)
    torch.testing.assert_close(matmat(op, v), a @ v)

    class OnlyMatvec:
        size, dtype, device = 60, F64, torch.device("cpu")

        def matvec(self, x):
            return a @ x

    torch.testing.assert_close(matmat(OnlyMatvec(), v), a @ v)


@pytest.mark.parametrize("which", ["largest", "smallest", "both", "magnitude"])
@pytest.mark.parametrize("block_size", [1, 3])
def test_block_lanczos_finds_known_extreme_eigenvalues(which, block_size):
    ordered = torch.sort(SPECTRUM, descending=True).values
    expected = {
        "largest": ordered[:5],
        "smallest": ordered.flip(0)[:5],
        "both": torch.cat([ordered[:5], ordered[-5:]]),
        "magnitude": SPECTRUM[torch.argsort(SPECTRUM.abs(), descending=True)][:5],
    }[which]
    a = matrix_with_spectrum(SPECTRUM)
    eigs = block_lanczos(
        MatrixOperator(a), 5, block_size=block_size, which=which, tol=1e-10, return_vectors=True
    )
    assert eigs.converged
    torch.testing.assert_close(eigs.eigenvalues, expected, atol=1e-8, rtol=0)
    torch.testing.assert_close(a @ eigs.eigenvectors, eigs.eigenvectors * eigs.eigenvalues)


def test_block_lanczos_recovers_repeated_eigenvalues():
    # A block of 3 sees all three copies of 5 at once (a single vector sees one).
    spectrum = torch.tensor([5.0, 5.0, 5.0, 1.0, 1.0, 0.0, -3.0] + [0.5] * 13, dtype=F64)
    eigs = block_lanczos(MatrixOperator(matrix_with_spectrum(spectrum, 3)), 4, block_size=3)
    torch.testing.assert_close(eigs.eigenvalues, torch.tensor([5.0, 5, 5, 1], dtype=F64))


@pytest.mark.parametrize("which", ["largest", "magnitude", "both"])
def test_gap_bound_stops_earlier_and_still_meets_the_tolerance(which):
    a = matrix_with_spectrum(SPECTRUM, seed=4)
    exact = torch.linalg.eigvalsh(a)
    residual = lanczos(MatrixOperator(a), 5, which=which, tol=1e-6, seed=3, bound="residual")
    gap = lanczos(MatrixOperator(a), 5, which=which, tol=1e-6, seed=3, bound="gap")
    assert gap.converged and residual.converged
    assert gap.n_matvecs < residual.n_matvecs
    # Every returned value is within tol * max|lambda| of a true eigenvalue.
    scale = exact.abs().max()
    errors = (gap.eigenvalues[:, None] - exact[None, :]).abs().min(dim=1).values
    assert bool((errors <= 1e-6 * scale).all())


def test_gap_bound_rejects_unknown_rules():
    with pytest.raises(ValueError, match="bound"):
        lanczos(MatrixOperator(matrix_with_spectrum(SPECTRUM)), 2, bound="cheap")


def test_hessian_spectrum_with_batched_products_equals_single_products(vit_batch, monkeypatch):
    """Same block Lanczos, products batched (one vmapped double backward) or one at a time."""
    model = tiny_vit()
    data = [(vit_batch[0], vit_batch[1])]
    kwargs = dict(
        weight_decay=0.05,
        k=2,
        batch_size=3,
        n_batches=1,
        augment=BatchMixer(3),
        tol=1e-6,
        seed=1,
        block_size=3,
    )
    batched = hessian_spectrum(model, data, **kwargs)
    monkeypatch.setattr(HessianOperator, "matmat", property(lambda self: None))
    single = hessian_spectrum(model, data, **kwargs)
    assert batched.block_size == single.block_size == 3 and batched.bound == "gap"
    assert batched.n_matvecs == single.n_matvecs
    for b, s in zip(batched.eigenvalues, single.eigenvalues, strict=True):
        torch.testing.assert_close(torch.tensor(b), torch.tensor(s), rtol=1e-6, atol=0)
    # And block Lanczos agrees with plain Lanczos (single products) within the tolerance.
    plain = hessian_spectrum(model, data, **{**kwargs, "block_size": 1})
    scale = max(abs(v) for v in plain.eigenvalues[0])
    for b, p in zip(batched.eigenvalues, plain.eigenvalues, strict=True):
        assert sorted(b) == pytest.approx(sorted(p), abs=2e-6 * scale)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_eigensolvers_refuse_an_operator_whose_products_are_not_finite(bad):
    from vitlens.errors import VitlensError

    matrix = torch.eye(6, dtype=torch.float64)
    matrix[2, 3] = matrix[3, 2] = bad  # eigh would fail to converge (or return garbage)
    for solve in (lanczos, block_lanczos):
        with pytest.raises(VitlensError, match="not finite"):
            solve(MatrixOperator(matrix), 1, max_iter=6)
