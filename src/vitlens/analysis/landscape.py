"""Loss landscapes along random filter-normalized directions (paper Fig. 1a; notes §1.6), along
the top Hessian eigenvectors, and the linear interpolation between two models.

The loss is evaluated at theta* + x d1 (1-D) or theta* + x d1 + y d2 (2-D) on a grid of (x, y),
with d1, d2 Gaussian directions rescaled by *filter normalization* (Li et al. 2018, "Visualizing
the Loss Landscape of Neural Nets"): each output filter d[i] (a slice along dim 0) gets the norm of
the same filter of the weights, ||d[i]|| = ||theta[i]||. The authors' code (official_repo.md §4.3)
instead normalizes along dim 0 (each input column across output filters); `normalization=
"filter_dim0"` reproduces it. As there, directions are zero on 1-D parameters (biases, norm
affines) and on position embeddings / relative-position tables.

Objective: NLL + weight_decay * L2 on a FIXED, seeded set of (augmented) batches: each batch is
drawn once, with its own seeded generator, and reused at every grid point, so the surface is not
noisy the way the authors' re-sampled augmentation is. Two L2 conventions, recorded in the result:
"authors" L2 = sum over parameter tensors of ||theta||_2 (unsquared), "half_squared"
L2 = 1/2 sum ||theta||^2 (the Hessian module's convention).

Loop order: by default the data loop is OUTSIDE the grid loop ("data_outer"): each batch is
built (augmented, moved to the device) once and evaluated at every grid point before the next,
so memory holds one batch, not the whole fixed set. The price is one parameter update per
(batch, point) instead of per point: three element-wise passes over the perturbed parameters,
small next to a forward pass (benchmarks/landscape_bench.py measures it). "grid_outer" holds
every batch on the device and updates the parameters once per point.

Besides random directions, `directions="hessian"` moves along the top Hessian eigenvectors (the
sharpest directions; orthonormal, found by Lanczos on the first fixed batch), and `other=MODEL`
gives the 1-D linear interpolation theta + a (theta_other - theta) between two runs (Goodfellow
et al. 2015), a = 0 being this model and a = 1 the other.

Grid points are visited by perturbing the parameters IN PLACE from saved originals
(theta <- theta* + x d1 + y d2, never accumulated, so no drift), with no model copies, and the
originals are copied back bit-exactly at the end, also on error. Points can be split across
torchrun ranks (point i to rank i % world). Grid order is row by row, y outer, x fastest.
"""

from __future__ import annotations

import functools
import math
import re
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import nn

from vitlens import distributed as dist
from vitlens.analysis.claim import Claim, StudyView, not_measured
from vitlens.analysis.curvature import HessianOperator, check_objective
from vitlens.analysis.linalg import lanczos
from vitlens.analysis.loss_surface import (
    Augment,
    Criterion,
    fixed_batches,
    model_state,
    nll_loss,
    seeded_rng,
)
from vitlens.analysis.registry import register_analysis
from vitlens.analysis.result import Provenance, Result
from vitlens.analysis.spec import AnalysisSpec, Budget, Figure, Inputs, Option
from vitlens.analysis.streaming import progress_bar, provenance_for
from vitlens.anatomy import anatomy_of, unwrap
from vitlens.data.dataset import mix_seed
from vitlens.errors import ConfigError, VitlensError

Normalization = Literal["filter", "filter_dim0", "none"]
DEFAULT_EXCLUDE = ("pos_embed", "relative_position")
L2_CONVENTIONS = {
    "authors": "L2 = sum over parameter tensors of ||theta||_2 (unsquared); loss = NLL + wd * L2",
    "half_squared": "L2 = 1/2 sum over parameters of theta^2; loss = NLL + wd * L2",
}


# ------------------------------------------------------------------------------------ directions


def normalize_direction(
    direction: torch.Tensor, weight: torch.Tensor, normalization: Normalization = "filter"
) -> torch.Tensor:
    """Rescale a random direction tensor to the scale of its weight tensor.

    Args:
        direction: Random tensor shaped like `weight`.
        weight: The trained weight.
        normalization: "filter": each output filter direction[i] gets norm ||weight[i]||
            (Li et al. 2018); "filter_dim0": the authors' variant,
            d * ||w||_dim0 / (||d||_dim0 + 1e-7) with norms over dim 0 (keepdim); "none".

    Returns:
        A new tensor.
    """
    if normalization == "none":
        return direction.clone()
    if normalization == "filter_dim0":
        return (
            direction
            * weight.norm(dim=0, keepdim=True)
            / (direction.norm(dim=0, keepdim=True) + 1e-7)
        )
    if normalization == "filter":
        d = direction.reshape(direction.shape[0], -1)  # (out, rest)
        w = weight.reshape(weight.shape[0], -1)
        scale = w.norm(dim=1, keepdim=True) / (d.norm(dim=1, keepdim=True) + 1e-10)
        return (d * scale).reshape(direction.shape)
    raise ConfigError(
        f"normalization must be 'filter', 'filter_dim0' or 'none', not {normalization}"
    )


def excluded_parameter(
    name: str, p: torch.Tensor, exclude_1d: bool, exclude: Sequence[str]
) -> bool:
    """Whether a direction is zero on this parameter (1-D tensors; names matching a pattern)."""
    return (exclude_1d and p.ndim < 2) or any(re.search(pat, name) for pat in exclude)


def random_direction(
    model: nn.Module,
    *,
    seed: int,
    normalization: Normalization = "filter",
    exclude_1d: bool = True,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
) -> dict[str, torch.Tensor]:
    """A seeded Gaussian direction over the model's parameters, normalized per `normalization`.

    Draws happen on the CPU in `named_parameters` order (one tensor per parameter, excluded
    ones included so that exclusion does not shift the others), so the same seed gives the same
    direction on every device.

    Args:
        model: The model at the centre point theta*.
        seed: Seed of the draw.
        normalization: See `normalize_direction`.
        exclude_1d: Zero the direction on parameters with fewer than 2 dims.
        exclude: Regex patterns of parameter names to zero (default: position embeddings).

    Returns:
        name -> direction tensor, on the parameter's device and dtype; only nonzero entries.
    """
    gen = torch.Generator(device="cpu").manual_seed(int(seed) % 2**63)
    out = {}
    for name, p in unwrap(model).named_parameters():
        d = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        if excluded_parameter(name, p, exclude_1d, exclude):
            continue
        w = p.detach().to("cpu", torch.float64)
        out[name] = normalize_direction(d, w, normalization).to(p.device, p.dtype)
    return out


# ---------------------------------------------------------------------------------------- result


@dataclass(frozen=True)
class LandscapeResult(Result):
    """A 1-D or 2-D loss surface around trained weights.

    Grids are nested lists, rows indexed by y and columns by x (a single row for 1-D).

    Attributes:
        dims: 1 or 2.
        xs: Coordinates along d1.
        ys: Coordinates along d2 ([] for 1-D).
        loss: NLL + weight_decay * L2 at each point.
        nll: Mean NLL over the fixed batches.
        l2: The L2 quantity of `l2_convention` (before multiplying by weight_decay).
        acc: Top-1 accuracy (against the argmax of soft targets); NaN for one-output models.
        weight_decay, l2, l2_convention: The objective.
        normalization, exclude_1d, exclude: The direction settings; excluded: parameter names
            with zero direction; n_perturbed: number of values that move.
        direction_seeds: Seeds of d1 (and d2); empty if directions were not random.
        direction_kind: "random" (filter-normalized), "hessian" (top Hessian eigenvectors,
            orthonormal), "interpolation" (d1 = theta_other - theta; xs are the fractions of
            the way to the other model) or "given".
        direction_eigenvalues: For "hessian", the eigenvalue of d1 (and d2).
        seed: Base seed of the fixed batches; n_batches, n_samples: how much data per point.
        augment: repr of the augmentation ("none": clean data, integer labels).
        train_mode: Whether the model ran in train mode; order: the loop order used.
    """

    analysis: ClassVar[str] = "landscape"

    dims: int = 2
    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)
    loss: list[list[float]] = field(default_factory=list)
    nll: list[list[float]] = field(default_factory=list)
    l2: list[list[float]] = field(default_factory=list)
    acc: list[list[float]] = field(default_factory=list)
    weight_decay: float = 0.0
    l2_convention: str = "authors"
    l2_definition: str = L2_CONVENTIONS["authors"]
    normalization: str = "filter"
    exclude_1d: bool = True
    exclude: list[str] = field(default_factory=lambda: list(DEFAULT_EXCLUDE))
    excluded: list[str] = field(default_factory=list)
    n_perturbed: int = 0
    direction_seeds: list[int] = field(default_factory=list)
    direction_kind: str = "random"
    direction_eigenvalues: list[float] = field(default_factory=list)
    seed: int = 0
    n_batches: int = 0
    n_samples: int = 0
    augment: str = "none"
    train_mode: bool = False
    order: str = "data_outer"

    def grid(self, quantity: str = "loss") -> np.ndarray:
        """A quantity as an array (len(ys) or 1, len(xs))."""
        return np.asarray(getattr(self, quantity), dtype=float)


# ------------------------------------------------------------------------------------ evaluation


class _Perturber:
    """Moves the perturbed parameters to theta* + x d1 + y d2 in place; restores bit-exactly."""

    def __init__(self, model: nn.Module, directions: Sequence[dict[str, torch.Tensor]]):
        named = dict(model.named_parameters())
        unknown = sorted(set().union(*directions) - set(named))
        if unknown:
            raise ConfigError(f"directions name parameters the model does not have: {unknown[:5]}")
        names = sorted(set().union(*directions), key=list(named).index)
        self.params = [named[n] for n in names]
        self.origin = [p.detach().clone() for p in self.params]
        # Zero-filled where a direction skips a parameter the other one moves.
        self.dirs = [
            [d[n] if n in d else torch.zeros_like(named[n]) for n in names] for d in directions
        ]
        moved = {id(p) for p in self.params}
        still = [p for p in model.parameters() if id(p) not in moved]
        self._l2_still = {c: _l2(still, c) for c in L2_CONVENTIONS}  # unperturbed: constant

    @torch.no_grad()
    def move(self, coords: Sequence[float]) -> None:
        # Always from the saved origin, never by increments: no drift from rounding.
        torch._foreach_copy_(self.params, self.origin)
        for c, d in zip(coords, self.dirs, strict=True):
            if c != 0.0:
                torch._foreach_add_(self.params, d, alpha=c)

    @torch.no_grad()
    def restore(self) -> None:
        for p, o in zip(self.params, self.origin, strict=True):
            p.copy_(o)

    def l2(self, convention: str) -> float:
        """L2 of all parameters at the current point (only the perturbed ones are recomputed)."""
        return self._l2_still[convention] + _l2(self.params, convention)


@torch.no_grad()
def _l2(params: Sequence[torch.Tensor], convention: str) -> float:
    if not params:
        return 0.0
    if convention == "authors":  # sum of per-tensor Frobenius norms, unsquared
        return torch.stack([p.detach().double().norm() for p in params]).sum().item()
    return 0.5 * torch.stack([p.detach().double().pow(2).sum() for p in params]).sum().item()


def _batch_sums(
    model: nn.Module, x: torch.Tensor, t: torch.Tensor, criterion: Criterion, seed: int | None
) -> tuple[float, float, int]:
    with seeded_rng(seed, x.device):
        logits = anatomy_of(model, need_blocks=False).forward(model, x)
    nll = criterion(logits, t).item() * x.shape[0]
    if logits.ndim == 2 and logits.shape[1] > 1:
        labels = t.argmax(dim=1) if t.is_floating_point() and t.ndim == 2 else t
        correct = (logits.argmax(dim=1) == labels).sum().item()
    else:
        correct = math.nan
    return nll, correct, x.shape[0]


@dataclass(frozen=True)
class _Directions:
    vectors: list[dict[str, torch.Tensor]]
    kind: str  # "random", "hessian", "interpolation" or "given"
    seeds: list[int] = field(default_factory=list)
    eigenvalues: list[float] = field(default_factory=list)


def _check_options(dims, l2, order, steps, directions, other) -> None:
    if dims not in (1, 2):
        raise ConfigError(f"dims must be 1 or 2, got {dims}")
    if l2 not in L2_CONVENTIONS:
        raise ConfigError(f"l2 must be one of {list(L2_CONVENTIONS)}, got {l2!r}")
    if order not in ("data_outer", "grid_outer"):
        raise ConfigError(f"order must be 'data_outer' or 'grid_outer', got {order!r}")
    if steps < 1:
        raise ConfigError(f"steps must be positive, got {steps}")
    if isinstance(directions, str) and directions not in ("random", "hessian"):
        raise ConfigError(f"directions must be 'random', 'hessian' or given, not {directions!r}")
    if other is not None and (dims != 1 or directions not in (None, "random")):
        raise ConfigError("interpolation to `other` is a 1-D landscape along theta_other - theta")


def hessian_directions(
    model: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    count: int,
    *,
    train_mode: bool = False,
    seed: int = 0,
    tol: float = 1e-4,
) -> tuple[list[dict[str, torch.Tensor]], list[float]]:
    """The `count` top (largest) Hessian eigenvectors of the NLL on `batch`, over all parameters.

    The weight-decay term only adds wd * I, so the eigenvectors are those of NLL + L2 as well.
    Lanczos (full re-orthogonalization) returns orthonormal vectors in the flat parameter space;
    each becomes a name -> tensor direction (unit norm jointly, not filter-normalized).

    Returns:
        (directions, eigenvalues), largest eigenvalue first.
    """
    with HessianOperator(model, batch, train_mode=train_mode, seed=seed) as op:
        eigs = lanczos(op, count, which="largest", tol=tol, seed=seed, return_vectors=True)
        names, params = op.names, op.params
    vectors = []
    for column in eigs.eigenvectors.T:
        pieces = torch.split(column.detach(), [p.numel() for p in params])
        vectors.append(
            {n: v.view_as(p).clone() for n, v, p in zip(names, pieces, params, strict=True)}
        )
    return vectors, eigs.eigenvalues.tolist()


def interpolation_direction(model: nn.Module, other: nn.Module) -> dict[str, torch.Tensor]:
    """theta_other - theta over every floating parameter (buffers, e.g. BatchNorm's, stay)."""
    mine = dict(unwrap(model).named_parameters())
    theirs = dict(unwrap(other).named_parameters())
    shapes = {n: tuple(p.shape) for n, p in mine.items()}
    if shapes != {n: tuple(p.shape) for n, p in theirs.items()}:
        raise ConfigError("interpolation needs two models of the same architecture")
    return {
        n: (theirs[n].detach().to(p.device, p.dtype) - p.detach())
        for n, p in mine.items()
        if p.is_floating_point()
    }


def _make_directions(model, directions, other, dims, seed, batches, train_mode, **kw):
    if other is not None:
        return _Directions([interpolation_direction(model, other)], "interpolation")
    if directions == "hessian":
        first = next(iter(batches()), None)
        if first is None:
            raise VitlensError("no batches to evaluate: the data gave none")
        vectors, values = hessian_directions(
            model, first[1:], dims, train_mode=train_mode, seed=seed
        )
        return _Directions(vectors, "hessian", eigenvalues=values)
    if directions is None or directions == "random":
        seeds = [seed + 1 + i for i in range(dims)]
        return _Directions([random_direction(model, seed=s, **kw) for s in seeds], "random", seeds)
    if len(directions) != dims:
        raise ConfigError(f"{dims}-D landscape needs {dims} directions, got {len(directions)}")
    return _Directions(list(directions), "given")


def loss_landscape(
    model: nn.Module,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    dims: Literal[1, 2] = 2,
    steps: int = 21,
    span: float = 1.0,
    directions: Sequence[dict[str, torch.Tensor]] | Literal["random", "hessian"] | None = None,
    other: nn.Module | None = None,
    margin: float = 0.25,
    normalization: Normalization = "filter",
    exclude_1d: bool = True,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    weight_decay: float = 0.0,
    l2: Literal["authors", "half_squared"] = "authors",
    augment: Augment | None = None,
    n_batches: int | None = None,
    batch_size: int | None = None,
    train_mode: bool = False,
    order: Literal["data_outer", "grid_outer"] = "data_outer",
    criterion: Criterion | None = None,
    seed: int = 0,
    progress: bool = False,
    provenance: Provenance | None = None,
) -> LandscapeResult:
    """Evaluate the loss on a `steps` (x `steps`) grid over [-span, span] around the weights.

    The parameters are perturbed in place and restored bit-exactly. `data`: (images, labels)
    batches (a non-shuffled DataLoader or a list), re-chunked to `batch_size` (None: as given),
    `n_batches` of them (None: all), each augmented once by `augment` and reused at every
    point. `directions`: None or "random" (seeded filter-normalized Gaussian ones; see
    `random_direction` for `normalization`, `exclude_1d`, `exclude`), "hessian" (the top `dims`
    Hessian eigenvectors of the NLL on the first fixed batch: orthonormal, so `span` is a
    distance in parameter space), or ready-made name -> tensor dicts. `other`: a model of the
    same architecture, for the 1-D interpolation theta + a (theta_other - theta), a over
    linspace(-margin, 1 + margin). Objective: NLL (or `criterion(outputs, targets)`) +
    `weight_decay` * L2, `l2` "authors" (sum of unsquared norms) or "half_squared".
    `train_mode`: train mode (buffers restored; dropout seeded per batch and point); `order`:
    see the module docstring. `seed`: batches use mix_seed(seed, i), directions seed + 1, + 2.
    """
    started = time.perf_counter()
    _check_options(dims, l2, order, steps, directions, other)
    check_objective("nll+l2", weight_decay)
    model = unwrap(model)
    batches = functools.partial(
        fixed_batches, data, batch_size=batch_size, n_batches=n_batches, augment=augment, seed=seed
    )
    how = dict(normalization=normalization, exclude_1d=exclude_1d, exclude=list(exclude))
    found = _make_directions(model, directions, other, dims, seed, batches, train_mode, **how)
    grid = _Grid.make(dims, steps, (-margin, 1 + margin) if other else (-span, span))
    evaluation = _Evaluation(model, criterion or nll_loss, l2, train_mode, seed, progress)
    rows, n_seen = evaluation.run(batches(), grid.points, found.vectors, order, n_batches)
    recorded = dict(how, seed=seed, train_mode=train_mode, order=order, l2_convention=l2)
    recorded["augment"] = repr(augment) if augment is not None else "none"
    provenance = provenance_for(provenance, model, next(model.parameters()).device, started)
    return _assemble(model, rows, n_seen, grid, found, weight_decay, provenance, recorded)


@dataclass(frozen=True)
class _Grid:
    """The grid's axes (ys is [] in 1-D) and its points, row by row (y outer, x fastest)."""

    xs: list[float]
    ys: list[float]
    points: list[tuple[float, ...]]

    @classmethod
    def make(cls, dims: int, steps: int, limits: tuple[float, float]) -> _Grid:
        axis = torch.linspace(*limits, steps, dtype=torch.float64).tolist()
        ys = axis if dims == 2 else []
        points = [(x, y) for y in ys for x in axis] if dims == 2 else [(x,) for x in axis]
        return cls(axis, ys, points)


@dataclass(frozen=True, order=True)
class _PointSums:
    """What one grid point gave: its index, NLL sum, correct predictions, samples and L2."""

    point: int
    nll_sum: float
    correct: float
    count: float
    l2: float


@dataclass
class _Evaluation:
    """Evaluates the loss at grid points, splitting the points across torchrun ranks."""

    model: nn.Module
    criterion: Criterion
    l2: str
    train_mode: bool
    seed: int
    progress: bool

    def _prepare(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = next(self.model.parameters())
        dtype = first.dtype if x.is_floating_point() else x.dtype
        return x.to(first.device, dtype), t.to(first.device)

    def _forward_seed(self, batch: int, point: int) -> int | None:
        # Train mode draws dropout masks: seed each (batch, point) so any loop order agrees.
        return mix_seed(self.seed, batch, point, 3) if self.train_mode else None

    def _sums(self, x, t, batch: int, point: int) -> tuple[float, float, int]:
        return _batch_sums(self.model, x, t, self.criterion, self._forward_seed(batch, point))

    def run(self, batches, points, directions, order, n_batches) -> tuple[list[_PointSums], int]:
        """The sums of every point (in point order, gathered across ranks), and batches seen."""
        rank, world = dist.rank(), dist.world()
        mine = list(range(rank, len(points), world))
        sums = np.zeros((len(mine), 3))  # nll sum, correct, count
        l2s = np.zeros(len(mine))
        n_seen = 0
        perturber = _Perturber(self.model, directions)
        total = len(mine) * n_batches if (order == "data_outer" and n_batches) else None
        if order == "grid_outer":
            total = len(mine)
        try:
            with (
                model_state(self.model, self.train_mode),
                torch.no_grad(),
                progress_bar("landscape", total, self.progress) as advance,
            ):
                if order == "data_outer":
                    for b, (_, x, t) in enumerate(batches):
                        x, t = self._prepare(x, t)
                        for j, i in enumerate(mine):
                            perturber.move(points[i])
                            if b == 0:
                                l2s[j] = perturber.l2(self.l2)
                            sums[j] += self._sums(x, t, b, i)
                            advance()
                        n_seen += 1
                else:
                    held = [self._prepare(x, t) for _, x, t in batches]
                    n_seen = len(held)
                    for j, i in enumerate(mine):
                        perturber.move(points[i])
                        l2s[j] = perturber.l2(self.l2)
                        for b, (x, t) in enumerate(held):
                            sums[j] += self._sums(x, t, b, i)
                        advance()
        finally:
            perturber.restore()
        if n_seen == 0:
            raise VitlensError("no batches to evaluate: the data gave none")
        rows = [_PointSums(i, *sums[j].tolist(), float(l2s[j])) for j, i in enumerate(mine)]
        return sorted(r for part in dist.all_gather_objects(rows) for r in part), n_seen


def _assemble(
    model: nn.Module,
    rows: list[_PointSums],
    n_seen: int,
    grid: _Grid,
    found: _Directions,
    weight_decay: float,
    provenance: Provenance,
    recorded: dict,
) -> LandscapeResult:
    """The Result from the points' sums; `recorded` holds the options stored as given."""
    nll = [r.nll_sum / r.count for r in rows]
    acc = [r.correct / r.count for r in rows]
    l2v = [r.l2 for r in rows]
    loss = [a + weight_decay * b for a, b in zip(nll, l2v, strict=True)]
    width = len(grid.xs)

    def as_grid(values: list[float]) -> list[list[float]]:
        return [values[r : r + width] for r in range(0, len(values), width)]

    named = dict(model.named_parameters())
    moved = set().union(*found.vectors)
    if found.kind != "random":
        recorded["normalization"] = "given" if found.kind == "given" else "none"
    return LandscapeResult(
        provenance=provenance,
        dims=1 if not grid.ys else 2,
        xs=grid.xs,
        ys=grid.ys,
        loss=as_grid(loss),
        nll=as_grid(nll),
        l2=as_grid(l2v),
        acc=as_grid(acc),
        weight_decay=float(weight_decay),
        l2_definition=L2_CONVENTIONS[recorded["l2_convention"]],
        excluded=[n for n in named if n not in moved],
        n_perturbed=sum(named[n].numel() for n in moved),
        direction_seeds=found.seeds,
        direction_kind=found.kind,
        direction_eigenvalues=found.eigenvalues,
        n_batches=n_seen,
        n_samples=int(rows[0].count) if rows else 0,
        **recorded,
    )


# -- the paper's claim this analysis measures, and its spec -------------------------------------


def landscape_rise(result, radius: float) -> float:
    """Mean of loss - centre loss over the L-infinity box of `radius` (paper.md §5, C8)."""
    xs, ys, loss = result.xs, result.ys or [0.0], result.loss
    cx = min(range(len(xs)), key=lambda i: abs(xs[i]))
    cy = min(range(len(ys)), key=lambda j: abs(ys[j]))
    centre = loss[cy][cx] if result.dims == 2 else loss[0][cx]
    rows = loss if result.dims == 2 else [loss[0]]
    vals = [
        rows[j][i] - centre
        for j in range(len(rows))
        for i in range(len(xs))
        if abs(xs[i]) <= radius + 1e-9 and (result.dims == 1 or abs(ys[j]) <= radius + 1e-9)
    ]
    return statistics.fmean(vals)


def c8_flat_landscape(view: StudyView) -> Claim:
    claim = "The loss landscape (NLL + L2, augmented data) is flatter for ViT"
    paper = "mean rise at radius 0.5 / 1.0: ViT +5.8 / +15.1 vs ResNet +9.5 / +24.9"
    l_vit, l_cnn = view.pair("landscape")
    if l_vit is None or l_cnn is None:
        return not_measured("C8", claim, paper)
    v, c = landscape_rise(l_vit, 1.0), landscape_rise(l_cnn, 1.0)
    v5, c5 = landscape_rise(l_vit, 0.5), landscape_rise(l_cnn, 0.5)
    measured = f"ViT {v5:+.3g} / {v:+.3g} vs ResNet {c5:+.3g} / {c:+.3g}"
    return Claim("C8", claim, paper, measured, v < c, c - v)


def _run(inputs: Inputs) -> LandscapeResult:
    options = dict(inputs.options)
    if inputs.other is not None:  # the 1-D linear interpolation towards another run
        options.update(other=inputs.other, dims=1)
    return loss_landscape(
        inputs.model,
        inputs.batches,
        weight_decay=inputs.weight_decay,
        augment=inputs.mixer,
        n_batches=inputs.n_batches,
        seed=inputs.seed,
        progress=inputs.progress,
        provenance=inputs.provenance,
        **options,
    )


SPEC = register_analysis(
    AnalysisSpec(
        name="landscape",
        summary="1-D/2-D loss landscape along filter-normalised random directions (paper Fig. 1a)",
        run=_run,
        function=loss_landscape,
        data="train_augmented",
        section="optimization",
        order=70,
        budgets={
            "analyze": Budget(4, 128, {"steps": 11}),
            # 9 x 9 points, a step of 0.25: the boxes of C8's radii 0.5 and 1.0 end on grid
            # points (with 11 steps the radius-0.5 box ends at 0.4), for 2/3 of the cost.
            "quick": Budget(1, 128, {"steps": 9}),
            "standard": Budget(4, 128, {"steps": 15}),
            "paper": Budget(10, 256, {"steps": 21}),
        },
        options=(
            Option("dims", 2, "1 or 2 directions", kind="int", minimum=1, maximum=2),
            # steps² loss evaluations: 201 (40,401 points) is already hours on a CPU.
            Option("steps", 21, "grid points per direction", kind="int", minimum=2, maximum=201),
            Option(
                "span",
                1.0,
                "the grid covers [-span, span]",
                kind="float",
                positive=True,
                maximum=100,
            ),
            Option(
                "directions",
                None,
                "random (filter-normalised) or hessian (top eigenvectors)",
                kind="choice",
                choices=("random", "hessian"),
                optional=True,
            ),
            Option(
                "normalization",
                "filter",
                "filter (Li et al.) or the authors' dim-0 variant",
                kind="choice",
                choices=("filter", "filter_dim0", "none"),
            ),
        ),
        figures=(
            Figure(
                "landscape",
                "vitlens.report.plots.landscape:plot_landscape",
                "2-D loss landscape (NLL + L2) along filter-normalized random directions.",
            ),
            Figure(
                "landscape_1d",
                "vitlens.report.plots.landscape:plot_landscape_curves",
                "1-D slices of the loss landscapes, models overlaid (paper Fig. 1a).",
            ),
        ),
        claims=(c8_flat_landscape,),
    )
)
