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
    from vitlens.data import build_transform
    from vitlens.train.runs import load_run_data

    if split not in ("train", "test"):
        raise VitlensError(f"split must be 'train' or 'test', got {split!r}")
    if batch_size < 1:
        raise VitlensError(f"--batch-size must be at least 1, got {batch_size}")
    dev = resolve_device(device)
    model, record = load_model(checkpoint, dev)
    spec = record["model_spec"]
    name = dataset or record["config"]["dataset"]
    data = load_run_data(record, split, dataset, data_dir)
    data = data.with_transform(build_transform("none", data.info, train=False))
    metrics = evaluate(model, data, batch_size, dev)
    return {"dataset": name, "split": split, "model": spec["name"], **metrics}
