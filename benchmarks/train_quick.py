"""The `quick` preset on fashion-mnist-mini for each family's nano model, and loop throughput.

For every nano model: train with `vitlens train`'s Trainer and the quick preset (test accuracy,
epochs, wall time), then time one epoch of vitlens's loop against a plain PyTorch loop on the same
model, data, augmentation, batch size and optimizer (DataLoader with shuffle, forward, loss,
backward, clip, AdamW), interleaved. Writes benchmarks/results/train_quick.json.

    python benchmarks/train_quick.py [--models vit_nano,resnet_nano] [--epochs 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from vitlens.config import make_config
from vitlens.data import build_transform, load_dataset
from vitlens.models import create_model
from vitlens.train import Trainer

NANO = ["vit_nano", "pit_nano", "swin_nano", "resnet_nano", "alternet_nano"]


def plain_epoch(model_name: str, batch: int, lr: float) -> float:
    """Images per second of a plain PyTorch training epoch (the peer)."""
    train = load_dataset("fashion-mnist-mini", "train")
    data = train.with_transform(build_transform("basic", train.info, train=True))
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=10, image_size=28, in_chans=1).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True)
    loss_fn = nn.CrossEntropyLoss()
    seen, start = 0, time.perf_counter()
    for x, y in loader:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        seen += len(y)
    return seen / (time.perf_counter() - start)


def vitlens_epoch(model_name: str) -> float:
    """Images per second of one epoch of vitlens's Trainer (training phase only)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = make_config("quick", model=model_name, epochs=1, warmup_epochs=0)
        row = Trainer(cfg, Path(tmp) / "run", quiet=True).run()
    return row["images_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(NANO))
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    parser.add_argument("--skip-full", action="store_true", help="only the throughput comparison")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved epochs per loop")
    default_out = Path(__file__).parent / "results" / "train_quick.json"
    parser.add_argument("--out", default=str(default_out))
    args = parser.parse_args()
    results = {}
    for name in args.models.split(","):
        entry: dict = {}
        if not args.skip_full:
            with tempfile.TemporaryDirectory() as tmp:
                cfg = make_config("quick", model=name, epochs=args.epochs)
                start = time.perf_counter()
                row = Trainer(cfg, Path(tmp) / "run", quiet=True).run()
                entry.update(
                    epochs=cfg.epochs,
                    wall_seconds=time.perf_counter() - start,
                    test_acc=row["test_acc"],
                    test_nll=row["test_nll"],
                    test_ece=row["test_ece"],
                )
        cfg = make_config("quick", model=name)
        ours, plain = [], []
        for _ in range(args.repeats):  # interleaved: ours, plain, ours, plain
            ours.append(vitlens_epoch(name))
            plain.append(plain_epoch(name, cfg.batch_size, cfg.lr))
        entry.update(
            vitlens_images_per_s=max(ours),
            plain_loop_images_per_s=max(plain),
            throughput_ratio=max(ours) / max(plain),
            all_vitlens=ours,
            all_plain=plain,
        )
        results[name] = entry
        print(name, json.dumps({k: v for k, v in entry.items() if not k.startswith("all_")}))
    report = {
        "benchmark": "quick preset on fashion-mnist-mini (10,000 train / 2,000 test, 28x28)",
        "peer": "plain PyTorch loop: DataLoader(shuffle) + CE + clip + AdamW, same augmentation",
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
