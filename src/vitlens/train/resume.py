"""Resuming a run: what may change, where to continue, the repair of `metrics.jsonl`, and the
advice given when training diverges.

Everything here only reads; the training loop writes the results after all checks passed, so a
resume that is refused leaves the run folder as it was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vitlens.config import TrainConfig, dump_yaml
from vitlens.errors import VitlensError
from vitlens.train.checkpoint import CheckpointError, read_record

# Fields a resumed run may change. Only the first two change the weights; they are recorded.
RESUMABLE = ("lr", "epochs", "device", "workers", "checkpoint_every", "snapshot_every", "data_dir")
RECORDED = ("lr", "epochs")


def config_changes(record: dict[str, Any], cfg: TrainConfig, path: Path) -> dict[str, list]:
    """The recorded fields `cfg` changes against the checkpoint's config, as {field: [old, new]}.

    Raises:
        CheckpointError: If a field that may not change on resume differs.
    """
    saved = record.get("config")
    if not isinstance(saved, dict):  # a record without its config: only the hash can tell
        if record.get("config_hash") != cfg.trajectory_hash():
            raise CheckpointError(f"{path} was written with a different configuration")
        return {}
    current = cfg.to_dict()
    changed = {k: [saved[k], v] for k, v in current.items() if k in saved and saved[k] != v}
    fixed = {k: v for k, v in changed.items() if k not in RESUMABLE}
    if fixed:
        detail = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in fixed.items())
        raise CheckpointError(
            f"{path} was written with a different configuration ({detail}); --resume may change "
            f"only {', '.join(RESUMABLE)}. Resume with the run's own config "
            f"({path.parent.parent / 'config.yaml'}) or start a new run"
        )
    return {k: v for k, v in changed.items() if k in RECORDED}


def resume_position(record: dict[str, Any], cfg: TrainConfig, path: Path) -> tuple[int, int]:
    """(epoch, batch) to continue from, checked against the configured number of epochs."""
    epoch, batch = record.get("epoch"), record.get("batch")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (epoch, batch)):
        raise CheckpointError(f"{path} is damaged: epoch {epoch!r}, batch {batch!r}")
    reached = epoch + (1 if batch > 0 else 0)  # epochs begun, counting the current one
    if reached > cfg.epochs:
        raise VitlensError(
            f"{path} is in epoch {reached}, past --epochs {cfg.epochs}; resume with --epochs "
            f"{reached} or more"
        )
    return epoch, batch


def repaired_metrics(path: Path, keep_epochs: int) -> tuple[list[dict], list[str], bool]:
    """The rows of `metrics.jsonl` to keep on resume, notices for the user, and whether the
    file must be rewritten.

    A torn last line (a kill during the append) and rows past the checkpoint (written after it)
    are dropped with a notice; any other damage is an error that says which line.
    """
    if not path.exists():
        return [], [], False
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, IsADirectoryError) as err:
        raise VitlensError(f"{path} is not a text file of metric rows ({err})") from None
    lines = text.split("\n")
    complete = lines[-1] == ""
    lines = lines[:-1] if complete else lines
    rows, notices = [], []
    for number, line in enumerate(lines, start=1):
        row = _parse_row(line)
        if row is None and number == len(lines) and not complete:
            notices.append(f"{path}: dropped a torn last line (the run was killed while writing)")
        elif row is None:
            raise VitlensError(
                f"{path} line {number} is not a metric row ({line[:60]!r}); repair or delete "
                "that line, then --resume again"
            )
        else:
            rows.append(row)
    kept = [r for r in rows if r["epoch"] <= keep_epochs]
    if len(kept) < len(rows):
        past = [r["epoch"] for r in rows if r["epoch"] > keep_epochs]
        notices.append(
            f"{path}: dropped the rows of epochs {past}, written after the checkpoint; "
            "they are trained again"
        )
    return kept, notices, bool(notices) or (bool(text) and not complete)


def _parse_row(line: str) -> dict | None:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    ok = isinstance(row, dict) and isinstance(row.get("epoch"), int)
    return row if ok else None


def config_text(cfg: TrainConfig, history: list[dict]) -> str:
    """config.yaml: the current config, then one comment per change made on resume."""
    notes = [
        f"# resumed at step {c['step']} with "
        + ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in c["changed"].items())
        + "\n"
        for c in history
    ]
    return dump_yaml(cfg) + "".join(notes)


def divergence_message(out: Path, cfg: TrainConfig, what: str) -> str:
    """Why training stopped, which checkpoint is left (truthfully), and advice that works."""
    ckpt = out / "checkpoints" / "last.json"
    lower = f"{cfg.lr / 10:g}"
    command = f"vitlens train {cfg.model} --out {out} --resume --lr {lower}"
    try:
        record = read_record(ckpt)
    except CheckpointError:
        record = None
    if record is not None:
        kept = (
            f"the last good checkpoint (step {record.get('step')}, all weights finite) is kept in "
            f"{ckpt.parent}. Lower the learning rate (now {cfg.lr:g}) and continue: {command} "
            "(if it diverges again, that checkpoint is already too far off: start a new run "
            "with a lower --lr)"
        )
    else:
        kept = (
            "no checkpoint was written before that, so there is nothing to continue from. "
            f"Lower the learning rate (now {cfg.lr:g}) and start again: {command}"
        )
    clip = ""
    if cfg.clip_grad is None:
        clip = (
            " Gradient clipping is off; a new run with clip_grad: 1.0 in a --config file may help."
        )
    return f"{what}; {kept}.{clip}"
