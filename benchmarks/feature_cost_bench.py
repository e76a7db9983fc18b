"""Cost of the streamed feature-map analyses against one plain forward pass (the floor).

Each analysis must run the model over the data once; what it adds on top is its own statistic
(Fourier: the K + 1 half-diagonal entries of every block's spectrum, one float64 matmul on maps
of side <= 16 and `rfft2` above, and a log; variance: a centred float64 sum of squares per map;
CKA: a float64 Gram matrix per block and one all-pairs matmul). For vitlens ViT-Ti (patch 2) and
ResNet-18 on random CIFAR-sized batches this times a plain `model(x)` loop under `no_grad`
against `fourier`, `variance` and `cka` over the same batches. Runs are interleaved (floor,
fourier, variance, cka, floor, ...) so that load on a shared machine hits all alike.

Writes benchmarks/results/feature_cost_bench.json.

    python benchmarks/feature_cost_bench.py [--batches 4] [--batch 64] [--repeats 3] [--threads 2]
        [--analyses fourier,variance,cka]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from vitlens.analysis.cka import cka
from vitlens.analysis.fourier import fourier
from vitlens.analysis.variance import variance
from vitlens.models import create_model


def forward_only(model, data) -> None:
    with torch.no_grad():
        for x, _ in data:
            model(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vit_ti,resnet18")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--analyses", default="fourier,variance,cka", help="comma-separated")
    parser.add_argument("--out", default="benchmarks/results/feature_cost_bench.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = [
        (torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,)))
        for _ in range(args.batches)
    ]
    analyses = {"fourier": fourier, "variance": variance, "cka": cka}
    runs = {"forward": forward_only} | {a: analyses[a] for a in args.analyses.split(",")}
    report = {
        "benchmark": "feature_analysis_cost",
        "batches": args.batches,
        "batch_size": args.batch,
        "threads": args.threads,
        "analyses": list(runs)[1:],
        "models": {},
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
    }
    for name in args.models.split(","):
        model = create_model(name, num_classes=10).eval()
        forward_only(model, data[:1])  # warm-up
        seconds: dict[str, list[float]] = {k: [] for k in runs}
        cpu: dict[str, list[float]] = {k: [] for k in runs}
        for r in range(args.repeats):
            for key, run in runs.items():
                started, cpu_started = time.perf_counter(), time.process_time()
                run(model, data)
                seconds[key].append(time.perf_counter() - started)
                cpu[key].append(time.process_time() - cpu_started)
                print(
                    f"{name} repeat {r}: {key:9s} {seconds[key][-1]:7.3f} s"
                    f"  cpu {cpu[key][-1]:7.3f} s"
                )
        median = {k: statistics.median(v) for k, v in seconds.items()}
        cpu_median = {k: statistics.median(v) for k, v in cpu.items()}
        report["models"][name] = {
            "seconds": seconds,
            "median_seconds": median,
            "ratio_to_forward": {k: median[k] / median["forward"] for k in runs if k != "forward"},
            # Process CPU time: robust to other processes' load when --threads 1 (no spinning).
            "cpu_seconds": cpu,
            "ratio_to_forward_cpu": {
                k: cpu_median[k] / cpu_median["forward"] for k in runs if k != "forward"
            },
        }
        print(name, json.dumps(report["models"][name]["ratio_to_forward"]))
    report["load_average_at_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
