"""Run any analysis on a trained model by name: the engine of `vitlens analyze` and the study.

Given a run folder (or checkpoint), this module rebuilds the model, prepares the data each analysis
needs — clean test images for the feature and robustness analyses (normalized, or in [0, 1] for the
robustness ones, which normalize inside), the run's own training augmentation for the loss-surface
analyses (paper §2: Hessians and landscapes on augmented training data with NLL + L2) — calls the
analysis, and stamps the Result with its provenance.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vitlens.analysis.result import Provenance, Result
from vitlens.analysis.spec import AnalysisSpec, Inputs, check_options
from vitlens.errors import VitlensError


def __getattr__(name: str):
    # `ANALYSES`: the registered analysis names, computed when asked (specs can be added later).
    if name == "ANALYSES":
        from vitlens.analysis.registry import analysis_names

        return tuple(analysis_names())
    raise AttributeError(name)


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
    from vitlens.train.runs import load_run_data

    return load_run_data(subject.record, split, dataset, data_dir)


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


def _provenance(subject: Subject, spec: AnalysisSpec, dataset: str | None, seed: int):
    """What the runner knows of a Result's origin; the analysis adds device and wall time."""
    return Provenance.now(
        model=subject.name,
        checkpoint_sha256=subject.record.get("model_sha256"),
        dataset=dataset or subject.config["dataset"],
        split="test" if _held_out(spec, subject, dataset) else spec.split,
        seed=seed,
    )


def _held_out(spec: AnalysisSpec, subject: Subject, dataset: str | None) -> bool:
    """Whether a training-data analysis runs on test minibatches: data without a training
    split (ImageNet's validation images) and an analysis that allows it (`held_out`)."""
    from vitlens.data.sources import has_training_split

    name = dataset or subject.config["dataset"]
    return spec.data == "train_augmented" and spec.held_out and not has_training_split(name)


def parse_options(spec: AnalysisSpec, pairs: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings for the options `spec` declares: JSON values (0.7, true, "x"),
    comma-separated lists, or plain strings."""
    declared = {o.name for o in spec.options}
    options = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or key not in declared:
            raise VitlensError(
                f"{spec.name} takes options {sorted(declared) or 'none'} as KEY=VALUE, got {pair!r}"
            )
        parts = [_json_or_text(t) for t in text.split(",")]
        options[key] = parts if len(parts) > 1 else parts[0]
    return check_options(spec, options)


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _options(spec: AnalysisSpec, given: dict[str, Any] | None) -> dict[str, Any]:
    """The analysis's declared defaults, then the caller's options."""
    given = check_options(spec, given or {}, only_declared=False)
    options = {**spec.option_defaults(), **spec.budget("analyze").options, **given}
    # Defaults of None mean "the function's own default": leave them out.
    return {k: v for k, v in options.items() if v is not None or k in (given or {})}


def _prepare(spec, subject, dev, *, batches, batch_size, dataset, data_dir, seed) -> dict:
    """The data `spec` streams, as keyword arguments of `Inputs`."""
    budget = spec.budget("analyze")
    size = batch_size or budget.batch_size
    limit = batches if batches is not None else budget.batches
    where = dict(dataset=dataset, data_dir=data_dir, batch_size=size, limit=limit)
    if spec.data == "snapshots":
        return {"batches": None, "checkpoint": subject.path}
    if spec.data == "train_augmented" and _held_out(spec, subject, dataset):
        data, _info = clean_batches(subject, **where)  # un-augmented, no weight decay known
        size = min(size, len(data.dataset))  # fewer images than a minibatch: one of them all
        return dict(batches=data, weight_decay=0.0, n_batches=limit, batch_size=size)
    if spec.data == "train_augmented":
        data, _info, mixer = training_batches(subject, seed=seed, **where)
        wd = subject.config.get("weight_decay", 0.0)
        return dict(batches=data, mixer=mixer, weight_decay=wd, n_batches=limit, batch_size=size)
    data, info = clean_batches(subject, unit_range=spec.data == "test_unit", **where)
    return dict(batches=data, normalize=(info.mean, info.std), n_batches=limit, batch_size=size)


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
    """Run the registered analysis `name` on the model in `checkpoint`.

    Args:
        name: a registered analysis (`vitlens.analysis.registry.analysis_names()`).
        checkpoint: a run folder or checkpoint record.
        batches: how many batches to stream (default: the analysis's `analyze` budget; the
            whole test split for the feature and robustness analyses).
        batch_size: images per batch (default: the analysis's own).
        dataset: evaluate on another dataset than the model was trained on.
        options: extra keyword arguments for the analysis function.
        other: a second model, for CKA between two models or the landscape's interpolation.
    """
    from vitlens.analysis.registry import get_analysis
    from vitlens.device import resolve_device

    spec = get_analysis(name)
    dev = resolve_device(device)
    subject = load_subject(checkpoint, dev)
    prepared = _prepare(
        spec,
        subject,
        dev,
        batches=batches,
        batch_size=batch_size,
        dataset=dataset,
        data_dir=data_dir,
        seed=seed,
    )
    inputs = Inputs(
        model=subject.model,
        device=dev,
        seed=seed,
        progress=progress,
        options=_options(spec, options),
        name=subject.name,
        other=None if other is None else load_subject(other, dev).model,
        provenance=_provenance(subject, spec, dataset, seed),
        **prepared,
    )
    return spec.run(inputs)
