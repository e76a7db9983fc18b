"""The training loop: the paper's recipe, resumable bit-exactly, single process or torchrun.

Every random choice of step `t` (drop-path masks, mixup/cutmix) is seeded from (seed, t), the
order of epoch `e` from (seed, e), and the augmentation of image `i` in epoch `e` from
(seed, e, i) (see `vitlens.data.ArrayDataset`). A run killed at any point and resumed from its
last checkpoint therefore ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vitlens import __version__
from vitlens import distributed as dist
from vitlens.anatomy.spec import output_logits
from vitlens.atomic import (
    append_json_line,
    remove_temporaries,
    visible_entries,
    write_safetensors,
    write_text,
)
from vitlens.config import TrainConfig
from vitlens.device import resolve_device
from vitlens.errors import VitlensError
from vitlens.locks import folder_lock
from vitlens.train.checkpoint import (
    CheckpointError,
    load_weights_strict,
    read_checkpoint,
    read_optimizer,
    restore_optimizer,
    restore_rng,
    save_checkpoint,
    tidy_generations,
)
from vitlens.train.metrics import MetricSums, soft_cross_entropy
from vitlens.train.precision import record_precision, resolve_for_run
from vitlens.train.resume import (
    config_changes,
    config_text,
    divergence_message,
    repaired_metrics,
    resume_position,
)
from vitlens.train.schedule import warmup_cosine


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (numpy's SeedSequence)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> 1)


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


@dataclass
class RunState:
    """What the steps of one run share: built by `Trainer._setup`, advanced epoch by epoch."""

    device: torch.device
    model: nn.Module  # the module whose weights are saved
    optimizer: torch.optim.Optimizer
    train: Any
    test: Any
    num_classes: int
    steps_per_epoch: int
    state_base: dict[str, Any]
    ddp_model: nn.Module | None = None  # what the forward pass runs (DDP under torchrun)
    start_epoch: int = 0
    start_batch: int = 0
    partial_sums: list[float] | None = None  # train sums of a resumed, unfinished epoch
    history: list[dict] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # printed once the checks have passed
    rewrite_metrics: bool = False
    init_report: Any = None
    mixer: Any = None
    autocast: Any = field(default_factory=nullcontext)
    precision: str = "fp32"  # the autocast mode chosen for the run (train/precision.py)
    precision_choice: Any = None  # and why: written to precision.json with the first writes
    writer: Any = None
    progress: _Progress | None = None
    lr: float = 0.0

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.state_base["config"]["epochs"]

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
        if self.writer is not None:
            self.writer.close()


class Trainer:
    """Train one model as `config` says, writing the run into `out`.

    `run` holds the folder's lock, then: `_setup` checks everything and only then writes,
    `_train_epoch` runs the steps (with mid-epoch checkpoints), `_end_epoch` evaluates, logs
    and checkpoints, `_finish` writes the final checkpoint.
    """

    def __init__(
        self,
        config: TrainConfig,
        out: str | Path,
        *,
        resume: bool = False,
        quiet: bool = False,
        evaluate_every_epoch: bool = True,
    ):
        """`evaluate_every_epoch=False` evaluates the test split after the last epoch only (a
        study reads only the final metrics); the weights are the same either way."""
        self.cfg = config
        self.out = Path(out)
        self.resume = resume
        self.quiet = quiet
        self.evaluate_every_epoch = evaluate_every_epoch

    def run(self) -> dict[str, Any]:
        device = resolve_device(self.cfg.device)
        dist.init(device)
        with folder_lock(self.out, "run folder", enabled=dist.is_main()):
            run = self._setup(device)
            try:
                for epoch in range(run.start_epoch, self.cfg.epochs):
                    sums, seconds = self._train_epoch(run, epoch)
                    self._end_epoch(run, epoch, sums, seconds)
                return self._finish(run)
            finally:
                run.close()

    # -- setup: every check first, then the first writes -------------------------------------

    def _setup(self, device: torch.device) -> RunState:
        cfg = self.cfg
        resuming = self._check_folder()
        world = dist.world()
        if cfg.batch_size % world:
            raise VitlensError(f"batch size {cfg.batch_size} is not divisible by {world} ranks")
        train, test, info, size = self._data()
        model, spec, init_report = self._build_model(info, size, device, resuming)
        optimizer = torch.optim.AdamW(
            parameter_groups(model, cfg.weight_decay, cfg.decay_exempt), lr=cfg.lr
        )
        steps_per_epoch = len(
            epoch_batches(len(train), cfg.batch_size // world, seed=0, epoch=0, world=world)
        )
        run = RunState(
            device=device,
            model=model,
            optimizer=optimizer,
            train=train,
            test=test,
            num_classes=info.num_classes,
            steps_per_epoch=steps_per_epoch,
            state_base=self._state_base(info, spec, steps_per_epoch),
            init_report=init_report,
        )
        if resuming:
            self._restore(run)
        elif dist.is_main():
            run.history, run.notices, run.rewrite_metrics = repaired_metrics(
                self.out / "metrics.jsonl", 0
            )
        run.ddp_model = model
        if world > 1:
            run.ddp_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        run.mixer = self._mixer(info.num_classes)
        precision = resolve_for_run(
            cfg,
            model,
            device,
            self.out,
            resume=resuming,
            input_shape=(cfg.batch_size // world, info.in_chans, size, size),
            num_classes=info.num_classes,
            model_spec=spec,
        )
        run.autocast = precision.autocast()  # the forward only: weights, AdamW, loss stay fp32
        run.precision = run.state_base["precision"] = precision.mode
        run.precision_choice = precision
        if dist.is_main():
            self._write_start(run)
        run.progress = _Progress(enabled=not self.quiet and dist.is_main())
        return run

    def _check_folder(self) -> bool:
        """Whether the run continues from a checkpoint; refuses a folder it may not write."""
        ckpt = self.out / "checkpoints" / "last.json"
        if self.resume:
            if ckpt.exists():
                return True
            if not (self.out / "config.yaml").exists():
                raise VitlensError(f"cannot resume: {self.out} has no checkpoints/last.json")
            _notice(f"{self.out} has no checkpoint yet: training starts from the beginning")
        elif dist.is_main() and self.out.exists() and visible_entries(self.out):
            raise VitlensError(
                f"run folder {self.out} already exists and is not empty; pass --resume to "
                "continue it or choose another --out (nothing was overwritten)"
            )
        dist.barrier()
        return False

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

    def _build_model(self, info, size: int, device: torch.device, resuming: bool):
        from vitlens.models import create_model

        cfg = self.cfg
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
        if cfg.init and not resuming:
            from vitlens.train.runs import init_from_checkpoint

            init_report = init_from_checkpoint(model, cfg.init)
        if cfg.freeze == "backbone":
            from vitlens.train.runs import freeze_backbone

            freeze_backbone(model)
        model.to(device)
        if device.type == "cuda" and _convolutional(model):
            model = model.to(memory_format=torch.channels_last)
        return model, spec, init_report

    def _state_base(self, info, spec: dict, steps_per_epoch: int) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(),
            "config_hash": self.cfg.trajectory_hash(),
            "config_changes": [],
            "model_spec": spec,
            "dataset": info.name,
            "classes": list(info.classes),
            "steps_per_epoch": steps_per_epoch,
            "vitlens": __version__,
            "torch": torch.__version__,
        }

    def _mixer(self, num_classes: int):
        from vitlens.data import BatchMixer

        if not self.cfg.mixup:
            return None
        return BatchMixer(num_classes, label_smoothing=self.cfg.label_smoothing)

    def _restore(self, run: RunState) -> None:
        """Read and check the checkpoint and the metrics (nothing is written here)."""
        path = self.out / "checkpoints" / "last.json"
        record, weights = read_checkpoint(path)
        changes = config_changes(record, self.cfg, path)
        run.start_epoch, run.start_batch = resume_position(record, self.cfg, path)
        if not _all_finite(weights.values()):
            raise CheckpointError(
                f"{path} holds non-finite weights (training had diverged); start a new run"
            )
        load_weights_strict(run.model, weights, str(path))
        groups = record.get("optim_groups")
        if not isinstance(groups, list):
            raise CheckpointError(f"{path} is damaged: its optimizer groups are missing")
        restore_optimizer(run.optimizer, read_optimizer(path, record), groups)
        restore_rng(record)
        run.partial_sums = record.get("partial_sums")
        history = list(record.get("config_changes") or [])
        if changes:
            history.append({"step": record.get("step"), "changed": changes})
            run.notices.append(f"resuming at step {record.get('step')} with {changes}")
        run.state_base["config_changes"] = history
        if dist.is_main():
            rows, notices, run.rewrite_metrics = repaired_metrics(
                self.out / "metrics.jsonl", run.start_epoch
            )
            run.history, run.notices = rows, run.notices + notices

    def _write_start(self, run: RunState) -> None:
        """The first writes of a run, once every check has passed (rank 0)."""
        for folder in (self.out, self.out / "checkpoints", self.out / "snapshots"):
            remove_temporaries(folder)  # of an interrupted earlier process; we hold the lock
        tidy_generations(self.out / "checkpoints", "last")
        write_text(
            self.out / "config.yaml", config_text(self.cfg, run.state_base["config_changes"])
        )
        record_precision(self.out, run.precision_choice)  # after config.yaml: resumable
        for text in run.notices:
            _notice(text)
        if run.rewrite_metrics:
            write_text(
                self.out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in run.history)
            )
        if run.start_epoch < self.cfg.epochs:  # trains on: an earlier final checkpoint is stale
            (self.out / "checkpoints" / "final.json").unlink(missing_ok=True)
        run.writer = _tensorboard(self.out)
        if self.cfg.snapshot_every and run.start_epoch == 0 and run.start_batch == 0:
            _save_snapshot(self.out, run.model, 0)

    # -- an epoch ------------------------------------------------------------------------------

    def _train_epoch(self, run: RunState, epoch: int) -> tuple[torch.Tensor, float]:
        """Train one epoch (from the resumed batch on); returns the summed train metrics."""
        cfg, world = self.cfg, dist.world()
        run.train.set_epoch(epoch)
        batches = epoch_batches(
            len(run.train),
            cfg.batch_size // world,
            seed=cfg.seed,
            epoch=epoch,
            rank=dist.rank(),
            world=world,
        )
        first = run.start_batch if epoch == run.start_epoch else 0
        loader = torch.utils.data.DataLoader(
            run.train, batch_sampler=batches[first:], num_workers=cfg.workers
        )
        run.ddp_model.train()
        sums = torch.zeros(3, dtype=torch.float64)  # samples, loss sum, correct
        if epoch == run.start_epoch and run.partial_sums is not None:
            sums += torch.tensor(run.partial_sums, dtype=torch.float64)
        t0 = time.perf_counter()
        task = run.progress.start(f"epoch {epoch + 1}/{cfg.epochs}", len(batches) - first)
        for i, (x, y) in enumerate(loader, start=first):
            step = epoch * run.steps_per_epoch + i
            loss, correct = self._train_step(run, x, y, step, f"epoch {epoch + 1}, step {i + 1}")
            n = y.shape[0]
            sums += torch.tensor([n, loss * n, correct], dtype=torch.float64)
            run.progress.advance(task, loss=loss)
            done = i + 1
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < len(batches):
                partial = dict(run.state_base, partial_sums=dist.all_reduce_sum(sums).tolist())
                self._guard_finite(run, f"epoch {epoch + 1}, step {done}")
                self._checkpoint(run, partial, epoch, done, step + 1)
        run.progress.stop(task)
        seconds = time.perf_counter() - t0
        return dist.all_reduce_sum(sums), seconds

    def _train_step(self, run: RunState, x, y, step: int, where: str) -> tuple[float, int]:
        """One optimizer step; returns the loss and the number of correct predictions."""
        from vitlens.data import smooth_targets

        cfg, device = self.cfg, run.device
        run.lr = warmup_cosine(
            step,
            total=run.total_steps,
            warmup=round(run.steps_per_epoch * cfg.warmup_epochs),
            base_lr=cfg.lr,
            min_lr=cfg.min_lr,
        )
        for group in run.optimizer.param_groups:
            group["lr"] = run.lr
        torch.manual_seed(derive_seed(cfg.seed, step, 1))  # drop-path masks
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if run.mixer is not None:
            gen = torch.Generator().manual_seed(derive_seed(cfg.seed, step, 3))
            x, targets = run.mixer(x.cpu(), y.cpu(), gen)
            x, targets = x.to(device), targets.to(device)
        else:
            targets = smooth_targets(y, run.num_classes, cfg.label_smoothing)
        with run.autocast:
            logits = output_logits(run.ddp_model(x))  # HF models: an output object
        loss = soft_cross_entropy(logits.float(), targets)
        if not torch.isfinite(loss):
            what = f"the training loss became {loss.item()} at {where}"
            raise VitlensError(divergence_message(self.out, cfg, what))
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad:
            norm = nn.utils.clip_grad_norm_(run.model.parameters(), cfg.clip_grad)
            if not torch.isfinite(norm):  # clipping cannot repair it: the step would poison
                what = f"the gradients became non-finite at {where}"
                raise VitlensError(divergence_message(self.out, cfg, what))
        run.optimizer.step()
        return loss.item(), int((logits.argmax(1) == y).sum().item())

    def _end_epoch(self, run: RunState, epoch: int, sums: torch.Tensor, seconds: float) -> None:
        """Evaluate, log the epoch's row, keep a snapshot, checkpoint."""
        cfg, spe = self.cfg, run.steps_per_epoch
        metrics = {}
        if self.evaluate_every_epoch or epoch + 1 == cfg.epochs:
            metrics = evaluate(
                run.ddp_model, run.test, cfg.eval_batch_size, run.device, cfg.ece_bins
            )
        row = {
            "epoch": epoch + 1,
            "step": (epoch + 1) * spe,
            "lr": run.lr,
            "train_nll": sums[1].item() / max(sums[0].item(), 1),
            "train_acc": sums[2].item() / max(sums[0].item(), 1),
            "train_samples": int(sums[0].item()),
            "train_seconds": seconds,
            "images_per_second": sums[0].item() / seconds,
            "precision": run.precision,
            **{f"test_{k}": v for k, v in metrics.items()},
        }
        changes = [
            c for c in run.state_base["config_changes"] if epoch * spe <= c["step"] < row["step"]
        ]
        if changes:
            row["config_changes"] = changes
        self._guard_finite(run, f"the end of epoch {epoch + 1}")
        run.history.append(row)
        if dist.is_main():
            self._log(row, run.writer)
            if cfg.snapshot_every and (epoch + 1) % cfg.snapshot_every == 0:
                _save_snapshot(self.out, run.model, epoch + 1)  # before the checkpoint: redone
            self._checkpoint(run, run.state_base, epoch + 1, 0, row["step"], row)
            run.progress.note(_summary(row))
        dist.barrier()

    def _finish(self, run: RunState) -> dict[str, Any]:
        result = run.history[-1] if run.history else {}
        if dist.is_main():
            final = dict(run.state_base, epoch=self.cfg.epochs, batch=0, step=run.total_steps)
            final["metrics"] = result
            final["init"] = run.init_report
            save_checkpoint(self.out / "checkpoints", "final", run.model, None, final)
        return result

    # -- helpers -----------------------------------------------------------------------------

    def _guard_finite(self, run: RunState, where: str) -> None:
        """Refuse to go on (and so to save) once weights or optimizer state are not finite."""
        tensors = list(run.model.state_dict().values())
        tensors += [v for s in run.optimizer.state.values() for v in s.values()]
        if not _all_finite(tensors):
            what = f"the weights or optimizer state became non-finite at {where} (not saved)"
            raise VitlensError(divergence_message(self.out, self.cfg, what))

    def _checkpoint(self, run: RunState, base, epoch, batch, step, metrics=None) -> None:
        if not dist.is_main():
            return
        state = dict(base, epoch=epoch, batch=batch, step=step)
        if metrics is not None:
            state["metrics"] = metrics
        folder = self.out / "checkpoints"
        save_checkpoint(folder, "last", run.model, run.optimizer, state, generations=True)

    def _log(self, row: dict, writer) -> None:
        append_json_line(self.out / "metrics.jsonl", row)
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


def _convolutional(model: nn.Module) -> bool:
    """Whether the model's blocks include convolutions (channels-last pays off on CUDA)."""
    from vitlens.anatomy import anatomy_of

    return anatomy_of(model, need_blocks=False).has("conv")


def _all_finite(tensors) -> bool:
    return all(
        torch.isfinite(t).all().item()
        for t in tensors
        if isinstance(t, torch.Tensor) and t.is_floating_point()
    )


def _notice(text: str) -> None:
    print(f"notice: {text}", file=sys.stderr, flush=True)


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
        logits = output_logits(model(x.to(device)))  # HF models: an output object
        sums.add(logits.float(), y.to(device))
    sums.load_tensor(dist.all_reduce_sum(sums.as_tensor()))
    model.train(was_training)
    return sums.result()


def _save_snapshot(out: Path, model: nn.Module, epoch: int) -> None:
    write_safetensors(out / "snapshots" / f"epoch{epoch:04d}.safetensors", model.state_dict())


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
    test = (
        f"  test acc {row['test_acc']:.4f}  NLL {row['test_nll']:.4f}  ECE {row['test_ece']:.4f}"
        if "test_acc" in row
        else ""
    )
    return (
        f"epoch {row['epoch']}: train NLL {row['train_nll']:.4f}{test}"
        f"  ({row['images_per_second']:.0f} img/s)"
    )


class _Progress:
    """The training bar (`vitlens.progress`) with the running loss, or nothing when quiet."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        if enabled:
            from vitlens.progress import new_bar

            self.bar = new_bar(True, unit="step", loss=True)
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
