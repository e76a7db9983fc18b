"""Training-step speed of vitlens models against timm and torchvision peers of the same design.

One step = forward, cross-entropy, backward, AdamW update, on a fixed random CIFAR-sized batch.
Pairs run interleaved (ours, theirs, ours, theirs, ...) so that load on a noisy machine hits both
alike; each reports the median of its repeats. Both sides run in the same `--precision` (fp32, or
bf16 autocast of the forward as `vitlens train` does it) and, with `--channels-last`, the
convolutional ones in channels-last. Writes benchmarks/results/train_step.json.

    python benchmarks/train_step.py [--batch 32] [--repeats 7] [--device cpu]
    python benchmarks/train_step.py --pairs paper --batch 96 --precision bf16 --channels-last
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
from vitlens.train.precision import mode_context


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


def peer_vit_ti() -> nn.Module:
    """timm's ViT in the paper's CIFAR configuration (patch 2, no qkv bias)."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=32, patch_size=2, embed_dim=192, depth=12, num_heads=3, qkv_bias=False,
        num_classes=100,
    )  # fmt: skip


def peer_pit_ti() -> nn.Module:
    from timm.models.pit import PoolingVisionTransformer

    return PoolingVisionTransformer(
        img_size=32, patch_size=2, stride=1, base_dims=[32, 32, 32], depth=[2, 6, 4],
        heads=[2, 4, 8], mlp_ratio=4, num_classes=100,
    )  # fmt: skip


def peer_swin_ti() -> nn.Module:
    from timm.models.swin_transformer import SwinTransformer

    return SwinTransformer(
        img_size=32, patch_size=1, window_size=4, embed_dim=96, depths=(2, 2, 6, 2),
        num_heads=(3, 6, 12, 24), qkv_bias=False, num_classes=100,
    )  # fmt: skip


def peer_resnet50() -> nn.Module:
    import torchvision

    model = torchvision.models.resnet50(num_classes=100)
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
    # The paper's CIFAR-100 models (patch 2 / window 4 / CIFAR stems), as in tests/test_convert.py.
    "vit_ti": (lambda: create_model("vit_ti"), peer_vit_ti, "timm VisionTransformer, patch 2"),
    "pit_ti": (lambda: create_model("pit_ti"), peer_pit_ti, "timm PoolingVisionTransformer"),
    "swin_ti": (lambda: create_model("swin_ti"), peer_swin_ti, "timm SwinTransformer"),
    "resnet50": (
        lambda: create_model("resnet50"),
        peer_resnet50,
        "torchvision resnet50 (3x3 stem, no max-pool)",
    ),
    # AlterNet is the paper's own design: no library has it; its nearest peer is ResNet-50.
    "alternet50": (
        lambda: create_model("alternet50"),
        peer_resnet50,
        "torchvision resnet50 (3x3 stem): the ResNet AlterNet-50 alters, not an equal model",
    ),
}
PAIR_SETS = {
    "default": ["vit_ti_patch4", "resnet18_cifar"],
    "paper": ["vit_ti", "pit_ti", "swin_ti", "resnet50", "alternet50"],
}
CONV = ("resnet", "alternet")


def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str = "fp32"):
    """One timed training step; the forward runs in `precision` (a vitlens precision mode)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    loss_fn = nn.CrossEntropyLoss()
    context = mode_context(precision, x.device)

    def step() -> float:
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with context:
            logits = model(x)
        loss_fn(logits.float(), y).backward()
        opt.step()
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return step


def time_pair(name: str, args, device: torch.device) -> dict:
    """Interleaved medians of vitlens's model and its peer on one fixed random batch."""
    ours_fn, theirs_fn, peer = PAIRS[name]
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 100, (args.batch,), device=device)
    ours, theirs = ours_fn().to(device).train(), theirs_fn().to(device).train()
    same_size = count_parameters(ours) == count_parameters(theirs)
    assert same_size or name == "alternet50", name
    x_ours = x_theirs = x
    if args.channels_last and name.startswith(CONV):  # both sides are ResNets then
        x_ours = x_theirs = x.contiguous(memory_format=torch.channels_last)
        ours = ours.to(memory_format=torch.channels_last)
        theirs = theirs.to(memory_format=torch.channels_last)
    step_ours = make_step(ours, x_ours, y, args.precision)
    step_theirs = make_step(theirs, x_theirs, y, args.precision)
    for _ in range(args.warmup):
        step_ours(), step_theirs()
    t_ours, t_theirs = [], []
    for _ in range(args.repeats):
        t_ours.append(step_ours())
        t_theirs.append(step_theirs())
    med_ours, med_theirs = statistics.median(t_ours), statistics.median(t_theirs)
    print(
        f"{name:16s} vitlens {med_ours * 1e3:8.1f} ms  {peer}: {med_theirs * 1e3:8.1f} ms"
        f"  ratio (peer/vitlens) {med_theirs / med_ours:.3f}",
        flush=True,
    )
    return {
        "peer": peer,
        "params": count_parameters(ours),
        "peer_params": count_parameters(theirs),
        "vitlens_s_per_step": med_ours,
        "peer_s_per_step": med_theirs,
        "speedup_vs_peer": med_theirs / med_ours,
        "vitlens_all": t_ours,
        "peer_all": t_theirs,
    }


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--pairs", default="default", help="default, paper, or names, comma-separated"
    )
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "bf16-fp32attn"])
    parser.add_argument("--channels-last", action="store_true", help="conv models channels-last")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_step.json"))
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    """Time every pair `args` names; returns the report (also written to `args.out`)."""
    device = torch.device(args.device)
    names = PAIR_SETS.get(args.pairs) or args.pairs.split(",")
    results = {name: time_pair(name, args, device) for name in names}
    report = {
        "benchmark": "training step (forward + backward + AdamW), median of interleaved repeats",
        "batch": args.batch,
        "image": "3x32x32",
        "repeats": args.repeats,
        "precision": args.precision,
        "channels_last": args.channels_last,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "results": results,
    }
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2))
        tmp.replace(out)
        print(f"wrote {out}")
    return report


def main() -> None:
    run(parse_args())


if __name__ == "__main__":
    main()
