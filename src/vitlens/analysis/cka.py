"""Representational similarity: minibatch linear CKA (paper Fig. D.3; reference/paper.md §1.12).

Linear CKA (Kornblith et al. 2019) between every pair of blocks, of one model or of two models,
estimated over minibatches as in Nguyen, Raghu & Kornblith (2021, "Do wide and deep networks learn
the same things?"): for each batch of n images and each block, the Gram matrix K = X Xᵀ of the
flattened feature maps; the unbiased HSIC estimator of Song et al. (2012),

    HSIC₁(K, L) = [tr(K̃ L̃) + (1ᵀK̃1)(1ᵀL̃1) / ((n-1)(n-2)) - 2/(n-2) · 1ᵀK̃ L̃ 1] / (n (n-3)),

(K̃, L̃: K, L with zeroed diagonals) is accumulated over batches, and

    CKA(a, b) = Σ HSIC₁(K_a, K_b) / sqrt(Σ HSIC₁(K_a, K_a) · Σ HSIC₁(K_b, K_b)).

HSIC₁ is a bilinear form: HSIC₁(K, L) = <U(K), U(L)> / (n (n-3)) with U the "unbiased centering"
of Kornblith's reference code (zero the diagonal, subtract row and column means with unbiased
weights, zero the diagonal again). So each block's Gram matrix is computed and centred once per
batch, the centred matrices are stacked as rows of an (L, n²) matrix, and one matmul gives every
pair's HSIC — instead of recomputing Grams and traces for each of the L² pairs as per-pair loops
do. The self-terms are squared norms, so never negative. Everything is float64.

Batches of different sizes (a ragged last batch) are weighted by their size n: the variance of
HSIC₁ falls like 1/n, and for equal batches this is the plain sum of Nguyen et al. The estimator
needs n ≥ 4 (it divides by n - 3); a smaller batch is a VitlensError.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from vitlens.analysis.claim import Claim, StudyView, msas_attend, not_measured, requires, the_vit
from vitlens.analysis.registry import register_analysis
from vitlens.analysis.result import Provenance, Result
from vitlens.analysis.spec import FEATURE_BUDGETS, AnalysisSpec, Figure, streamed
from vitlens.analysis.streaming import (
    Batch,
    evaluating,
    float64_device,
    model_name,
    provenance_for,
    resolve_device,
    stream,
)
from vitlens.anatomy import Block, anatomy_of, tapping
from vitlens.errors import VitlensError

MIN_BATCH = 4


@dataclass(frozen=True)
class CKAResult(Result):
    """Minibatch linear CKA between every block of model A and every block of model B.

    Attributes:
        names_a, kinds_a, stages_a: blocks of the first model (rows of `matrix`).
        names_b, kinds_b, stages_b: blocks of the second model (columns); the same as A's when
            a model is compared with itself.
        model_b: name of the second model ("" when a model is compared with itself).
        matrix: CKA values, rows = blocks of A, columns = blocks of B. A block whose
            representation is constant over images has CKA 0 with everything (by convention).
        n_images, n_batches: how much data was streamed.
    """

    analysis: ClassVar[str] = "cka"
    schema: ClassVar[int] = 1

    names_a: list[str] = field(default_factory=list)
    kinds_a: list[str] = field(default_factory=list)
    stages_a: list[int] = field(default_factory=list)
    names_b: list[str] = field(default_factory=list)
    kinds_b: list[str] = field(default_factory=list)
    stages_b: list[int] = field(default_factory=list)
    model_b: str = ""
    matrix: list[list[float]] = field(default_factory=list)
    n_images: int = 0
    n_batches: int = 0


def _check_batch(n: int) -> None:
    if n < MIN_BATCH:
        raise VitlensError(
            f"a batch of {n} images is too small for the unbiased HSIC estimator, which needs at "
            f"least {MIN_BATCH}; use a larger batch size, or drop_last=True in the DataLoader"
        )


def _check_last_batch(batches: Iterable[Batch], max_batches: int | None) -> None:
    """Fail before the data pass, not after it, when a DataLoader's last batch will be too small."""
    size, sampler = getattr(batches, "batch_size", None), getattr(batches, "sampler", None)
    if max_batches is not None or not isinstance(size, int) or getattr(batches, "drop_last", True):
        return
    try:
        last = len(sampler) % size
    except TypeError:
        return
    if 0 < last < MIN_BATCH:
        _check_batch(last)


def gram(features: torch.Tensor) -> torch.Tensor:
    """Linear-kernel Gram matrix X Xᵀ in float64 of features (n, ...) flattened per sample."""
    x = features.reshape(features.shape[0], -1)  # (n, ...) -> (n, d)
    x = x.to(float64_device(x.device), torch.float64)
    return x @ x.T


def unbiased_center(grams: torch.Tensor) -> torch.Tensor:
    """U(K) of Gram matrices (..., n, n) such that <U(K), U(L)> = n (n-3) HSIC₁(K, L)."""
    n = grams.shape[-1]
    _check_batch(n)
    k = grams.clone()
    k.diagonal(dim1=-2, dim2=-1).zero_()
    means = k.sum(dim=-2) / (n - 2)  # (..., n) column sums; K is symmetric
    means = means - means.sum(dim=-1, keepdim=True) / (2 * (n - 1))
    k = k - means[..., :, None] - means[..., None, :]
    k.diagonal(dim1=-2, dim2=-1).zero_()
    return k


def hsic_matrix(centered_a: torch.Tensor, centered_b: torch.Tensor) -> torch.Tensor:
    """HSIC₁ of every pair from centred Grams (La, n, n) and (Lb, n, n): (La, Lb), one matmul."""
    n = centered_a.shape[-1]
    # (La, n, n) -> (La, n²); (Lb, n, n) -> (Lb, n²)
    return centered_a.flatten(1) @ centered_b.flatten(1).T / (n * (n - 3))


def cka_from_hsic(cross: torch.Tensor, self_a: torch.Tensor, self_b: torch.Tensor) -> torch.Tensor:
    """CKA from accumulated HSIC sums; 0 where a representation carries no variance."""
    denom = torch.sqrt(self_a.clamp_min(0)[:, None] * self_b.clamp_min(0)[None, :])
    return torch.where(denom > 0, cross / denom.clamp_min(1e-300), torch.zeros_like(cross))


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two representations (n, ...) of the same n >= 4 inputs, unbiased HSIC."""
    u = unbiased_center(torch.stack([gram(x), gram(y)]))
    h = hsic_matrix(u, u)
    return float(cka_from_hsic(h[:1, 1:], h[:1, :1].diagonal(), h[1:, 1:].diagonal()))


class MinibatchCKA:
    """Running HSIC₁ sums between two lists of blocks, fed one batch of Gram matrices at a time.

    Args:
        n_a, n_b: number of blocks on each side.
        same: both sides are the same blocks (one model), so the self-terms are the diagonal.
        device: where the float64 sums live.
    """

    def __init__(self, n_a: int, n_b: int, *, same: bool, device: torch.device):
        self.same = same
        self.cross = torch.zeros(n_a, n_b, dtype=torch.float64, device=device)
        self.self_a = torch.zeros(n_a, dtype=torch.float64, device=device)
        self.self_b = torch.zeros(n_b, dtype=torch.float64, device=device)

    def update(self, grams_a: torch.Tensor, grams_b: torch.Tensor | None = None) -> None:
        """Add one batch: Gram matrices (La, n, n) of side A and (Lb, n, n) of side B."""
        n = grams_a.shape[-1]
        weight = float(n)  # batches count by their size (see the module docstring)
        ua = unbiased_center(grams_a)
        if self.same:
            h = hsic_matrix(ua, ua)
            self.cross += weight * h
            return
        ub = unbiased_center(grams_b)
        self.cross += weight * hsic_matrix(ua, ub)
        # Self-terms: squared norms of the centred Grams.
        self.self_a += weight * ua.flatten(1).square().sum(1) / (n * (n - 3))
        self.self_b += weight * ub.flatten(1).square().sum(1) / (n * (n - 3))

    def value(self) -> torch.Tensor:
        """The CKA matrix (La, Lb)."""
        if self.same:
            d = self.cross.diagonal()
            return cka_from_hsic(self.cross, d, d)
        return cka_from_hsic(self.cross, self.self_a, self.self_b)


def _gram_collector(grams: dict[str, torch.Tensor]):
    def on_tap(block: Block, t: torch.Tensor) -> None:
        # Reduce each map to its (n, n) Gram at once, so no batch of maps is held.
        grams[block.name] = gram(block.layout.to_map(t))

    return on_tap


def cka(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    other: nn.Module | None = None,
    max_batches: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    provenance: Provenance | None = None,
) -> CKAResult:
    """Minibatch linear CKA between all blocks of `model` (and of `other`), in one data pass.

    Args:
        model: any model `vitlens.anatomy.describe` knows; moved to `device`, run in eval mode.
        batches: (images, labels) pairs, e.g. a DataLoader; every batch needs at least 4 images.
        other: a second model to compare against; it sees the same batches. None: `model` is
            compared with itself.
        max_batches: use at most this many batches (None: all).
        device: `cpu`, `cuda`, `mps` or `auto`.
        progress: show a progress bar.
        provenance: what to record about `model` and the data; wall time and device filled in.

    Raises:
        VitlensError: a batch has fewer than 4 images.
    """
    started = time.perf_counter()
    device = resolve_device(device)
    anatomy_a = anatomy_of(model.to(device))
    anatomy_b = anatomy_a if other is None else anatomy_of(other.to(device))
    blocks_a, blocks_b = list(anatomy_a.blocks), list(anatomy_b.blocks)
    acc = MinibatchCKA(
        len(blocks_a), len(blocks_b), same=other is None, device=float64_device(device)
    )
    _check_last_batch(batches, max_batches)
    grams_a: dict[str, torch.Tensor] = {}
    grams_b: dict[str, torch.Tensor] = {}
    n_images = n_batches = 0
    with contextlib.ExitStack() as stack:
        for m in (model,) if other is None else (model, other):
            stack.enter_context(evaluating(m))
        stack.enter_context(torch.no_grad())
        stack.enter_context(tapping(blocks_a, _gram_collector(grams_a)))
        if other is not None:
            stack.enter_context(tapping(blocks_b, _gram_collector(grams_b)))
        for images, _ in stream(
            batches, max_batches=max_batches, device=device, progress=progress, description="cka"
        ):
            _check_batch(int(images.shape[0]))
            anatomy_a.run(model, images)
            stacked_a = torch.stack([grams_a.pop(b.name) for b in blocks_a])  # (La, n, n)
            if other is None:
                acc.update(stacked_a)
            else:
                anatomy_b.run(other, images)
                acc.update(stacked_a, torch.stack([grams_b.pop(b.name) for b in blocks_b]))
            n_images += int(images.shape[0])
            n_batches += 1
    provenance = provenance_for(provenance, model, device, started)
    return _result(provenance, blocks_a, blocks_b, other, acc, n_images, n_batches)


def _result(provenance, blocks_a, blocks_b, other, acc, n_images, n_batches) -> CKAResult:
    return CKAResult(
        provenance=provenance,
        names_a=[b.name for b in blocks_a],
        kinds_a=[b.kind for b in blocks_a],
        stages_a=[b.stage for b in blocks_a],
        names_b=[b.name for b in blocks_b],
        kinds_b=[b.kind for b in blocks_b],
        stages_b=[b.stage for b in blocks_b],
        model_b="" if other is None else model_name(other),
        matrix=acc.value().cpu().tolist(),
        n_images=n_images,
        n_batches=n_batches,
    )


# -- the paper's claim this analysis measures, and its spec -------------------------------------


@requires(msas_attend(the_vit))
def c12_cka(view: StudyView) -> Claim:
    claim = "Multi-stage models show block-structured CKA; ViT is uniform"
    paper = "block-diagonal for ResNet/PiT/Swin, uniform for ViT"
    r_vit, r_cnn = view.pair("cka")
    if r_vit is None or r_cnn is None:
        return not_measured("C12", claim, paper)

    def mean_offdiag(m: list[list[float]]) -> float:
        n = len(m)
        return statistics.fmean(m[i][j] for i in range(n) for j in range(n) if i != j)

    v, c = mean_offdiag(r_vit.matrix), mean_offdiag(r_cnn.matrix)
    return Claim(
        "C12", claim, paper, f"mean CKA between blocks: ViT {v:.2f} vs ResNet {c:.2f}", v > c, v - c
    )


SPEC = register_analysis(
    AnalysisSpec(
        name="cka",
        summary="minibatch linear CKA between all pairs of blocks (with --other: two models)",
        run=streamed(cka, "other"),
        function=cka,
        data="test",
        section="features",
        order=30,
        budgets=FEATURE_BUDGETS,
        figures=(
            Figure(
                "cka",
                "vitlens.report.plots.cka:plot_cka",
                "Representational similarity (minibatch linear CKA) between all pairs of blocks.",
            ),
        ),
        claims=(c12_cka,),
    )
)
