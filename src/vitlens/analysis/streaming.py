"""Helpers the feature-map analyses share: stream batches, eval mode, depths, provenance.

Every statistic in `vitlens.analysis` is streamed: running sums over as many batches as asked (the
authors' notebooks use one batch, official_repo.md §4.1-4.2). `stream` walks any iterable of
`(images, labels)` — a DataLoader or a plain list — with a limit and an optional rich progress bar.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from vitlens.analysis.result import Provenance
from vitlens.anatomy import Block, anatomy_of, tapping
from vitlens.device import resolve_device  # noqa: F401  (re-exported for the analyses)
from vitlens.errors import VitlensError
from vitlens.progress import new_bar, progress_bar  # noqa: F401  (re-exported)

Batch = tuple[torch.Tensor, torch.Tensor]


def float64_device(device: torch.device) -> torch.device:
    """Where float64 accumulators live: the device itself, except MPS, which has no float64."""
    return torch.device("cpu") if device.type == "mps" else device


def _length(batches: Iterable, max_batches: int | None) -> int | None:
    try:
        n = len(batches)  # type: ignore[arg-type]
    except TypeError:
        return max_batches
    return n if max_batches is None else min(n, max_batches)


def stream(
    batches: Iterable[Batch],
    *,
    max_batches: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
    description: str = "analysing",
) -> Iterator[Batch]:
    """Yield `(images, labels)` moved to `device`, at most `max_batches` of them.

    Args:
        batches: any iterable of (images, labels) pairs.
        max_batches: stop after this many (None: all).
        device: where to move each batch.
        progress: show a rich progress bar with rate and ETA.
        description: the progress bar's label.

    Raises:
        VitlensError: `max_batches` is below 1, a batch is not an (images, labels) pair, or the
            iterable is empty.
    """
    if max_batches is not None and max_batches < 1:
        raise VitlensError(f"max_batches must be at least 1 (or None for all), got {max_batches}")
    device = torch.device(device)
    total = _length(batches, max_batches)
    bar = new_bar(progress, unit="batch")
    seen = 0
    with bar:
        task = bar.add_task(description, total=total)
        for batch in batches:
            if max_batches is not None and seen >= max_batches:
                break
            if not isinstance(batch, tuple | list) or len(batch) < 2:
                raise VitlensError(
                    "analyses expect batches of (images, labels); got "
                    f"{type(batch).__name__}. Wrap bare image tensors as (images, labels) pairs."
                )
            images, labels = batch[0], batch[1]
            yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            seen += 1
            bar.advance(task)
    if seen == 0:
        raise VitlensError("no batches to analyse: the data iterable is empty")


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Put `model` in eval mode for the duration; restore each module's own mode afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


def feature_blocks(blocks: list[Block]) -> list[Block]:
    """The blocks whose tapped tensor is a feature map (all but the logits)."""
    return [b for b in blocks if b.kind != "head"]


def normalized_depths(blocks: list[Block]) -> dict[str, float]:
    """Depth l / (L - 1) of every block over the feature-map blocks (official_repo.md §4.1, Fig. 8).

    The head (logits) is not a feature map; it gets depth 1.0.
    """
    feats = feature_blocks(blocks)
    span = max(len(feats) - 1, 1)
    depths = {b.name: i / span for i, b in enumerate(feats)}
    depths.update({b.name: 1.0 for b in blocks if b.kind == "head"})
    return depths


def model_name(model: nn.Module) -> str:
    """A readable name: the vitlens registry name, timm's architecture, or the class name."""
    name = getattr(model, "vitlens_name", None)
    if name:
        return str(name)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if isinstance(cfg, dict) and cfg.get("architecture"):
        return f"timm:{cfg['architecture']}"
    return type(model).__name__


def provenance_for(
    provenance: Provenance | None, model: nn.Module, device: torch.device, started: float
) -> Provenance:
    """Fill in wall time and device, keeping whatever the caller already said."""
    wall = time.perf_counter() - started
    if provenance is None:
        return Provenance.now(model=model_name(model), device=str(device), wall_seconds=wall)
    return dataclasses.replace(
        provenance,
        model=provenance.model or model_name(model),
        device=str(device),
        wall_seconds=wall,
    )


@dataclasses.dataclass
class MapSums:
    """Running sums of a per-map statistic, one entry per block whose map passed the filter."""

    model_blocks: list[Block]  # every block of the model, as `describe` gave them
    sums: dict[str, torch.Tensor]  # name -> float64 sum over images and channels
    counts: dict[str, int]  # name -> number of (image, channel) maps summed
    sizes: dict[str, tuple[int, int]]  # name -> (H, W)
    n_images: int = 0
    n_batches: int = 0

    @property
    def blocks(self) -> list[Block]:
        """The blocks that were summed, in forward order."""
        return [b for b in self.model_blocks if b.name in self.sums]

    def means(self) -> dict[str, torch.Tensor]:
        return {name: s / self.counts[name] for name, s in self.sums.items()}


def stream_map_sums(
    model: nn.Module,
    batches: Iterable[Batch],
    statistic: Callable[[torch.Tensor], torch.Tensor],
    *,
    accepts: Callable[[tuple[int, int]], bool],
    max_batches: int | None,
    device: torch.device,
    progress: bool,
    description: str,
) -> MapSums:
    """Sum `statistic(map)` over every image and channel of every feature-map block, streamed.

    Args:
        model: a described model, already on `device`.
        batches: (images, labels) pairs.
        statistic: maps a (B, C, H, W) map to the float64 sum over B and C of a per-map value
            (a scalar or a vector such as a spectrum curve).
        accepts: whether a block with (H, W) maps is analysed (1x1 maps have no spatial
            statistics).
        max_batches, device, progress, description: as for `stream`.
    """
    anatomy = anatomy_of(model)
    blocks = list(anatomy.blocks)
    out = MapSums(model_blocks=blocks, sums={}, counts={}, sizes={})

    def on_tap(block: Block, t: torch.Tensor) -> None:
        m = block.layout.to_map(t)  # (B, C, H, W)
        size = (int(m.shape[-2]), int(m.shape[-1]))
        if not accepts(size):
            return
        if out.sizes.setdefault(block.name, size) != size:
            raise VitlensError(
                f"block {block.name} produced {size[0]}x{size[1]} maps after "
                f"{out.sizes[block.name]}; feed images of one size to a streamed analysis"
            )
        s = statistic(m)
        out.sums[block.name] = out.sums[block.name] + s if block.name in out.sums else s
        out.counts[block.name] = out.counts.get(block.name, 0) + m.shape[0] * m.shape[1]

    with evaluating(model), torch.no_grad(), tapping(feature_blocks(blocks), on_tap):
        for images, _ in stream(
            batches,
            max_batches=max_batches,
            device=device,
            progress=progress,
            description=description,
        ):
            anatomy.run(model, images)
            out.n_images += int(images.shape[0])
            out.n_batches += 1
    return out
