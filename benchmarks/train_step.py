"""Training-step speed of vitlens models against timm and torchvision peers of the same design.

One step = forward, cross-entropy, backward, AdamW update, on a fixed random CIFAR-sized batch.
Pairs run interleaved (ours, theirs, ours, theirs, ...) so that load on a noisy machine hits both
alike; each reports the median of its repeats. Writes benchmarks/results/train_step.json.

    python benchmarks/train_step.py [--batch 32] [--repeats 7] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from vitlens.models import count_parameters, create_model


def peer_vit() -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=32,
        patch_size=4,
        num_classes=100,
        embed_dim=192,
        depth=12,
        num_heads=3,
        qkv_bias=False,
    )


def peer_resnet18() -> nn.Module:
    import torchvision

    model = torchvision.models.resnet18(num_classes=100)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)  # CIFAR stem
    model.maxpool = nn.Identity()
    return model


PAIRS = {
    "vit_ti_patch4": (
        lambda: create_model("vit_ti", num_classes=100, patch_size=4),
        peer_vit,
        "timm VisionTransformer",
    ),
    "resnet18_cifar": (
        lambda: create_model("resnet18", num_classes=100),
        peer_resnet18,
        "torchvision resnet18 (3x3 stem, no max-pool)",
    ),
}


def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> float:
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_step.json"))
    args = parser.parse_args()
    device = torch.device(args.device)

    results = {}
    for name, (ours_fn, theirs_fn, peer) in PAIRS.items():
        torch.manual_seed(0)
        x = torch.randn(args.batch, 3, 32, 32, device=device)
        y = torch.randint(0, 100, (args.batch,), device=device)
        ours, theirs = ours_fn().to(device).train(), theirs_fn().to(device).train()
        assert count_parameters(ours) == count_parameters(theirs), name
        step_ours, step_theirs = make_step(ours, x, y), make_step(theirs, x, y)
        for _ in range(args.warmup):
            step_ours(), step_theirs()
        t_ours, t_theirs = [], []
        for _ in range(args.repeats):
            t_ours.append(step_ours())
            t_theirs.append(step_theirs())
        med_ours, med_theirs = statistics.median(t_ours), statistics.median(t_theirs)
        results[name] = {
            "peer": peer,
            "params": count_parameters(ours),
            "vitlens_s_per_step": med_ours,
            "peer_s_per_step": med_theirs,
            "speedup_vs_peer": med_theirs / med_ours,
            "vitlens_all": t_ours,
            "peer_all": t_theirs,
        }
        print(
            f"{name:16s} vitlens {med_ours * 1e3:8.1f} ms  {peer}: {med_theirs * 1e3:8.1f} ms"
            f"  ratio (peer/vitlens) {med_theirs / med_ours:.3f}"
        )

    report = {
        "benchmark": "training step (forward + backward + AdamW), median of interleaved repeats",
        "batch": args.batch,
        "image": "3x32x32",
        "repeats": args.repeats,
        "device": str(device),
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
