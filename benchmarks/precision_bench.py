"""Training-step speed in fp32, bf16, bf16 with fp32 attention, and what `--precision auto` picks.

Each model's modes run interleaved (fp32, bf16, ..., auto, fp32, bf16, ...) on one fixed random
batch, so that load on a shared machine hits every mode alike; medians of the repeats are reported
with each mode's ratio to fp32 (> 1: faster than fp32). One step is what `vitlens train` does:
forward in the mode, fp32 loss, backward, AdamW on fp32 weights. `auto` is timed as its own entry,
in the mode `vitlens.train.precision` chooses on this machine (its probe included when
`--probe` is given).

With `--process MODEL`, whole `vitlens train MODEL` processes run instead, `--precision fp32` and
`--precision auto` alternating, and their wall times are compared (that counts the probe, data
loading and evaluation too).

    python benchmarks/precision_bench.py [--models vit_nano,resnet_nano] [--batch 128]
    python benchmarks/precision_bench.py --paper          # vit_ti and resnet50, batch 32, 32x32
    python benchmarks/precision_bench.py --process resnet_nano --epochs 2

Writes benchmarks/results/precision_bench.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from vitlens.config import make_config
from vitlens.models import create_model
from vitlens.train import precision as P

NANO = ["vit_nano", "pit_nano", "swin_nano", "resnet_nano", "alternet_nano"]
PAPER = ["vit_ti", "resnet50"]


def machine() -> dict:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    native, why = P.native_bf16(torch.device("cpu"))
    return {
        "cpu": name,
        "bf16_features": P.cpu_bf16_features(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native,
        "native_bf16_reason": why,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average": os.getloadavg(),
    }


def auto_mode(model_name: str, model: nn.Module, shape, classes: int, probe: bool) -> P.Precision:
    """What `--precision auto` trains `model` in here; with `probe`, its probe runs even on a CPU
    without native bf16 (where `auto` itself goes straight to fp32), with a fresh cache."""
    cfg = make_config(model=model_name, precision="auto", device="cpu")
    kw = dict(input_shape=shape, num_classes=classes, model_spec={})
    if not probe:
        return P.choose_precision(cfg, model, torch.device("cpu"), **kw)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["VITLENS_CACHE_DIR"] = cache
        return P.measured_choice(cfg, model, torch.device("cpu"), **kw)


def bench_model(name: str, args) -> dict:
    """Interleaved step medians of every mode of one model, plus `auto`'s choice."""
    paper = name in PAPER
    shape = (args.batch, 3, 32, 32) if paper else (args.batch, 1, 28, 28)
    classes = 100 if paper else 10
    torch.manual_seed(0)
    kw = {} if paper else dict(num_classes=10, in_chans=1, image_size=28)
    model = create_model(name, **kw).train()
    modes = ["fp32", "bf16"] + (["bf16-fp32attn"] if P.has_attention(model) else [])
    start = time.perf_counter()
    choice = auto_mode(name, model, shape, classes, args.probe)
    probe_seconds = time.perf_counter() - start
    seconds = P.time_modes(
        model,
        [*modes, "auto"],
        input_shape=shape,
        num_classes=classes,
        warmup=args.warmup,
        repeats=args.repeats,
        aliases={"auto": choice.mode},
    )
    ratios = {m: seconds["fp32"] / s for m, s in seconds.items()}
    print(
        f"{name:14s} "
        + "  ".join(f"{m} {seconds[m] * 1e3:7.0f} ms ({ratios[m]:.2f}x)" for m in seconds)
        + f"  auto -> {choice.mode}",
        flush=True,
    )
    return {
        "batch": args.batch,
        "input": list(shape[1:]),
        "seconds_per_step_median": seconds,
        "speedup_vs_fp32": ratios,
        "auto_mode": choice.mode,
        "auto_reason": choice.reason,
        "auto_probe_seconds": probe_seconds,
    }


def bench_process(name: str, args) -> dict:
    """Wall time of whole `vitlens train` processes, fp32 and auto alternating."""
    walls: dict[str, list[float]] = {"fp32": [], "auto": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.process_repeats):
            for precision in ("fp32", "auto") if r % 2 == 0 else ("auto", "fp32"):
                out = Path(tmp) / f"{precision}{r}"
                cmd = [sys.executable, "-m", "vitlens.cli", "train", name, "--out", str(out)]
                cmd += ["--epochs", str(args.epochs), "--precision", precision, "--quiet"]
                start = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True)
                walls[precision].append(time.perf_counter() - start)
                record = json.loads((out / "precision.json").read_text())
                print(f"{name} {precision}: {walls[precision][-1]:.1f} s ({record['mode']})")
    med = {k: statistics.median(v) for k, v in walls.items()}
    return {
        "epochs": args.epochs,
        "wall_seconds_median": med,
        "wall_seconds_all": walls,
        "auto_mode": record["mode"] if precision == "auto" else None,
        "speedup_auto_vs_fp32": med["fp32"] / med["auto"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(NANO))
    parser.add_argument("--paper", action="store_true", help="vit_ti and resnet50, 3x32x32")
    parser.add_argument("--batch", type=int, default=None, help="128 (nano) / 32 (--paper)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--probe", action="store_true", help="run auto's probe even without native bf16"
    )
    parser.add_argument("--process", default=None, help="time whole `vitlens train` runs")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--process-repeats", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    kind = "process" if args.process else ("paper" if args.paper else "nano")
    args.batch = args.batch or (32 if args.paper else 128)
    default_out = Path(__file__).parent / "results" / f"precision_bench_{kind}.json"
    out = Path(args.out or default_out)

    report = {"benchmark": f"fp32 vs bf16 vs auto ({kind}), medians of interleaved repeats"}
    report["machine"] = machine()
    if args.process:
        report["results"] = {m: bench_process(m, args) for m in args.process.split(",")}
    else:
        names = PAPER if args.paper else args.models.split(",")
        report["repeats"] = args.repeats
        report["results"] = {m: bench_model(m, args) for m in names}
    report["machine"]["load_average_end"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
