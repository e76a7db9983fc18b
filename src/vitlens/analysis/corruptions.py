"""Robustness to common corruptions: accuracy, NLL and ECE per corruption and severity.

Park & Kim (ICLR 2022) report robustness as the mean accuracy over the 15 corruptions x 5
severities of CIFAR-100-C (official_repo.md §4.4; issue #5 of the official repo). Hendrycks &
Dietterich (ICLR 2019) also normalise errors by a baseline model's:

    CE_c = sum_s E_{s,c} / sum_s E^base_{s,c},      mCE = mean_c CE_c
    relative CE_c = sum_s (E_{s,c} - E_clean) / sum_s (E^base_{s,c} - E^base_clean)

with E = 1 - accuracy (the published mCE uses AlexNet as the baseline and is quoted in percent).

Input convention: `batches` yield `(images, labels)` with images **in [0, 1] (float) or uint8,
before normalisation**. Each batch is corrupted with `vitlens.robustness.corrupt` and only then
normalised with `normalize=(mean, std)` and fed to the model. The corruption of batch b by (c, s)
is seeded with `mix_seed(seed, c, s, b)`, so results do not depend on the order of the work or on
how it is split across torchrun ranks (each rank takes every world-th corruption; the metric sums
are added across ranks).

`corruption_robustness_from_files` evaluates the released CIFAR-10-C / CIFAR-100-C arrays instead.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from vitlens import distributed as dist
from vitlens.analysis.perturbed import (
    Normalization,
    as_unit_float,
    batch_count,
    normalizer,
    reduce_sums,
)
from vitlens.analysis.registry import register_analysis
from vitlens.analysis.result import Provenance, Result
from vitlens.analysis.spec import AnalysisSpec, Budget, Column, Figure, Option, streamed
from vitlens.analysis.streaming import (
    Batch,
    evaluating,
    provenance_for,
    resolve_device,
    stream,
)
from vitlens.analysis.streaming import progress_bar as work_bar
from vitlens.anatomy import Anatomy, anatomy_of
from vitlens.data.dataset import mix_seed
from vitlens.errors import VitlensError
from vitlens.robustness.cifar_c import check_cifar_c, cifar_c_batches
from vitlens.robustness.corruptions import (
    CORRUPTIONS,
    SEVERITIES,
    check_corruptions,
    corrupt,
)
from vitlens.robustness.params import ParamSet, resolve_params
from vitlens.train.metrics import MetricSums


@dataclass(frozen=True)
class CorruptionResult(Result):
    """Metrics of one model on corrupted data.

    Attributes:
        source: "generated" (on-the-fly corruptions) or "files" (released CIFAR-C arrays).
        params: the parameter table, "cifar" or "imagenet" ("cifar" for the released files).
        corruptions: names, in evaluation order.
        severities: severities, in order.
        image_size: (H, W) of the images.
        seed: seed of the corruptions.
        normalize_mean, normalize_std: the normalisation applied after corrupting ([] for none).
        n_images: images per (corruption, severity).
        clean_accuracy, clean_nll, clean_ece: on the uncorrupted images (None when not measured).
        accuracy, nll, ece: corruption -> one value per severity.
        mean_accuracy: mean over every corruption and severity (the paper's robustness).
        mean_nll, mean_ece: likewise.
        accuracy_by_severity: mean over corruptions, per severity.
        accuracy_by_corruption: mean over severities, per corruption.
        baseline: name of the model the corruption errors are relative to ("" for none).
        corruption_error, relative_corruption_error: CE_c and relative CE_c (fractions; 1.0 is
            the baseline's level), per corruption both results share.
        mce, relative_mce: their means over corruptions (None without a baseline).
    """

    analysis: ClassVar[str] = "corruptions"
    schema: ClassVar[int] = 1

    source: str = "generated"
    params: str = "cifar"
    corruptions: list[str] = field(default_factory=list)
    severities: list[int] = field(default_factory=list)
    image_size: list[int] = field(default_factory=list)
    seed: int = 0
    normalize_mean: list[float] = field(default_factory=list)
    normalize_std: list[float] = field(default_factory=list)
    n_images: int = 0
    clean_accuracy: float | None = None
    clean_nll: float | None = None
    clean_ece: float | None = None
    accuracy: dict[str, list[float]] = field(default_factory=dict)
    nll: dict[str, list[float]] = field(default_factory=dict)
    ece: dict[str, list[float]] = field(default_factory=dict)
    mean_accuracy: float = 0.0
    mean_nll: float = 0.0
    mean_ece: float = 0.0
    accuracy_by_severity: list[float] = field(default_factory=list)
    accuracy_by_corruption: dict[str, float] = field(default_factory=dict)
    baseline: str = ""
    corruption_error: dict[str, float] = field(default_factory=dict)
    relative_corruption_error: dict[str, float] = field(default_factory=dict)
    mce: float | None = None
    relative_mce: float | None = None

    def with_baseline(self, baseline: CorruptionResult) -> CorruptionResult:
        """This result with CE, relative CE, mCE and relative mCE against `baseline`."""
        return dataclasses.replace(self, **corruption_errors(self, baseline))


def _ratio(num: float, den: float) -> float:
    # A baseline without errors: as good as it when we have none either, infinitely worse if not.
    if den > 0:
        return num / den
    return 1.0 if num <= 0 else math.inf


def corruption_errors(result: CorruptionResult, baseline: CorruptionResult) -> dict:
    """Hendrycks & Dietterich's CE_c, relative CE_c, mCE and relative mCE of `result`.

    Uses the corruptions and severities both results hold. Relative errors need both clean
    accuracies; they are left empty (None) otherwise.

    Returns:
        Field values for `CorruptionResult`: baseline, corruption_error,
        relative_corruption_error, mce, relative_mce.

    Raises:
        VitlensError: the results share no corruption or no severity.
    """
    names = [c for c in result.corruptions if c in baseline.accuracy]
    sevs = [s for s in result.severities if s in baseline.severities]
    if not names or not sevs:
        raise VitlensError(
            f"the baseline ({baseline.provenance.model or 'unnamed'}) shares no corruption and "
            "severity with this result; evaluate it on the same corruptions"
        )
    ours = {s: result.severities.index(s) for s in sevs}
    theirs = {s: baseline.severities.index(s) for s in sevs}
    ce, rel = {}, {}
    have_clean = result.clean_accuracy is not None and baseline.clean_accuracy is not None
    for c in names:
        err = [1 - result.accuracy[c][ours[s]] for s in sevs]
        base = [1 - baseline.accuracy[c][theirs[s]] for s in sevs]
        ce[c] = _ratio(sum(err), sum(base))
        if have_clean:
            e0, b0 = 1 - result.clean_accuracy, 1 - baseline.clean_accuracy
            rel[c] = _ratio(sum(e - e0 for e in err), sum(b - b0 for b in base))
    return {
        "baseline": baseline.provenance.model or "baseline",
        "corruption_error": ce,
        "relative_corruption_error": rel,
        "mce": sum(ce.values()) / len(ce),
        "relative_mce": sum(rel.values()) / len(rel) if rel else None,
    }


def _result(
    *,
    clean: MetricSums | None,
    sums: dict[tuple[str, int], MetricSums],
    corruptions: list[str],
    severities: list[int],
    baseline: CorruptionResult | None,
    **fields,
) -> CorruptionResult:
    rows = {k: s.result() for k, s in sums.items()}
    acc = {c: [rows[c, s]["acc"] for s in severities] for c in corruptions}
    nll = {c: [rows[c, s]["nll"] for s in severities] for c in corruptions}
    ece = {c: [rows[c, s]["ece"] for s in severities] for c in corruptions}
    cells = len(corruptions) * len(severities)
    c0 = clean.result() if clean is not None else None
    result = CorruptionResult(
        corruptions=corruptions,
        severities=severities,
        n_images=rows[corruptions[0], severities[0]]["samples"],
        clean_accuracy=c0["acc"] if c0 else None,
        clean_nll=c0["nll"] if c0 else None,
        clean_ece=c0["ece"] if c0 else None,
        accuracy=acc,
        nll=nll,
        ece=ece,
        mean_accuracy=sum(map(sum, acc.values())) / cells,
        mean_nll=sum(map(sum, nll.values())) / cells,
        mean_ece=sum(map(sum, ece.values())) / cells,
        accuracy_by_severity=[
            sum(acc[c][i] for c in corruptions) / len(corruptions) for i in range(len(severities))
        ],
        accuracy_by_corruption={c: sum(v) / len(v) for c, v in acc.items()},
        **fields,
    )
    return result.with_baseline(baseline) if baseline is not None else result


def _check_common(corruptions: Sequence[str], severities: Sequence[int]) -> None:
    if not corruptions:
        raise VitlensError("no corruptions to evaluate")
    bad = [s for s in severities if s not in SEVERITIES]
    if bad or not severities:
        raise VitlensError(f"severities must be among 1..5, got {list(severities)}")


# -- on-the-fly corruptions --------------------------------------------------------------------


def corruption_robustness(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = SEVERITIES,
    normalize: Normalization | None = None,
    params: ParamSet = "auto",
    seed: int = 0,
    baseline: CorruptionResult | None = None,
    max_batches: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    provenance: Provenance | None = None,
) -> CorruptionResult:
    """Accuracy, NLL and ECE of `model` under each corruption and severity, generated on the fly.

    Args:
        model: Any classifier; moved to `device` and run in eval mode.
        batches: `(images, labels)` pairs; images `(B, C, H, W)` in [0, 1] (float) or uint8,
            **not normalised** (C = 1 or 3).
        corruptions: Names among `vitlens.robustness.CORRUPTIONS` (default: all 15).
        severities: Among 1..5 (default: all).
        normalize: `(mean, std)` per channel, applied after corrupting; None feeds [0, 1] images.
        params: Corruption parameters: "auto" (CIFAR up to 32x32, ImageNet above), "cifar",
            "imagenet".
        seed: Seed of the corruptions (combined with corruption, severity and batch index).
        baseline: A baseline model's result on the same corruptions, for CE and mCE.
        max_batches: Use at most this many batches (None: all).
        device: "cpu", "cuda", "mps" or "auto".
        progress: Show a progress bar (one step per corrupted batch).
        provenance: What to record about the model and data; wall time and device are filled in.

    Returns:
        A `CorruptionResult`.

    Raises:
        VitlensError: unknown corruption, bad severity, images outside [0, 1], empty data, or a
            baseline with nothing in common.
    """
    started = time.perf_counter()
    tally = _Tally.start(model, check_corruptions(list(corruptions)), severities, normalize, device)
    n_batches = batch_count(batches, max_batches)
    steps = None if n_batches is None else n_batches * (len(tally.mine) * len(tally.severities) + 1)
    with work_bar("corruptions", steps, progress) as advance:
        data = stream(batches, max_batches=max_batches, device=tally.device)
        table = _generated_passes(tally, data, params=params, seed=seed, advance=advance)
    return tally.finish(baseline, "generated", table, seed, provenance, started)


@dataclass
class _Tally:
    """What both entry points share: the model on its device and its normaliser, the
    corruptions and severities, the metric sums of the clean pass and of every (corruption,
    severity), and the image size seen."""

    model: nn.Module
    anatomy: Anatomy
    device: torch.device
    norm: Callable[[torch.Tensor], torch.Tensor]
    mean: list[float] | None
    std: list[float] | None
    corruptions: list[str]
    severities: list[int]
    clean: MetricSums | None
    sums: dict[tuple[str, int], MetricSums]
    size: list[int] = field(default_factory=list)

    @classmethod
    def start(cls, model, corruptions, severities, normalize, device, *, clean: bool = True):
        severities = [int(s) for s in severities]
        _check_common(corruptions, severities)
        device = resolve_device(device)
        norm, mean, std = normalizer(normalize, device)
        return cls(
            model=model.to(device),
            anatomy=anatomy_of(model, need_blocks=False),
            device=device,
            norm=norm,
            mean=mean,
            std=std,
            corruptions=corruptions,
            severities=severities,
            clean=MetricSums() if clean else None,
            sums={(c, s): MetricSums() for c in corruptions for s in severities},
        )

    @property
    def mine(self) -> list[str]:
        return self.corruptions[dist.rank() :: dist.world()]  # this rank's share

    def add(self, sums: MetricSums, x: torch.Tensor, labels: torch.Tensor) -> None:
        """Add the model's metrics on the unnormalised images `x` to `sums`."""
        if not self.size:
            self.size = [int(x.shape[-2]), int(x.shape[-1])]
        sums.add(self.anatomy.forward(self.model, self.norm(x)).float(), labels)

    def finish(self, baseline, source, params, seed, provenance, started) -> CorruptionResult:
        """Sum across ranks and build the Result."""
        reduce_sums([*([self.clean] if self.clean else []), *self.sums.values()])
        # A rank that read no release file still reports its size: the release is 32x32.
        size = self.size or ([32, 32] if source == "files" else [])
        return _result(
            clean=self.clean,
            sums=self.sums,
            corruptions=self.corruptions,
            severities=self.severities,
            baseline=baseline,
            source=source,
            params=params,
            image_size=size,
            seed=seed,
            normalize_mean=self.mean,
            normalize_std=self.std,
            provenance=provenance_for(provenance, self.model, self.device, started),
        )


def _generated_passes(tally: _Tally, batches, *, params: str, seed: int, advance) -> str:
    """Add every batch's clean and corrupted metrics to the tally. Returns the parameter table
    used ("cifar" or "imagenet"), chosen from the first batch's image size."""
    table = "cifar"
    with evaluating(tally.model), torch.no_grad():
        for b, (images, labels) in enumerate(batches):
            x = as_unit_float(images)
            if b == 0:
                table = resolve_params(params, int(x.shape[-2]), int(x.shape[-1]))
            if dist.is_main():  # the clean pass is counted once across ranks
                tally.add(tally.clean, x, labels)
            advance()
            for c in tally.mine:
                for s in tally.severities:
                    g = torch.Generator().manual_seed(mix_seed(seed, CORRUPTIONS.index(c), s, b))
                    tally.add(tally.sums[c, s], corrupt(x, c, s, generator=g, params=table), labels)
                    advance()
    return table


# -- released CIFAR-10-C / CIFAR-100-C ---------------------------------------------------------


def corruption_robustness_from_files(
    model: nn.Module,
    root: str | Path,
    *,
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = SEVERITIES,
    normalize: Normalization | None = None,
    clean: Iterable[Batch] | None = None,
    batch_size: int = 256,
    limit: int | None = None,
    baseline: CorruptionResult | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    provenance: Provenance | None = None,
) -> CorruptionResult:
    """The same metrics on the released CIFAR-10-C / CIFAR-100-C arrays in `root`.

    Args:
        model: Any classifier; moved to `device` and run in eval mode.
        root: Folder with `<corruption>.npy` and `labels.npy` (see `vitlens.robustness.cifar_c`).
        corruptions: File names without `.npy` (default: the 15 benchmark corruptions).
        severities: Among 1..5.
        normalize: `(mean, std)` of the clean dataset, applied to the [0, 1] images.
        clean: Optional clean test batches (same convention as `corruption_robustness`) for the
            clean metrics; the release holds no clean images.
        batch_size: Images per batch.
        limit: Use only the first `limit` test images of each severity.
        baseline: A baseline model's result, for CE and mCE.
        device: "cpu", "cuda", "mps" or "auto".
        progress: Show a progress bar (one step per corruption and severity).
        provenance: What to record; wall time and device are filled in.

    Raises:
        VitlensError: missing or malformed files (naming them), bad severities.
    """
    started = time.perf_counter()
    tally = _Tally.start(
        model, list(corruptions), severities, normalize, device, clean=clean is not None
    )
    root = check_cifar_c(root, tally.corruptions)
    with work_bar("CIFAR-C", len(tally.mine) * len(tally.severities), progress) as advance:
        _file_passes(tally, root, clean, batch_size=batch_size, limit=limit, advance=advance)
    if provenance is None:
        provenance = Provenance.now(dataset=str(root))
    return tally.finish(baseline, "files", "cifar", 0, provenance, started)


def _file_passes(tally: _Tally, root: Path, clean, *, batch_size: int, limit, advance) -> None:
    """Add the clean batches' metrics and each released file's to the tally."""
    with evaluating(tally.model), torch.no_grad():
        if tally.clean is not None and dist.is_main():
            for images, labels in stream(clean, device=tally.device):
                tally.add(tally.clean, as_unit_float(images), labels)
        for c in tally.mine:
            for s in tally.severities:
                for x, y in cifar_c_batches(root, c, s, batch_size=batch_size, limit=limit):
                    tally.add(tally.sums[c, s], x.to(tally.device), y.to(tally.device))
                advance()


def clean_batches(dataset, batch_size: int = 256, limit: int | None = None) -> Iterator[Batch]:
    """Unnormalised `(images in [0, 1], labels)` batches of an `ArrayDataset` (its uint8 tensor).

    Args:
        dataset: A `vitlens.data.ArrayDataset` (anything with `.images` uint8 and `.labels`).
        batch_size: Images per batch.
        limit: Only the first `limit` images (None: all).
    """
    n = len(dataset.images) if limit is None else min(limit, len(dataset.images))
    for i in range(0, n, batch_size):
        j = min(i + batch_size, n)
        yield dataset.images[i:j].float() / 255, dataset.labels[i:j]


# -- spec -----------------------------------------------------------------------------------------


SPEC = register_analysis(
    AnalysisSpec(
        name="corruptions",
        summary="accuracy under the 15 common corruptions at 5 severities (CIFAR-C/ImageNet-C)",
        run=streamed(corruption_robustness, "normalize", "seed"),
        function=corruption_robustness,
        data="test_unit",
        section="features",
        order=100,
        budgets={
            "analyze": Budget(None, 256),
            # No claim reads it: 128 images x 5 severities per corruption, the mean of each bar
            # to about ±2 pp, the study's second-largest analysis cost halved.
            "quick": Budget(1, 128),
            "standard": Budget(8, 250),
            "paper": Budget(None, 256),
        },
        figures=(
            Figure(
                "corruptions",
                "vitlens.report.plots.corruptions:plot_corruption_bars",
                "Accuracy under the 15 common corruptions (mean over 5 severities).",
            ),
            Figure(
                "corruptions_heatmap",
                "vitlens.report.plots.corruptions:plot_corruption_heatmap",
                "Accuracy per corruption and severity.",
            ),
        ),
        options=(
            Option(
                "corruptions",
                CORRUPTIONS,
                "names among the 15 common corruptions",
                kind="choice",
                choices=CORRUPTIONS,
                many=True,
            ),
            Option(
                "severities",
                SEVERITIES,
                "severities among 1..5",
                kind="int",
                minimum=1,
                maximum=5,
                many=True,
            ),
            Option(
                "params",
                "auto",
                "corruption parameters: auto, cifar or imagenet",
                kind="choice",
                choices=("auto", "cifar", "imagenet"),
            ),
        ),
        columns=(Column("corruption acc", lambda r: f"{r.mean_accuracy:.2%}"),),
    )
)

__all__ = [
    "CorruptionResult",
    "clean_batches",
    "corruption_errors",
    "corruption_robustness",
    "corruption_robustness_from_files",
]
