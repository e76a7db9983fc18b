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

from vitlens.analysis.claim import Claim, StudyView, msas_attend, not_measured, requires
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
from vitlens.anatomy.spec import check_targets
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
    check_targets(logits, labels)
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
        max_batches, device, progress, provenance: as for every feature analysis (api.md).

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


@dataclass(frozen=True)
class StageLesion:
    """One stage of one model: the lesion of its last MSA against the units before it."""

    stage: int
    msa: str  # the stage's last MSA block
    msa_delta: float  # its change in accuracy when lesioned
    before: list[float]  # the changes of every lesioned unit before it in the stage

    @property
    def margin(self) -> float:
        """Mean change of the units before minus the MSA's: positive when the MSA hurts more."""
        return statistics.fmean(self.before) - self.msa_delta

    @property
    def outranks(self) -> int:
        """How many units before it the MSA's lesion hurts more than."""
        return sum(self.msa_delta < d for d in self.before)


def stage_lesions(result: LesionResult) -> list[StageLesion]:
    """Per stage with an MSA that has units before it: the paper's C13 comparison (§1.13)."""
    stages = []
    for stage in sorted(set(result.stages)):
        units = [
            (name, kind, delta)
            for name, kind, st, delta in zip(
                result.names, result.kinds, result.stages, result.delta_accuracy, strict=True
            )
            if st == stage
        ]
        last = max((i for i, (_, kind, _) in enumerate(units) if kind == "msa"), default=None)
        if last:  # None: no MSA in the stage; 0: nothing before it to compare with
            before = [delta for _, _, delta in units[:last]]
            stages.append(StageLesion(stage, units[last][0], units[last][2], before))
    return stages


def multi_stage_msa_models(view: StudyView) -> list[str]:
    """The models C13 judges: every model of the study with a lesion Result that has MSAs in
    more than one stage or MSAs after other units of their stage (AlterNet, Swin, PiT, ...)."""
    judged = []
    for model in view.models:
        r = view.result("lesion", model)
        if r is not None and len(set(r.stages)) > 1 and stage_lesions(r):
            judged.append(model)
    return judged


@requires(msas_attend(multi_stage_msa_models))
def c13_stage_end_msa(view: StudyView) -> Claim:
    """Stage by stage (paper §1.13): the lesion of the MSA at the end of a stage against the mean
    lesion of the units before it in that stage. A model holds when its MSA hurts more in most
    of its stages; the claim holds when it holds for every model judged (each shown)."""
    claim = "MSAs at the end of a stage matter more than the units before them in the stage"
    paper = "Swin: last MSA of stages 2/3/4 −1.44/−0.56/−1.88 pp; mid-stage units −0.16 … −0.39"
    per_model, verdicts, margins = [], [], []
    for model in multi_stage_msa_models(view):
        stages = stage_lesions(view.result("lesion", model))
        held = [s.margin > 0 for s in stages]
        verdicts.append(sum(held) * 2 > len(stages))
        margins.append(statistics.fmean(s.margin for s in stages))
        per_stage = ", ".join(
            f"stage {s.stage}: {s.msa_delta * 100:+.1f} vs {statistics.fmean(s.before) * 100:+.1f}"
            f" pp (worse than {s.outranks} of {len(s.before)})"
            for s in stages
        )
        per_model.append(f"{model}: holds in {sum(held)} of {len(stages)} stages ({per_stage})")
    if not per_model:
        why = "no model with lesions has MSAs in more than one stage, or after other units of"
        why += " its stage (the rule needs a model such as AlterNet, Swin or PiT)"
        return not_measured("C13", claim, paper, why)
    measured = (
        "last MSA vs mean of the units before it; a model holds in most of its stages, the "
        "claim when every model judged holds; " + "; ".join(per_model)
    )
    return Claim("C13", claim, paper, measured, all(verdicts), min(margins))


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
        options=(
            Option(
                "blocks",
                None,
                "names of the blocks to lesion (default: all)",
                kind="str",
                many=True,
                optional=True,
            ),
        ),
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
