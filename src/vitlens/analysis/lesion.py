"""Lesion study (paper §4, Fig. D.4; reference/paper.md §1.13): remove one residual branch.

For every block with a residual branch (each MSA, MLP or conv branch) the branch's output is zeroed
(`vitlens.anatomy.lesioned`), so the block passes its input through the skip alone, and the model is
evaluated: the change in top-1 accuracy and in NLL against the intact model. In Swin, removing MLPs
at the beginning of a stage and MSAs at the end of a stage hurts most; in ResNet, early blocks.

The data are read once: each batch runs through the intact model and then through every lesioned
variant, so a DataLoader is iterated a single time whatever the number of branches.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vitlens.analysis.claim import Claim, StudyView, not_measured
from vitlens.analysis.registry import register_analysis
from vitlens.analysis.result import Provenance, Result
from vitlens.analysis.spec import FEATURE_BUDGETS, AnalysisSpec, Figure, Option, streamed
from vitlens.analysis.streaming import (
    Batch,
    evaluating,
    normalized_depths,
    provenance_for,
    resolve_device,
    stream,
)
from vitlens.anatomy import anatomy_of, lesioned
from vitlens.errors import VitlensError


@dataclass(frozen=True)
class LesionResult(Result):
    """Accuracy and NLL with each residual branch removed, and their change from the intact model.

    Accuracies are fractions in [0, 1]; NLL is the mean cross-entropy in nats per image.

    Attributes:
        intact_accuracy, intact_nll: the unlesioned model on the same data.
        names, kinds, stages: the lesioned blocks, in forward order.
        depths: normalized depth of each block over the model's feature-map blocks.
        accuracy, nll: with that block's branch removed.
        delta_accuracy, delta_nll: lesioned minus intact.
        n_images, n_batches: how much data was evaluated.
    """

    analysis: ClassVar[str] = "lesion"
    schema: ClassVar[int] = 1

    intact_accuracy: float = 0.0
    intact_nll: float = 0.0
    names: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    stages: list[int] = field(default_factory=list)
    depths: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    nll: list[float] = field(default_factory=list)
    delta_accuracy: list[float] = field(default_factory=list)
    delta_nll: list[float] = field(default_factory=list)
    n_images: int = 0
    n_batches: int = 0


def batch_metrics(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, float]:
    """(number correct, summed NLL) of a batch; labels are class indices or soft (B, classes)."""
    if labels.ndim == 2:  # soft labels (mixup, label smoothing): NLL against the distribution
        nll = -(labels * F.log_softmax(logits.float(), dim=-1)).sum()
        target = labels.argmax(dim=-1)
    else:
        nll = F.cross_entropy(logits.float(), labels, reduction="sum")
        target = labels
    correct = (logits.argmax(dim=-1) == target).sum()
    return int(correct), float(nll)


def _lesion_names(all_blocks, asked: list[str] | None) -> list[str]:
    """The blocks to lesion, in forward order: those asked for (all by default)."""
    lesionable = [b.name for b in all_blocks if b.branch is not None]
    bad = [n for n in asked or [] if n not in lesionable]
    if bad:
        raise VitlensError(
            f"cannot lesion {bad}: the blocks with a residual branch are {lesionable}"
        )
    return lesionable if asked is None else [n for n in lesionable if n in set(asked)]


def lesion(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    blocks: list[str] | None = None,
    max_batches: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    provenance: Provenance | None = None,
) -> LesionResult:
    """Change in accuracy and NLL when each residual branch is removed in turn.

    Args:
        model: any model `vitlens.anatomy.describe` knows; moved to `device`, run in eval mode.
        batches: (images, labels) pairs of a labelled split, e.g. the test DataLoader.
        blocks: names of the blocks to lesion (default: every block with a residual branch;
            an empty list evaluates only the intact model).
        max_batches: use at most this many batches (None: all).
        device: `cpu`, `cuda`, `mps` or `auto`.
        progress: show a progress bar.
        provenance: what to record about the model and data; wall time and device are filled in.

    Raises:
        VitlensError: a named block does not exist or has no residual branch.
    """
    started = time.perf_counter()
    device = resolve_device(device)
    anatomy = anatomy_of(model.to(device))
    all_blocks = list(anatomy.blocks)
    by_name = {b.name: b for b in all_blocks}
    names = _lesion_names(all_blocks, blocks)
    correct = dict.fromkeys([None, *names], 0)  # None: the intact model
    nll = dict.fromkeys([None, *names], 0.0)
    n_images = n_batches = 0
    with evaluating(model), torch.no_grad():
        for images, labels in stream(
            batches, max_batches=max_batches, device=device, progress=progress, description="lesion"
        ):
            for name in [None, *names]:
                with lesioned(model, [] if name is None else [name]):
                    c, loss = batch_metrics(anatomy.forward(model, images), labels)
                correct[name] += c
                nll[name] += loss
            n_images += int(images.shape[0])
            n_batches += 1
    acc = {k: v / n_images for k, v in correct.items()}
    mean_nll = {k: v / n_images for k, v in nll.items()}
    depths = normalized_depths(all_blocks)
    return LesionResult(
        provenance=provenance_for(provenance, model, device, started),
        intact_accuracy=acc[None],
        intact_nll=mean_nll[None],
        names=list(names),
        kinds=[by_name[n].kind for n in names],
        stages=[by_name[n].stage for n in names],
        depths=[depths[n] for n in names],
        accuracy=[acc[n] for n in names],
        nll=[mean_nll[n] for n in names],
        delta_accuracy=[acc[n] - acc[None] for n in names],
        delta_nll=[mean_nll[n] - mean_nll[None] for n in names],
        n_images=n_images,
        n_batches=n_batches,
    )


# -- the paper's claim this analysis measures, and its spec -------------------------------------


def c13_stage_end_msa(view: StudyView) -> Claim:
    claim = "MSAs at the end of a stage matter more than the blocks before them"
    paper = "Swin: last MSA of stages 2/3/4 −1.44/−0.56/−1.88 pp; mid-stage units −0.16 … −0.39"
    model = view.first("alternet", "swin")
    r = view.result("lesion", model)
    pairs = list(zip(r.delta_accuracy, r.kinds, strict=True)) if r else []
    msa = [d for d, k in pairs if k == "msa"]
    other = [d for d, k in pairs if k != "msa"]
    if not msa or not other:
        return not_measured("C13", claim, paper)
    a, b = statistics.fmean(msa), statistics.fmean(other)
    measured = f"{model}: MSA lesions {a * 100:+.1f} pp vs other blocks {b * 100:+.1f} pp"
    return Claim("C13", claim, paper, measured, a < b, b - a)


SPEC = register_analysis(
    AnalysisSpec(
        name="lesion",
        summary="accuracy and NLL with one residual branch removed at a time (paper §4)",
        run=streamed(lesion),
        function=lesion,
        data="test",
        section="features",
        order=40,
        budgets=FEATURE_BUDGETS,
        options=(Option("blocks", None, "names of the blocks to lesion (default: all)"),),
        figures=(
            Figure(
                "lesion",
                "vitlens.report.plots.lesion:plot_lesion",
                "Change in accuracy and NLL when one residual branch is removed (paper §4).",
            ),
        ),
        claims=(c13_stage_end_msa,),
    )
)
