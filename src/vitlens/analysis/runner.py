"""Run any analysis on a trained model by name: the engine of `vitlens analyze` and the study.

Given a run folder (or checkpoint), this module rebuilds the model, prepares the data each analysis
needs — clean test images for the feature and robustness analyses (normalized, or in [0, 1] for the
robustness ones, which normalize inside), the run's own training augmentation for the loss-surface
analyses (paper §2: Hessians and landscapes on augmented training data with NLL + L2) — calls the
analysis, and stamps the Result with its provenance.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from vitlens.analysis.result import Provenance, Result
from vitlens.errors import UnknownNameError, VitlensError

ANALYSES = (
    "fourier",
    "variance",
    "cka",
    "lesion",
    "attention",
    "hessian",
    "landscape",
    "trajectory",
    "corruptions",
    "freqnoise",
)


@dataclass
class Subject:
    """A trained model and what is known about it."""

    model: torch.nn.Module
    record: dict[str, Any]
    path: Path

    @property
    def name(self) -> str:
        return self.record["model_spec"]["name"]

    @property
    def config(self) -> dict[str, Any]:
        return self.record["config"]


def load_subject(checkpoint: str | Path, device: torch.device) -> Subject:
    from vitlens.train.runs import load_model

    model, record = load_model(checkpoint, device)
    return Subject(model, record, Path(checkpoint))


def _dataset(subject: Subject, split: str, dataset: str | None, data_dir: str | None):
    from vitlens.data import load_dataset

    spec = subject.record["model_spec"]
    name = dataset or subject.config["dataset"]
    data = load_dataset(
        name,
        split,
        data_dir=data_dir or subject.config.get("data_dir"),
        image_size=spec["image_size"],
    )
    if data.info.in_chans != spec["in_chans"] or data.info.num_classes != spec["num_classes"]:
        raise VitlensError(
            f"{name} ({data.info.in_chans} channels, {data.info.num_classes} classes) does not fit "
            f"{spec['name']} ({spec['in_chans']} channels, {spec['num_classes']} classes)"
        )
    return data


def _loader(data, batch_size: int, limit: int | None, *, seed: int | None = None):
    """Batches in a fixed order (shuffled with `seed` when given), at most `limit` of them."""
    n = len(data)
    if seed is None:
        order = list(range(n))
    else:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if limit is not None:
        batches = batches[:limit]
    return torch.utils.data.DataLoader(data, batch_sampler=batches)


def clean_batches(
    subject,
    *,
    split="test",
    dataset=None,
    data_dir=None,
    batch_size=128,
    limit=None,
    unit_range=False,
) -> tuple[Iterable, Any]:
    """Un-augmented images: normalized, or in [0, 1] (uint8) for the robustness analyses."""
    from vitlens.data import build_transform

    data = _dataset(subject, split, dataset, data_dir)
    transform = _identity if unit_range else build_transform("none", data.info, train=False)
    data = data.with_transform(transform)
    return _loader(data, batch_size, limit), data.info


def _identity(image: torch.Tensor) -> torch.Tensor:
    return image


def training_batches(
    subject, *, dataset=None, data_dir=None, batch_size=16, limit=None, seed=0
) -> tuple[Iterable, Any, Callable | None]:
    """The run's own augmented training data, and its batch mixer (mixup/cutmix) if it had one."""
    from vitlens.data import BatchMixer, build_transform

    cfg = subject.config
    data = _dataset(subject, "train", dataset, data_dir)
    data = data.with_transform(build_transform(cfg["augment"], data.info, train=True))
    data = data.with_seed(seed)
    mixer = None
    if cfg.get("mixup"):
        mixer = BatchMixer(data.info.num_classes, label_smoothing=cfg.get("label_smoothing", 0.0))
    elif cfg.get("label_smoothing"):
        mixer = _Smoother(data.info.num_classes, cfg["label_smoothing"])
    return _loader(data, batch_size, limit, seed=seed), data.info, mixer


class _Smoother:
    """Label smoothing without mixing, with the mixer's call signature."""

    def __init__(self, num_classes: int, smoothing: float):
        self.num_classes, self.smoothing = num_classes, smoothing

    def __call__(self, x, y, generator):
        from vitlens.data import smooth_targets

        return x, smooth_targets(y, self.num_classes, self.smoothing)


def provenance_for(
    subject: Subject,
    *,
    dataset: str,
    split: str,
    seed: int | None,
    device: torch.device,
    wall: float,
) -> Provenance:
    return Provenance.now(
        model=subject.name,
        checkpoint_sha256=subject.record.get("model_sha256"),
        dataset=dataset,
        split=split,
        seed=seed,
        device=str(device),
        wall_seconds=wall,
    )


def run_analysis(
    name: str,
    checkpoint: str | Path,
    *,
    batches: int | None = None,
    batch_size: int | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    options: dict[str, Any] | None = None,
    other: str | Path | None = None,
) -> Result:
    """Run analysis `name` on the model in `checkpoint`.

    Args:
        name: one of `ANALYSES`.
        checkpoint: a run folder or checkpoint record.
        batches: how many batches to stream (default: the analysis's own default; the whole
            test split for the feature and robustness analyses).
        batch_size: images per batch (default: the analysis's own).
        dataset: evaluate on another dataset than the model was trained on.
        options: extra keyword arguments for the analysis function.
        other: a second model, for CKA between two models.
    """
    from vitlens.device import resolve_device

    if name not in ANALYSES:
        raise UnknownNameError(f"unknown analysis {name!r}; choose from {', '.join(ANALYSES)}")
    dev = resolve_device(device)
    options = dict(options or {})
    subject = load_subject(checkpoint, dev)
    start = time.perf_counter()
    split = "test"
    if name == "trajectory":
        from vitlens.analysis.trajectory import polar_trajectory

        result = polar_trajectory(checkpoint, **options)
        split = "-"
    elif name in ("hessian", "landscape"):
        split = "train"
        size = batch_size or (16 if name == "hessian" else 128)
        limit = batches or (20 if name == "hessian" else 4)
        data, info, mixer = training_batches(
            subject, dataset=dataset, data_dir=data_dir, batch_size=size, limit=limit, seed=seed
        )
        wd = subject.config.get("weight_decay", 0.0)
        if name == "hessian":
            from vitlens.analysis.hessian import hessian_spectrum

            result = hessian_spectrum(
                subject.model,
                data,
                weight_decay=wd,
                batch_size=size,
                n_batches=limit,
                augment=mixer,
                seed=seed,
                progress=progress,
                **options,
            )
        else:
            from vitlens.analysis.landscape import loss_landscape

            options.setdefault("steps", 11)
            result = loss_landscape(
                subject.model,
                data,
                weight_decay=wd,
                augment=mixer,
                n_batches=limit,
                seed=seed,
                progress=progress,
                **options,
            )
    elif name in ("corruptions", "freqnoise"):
        data, info = clean_batches(
            subject,
            dataset=dataset,
            data_dir=data_dir,
            batch_size=batch_size or 256,
            limit=batches,
            unit_range=True,
        )
        normalize = (info.mean, info.std)
        if name == "corruptions":
            from vitlens.analysis.corruption_eval import corruption_robustness

            result = corruption_robustness(
                subject.model,
                data,
                normalize=normalize,
                seed=seed,
                device=dev,
                progress=progress,
                **options,
            )
        else:
            from vitlens.analysis.freqnoise_eval import frequency_noise_robustness

            options.setdefault("eps", 0.1)
            result = frequency_noise_robustness(
                {subject.name: subject.model},
                data,
                normalize=normalize,
                seed=seed,
                device=dev,
                progress=progress,
                **options,
            )
    else:
        data, info = clean_batches(
            subject,
            dataset=dataset,
            data_dir=data_dir,
            batch_size=batch_size or 128,
            limit=batches,
        )
        result = _feature_analysis(name, subject, data, dev, progress, options, other)
    prov = provenance_for(
        subject,
        dataset=dataset or subject.config["dataset"],
        split=split,
        seed=seed,
        device=dev,
        wall=time.perf_counter() - start,
    )
    return replace(result, provenance=prov)


def _feature_analysis(name, subject, data, dev, progress, options, other):
    kw = dict(device=dev, progress=progress, **options)
    if name == "fourier":
        from vitlens.analysis.fourier import fourier

        return fourier(subject.model, data, **kw)
    if name == "variance":
        from vitlens.analysis.variance import variance

        return variance(subject.model, data, **kw)
    if name == "lesion":
        from vitlens.analysis.lesion import lesion

        return lesion(subject.model, data, **kw)
    if name == "attention":
        from vitlens.analysis.attention_stats import attention_stats

        return attention_stats(subject.model, data, **kw)
    from vitlens.analysis.cka import cka

    if other is not None:
        return cka(subject.model, data, other=load_subject(other, dev).model, **kw)
    return cka(subject.model, data, **kw)
