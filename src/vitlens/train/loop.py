"""The training loop: the paper's recipe, resumable bit-exactly, single process or torchrun.

Every random choice of step `t` (drop-path masks, mixup/cutmix) is seeded from (seed, t), the
order of epoch `e` from (seed, e), and the augmentation of image `i` in epoch `e` from
(seed, e, i) (see `vitlens.data.ArrayDataset`). A run killed at any point and resumed from its
last checkpoint therefore ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vitlens import __version__
from vitlens import distributed as dist
from vitlens.config import TrainConfig, dump_yaml
from vitlens.errors import VitlensError
from vitlens.train.checkpoint import (
    CheckpointError,
    atomic_write_text,
    load_weights_strict,
    read_checkpoint,
    read_optimizer,
    restore_optimizer,
    restore_rng,
    save_checkpoint,
)
from vitlens.train.metrics import MetricSums, soft_cross_entropy
from vitlens.train.schedule import warmup_cosine


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (numpy's SeedSequence)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> 1)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist.local_rank())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise VitlensError("--device cuda was asked for but no CUDA device is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise VitlensError("--device mps was asked for but MPS is not available")
    if name == "cuda":
        return torch.device("cuda", dist.local_rank())
    return torch.device(name)


def parameter_groups(model: nn.Module, weight_decay: float, exempt: bool) -> list[dict]:
    """AdamW groups; with `exempt`, norms, biases and position embeddings get no decay."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = exempt and (p.ndim <= 1 or "pos_embed" in name or "position" in name)
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def epoch_batches(
    n: int, batch: int, *, seed: int, epoch: int, rank: int = 0, world: int = 1
) -> list[list[int]]:
    """This rank's batches of epoch `epoch`: a seeded permutation, padded so ranks get equal
    shares, dealt round-robin, then cut into batches of `batch` (the last may be short)."""
    g = torch.Generator().manual_seed(derive_seed(seed, epoch, 2))
    order = torch.randperm(n, generator=g)
    pad = (-n) % world
    if pad:
        order = torch.cat([order, order[:pad]])
    mine = order[rank::world].tolist()
    return [mine[i : i + batch] for i in range(0, len(mine), batch)]


class Trainer:
    """Train one model as `config` says, writing the run into `out`."""

    def __init__(
        self, config: TrainConfig, out: str | Path, *, resume: bool = False, quiet: bool = False
    ):
        self.cfg = config
        self.out = Path(out)
        self.resume = resume
        self.quiet = quiet
        self.partial_sums: list[float] | None = None  # train sums of a resumed, unfinished epoch

    # -- setup -------------------------------------------------------------------------------

    def _prepare_folder(self) -> None:
        ckpt = self.out / "checkpoints" / "last.json"
        if self.resume:
            if not ckpt.exists():
                raise VitlensError(f"cannot resume: {self.out} has no checkpoints/last.json")
        elif self.out.exists() and any(self.out.iterdir()):
            raise VitlensError(
                f"run folder {self.out} already exists and is not empty; pass --resume to "
                "continue it or choose another --out (nothing was overwritten)"
            )

    def _data(self):
        from vitlens.data import build_transform, class_balanced_subset, load_dataset

        cfg = self.cfg
        size = cfg.image_size
        kw = dict(data_dir=cfg.data_dir, download=cfg.download, image_size=size)
        train = load_dataset(cfg.dataset, "train", **kw)
        test = load_dataset(cfg.dataset, "test", **kw)
        info = train.info
        if cfg.fraction < 1:
            train = train.subset(class_balanced_subset(train.labels, cfg.fraction, cfg.seed))
        size = info.image_size
        train = train.with_transform(build_transform(cfg.augment, info, train=True))
        train.seed = cfg.seed
        test = test.with_transform(build_transform("none", info, train=False))
        return train, test, info, size

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        device = resolve_device(cfg.device)
        dist.init(device)
        if dist.is_main():
            self._prepare_folder()
        dist.barrier()
        world, rank = dist.world(), dist.rank()
        if cfg.batch_size % world:
            raise VitlensError(f"batch size {cfg.batch_size} is not divisible by {world} ranks")

        train, test, info, size = self._data()
        from vitlens.models import create_model

        torch.manual_seed(derive_seed(cfg.seed, 0))  # the initial weights
        model = create_model(
            cfg.model,
            num_classes=info.num_classes,
            image_size=size,
            in_chans=info.in_chans,
            drop_path=cfg.drop_path,
            **cfg.model_args,
        )
        spec = {
            "name": cfg.model,
            "num_classes": info.num_classes,
            "image_size": size,
            "in_chans": info.in_chans,
            "args": {**cfg.model_args, "drop_path": cfg.drop_path},
        }
        init_report = None
        if cfg.init and not self.resume:
            from vitlens.train.runs import init_from_checkpoint

            init_report = init_from_checkpoint(model, cfg.init)
        if cfg.freeze == "backbone":
            from vitlens.train.runs import freeze_backbone

            freeze_backbone(model)
        model.to(device)
        if device.type == "cuda" and cfg.model.startswith(("resnet", "preresnet", "alternet")):
            model = model.to(memory_format=torch.channels_last)

        optimizer = torch.optim.AdamW(
            parameter_groups(model, cfg.weight_decay, cfg.decay_exempt), lr=cfg.lr
        )
        steps_per_epoch = len(
            epoch_batches(len(train), cfg.batch_size // world, seed=0, epoch=0, world=world)
        )
        total_steps = steps_per_epoch * cfg.epochs
        warmup_steps = round(steps_per_epoch * cfg.warmup_epochs)

        start_epoch, start_batch, history = 0, 0, []
        if self.resume:
            start_epoch, start_batch = self._restore(model, optimizer)
        ddp_model = model
        if world > 1:
            ddp_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )

        from vitlens.data import BatchMixer, smooth_targets

        mixer = (
            BatchMixer(info.num_classes, label_smoothing=cfg.label_smoothing) if cfg.mixup else None
        )
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
        )
        writer = None
        if dist.is_main():
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / "config.yaml", dump_yaml(cfg))
            history = self._trim_metrics(start_epoch)
            writer = _tensorboard(self.out)
        state_base = {
            "config": cfg.to_dict(),
            "config_hash": cfg.trajectory_hash(),
            "model_spec": spec,
            "dataset": info.name,
            "classes": list(info.classes),
            "steps_per_epoch": steps_per_epoch,
            "vitlens": __version__,
            "torch": torch.__version__,
        }
        if cfg.snapshot_every and dist.is_main() and start_epoch == 0 and start_batch == 0:
            _save_snapshot(self.out, model, 0)

        progress = _Progress(enabled=not self.quiet and dist.is_main())
        result: dict[str, Any] = {}
        try:
            for epoch in range(start_epoch, cfg.epochs):
                train.set_epoch(epoch)
                batches = epoch_batches(
                    len(train),
                    cfg.batch_size // world,
                    seed=cfg.seed,
                    epoch=epoch,
                    rank=rank,
                    world=world,
                )
                first = start_batch if epoch == start_epoch else 0
                loader = torch.utils.data.DataLoader(
                    train, batch_sampler=batches[first:], num_workers=cfg.workers
                )
                ddp_model.train()
                sums = torch.zeros(3, dtype=torch.float64)  # samples, loss sum, correct
                if epoch == start_epoch and self.partial_sums is not None:
                    sums += torch.tensor(self.partial_sums, dtype=torch.float64)
                t0 = time.perf_counter()
                task = progress.start(f"epoch {epoch + 1}/{cfg.epochs}", len(batches) - first)
                for i, (x, y) in enumerate(loader, start=first):
                    step = epoch * steps_per_epoch + i
                    lr = warmup_cosine(
                        step,
                        total=total_steps,
                        warmup=warmup_steps,
                        base_lr=cfg.lr,
                        min_lr=cfg.min_lr,
                    )
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    torch.manual_seed(derive_seed(cfg.seed, step, 1))  # drop-path masks
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    if mixer is not None:
                        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, step, 3))
                        x, targets = mixer(x.cpu(), y.cpu(), gen)
                        x, targets = x.to(device), targets.to(device)
                    else:
                        targets = smooth_targets(y, info.num_classes, cfg.label_smoothing)
                    with autocast:
                        logits = ddp_model(x)
                    loss = soft_cross_entropy(logits.float(), targets)
                    if not torch.isfinite(loss):
                        raise VitlensError(
                            f"the training loss became {loss.item()} at epoch {epoch + 1}, step "
                            f"{i + 1}; the last good checkpoint is kept in "
                            f"{self.out / 'checkpoints'}. Lower --lr or enable gradient clipping, "
                            "then --resume."
                        )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.clip_grad:
                        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                    optimizer.step()
                    n = y.shape[0]
                    sums += torch.tensor(
                        [n, loss.item() * n, (logits.argmax(1) == y).sum().item()],
                        dtype=torch.float64,
                    )
                    progress.advance(task, loss=loss.item())
                    done = i + 1
                    if (
                        cfg.checkpoint_every
                        and done % cfg.checkpoint_every == 0
                        and done < len(batches)
                    ):
                        partial = dict(state_base, partial_sums=dist.all_reduce_sum(sums).tolist())
                        self._checkpoint(model, optimizer, partial, epoch, done, step + 1)
                progress.stop(task)
                train_time = time.perf_counter() - t0
                sums = dist.all_reduce_sum(sums)
                metrics = evaluate(ddp_model, test, cfg.eval_batch_size, device, cfg.ece_bins)
                row = {
                    "epoch": epoch + 1,
                    "step": (epoch + 1) * steps_per_epoch,
                    "lr": lr,
                    "train_nll": sums[1].item() / max(sums[0].item(), 1),
                    "train_acc": sums[2].item() / max(sums[0].item(), 1),
                    "train_samples": int(sums[0].item()),
                    "train_seconds": train_time,
                    "images_per_second": sums[0].item() / train_time,
                    **{f"test_{k}": v for k, v in metrics.items()},
                }
                history.append(row)
                if dist.is_main():
                    self._log(row, writer)
                    self._checkpoint(model, optimizer, state_base, epoch + 1, 0, row["step"], row)
                    if cfg.snapshot_every and (epoch + 1) % cfg.snapshot_every == 0:
                        _save_snapshot(self.out, model, epoch + 1)
                    progress.note(_summary(row))
                dist.barrier()
            result = history[-1] if history else {}
            if dist.is_main():
                final = dict(state_base, epoch=cfg.epochs, batch=0, step=total_steps)
                final["metrics"] = result
                final["init"] = init_report
                save_checkpoint(self.out / "checkpoints", "final", model, None, final)
        finally:
            progress.close()
            if writer is not None:
                writer.close()
        return result

    # -- helpers -----------------------------------------------------------------------------

    def _checkpoint(self, model, optimizer, base, epoch, batch, step, metrics=None) -> None:
        if not dist.is_main():
            return
        state = dict(base, epoch=epoch, batch=batch, step=step)
        if metrics is not None:
            state["metrics"] = metrics
        save_checkpoint(self.out / "checkpoints", "last", model, optimizer, state)

    def _restore(self, model: nn.Module, optimizer) -> tuple[int, int]:
        path = self.out / "checkpoints" / "last.json"
        record, weights = read_checkpoint(path)
        if record.get("config_hash") != self.cfg.trajectory_hash():
            raise CheckpointError(
                f"{path} was written with a different configuration; resume with the run's own "
                f"config ({self.out / 'config.yaml'}) or start a new run"
            )
        load_weights_strict(model, weights, str(path))
        restore_optimizer(optimizer, read_optimizer(path, record), record["optim_groups"])
        restore_rng(record)
        self.partial_sums = record.get("partial_sums")
        return int(record["epoch"]), int(record["batch"])

    def _trim_metrics(self, start_epoch: int) -> list[dict]:
        """Keep the metric rows of finished epochs (a resumed run redoes later ones)."""
        path = self.out / "metrics.jsonl"
        if not path.exists():
            return []
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if r["epoch"] <= start_epoch]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
        return rows

    def _log(self, row: dict, writer) -> None:
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if writer is not None:
            for key, value in row.items():
                if (
                    key not in ("epoch", "step")
                    and isinstance(value, float)
                    and math.isfinite(value)
                ):
                    group = "test" if key.startswith("test_") else "train"
                    writer.add_scalar(f"{group}/{key.removeprefix('test_')}", value, row["epoch"])
            writer.flush()


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset, batch_size: int, device: torch.device, bins: int = 10
) -> dict[str, float]:
    """Accuracy, NLL, ECE and confident accuracy on `dataset`, gathered from all ranks."""
    was_training = model.training
    model.eval()
    indices = list(range(dist.rank(), len(dataset), dist.world()))
    batches = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches)
    sums = MetricSums(bins=bins)
    for x, y in loader:
        logits = model(x.to(device))
        sums.add(logits.float(), y.to(device))
    sums.load_tensor(dist.all_reduce_sum(sums.as_tensor()))
    model.train(was_training)
    return sums.result()


def _save_snapshot(out: Path, model: nn.Module, epoch: int) -> None:
    from safetensors.torch import save_file

    folder = out / "snapshots"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"epoch{epoch:04d}.safetensors"
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(path)


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # an optional extra: the run goes on, its metrics.jsonl has everything
        import sys

        print(
            "note: tensorboard is not installed, so no TensorBoard logs "
            "(pip install 'vitlens[tensorboard]')",
            file=sys.stderr,
        )
        return None
    return SummaryWriter(log_dir=str(out / "tensorboard"))


def _summary(row: dict) -> str:
    return (
        f"epoch {row['epoch']}: train NLL {row['train_nll']:.4f}  test acc {row['test_acc']:.4f}"
        f"  NLL {row['test_nll']:.4f}  ECE {row['test_ece']:.4f}"
        f"  ({row['images_per_second']:.0f} img/s)"
    )


class _Progress:
    """A rich progress bar with rate and ETA, or nothing when quiet."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            self.bar.start()

    def start(self, description: str, total: int):
        return self.bar.add_task(description, total=total, loss=float("nan")) if self.bar else None

    def advance(self, task, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(task, advance=1, loss=loss)

    def stop(self, task) -> None:
        if self.bar is not None:
            self.bar.remove_task(task)

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
