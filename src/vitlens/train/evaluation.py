"""Evaluate a saved model on any dataset split (`vitlens eval`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitlens.device import resolve_device
from vitlens.errors import VitlensError
from vitlens.train.loop import evaluate
from vitlens.train.runs import load_model


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    dataset: str | None = None,
    split: str = "test",
    data_dir: str | None = None,
    batch_size: int = 256,
    device: str = "auto",
) -> dict[str, Any]:
    """Metrics of the model in `checkpoint` on `split` of `dataset` (default: its own)."""
    from vitlens.data import build_transform, load_dataset

    if split not in ("train", "test"):
        raise VitlensError(f"split must be 'train' or 'test', got {split!r}")
    if batch_size < 1:
        raise VitlensError(f"--batch-size must be at least 1, got {batch_size}")
    dev = resolve_device(device)
    model, record = load_model(checkpoint, dev)
    spec = record["model_spec"]
    name = dataset or record["config"]["dataset"]
    data = load_dataset(
        name,
        split,
        data_dir=data_dir or record["config"].get("data_dir"),
        image_size=spec["image_size"],
    )
    if data.info.in_chans != spec["in_chans"] or data.info.num_classes != spec["num_classes"]:
        raise VitlensError(
            f"{name} has {data.info.in_chans} channels and {data.info.num_classes} classes; the "
            f"model takes {spec['in_chans']} channels and predicts {spec['num_classes']} classes"
        )
    data = data.with_transform(build_transform("none", data.info, train=False))
    metrics = evaluate(model, data, batch_size, dev)
    return {"dataset": name, "split": split, "model": spec["name"], **metrics}
