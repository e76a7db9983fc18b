"""Hessian-vector products of a model's loss, and the paper's max-eigenvalue spectra.

Park & Kim (2022, §2.1, Figs. 1c and 4; notes §1.5) compute, for each minibatch (size 16) of the
*augmented* training data, the top-5 Hessian eigenvalues of NLL + L2 by PyHessian's power
iteration, pool them over minibatches and plot their density; NEP (the fraction of negative
values) measures non-convexity and APE (the mean positive value) sharpness. The authors never
released that code (official_repo.md §4.6); this module is a verified re-implementation:

- The operator (`vitlens.analysis.curvature.HessianOperator`: forward and first backward once per
  batch, each H v one more backward, L2 added analytically) is shared with the landscape. The
  speed-up over PyHessian comes from Lanczos needing far fewer products than deflated power
  iteration, and from stopping on the gap bound min(r, r^2 / gap) on each eigenvalue's error
  rather than on the residual r. On CPUs a batched product costs no less than single ones, so
  block Lanczos (`block_size` > 1) is opt-in; it is meant for GPUs.
- `hessian_spectrum` runs the whole recipe and returns a `HessianResult`.

Arguments of `hessian_spectrum`:

    model: The model (on its device; left unchanged).
    data: (images, labels) batches, re-chunked to `batch_size` (see `fixed_batches`).
    weight_decay: L2 coefficient (the training weight decay; 0.05 in the paper's ViT runs).
    k: Eigenvalues per minibatch (paper: 5).
    batch_size: Minibatch size (paper: 16).
    n_batches: Number of minibatches (None: all the data gives).
    objective: "nll+l2" (paper) or "nll".
    augment: The training augmentation, e.g. `vitlens.data.BatchMixer(K)`; None: clean data.
    which: Which eigenvalues; "magnitude" reproduces the paper's power-iteration semantics.
    method: "lanczos" (fast) or "power" (PyHessian's algorithm).
    tol: Convergence tolerance: for Lanczos on the eigenvalue error bound (`bound`), relative
        to the largest |eigenvalue|; for power iteration the relative change per step.
    max_iter: Hessian-vector products in total for Lanczos, or power iterations per
        eigenvalue.
    params: Parameter subset (None: all).
    train_mode: Run the model in train mode.
    density: Also estimate each minibatch's spectral density by SLQ, with
        `density_vectors` start vectors of `density_steps` Lanczos steps.
    trace: Also estimate each minibatch's Hessian trace by Hutch++ with `trace_matvecs`
        Hessian-vector products.
    curvature_batches: Only the first this many minibatches get the density and trace
        (None: all): together they cost ~2.5x the top-5 eigenvalues of a minibatch.
    seed: Base seed.
    progress: Show a progress bar with ETA.
    provenance: What to record about model and data; wall time and device are filled in.
    bound: Lanczos stopping rule, "gap" (min(r, r^2 / gap): fewer products for the same
        tolerance) or "residual" (r, the earlier rule).
    block_size: Products per Lanczos step; above 1, block Lanczos with batched products
        (worth it on GPUs; on CPUs a batched product is no cheaper than single ones).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from vitlens import distributed as dist
from vitlens.analysis.claim import (
    Claim,
    Difference,
    StudyView,
    difference,
    judged,
    not_measured,
)
from vitlens.analysis.curvature import (
    L2_CONVENTION,
    HessianOperator,
    ParamSelection,
    check_objective,
)
from vitlens.analysis.linalg import (
    Bound,
    Eigs,
    SpectralDensity,
    block_lanczos,
    gaussian_density,
    hutchpp_trace,
    lanczos,
    power_iteration,
    slq_density,
)
from vitlens.analysis.loss_surface import (
    Augment,
    fixed_batches,
)
from vitlens.analysis.registry import register_analysis
from vitlens.analysis.result import Provenance, Result
from vitlens.analysis.spec import AnalysisSpec, Budget, Figure, Inputs, Option
from vitlens.analysis.streaming import progress_bar, provenance_for
from vitlens.anatomy import unwrap
from vitlens.data.dataset import mix_seed
from vitlens.errors import ConfigError, VitlensError

# ---------------------------------------------------------------------------------- spectrum


def nep_ape(values: Iterable[float]) -> tuple[float, float]:
    """NEP (fraction of negative values) and APE (mean of the positive ones) of a pooled list."""
    vals = [float(v) for v in values]
    if not vals:
        return float("nan"), float("nan")
    pos = [v for v in vals if v > 0]
    nep = sum(v < 0 for v in vals) / len(vals)
    ape = sum(pos) / len(pos) if pos else float("nan")
    return nep, ape


@dataclass(frozen=True)
class HessianResult(Result):
    """Top-k Hessian eigenvalues of many minibatches (paper Figs. 1c, 4).

    Attributes:
        eigenvalues: Per minibatch, its k eigenvalues (order: see `which`).
        batch_index: The minibatch index of each row (rows are sorted by it).
        loss: Objective (NLL + L2) per minibatch.
        nll: NLL per minibatch.
        n_matvecs: Hessian-vector products spent per minibatch.
        converged: Whether each minibatch met the tolerance.
        nep: Negative-eigenvalue proportion of the pooled values.
        ape: Average positive eigenvalue of the pooled values.
        k, batch_size, which, method, tol, max_iter: The eigenvalue settings. `which` is
            "magnitude" for the paper's (PyHessian) semantics: the k largest |lambda|.
        bound: Lanczos stopping rule: "residual" (|lambda - theta| <= r) or "gap"
            (min(r, r^2 / gap)), both relative to the largest |Ritz value| (`tol`).
        block_size: Hessian-vector products per Lanczos step (1: plain Lanczos; more: block
            Lanczos with batched products).
        objective, weight_decay, l2_convention: The loss (see `L2_CONVENTION`).
        augment: repr of the augmentation ("none" for clean data with integer labels).
        train_mode: Whether the model ran in train mode.
        params: The parameter selection; n_params its size.
        seed: Base seed of augmentation and start vectors.
        world: Number of ranks that shared the minibatches.
        curvature_batch_index: The minibatches that also got the SLQ density and the
            Hutch++ trace (the first `curvature_batches`), in the order of the lists below.
        density_nodes, density_weights: Per such minibatch, the stochastic Lanczos quadrature
            (SLQ) nodes and weights of its spectral density, every start vector's rule
            concatenated and the weights divided by `density_vectors` (each row sums to 1);
            [] when not computed. `spectral_density` smooths their mean over minibatches.
        density_vectors, density_steps: SLQ start vectors and Lanczos steps (0: off).
        trace, trace_stderr: Per such minibatch, the Hutch++ trace estimate of the Hessian
            (with the L2 term) and the standard error of its random part; [] when off.
        trace_matvecs: Hutch++ budget per minibatch (0: off).
    """

    analysis: ClassVar[str] = "hessian"

    eigenvalues: list[list[float]] = field(default_factory=list)
    batch_index: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    nll: list[float] = field(default_factory=list)
    n_matvecs: list[int] = field(default_factory=list)
    converged: list[bool] = field(default_factory=list)
    nep: float = 0.0
    ape: float = 0.0
    k: int = 5
    batch_size: int = 16
    which: str = "magnitude"
    method: str = "lanczos"
    tol: float = 1e-3
    max_iter: int = 100
    bound: str = "residual"  # results saved before the field existed used the residual rule
    block_size: int = 1
    objective: str = "nll+l2"
    weight_decay: float = 0.0
    l2_convention: str = L2_CONVENTION
    augment: str = "none"
    train_mode: bool = False
    params: str = "all"
    n_params: int = 0
    seed: int = 0
    world: int = 1
    curvature_batch_index: list[int] = field(default_factory=list)
    density_nodes: list[list[float]] = field(default_factory=list)
    density_weights: list[list[float]] = field(default_factory=list)
    density_vectors: int = 0
    density_steps: int = 0
    trace: list[float] = field(default_factory=list)
    trace_stderr: list[float] = field(default_factory=list)
    trace_matvecs: int = 0

    def pooled(self) -> list[float]:
        """Every eigenvalue of every minibatch in one list (what the density is drawn from)."""
        return [v for row in self.eigenvalues for v in row]

    def spectral_density(self, grid: Iterable[float], sigma: float) -> list[float]:
        """The SLQ spectral density on `grid`, Gaussian-smoothed by `sigma`, averaged over
        minibatches (PyHessian's density plot, of minibatch Hessians); integrates to 1."""
        if not self.density_nodes:
            raise VitlensError("this Hessian result has no spectral density (density was off)")
        nodes = torch.tensor(self.density_nodes, dtype=torch.float64)
        weights = torch.tensor(self.density_weights, dtype=torch.float64)
        sld = SpectralDensity(nodes, weights, self.n_params, 0)  # one row per minibatch
        return gaussian_density(sld, torch.tensor(list(grid)), sigma).tolist()

    def per_batch(self) -> tuple[list[float], list[float]]:
        """NEP and APE of each minibatch on its own (APE: of the minibatches with a positive
        eigenvalue), the samples whose spread is the noise of the pooled NEP and APE."""
        rows = [nep_ape(row) for row in self.eigenvalues]
        return [n for n, _ in rows], [a for _, a in rows if not math.isnan(a)]

    @property
    def mean_trace(self) -> float:
        """The Hutch++ trace averaged over minibatches (NaN when not computed)."""
        return sum(self.trace) / len(self.trace) if self.trace else float("nan")


def density_and_trace(
    op: HessianOperator,
    *,
    density_vectors: int,
    density_steps: int,
    trace_matvecs: int,
    seed: int,
) -> dict[str, Any]:
    """One minibatch's SLQ density (if `density_vectors`) and Hutch++ trace (if
    `trace_matvecs`), as `HessianResult` row values."""
    out: dict[str, Any] = {}
    if density_vectors:
        sld = slq_density(op, n_vectors=density_vectors, n_steps=density_steps, seed=seed)
        out["nodes"] = sld.nodes.flatten().tolist()
        out["weights"] = (sld.weights / density_vectors).flatten().tolist()
    if trace_matvecs:
        est = hutchpp_trace(op, trace_matvecs, seed=mix_seed(seed, 1))
        out["trace"], out["trace_stderr"] = est.estimate, est.stderr
    return out


@dataclass(frozen=True, order=True)
class _Row:
    """One minibatch's spectrum (ordered by minibatch index)."""

    index: int
    eigenvalues: list[float]
    loss: float
    nll: float
    n_matvecs: int
    converged: bool
    curvature: dict[str, Any] = field(default_factory=dict, compare=False)  # density, trace


@dataclass(frozen=True)
class _Settings:
    """The arguments of `hessian_spectrum` that every minibatch (and the Result) uses."""

    objective: str
    weight_decay: float
    params: ParamSelection | None
    train_mode: bool
    seed: int
    k: int
    which: str
    method: str
    tol: float
    max_iter: int
    bound: str
    block_size: int
    curvature_batches: int | None
    extra: dict[str, int]  # the SLQ and Hutch++ budgets
    batch_size: int
    augment: Augment | None

    @classmethod
    def of(cls, arguments: dict[str, Any]) -> _Settings:
        """From the caller's arguments, by name."""
        return cls(**{f.name: arguments[f.name] for f in dataclasses.fields(cls)})


def _extra_fields(rows: list[_Row]) -> dict[str, Any]:
    index = [r.index for r in rows if r.curvature]
    extras = [r.curvature for r in rows if r.curvature]
    fields: dict[str, Any] = {"curvature_batch_index": index}
    if extras and "nodes" in extras[0]:
        fields["density_nodes"] = [e["nodes"] for e in extras]
        fields["density_weights"] = [e["weights"] for e in extras]
    if extras and "trace" in extras[0]:
        fields["trace"] = [e["trace"] for e in extras]
        fields["trace_stderr"] = [e["trace_stderr"] for e in extras]
    return fields


def top_eigenvalues(
    op: HessianOperator,
    k: int,
    *,
    which: str = "magnitude",
    method: Literal["lanczos", "power"] = "lanczos",
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    bound: Bound = "gap",
    block_size: int = 1,
) -> Eigs:
    """Top-k eigenvalues of an operator by Lanczos or (PyHessian's) deflated power iteration.

    `max_iter` counts Hessian-vector products in total for Lanczos (plain, or block Lanczos with
    batched products when `block_size` > 1), but iterations per eigenvalue for power iteration.
    """
    if method == "lanczos":
        if block_size < 1:
            raise ConfigError(f"block_size must be at least 1, got {block_size}")
        if block_size == 1:
            return lanczos(op, k, which=which, tol=tol, max_iter=max_iter, seed=seed, bound=bound)
        return block_lanczos(
            op,
            k,
            block_size=block_size,
            which=which,
            tol=tol,
            max_iter=max_iter,
            seed=seed,
            bound=bound,
        )
    if method == "power":
        if which != "magnitude":
            raise ConfigError("power iteration finds the largest |lambda|; use which='magnitude'")
        return power_iteration(op, k, tol=tol, max_iter=max_iter, seed=seed)
    raise ConfigError(f"method must be 'lanczos' or 'power', got {method!r}")


def hessian_spectrum(
    model: nn.Module,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    weight_decay: float,
    k: int = 5,
    batch_size: int = 16,
    n_batches: int | None = None,
    objective: Literal["nll", "nll+l2"] = "nll+l2",
    augment: Augment | None = None,
    which: Literal["largest", "smallest", "both", "magnitude"] = "magnitude",
    method: Literal["lanczos", "power"] = "lanczos",
    tol: float = 1e-3,
    max_iter: int = 100,
    params: ParamSelection | None = None,
    train_mode: bool = False,
    density: bool = True,
    density_vectors: int = 1,
    density_steps: int = 32,
    trace: bool = True,
    trace_matvecs: int = 30,
    curvature_batches: int | None = 2,
    seed: int = 0,
    progress: bool = False,
    provenance: Provenance | None = None,
    bound: Bound = "gap",
    block_size: int = 1,
) -> HessianResult:
    """The paper's Hessian max-eigenvalue spectrum: top-k eigenvalues of each minibatch, pooled.
    Under torchrun, minibatch i goes to rank i % world and the rows are gathered on every rank;
    augmentation and start vectors are seeded per minibatch, so the result does not depend on
    the number of ranks. The arguments are described in the module docstring.
    """
    started = time.perf_counter()
    check_objective(objective, weight_decay)
    extra = _curvature_extras(density, density_vectors, density_steps, trace, trace_matvecs)
    settings = _Settings.of(locals())
    base, world = unwrap(model), dist.world()
    with progress_bar("hessian", _share(n_batches), progress) as advance:
        rows, n_params = _minibatch_rows(
            base, _my_batches(data, settings, n_batches), settings, advance
        )
    rows = sorted(r for part in dist.all_gather_objects(rows) for r in part)
    n_params = max(dist.all_gather_objects(n_params))
    if not rows:
        raise VitlensError("no minibatches to analyse: the data gave fewer than one batch")
    provenance = provenance_for(provenance, base, next(base.parameters()).device, started)
    return _result(rows, settings, provenance, n_params=n_params, world=world)


def _my_batches(data, settings: _Settings, n_batches: int | None):
    """This rank's minibatches: minibatch i goes to rank i % world."""
    world, rank = dist.world(), dist.rank()
    return fixed_batches(
        data,
        batch_size=settings.batch_size,
        n_batches=n_batches,
        augment=settings.augment,
        seed=settings.seed,
        skip=lambda i: i % world != rank,
    )


def _share(n_batches: int | None) -> int | None:
    """How many of `n_batches` minibatches this rank gets (None: unknown)."""
    if not n_batches:
        return None
    return n_batches // dist.world() + (dist.rank() < n_batches % dist.world())


def _curvature_extras(density, vectors, steps, trace, matvecs) -> dict[str, int]:
    """The SLQ and Hutch++ budgets (0: not computed), checked."""
    if (density and min(vectors, steps) < 1) or (trace and matvecs < 6):
        raise ConfigError("SLQ needs >= 1 vector and step; Hutch++ needs >= 6 matvecs")
    return dict(
        density_vectors=vectors if density else 0,
        density_steps=steps if density else 0,
        trace_matvecs=matvecs if trace else 0,
    )


def _result(rows: list[_Row], s: _Settings, provenance, **about) -> HessianResult:
    nep, ape = nep_ape(v for r in rows for v in r.eigenvalues)
    lanczos_only = s.method == "lanczos"
    return HessianResult(
        provenance=provenance,
        eigenvalues=[r.eigenvalues for r in rows],
        batch_index=[r.index for r in rows],
        loss=[r.loss for r in rows],
        nll=[r.nll for r in rows],
        n_matvecs=[r.n_matvecs for r in rows],
        converged=[r.converged for r in rows],
        nep=nep,
        ape=ape,
        bound=s.bound if lanczos_only else "n/a",
        block_size=s.block_size if lanczos_only else 1,
        weight_decay=float(s.weight_decay) if s.objective == "nll+l2" else 0.0,
        k=s.k,
        which=s.which,
        method=s.method,
        tol=s.tol,
        max_iter=s.max_iter,
        objective=s.objective,
        train_mode=s.train_mode,
        seed=s.seed,
        batch_size=s.batch_size,
        augment=repr(s.augment) if s.augment is not None else "none",
        params=s.params.describe() if s.params is not None else "all",
        **about,
        **s.extra,
        **_extra_fields(rows),
    )


def _minibatch_rows(base: nn.Module, batches, s: _Settings, advance) -> tuple[list[_Row], int]:
    """This rank's rows, and the number of parameters the operator covers."""
    rows, n_params = [], 0
    chosen: list[tuple[str, nn.Parameter]] | None = None  # the selection, resolved once
    for i, x, t in batches:
        with HessianOperator(
            base,
            (x, t),
            objective=s.objective,
            weight_decay=s.weight_decay,
            params=chosen if chosen is not None else s.params,
            train_mode=s.train_mode,
            seed=mix_seed(s.seed, i, 2) if s.train_mode else None,
        ) as op:
            chosen = list(zip(op.names, op.params, strict=True))
            eigs = top_eigenvalues(
                op,
                s.k,
                which=s.which,
                method=s.method,
                tol=s.tol,
                max_iter=s.max_iter,
                seed=mix_seed(s.seed, i, 1),
                bound=s.bound,
                block_size=s.block_size,
            )
            n_params = op.size
            more = {}
            if s.curvature_batches is None or i < s.curvature_batches:
                more = density_and_trace(op, **s.extra, seed=mix_seed(s.seed, i, 3))
            rows.append(
                _Row(
                    i,
                    eigs.eigenvalues.tolist(),
                    op.loss,
                    op.nll,
                    eigs.n_matvecs,
                    eigs.converged,
                    more,
                )
            )
        advance()
    return rows, n_params


# -- the paper's claims this analysis measures, and its spec ------------------------------------


# The paper's spectra are of the augmented training loss; a Hessian of held-out images (ImageNet
# validation minibatches) is shown in the report but judges no claim.
HELD_OUT = "these Hessians are of held-out images, not the paper's augmented training loss"


def _training_pair(view: StudyView) -> tuple[Any, Any, str]:
    """The ViT's and the CNN's Hessian Results, and why they cannot judge a claim ('' if they
    can)."""
    h_vit, h_cnn = view.pair("hessian")
    if h_vit is None or h_cnn is None:
        return h_vit, h_cnn, "no Hessian of the ViT and the CNN"
    if "test" in (h_vit.provenance.split, h_cnn.provenance.split):
        return h_vit, h_cnn, HELD_OUT
    return h_vit, h_cnn, ""


def nep_difference(a: HessianResult, b: HessianResult) -> Difference:
    """NEP(a) - NEP(b) of the pooled eigenvalues, with its standard error over minibatches
    (NEP moves in steps of 1 / (k x minibatches): one eigenvalue can flip a comparison)."""
    return difference(a.per_batch()[0], b.per_batch()[0], a.nep - b.nep)


def ape_difference(a: HessianResult, b: HessianResult) -> Difference:
    """APE(a) - APE(b) of the pooled eigenvalues, with its standard error over minibatches."""
    return difference(a.per_batch()[1], b.per_batch()[1], a.ape - b.ape)


def nep_claim(cid: str, claim: str, paper: str, measured: str, a, b) -> Claim:
    """The row of a claim that NEP(a) > NEP(b), inconclusive within the minibatch noise."""
    diff = nep_difference(a, b)
    measured += f" (difference {diff.describe('.1%')})"
    row = Claim(cid, claim, paper, measured, diff.value > 0, diff.value)
    return judged(row, diff, "NEP over minibatches", ".1%")


def c4_nep(view: StudyView) -> Claim:
    claim = "ViT has negative Hessian eigenvalues; ResNet almost none"
    paper = "NEP ViT > NEP ResNet ≈ 0"
    h_vit, h_cnn, why = _training_pair(view)
    if why:
        return not_measured("C4", claim, paper, why)
    measured = f"NEP {h_vit.nep:.1%} vs {h_cnn.nep:.1%}"
    return nep_claim("C4", claim, paper, measured, h_vit, h_cnn)


def c5_ape(view: StudyView) -> Claim:
    claim = "ViT's positive Hessian eigenvalues are smaller (flatter) than ResNet's"
    paper = "APE ViT ≈ 36 vs ResNet ≈ 294 at warm-up"
    h_vit, h_cnn, why = _training_pair(view)
    if why:
        return not_measured("C5", claim, paper, why)
    diff = ape_difference(h_cnn, h_vit)
    measured = f"APE {h_vit.ape:.3g} vs {h_cnn.ape:.3g} (difference {diff.describe()})"
    row = Claim("C5", claim, paper, measured, diff.value > 0, diff.value)
    return judged(row, diff, "APE over minibatches")


def _run(inputs: Inputs) -> HessianResult:
    return hessian_spectrum(
        inputs.model,
        inputs.batches,
        weight_decay=inputs.weight_decay,
        batch_size=inputs.batch_size,
        n_batches=inputs.n_batches,
        augment=inputs.mixer,
        seed=inputs.seed,
        progress=inputs.progress,
        provenance=inputs.provenance,
        **inputs.options,
    )


SPEC = register_analysis(
    AnalysisSpec(
        name="hessian",
        summary="top Hessian eigenvalues per minibatch of augmented training data, NEP and APE",
        run=_run,
        function=hessian_spectrum,
        data="train_augmented",
        section="optimization",
        order=60,
        # The ablation claims (C3, C6, C7, C15, C16) compare NEP and APE across ViT variants:
        # the top-k eigenvalues are all they need.
        ablation_options={"density": False, "trace": False},
        held_out=True,  # ImageNet: the paper's minibatches of 16, of validation images
        budgets={
            "analyze": Budget(20, 16),
            "imagenet": Budget(2, 16, {"density": False, "trace": False}),
            # The spectral density and trace (the figure's right panel) on one minibatch: at
            # the quick scale they cost as much as the top-5 eigenvalues of all five. Five
            # minibatches, not ten: at this scale the NEP comparisons are within their
            # minibatch noise at either count (claims C4, C6, C15, C16 read it), and C5's
            # APE gap is resolved at both (benchmarks/results/hessian_budget_quick.txt).
            "quick": Budget(5, 16, {"curvature_batches": 1}),
            "standard": Budget(20, 16),
            "paper": Budget(100, 16),
        },
        options=(
            # k Lanczos vectors of the parameter count each are held: 200 bounds the memory.
            Option("k", 5, "eigenvalues per minibatch", kind="int", minimum=1, maximum=200),
            Option(
                "tol",
                1e-3,
                "eigenvalue tolerance, relative to the largest",
                kind="float",
                positive=True,
                maximum=1,
            ),
            Option(
                "objective", "nll+l2", "nll or nll+l2", kind="choice", choices=("nll", "nll+l2")
            ),
            Option(
                "method",
                "lanczos",
                "lanczos or power (PyHessian's algorithm)",
                kind="choice",
                choices=("lanczos", "power"),
            ),
            Option("density", True, "also estimate the SLQ spectral density", kind="bool"),
            Option("trace", True, "also estimate the Hutch++ trace", kind="bool"),
            Option(
                "curvature_batches",
                2,
                "minibatches that get the density and trace",
                kind="int",
                minimum=0,
                maximum=100_000,
                optional=True,
            ),
        ),
        figures=(
            Figure(
                "hessian",
                "vitlens.report.plots.hessian:plot_hessian_spectra",
                "Hessian max-eigenvalue spectra (top eigenvalues per minibatch of augmented "
                "training data, NLL + L2), models overlaid; NEP and APE in the legend "
                "(paper Fig. 1c, 4).",
            ),
        ),
        claims=(c4_nep, c5_ape),
    )
)
