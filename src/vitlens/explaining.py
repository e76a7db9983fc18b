"""`vitlens explain`: how one model sees a few images, as an interactive page (issue 18).

Given a run (trained or imported) and images (or, without them, the first test images of the
run's dataset), this runs the per-image analyses — attention maps and rollouts, embeddings,
tokens, attention distance — saves their Results as JSON in `OUT/results/`, draws the charts in
`OUT/figures/`, and writes `OUT/explain.html`: one self-contained, interactive page. Images are
read, converted and resized as `vitlens.data.images` says, then normalised with the run's
dataset statistics. Everything that can be refused (files, channels, the class, a model without
attention) is refused before the output folder is touched; the folder is locked while written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from vitlens.analysis.attention import attention_stats
from vitlens.analysis.attention_maps import attention_maps_of, capture_attention
from vitlens.analysis.embeddings import embeddings
from vitlens.analysis.result import Provenance, Result
from vitlens.analysis.runner import Subject, clean_batches, load_subject
from vitlens.analysis.tokens import tokens
from vitlens.anatomy import anatomy_of
from vitlens.atomic import write_text
from vitlens.data import Normalize
from vitlens.data.images import read_images
from vitlens.device import resolve_device
from vitlens.errors import VitlensError
from vitlens.locks import folder_lock
from vitlens.report import explain_page as page
from vitlens.train.runs import run_preprocessing

DEFAULT_IMAGES = 4


@dataclass
class Explained:
    """What `explain` wrote."""

    page: Path
    results: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Inputs:
    pixels: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor
    names: list[str]
    notes: list[str]


def _inputs(subject: Subject, images: list[Path], data_dir: str | None, n: int):
    """The images to explain and the dataset statistics that normalise them."""
    spec = subject.record["model_spec"]
    loader, info = clean_batches(subject, batch_size=n, limit=1, unit_range=True, data_dir=data_dir)
    if images:
        read = read_images(
            images,
            channels=spec["in_chans"],
            size=spec["image_size"],
            preprocessing=run_preprocessing(subject.record),
        )
        labels = torch.full((len(read.names),), -1, dtype=torch.long)
        return _Inputs(read.pixels, labels, read.names, read.notes), info
    pixels, labels = next(iter(loader))
    names = [f"{info.name} test image {i}" for i in range(len(labels))]
    return _Inputs(pixels, labels, names, []), info


def _check(subject: Subject, class_index: int | None) -> None:
    classes = subject.record["model_spec"]["num_classes"]
    if class_index is not None and not 0 <= class_index < classes:
        raise VitlensError(
            f"--class {class_index} is outside the model's {classes} classes (0 to {classes - 1})"
        )
    if not anatomy_of(subject.model).has("msa"):
        raise VitlensError(
            f"{subject.name} has no MSA block, so there is no attention to explain; the feature "
            "analyses (`vitlens analyze fourier`, `variance`, `embeddings` ...) still apply"
        )


def _provenance(subject: Subject, dataset: str) -> Provenance:
    return Provenance.now(
        model=subject.name,
        checkpoint_sha256=subject.record.get("model_sha256"),
        dataset=dataset,
        split="images",
    )


def _optional(run, *args, notes: list[str], **kw) -> Result | None:
    """An analysis that may not apply to this model: its refusal becomes a note on the page."""
    try:
        return run(*args, **kw)
    except VitlensError as err:
        notes.append(f"{run.__name__}: {err}")
        return None


def _rows(model: torch.nn.Module, x: torch.Tensor) -> list[list[torch.Tensor]]:
    """rows[image][block]: every grid query's quantised attention row (see explain_page)."""
    with torch.no_grad():
        capture = capture_attention(model, x)
    per_block = [(b.full(), b.prefix) for b in capture.blocks]
    return [[page.quantized_rows(full[i], p) for full, p in per_block] for i in range(len(x))]


def _charts(results: dict[str, Result], folder: Path) -> dict[str, Path]:
    from vitlens.report.plots.attention import plot_attention
    from vitlens.report.plots.tokens import plot_tokens

    charts = {}
    if "tokens" in results:
        charts["tokens"] = plot_tokens([results["tokens"]], folder / "tokens.png")
    if "attention" in results:
        charts["attention"] = plot_attention([results["attention"]], folder / "attention.png")
    return charts


def _page_images(inputs: _Inputs, maps) -> list[page.PageImage]:
    pixels = inputs.pixels.permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
    return [
        page.PageImage(
            name,
            pixels[i, :, :, 0] if pixels.shape[-1] == 1 else pixels[i],
            int(inputs.labels[i]),
            maps.predicted[i],
            maps.explained[i],
        )
        for i, name in enumerate(inputs.names)
    ]


def explain(
    run: str | Path,
    *,
    out: str | Path,
    images: list[str | Path] | None = None,
    class_index: int | None = None,
    n_images: int = DEFAULT_IMAGES,
    data_dir: str | None = None,
    device: str = "auto",
) -> Explained:
    """Explain how the model of `run` sees `images`: Results, charts and `OUT/explain.html`.

    Raises:
        VitlensError: a bad run, image, class or a model without attention; nothing is
            written then.
    """
    if n_images < 1:
        raise VitlensError(f"--images-from-test must be at least 1, got {n_images}")
    dev = resolve_device(device)
    subject = load_subject(run, dev)
    _check(subject, class_index)
    inputs, info = _inputs(subject, [Path(p) for p in images or []], data_dir, n_images)
    x = torch.stack([Normalize(info.mean, info.std)(p) for p in inputs.pixels]).to(dev)
    batches = [(x, inputs.labels.to(dev))]
    prov = _provenance(subject, info.name)
    notes = list(inputs.notes)
    out = Path(out)
    with folder_lock(out, "explain folder"):
        maps = attention_maps_of(subject.model, batches, class_index=class_index, provenance=prov)
        found = {"attention_maps": maps}
        for name, run_one in (
            ("embeddings", embeddings),
            ("tokens", tokens),
            ("attention", attention_stats),
        ):
            result = _optional(run_one, subject.model, batches, notes=notes, provenance=prov)
            if result is not None:
                found[name] = result
        data = page.payload(
            subject.name,
            _page_images(inputs, maps),
            _rows(subject.model, x),
            maps,
            found.get("embeddings"),
            _charts(found, out / "figures"),
            notes,
        )
        text = page.render(data)  # rendered before any Result is saved: no results without page
        saved = {k: r.save(out / "results" / f"{k}.json") for k, r in found.items()}
        html_path = write_text(out / "explain.html", text)
    return Explained(html_path, saved, notes)
