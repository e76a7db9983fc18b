"""Symmetric linear operators and the spectral algorithms that need only matrix-vector products.

Curvature analyses (paper §2.1, Figs. 1c and 4) never form a Hessian: they apply it to vectors. As
in hessian-eigenthings 1.0, operators and algorithms are kept apart, so every algorithm here is
tested on explicit matrices first and then run unchanged on `vitlens.analysis.hessian`'s operator.

Algorithms (all on flat 1-D vectors; randomness only through `seed`):

- `lanczos`: extreme eigenvalues by the Lanczos process with full re-orthogonalization
  (Golub & Van Loan, *Matrix Computations*, §10.1); stops on a residual bound, or on the sharper
  gap bound |lambda - theta| <= r^2 / gap (Parlett, *The Symmetric Eigenvalue Problem*, §11.7).
  Each new Lanczos vector is orthogonalized against all previous ones (twice), so no ghost copies
  appear and the Ritz values are those of an exact Rayleigh-Ritz projection on the Krylov space.
  It stops when every wanted Ritz pair has residual ||A y - theta y|| = |beta_m s_m| <=
  tol * max|theta|; by Kahan's bound each value is then within that residual of an eigenvalue.
  With `bound="gap"` the test is on min(r, r^2 / gap) (see `_error_bounds`): once a Ritz value
  is separated from the others its error falls like the square of its residual, so this stops
  several steps earlier at the same tolerance on the eigenvalue itself. If the Krylov space
  becomes invariant first, it restarts from a random vector orthogonal to it, which also finds
  further copies of repeated eigenvalues (one start vector alone sees one copy).
- `block_lanczos`: the same Rayleigh-Ritz on a block Krylov space, so that each step applies the
  operator to `block_size` vectors at once (`matmat`: one batched double backward for the Hessian).
- `power_iteration`: power iteration with deflation by orthogonalization, exactly as PyHessian
  (Yao et al. 2020) does it; the paper's method, kept for comparison.
- `hutchinson_trace` (Hutchinson 1989) and `hutchpp_trace` (Meyer, Musco, Musco & Woodruff 2021):
  trace estimates with a standard error.
- `slq_density`: stochastic Lanczos quadrature (Lin, Saad & Yang 2016; Ubaru, Chen & Saad 2017;
  Ghorbani, Krishnan & Xiao 2019) and `gaussian_density` to smooth its nodes into a density.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch

from vitlens.errors import VitlensError

Which = Literal["largest", "smallest", "both", "magnitude"]
Bound = Literal["residual", "gap"]


@runtime_checkable
class LinearOperator(Protocol):
    """A symmetric linear map on flat vectors of length `size`."""

    size: int
    dtype: torch.dtype
    device: torch.device

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """Return A v for a 1-D tensor `v` of length `size`."""
        ...


class MatrixOperator:
    """An explicit symmetric matrix as a `LinearOperator` (for tests and small problems).

    Attributes:
        matrix: The (n, n) matrix.
        n_matvecs: Products computed so far.
    """

    def __init__(self, matrix: torch.Tensor) -> None:
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"need a square matrix, got shape {tuple(matrix.shape)}")
        self.matrix = matrix
        self.size = matrix.shape[0]
        self.dtype = matrix.dtype
        self.device = matrix.device
        self.n_matvecs = 0

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.n_matvecs += 1
        return self.matrix @ v

    def matmat(self, v: torch.Tensor) -> torch.Tensor:
        self.n_matvecs += v.shape[1]
        return self.matrix @ v


def matmat(op: LinearOperator, v: torch.Tensor) -> torch.Tensor:
    """A V for a (size, b) block: the operator's batched `matmat` if it has one, else b matvecs."""
    batched = getattr(op, "matmat", None)
    if batched is not None:
        return batched(v)
    return torch.stack([op.matvec(v[:, i]) for i in range(v.shape[1])], dim=1)


@dataclass(frozen=True)
class Eigs:
    """Eigenvalue estimates.

    Attributes:
        eigenvalues: (k,) values; order depends on the algorithm (see its docstring).
        eigenvectors: (size, k) unit columns, or None when not asked for.
        residuals: (k,) norms ||A y - theta y|| (a bound on each value's error).
        converged: Whether every requested value met the tolerance.
        n_matvecs: Operator applications spent.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor | None
    residuals: torch.Tensor
    converged: bool
    n_matvecs: int


@dataclass(frozen=True)
class TraceEstimate:
    """A stochastic trace estimate.

    Attributes:
        estimate: The trace estimate.
        stderr: Its standard error (sample standard deviation of the random part / sqrt(m)).
        n_matvecs: Operator applications spent.
    """

    estimate: float
    stderr: float
    n_matvecs: int


@dataclass(frozen=True)
class SpectralDensity:
    """Stochastic Lanczos quadrature: one Gauss quadrature rule per random vector.

    The spectral measure (1/n) sum_i delta(lambda_i) is approximated by
    (1/n_vectors) sum_v sum_j weights[v, j] delta(nodes[v, j]); each row of `weights` sums to 1.

    Attributes:
        nodes: (n_vectors, n_steps) Ritz values (padded with 0 where a run stopped early).
        weights: (n_vectors, n_steps) squared first components of the Ritz vectors (0 padding).
        size: The operator's dimension n (to turn averages into traces).
        n_matvecs: Operator applications spent.
    """

    nodes: torch.Tensor
    weights: torch.Tensor
    size: int
    n_matvecs: int

    def moment(self, f) -> TraceEstimate:
        """Estimate tr f(A) = n E_v[sum_j w_j f(theta_j)], with its standard error over vectors."""
        per_vector = self.size * (self.weights * f(self.nodes)).sum(dim=1)
        m = per_vector.numel()
        err = per_vector.std().item() / math.sqrt(m) if m > 1 else float("nan")
        return TraceEstimate(per_vector.mean().item(), err, self.n_matvecs)


def _generator(seed: int) -> torch.Generator:
    # CPU generator: the same seed gives the same vectors on every device.
    return torch.Generator(device="cpu").manual_seed(int(seed) % 2**63)


def _randn(op: LinearOperator, gen: torch.Generator) -> torch.Tensor:
    v = torch.randn(op.size, generator=gen, dtype=torch.float64)
    return (v / v.norm()).to(device=op.device, dtype=op.dtype)


def _rademacher(op: LinearOperator, gen: torch.Generator, m: int | None = None) -> torch.Tensor:
    shape = (op.size,) if m is None else (op.size, m)
    v = torch.randint(0, 2, shape, generator=gen, dtype=torch.int8).to(torch.float64) * 2 - 1
    return v.to(device=op.device, dtype=op.dtype)


class _Basis:
    """Growing row-stacked orthonormal basis Q (m, n); doubles its buffer instead of re-stacking."""

    def __init__(self, n: int, dtype: torch.dtype, device: torch.device, capacity: int = 16):
        self.rows = torch.empty(capacity, n, dtype=dtype, device=device)
        self.m = 0

    def append(self, v: torch.Tensor) -> None:
        if self.m == self.rows.shape[0]:
            self.rows = torch.cat([self.rows, torch.empty_like(self.rows)])
        self.rows[self.m] = v
        self.m += 1

    @property
    def q(self) -> torch.Tensor:
        return self.rows[: self.m]

    def orthogonalize(self, w: torch.Tensor) -> torch.Tensor:
        # Classical Gram-Schmidt twice ("twice is enough", Giraud et al. 2005).
        q = self.q
        for _ in range(2):
            w = w - q.T @ (q @ w)
        return w


def _tridiagonal_eigh(alphas: list[float], betas: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        b = torch.tensor(betas, dtype=torch.float64)
        t = t + torch.diag(b, 1) + torch.diag(b, -1)
    return finite_eigh(t)


def finite_eigh(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`torch.linalg.eigh` of a projected operator, refused when it holds NaN or inf: the
    operator's products overflowed (e.g. a random-init model whose Hessian-vector products are
    not finite), and eigh would fail with a LinAlgError or return garbage."""
    if not bool(torch.isfinite(t).all()):
        raise VitlensError(
            "the operator's products are not finite (NaN or inf): the eigenvalues cannot be "
            "computed; check the model's loss and its second derivatives at these weights"
        )
    return torch.linalg.eigh(t)


def _wanted(theta: torch.Tensor, k: int, which: Which) -> torch.Tensor:
    """Indices into ascending `theta` of the wanted Ritz values, in output order."""
    m = theta.numel()
    if which == "largest":
        return torch.arange(m - 1, m - 1 - min(k, m), -1)
    if which == "smallest":
        return torch.arange(min(k, m))
    if which == "magnitude":
        return torch.argsort(theta.abs(), descending=True, stable=True)[:k]
    top = set(range(m - 1, m - 1 - min(k, m), -1)) | set(range(min(k, m)))
    return torch.tensor(sorted(top, reverse=True), dtype=torch.long)  # both: descending


def _error_bounds(
    theta: torch.Tensor, idx: torch.Tensor, res: torch.Tensor, res_all: torch.Tensor, bound: Bound
) -> torch.Tensor:
    """Bounds on |lambda - theta_i| for the wanted Ritz values `theta[idx]` with residuals `res`.

    "residual": Kahan's r_i. "gap": min(r_i, r_i^2 / gap_i) with gap_i the distance from theta_i
    to the nearest other Ritz value less that value's own residual (`res_all`, all Ritz values),
    which stands in for the distance to the rest of the spectrum; r_i where that is not positive.
    """
    if bound == "residual":
        return res
    if bound != "gap":
        raise ValueError(f"bound must be 'residual' or 'gap', got {bound!r}")
    out = res.clone()
    for n, i in enumerate(idx.tolist()):
        others = torch.ones_like(theta, dtype=torch.bool)
        others[i] = False
        if not bool(others.any()):
            continue
        gap = ((theta[others] - theta[i]).abs() - res_all[others]).min().item()
        if gap > 0:
            out[n] = min(res[n].item(), res[n].item() ** 2 / gap)
    return out


def _block_settled(
    alphas: list[float], betas: list[float], beta: float, which: Which, bound: float
) -> bool:
    """After a restart, the new block's extreme Ritz values must converge too.

    Its not-yet-converged extreme Ritz value could still grow past the wanted ones (the block
    explores the complement of an invariant subspace, e.g. a second copy of a top eigenvalue).
    Without a restart the block is all of T and its extremes are already judged.
    """
    if len(alphas) == 0:
        return False
    theta, s = _tridiagonal_eigh(alphas, betas[: len(alphas) - 1])
    ends = {"largest": [-1], "smallest": [0]}.get(which, [0, -1])
    return all(abs(beta * s[-1, e].item()) <= bound for e in ends)


def lanczos(
    op: LinearOperator,
    k: int,
    *,
    which: Which = "largest",
    max_iter: int | None = None,
    tol: float = 1e-6,
    seed: int = 0,
    return_vectors: bool = False,
    bound: Bound = "residual",
) -> Eigs:
    """Extreme eigenvalues by Lanczos with full re-orthogonalization (see the module docstring).

    Args:
        op, k: The operator; how many eigenvalues (for `which="both"`, k at each end).
        which: "largest" (descending), "smallest" (ascending), "both" (2k values, descending),
            or "magnitude" (by descending |lambda|: what power iteration finds).
        max_iter: Most Lanczos steps (operator applications); default min(size, max(4k, 100)).
        tol: Tolerance on the error bound, relative to the largest |Ritz value|; `bound`:
            "residual" (Kahan: |lambda - theta| <= r) or "gap" (min(r, r^2 / gap)).
        seed, return_vectors: Seed of the start vector and restarts; also return the Ritz
            vectors (one extra (size, k) product with Q). Returns `Eigs` (float64, CPU).
    """
    n = op.size
    need = 2 * k if which == "both" else k
    max_iter = _lanczos_steps(n, need, max_iter)
    gen = _generator(seed)
    basis = _Basis(n, op.dtype, op.device)
    alphas, betas = [], []  # the tridiagonal T's diagonal and off-diagonal
    v, beta, converged = _randn(op, gen), 0.0, False
    block = 0  # first step of the current Krylov block (> 0 after a restart)
    for j in range(max_iter):
        basis.append(v)
        w = op.matvec(v)
        alpha = torch.dot(w, v).item()
        w = w - alpha * v
        if j > 0 and beta > 0:
            w = w - beta * basis.q[j - 1]
        w = basis.orthogonalize(w)
        alphas.append(alpha)
        beta = w.norm().item()
        theta, s = _tridiagonal_eigh(alphas, betas)
        scale = max(theta.abs().max().item(), torch.finfo(torch.float64).tiny)
        # Dropping a beta this small moves no Ritz value by more than the tolerance allows.
        invariant = beta <= min(tol, math.sqrt(torch.finfo(op.dtype).eps)) * scale
        if invariant and j + 1 < n:  # restart orthogonally to the (invariant) Krylov space
            v, beta, block = _restart(op, basis, gen, betas), 0.0, j + 1
            continue
        if j + 1 >= need and _ritz_settled(
            theta, s, beta, (k, which, bound, tol * scale), alphas[block:], betas[block:], block
        ):
            converged = True
            break
        if j + 1 < max_iter:
            betas.append(beta)
            v = w / beta
    # Converged or out of steps: report the current Ritz values and their residuals.
    idx = _wanted(theta, k, which)
    vectors = _ritz_vectors(op, basis, s[:, idx]) if return_vectors else None
    return Eigs(theta[idx], vectors, (beta * s[-1, idx]).abs(), converged, len(alphas))


def _restart(op: LinearOperator, basis: _Basis, gen, betas: list[float]) -> torch.Tensor:
    """A random unit vector orthogonal to the basis; T gets a zero off-diagonal. Restarting
    finds further copies of repeated eigenvalues."""
    betas.append(0.0)
    v = basis.orthogonalize(_randn(op, gen))
    return v / v.norm()


def _ritz_vectors(op: LinearOperator, basis: _Basis, s: torch.Tensor) -> torch.Tensor:
    """Q^T S: (n, m) @ (m, k) -> (n, k), in the operator's dtype and device."""
    return basis.q.T @ s.to(device=op.device, dtype=op.dtype)


def _lanczos_steps(n: int, need: int, max_iter: int | None) -> int:
    if not 1 <= need <= n:
        raise ValueError(f"cannot find {need} eigenvalues of a {n}-dimensional operator")
    return max(min(n, max_iter if max_iter is not None else max(4 * need, 100)), need)


def _ritz_settled(theta, s, beta, wanted, alphas, betas, block) -> bool:
    """Whether the wanted Ritz values are within tolerance (`wanted` = (k, which, bound,
    absolute tolerance)), and, after a restart, the current Krylov block has settled too."""
    k, which, bound, tol = wanted
    idx = _wanted(theta, k, which)
    res_all = (beta * s[-1]).abs()
    errors = _error_bounds(theta, idx, res_all[idx], res_all, bound)
    if not bool((errors <= tol).all()):
        return False
    return block == 0 or _block_settled(alphas, betas, beta, which, tol)


def _orthonormal_block(
    w: torch.Tensor, q: torch.Tensor | None, op: LinearOperator, gen: torch.Generator
) -> torch.Tensor:
    """Orthonormalize the columns of `w` against `q` (twice) and among themselves.

    A column that vanishes (the block Krylov space became invariant in that direction) is
    replaced by a random one orthogonal to everything so far, so the block keeps its width.
    """
    # Relative to the block before projection: what is left of a column below this is noise.
    floor = math.sqrt(torch.finfo(op.dtype).eps) * max(w.norm(dim=0).max().item(), 1e-300)
    for _ in range(2):
        if q is not None:
            w = w - q @ (q.T @ w)
    basis, r = torch.linalg.qr(w)
    for i in (r.diagonal().abs() <= floor).nonzero().flatten().tolist():
        fresh = torch.randn(op.size, generator=gen, dtype=torch.float64).to(op.device, op.dtype)
        done = basis[:, :i] if q is None else torch.cat([q, basis[:, :i]], dim=1)
        for _ in range(2):
            fresh = fresh - done @ (done.T @ fresh)
        basis[:, i] = fresh / fresh.norm()
    return basis


def block_lanczos(
    op: LinearOperator,
    k: int,
    *,
    block_size: int = 4,
    which: Which = "largest",
    max_iter: int | None = None,
    tol: float = 1e-6,
    seed: int = 0,
    return_vectors: bool = False,
    bound: Bound = "residual",
) -> Eigs:
    """Extreme eigenvalues by block Lanczos: Rayleigh-Ritz on span{V, AV, A^2 V, ...}, V (n, b).

    Every step applies the operator to one block through `matmat` (the Hessian's batched double
    backward), re-orthogonalizes the new block against all earlier ones (twice) and projects:
    T = Q^T A Q from the stored products A Q, so no recurrence coefficients are needed. Ritz
    residuals ||A y - theta y|| are computed explicitly. It needs somewhat more products than
    `lanczos` for the same accuracy but issues them `block_size` at a time, which pays off where
    a batched product costs much less than `block_size` single ones (GPUs).

    Args:
        op, k, which, tol, seed, return_vectors, bound: as for `lanczos`.
        block_size: Vectors per step (at least 1).
        max_iter: Most operator applications in total; default min(size, max(4k, 100)).

    Returns:
        `Eigs`, eigenvalues as float64 on the CPU; `n_matvecs` counts single products.
    """
    n = op.size
    need = 2 * k if which == "both" else k
    if not 1 <= need <= n or block_size < 1:
        raise ValueError(f"cannot find {need} eigenvalues of a {n}-dimensional operator")
    budget = min(n, max(max_iter if max_iter is not None else max(4 * need, 100), need))
    gen = _generator(seed)
    start = torch.randn(n, block_size, generator=gen, dtype=torch.float64)
    block = _orthonormal_block(start.to(op.device, op.dtype), None, op, gen)
    q, aq = block, matmat(op, block)
    converged = False
    while True:
        t = (q.T @ aq).double().cpu()
        theta, s = finite_eigh((t + t.T) / 2)
        idx = _wanted(theta, k, which)
        ritz = s.to(op.device, op.dtype)
        resid = (aq @ ritz - (q @ ritz) * theta.to(op.device, op.dtype)).norm(dim=0)
        res_all = resid.double().cpu()
        scale = max(theta.abs().max().item(), torch.finfo(torch.float64).tiny)
        errors = _error_bounds(theta, idx, res_all[idx], res_all, bound)
        if q.shape[1] >= need and bool((errors <= tol * scale).all()):
            converged = True
            break
        width = min(block_size, budget - q.shape[1], n - q.shape[1])
        if width <= 0:
            break
        block = _orthonormal_block(aq[:, -block.shape[1] :], q, op, gen)[:, :width]
        q, aq = torch.cat([q, block], dim=1), torch.cat([aq, matmat(op, block)], dim=1)
    vectors = (q @ s[:, idx].to(op.device, op.dtype)) if return_vectors else None
    return Eigs(theta[idx], vectors, res_all[idx], converged, q.shape[1])


def power_iteration(
    op: LinearOperator,
    k: int,
    *,
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    return_vectors: bool = False,
) -> Eigs:
    """Top-k eigenvalues by |lambda|, by power iteration with deflation (PyHessian's algorithm).

    For each eigenvalue: draw a random unit vector; repeat up to `max_iter` times
    { orthonormalize against the eigenvectors found so far; w = A v; theta = w . v;
    v = w / ||w|| } until |theta - theta_prev| / (|theta_prev| + 1e-6) < tol. The stopping rule
    bounds the change per step, not the error, which converges like (lambda_2 / lambda_1)^(2t).

    Args:
        op, k: The operator, and how many eigenvalues.
        tol: Relative change between consecutive estimates that ends an eigenvalue.
        max_iter, seed: Most iterations per eigenvalue; seed of the start vectors.
        return_vectors: Also return the eigenvector estimates.

    Returns:
        `Eigs` in the order found (roughly descending |lambda|), float64 on the CPU; residuals
        are ||A v - theta v|| of the final iterate, computed from its last product.
    """
    if not 1 <= k <= op.size:
        raise ValueError(f"cannot find {k} eigenvalues of a {op.size}-dimensional operator")
    gen = _generator(seed)
    values, vectors, residuals = [], [], []
    n_matvecs, all_converged = 0, True
    for _ in range(k):
        v = _randn(op, gen)
        theta, converged, r = None, False, float("nan")
        for _ in range(max_iter):
            for u in vectors:  # deflate: Gram-Schmidt against the found eigenvectors
                v = v - torch.dot(u, v) * u
            v = v / v.norm()
            w = op.matvec(v)
            n_matvecs += 1
            new = torch.dot(w, v).item()
            r = (w - new * v).norm().item()
            v = w / w.norm()
            if theta is not None and abs(theta - new) / (abs(theta) + 1e-6) < tol:
                theta, converged = new, True
                break
            theta = new
        all_converged &= converged
        values.append(theta)
        vectors.append(v)
        residuals.append(r)
    stacked = torch.stack(vectors, dim=1) if return_vectors else None
    return Eigs(
        torch.tensor(values, dtype=torch.float64),
        stacked,
        torch.tensor(residuals, dtype=torch.float64),
        all_converged,
        n_matvecs,
    )


def hutchinson_trace(op: LinearOperator, n: int, *, seed: int = 0) -> TraceEstimate:
    """Hutchinson's trace estimate: mean of z^T A z over `n` Rademacher vectors z.

    Args:
        op: The operator.
        n: Number of random vectors (= operator applications); at least 2.
        seed: Seed of the vectors.

    Returns:
        Estimate and standard error std(z^T A z) / sqrt(n).
    """
    if n < 2:
        raise ValueError("Hutchinson needs at least 2 vectors for a standard error")
    gen = _generator(seed)
    samples = []
    for _ in range(n):
        z = _rademacher(op, gen)
        samples.append(torch.dot(z, op.matvec(z)).item())
    t = torch.tensor(samples, dtype=torch.float64)
    return TraceEstimate(t.mean().item(), t.std().item() / math.sqrt(n), n)


def hutchpp_trace(op: LinearOperator, n: int, *, seed: int = 0) -> TraceEstimate:
    """Hutch++ trace estimate with `n` operator applications (Meyer et al. 2021, Alg. 1).

    A third of the budget sketches the range of A (Q = orth(A S)); tr(Q^T A Q) is taken exactly
    (another third) and Hutchinson estimates the trace of the deflated remainder
    (I - QQ^T) A (I - QQ^T) with the last third. Error falls like 1/n instead of 1/sqrt(n) when
    the spectrum decays.

    Args:
        op: The operator.
        n: Budget of operator applications; at least 6 (rounded down to a multiple of 3).
        seed: Seed of the sketch and the probe vectors.

    Returns:
        Estimate, and the standard error of its random (Hutchinson) part.
    """
    if n < 6:
        raise ValueError("Hutch++ needs at least 6 operator applications")
    m = n // 3
    gen = _generator(seed)
    s = _rademacher(op, gen, m)
    y = torch.stack([op.matvec(s[:, i]) for i in range(m)], dim=1)
    q, _ = torch.linalg.qr(y)  # (size, m) orthonormal
    exact = sum(torch.dot(q[:, i], op.matvec(q[:, i])).item() for i in range(m))
    g = _rademacher(op, gen, m)
    g = g - q @ (q.T @ g)  # project the probes off range(Q)
    samples = []
    for i in range(m):
        w = op.matvec(g[:, i])
        w = w - q @ (q.T @ w)
        samples.append(torch.dot(g[:, i], w).item())
    t = torch.tensor(samples, dtype=torch.float64)
    return TraceEstimate(exact + t.mean().item(), t.std().item() / math.sqrt(m), 3 * m)


def slq_density(
    op: LinearOperator, *, n_vectors: int = 8, n_steps: int = 64, seed: int = 0
) -> SpectralDensity:
    """Stochastic Lanczos quadrature of the spectral measure.

    For each Rademacher vector v (normalized), `n_steps` Lanczos steps with full
    re-orthogonalization give T = S diag(theta) S^T; the Gauss rule with nodes theta and weights
    S[0, :]^2 integrates v^T f(A) v / ||v||^2 exactly for polynomials f of degree < 2 n_steps.
    Runs stop early (zero-weight padding) if the Krylov space becomes invariant.

    Args:
        op: The operator.
        n_vectors: Random start vectors (each one independent quadrature).
        n_steps: Lanczos steps per vector (capped at `size`).
        seed: Seed of the start vectors.

    Returns:
        `SpectralDensity` (float64, CPU).
    """
    steps = min(n_steps, op.size)
    gen = _generator(seed)
    nodes = torch.zeros(n_vectors, steps, dtype=torch.float64)
    weights = torch.zeros(n_vectors, steps, dtype=torch.float64)
    n_matvecs = 0
    for r in range(n_vectors):
        v = _rademacher(op, gen)
        v = v / v.norm()
        basis = _Basis(op.size, op.dtype, op.device)
        alphas: list[float] = []
        betas: list[float] = []
        beta = 0.0
        for j in range(steps):
            basis.append(v)
            w = op.matvec(v)
            n_matvecs += 1
            alpha = torch.dot(w, v).item()
            w = w - alpha * v - (beta * basis.q[j - 1] if j > 0 else 0.0)
            w = basis.orthogonalize(w)
            alphas.append(alpha)
            beta = w.norm().item()
            scale = max(abs(a) for a in alphas) + (max(betas) if betas else 0.0)
            if j + 1 == steps or beta <= 10 * torch.finfo(op.dtype).eps * max(scale, 1e-300):
                break
            betas.append(beta)
            v = w / beta
        theta, s = _tridiagonal_eigh(alphas, betas)
        nodes[r, : theta.numel()] = theta
        weights[r, : theta.numel()] = s[0] ** 2
    return SpectralDensity(nodes, weights, op.size, n_matvecs)


def gaussian_density(density: SpectralDensity, grid: torch.Tensor, sigma: float) -> torch.Tensor:
    """Smooth SLQ nodes into a density on `grid`: mean over vectors of sum_j w_j N(x; theta_j, s^2).

    Args:
        density: From `slq_density`.
        grid: Points x (1-D).
        sigma: Gaussian width (in eigenvalue units).

    Returns:
        float64 density values on `grid`; it integrates to 1 over the real line.
    """
    x = grid.to(torch.float64)[:, None, None]  # (G, 1, 1) against (V, m)
    kernel = torch.exp(-0.5 * ((x - density.nodes) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    return (kernel * density.weights).sum(dim=2).mean(dim=1)
