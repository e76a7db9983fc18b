"""2-D loss landscape: vitlens against the `loss-landscapes` package, and against the floor.

Same model, same fixed batches (augmented once with Mixup/CutMix + label smoothing), same grid
size. vitlens: `loss_landscape(dims=2)` with both loop orders (data outer: each batch is moved
once and evaluated at every point; grid outer: parameters updated once per point), computing
NLL, accuracy and the L2 term at each point and restoring the weights bit-exactly.
`loss-landscapes` (pip `loss-landscapes`): `random_plane(model, metric, steps=S,
normalization="filter", deepcopy_model=True)` with a metric that sums the soft cross-entropy over
the same batches (it moves parameters incrementally and evaluates only the loss). The floor: one
forward pass over the same batches with the weights fixed, i.e. what one grid point cannot beat.

    python benchmarks/landscape_bench.py [--model vit_nano] [--steps 7] [--batches 4] [--threads 1]

Writes benchmarks/results/landscape_bench.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from vitlens.analysis.landscape import loss_landscape
from vitlens.analysis.loss_surface import fixed_batches, nll_loss
from vitlens.data import BatchMixer
from vitlens.models import count_parameters, create_model


def floor_seconds(model, batches, repeats: int) -> float:
    """Median time of one no-grad forward pass over all the batches."""
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            for x, t in batches:
                nll_loss(model(x), t).item()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def peer_plane(model, batches, steps: int):
    import loss_landscapes
    from loss_landscapes.metrics import Metric

    class SumLoss(Metric):
        def __call__(self, wrapper) -> float:
            n = sum(x.shape[0] for x, _ in batches)
            return sum(nll_loss(wrapper.forward(x), t).item() * x.shape[0] for x, t in batches) / n

    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.no_grad():
        grid = loss_landscapes.random_plane(
            model, SumLoss(), distance=1, steps=steps, normalization="filter", deepcopy_model=True
        )
    return grid, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_nano")
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "landscape_bench.json")
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    model = create_model(args.model, num_classes=args.num_classes).to(device).eval()
    # Stand-in for trained weights: no exact zeros. (loss-landscapes' filter normalization divides
    # by zero on zero-initialized biases, i.e. on any freshly initialized model.)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    g = torch.Generator().manual_seed(0)
    raw = [
        (
            torch.randn(args.batch, 3, 32, 32, generator=g),
            torch.randint(0, args.num_classes, (args.batch,), generator=g),
        )
        for _ in range(args.batches)
    ]
    mixer = BatchMixer(args.num_classes)
    # The fixed batches, exactly as loss_landscape builds them (for the peer and the floor).
    fixed = [(x.to(device), t.to(device)) for _, x, t in fixed_batches(raw, augment=mixer, seed=0)]
    points = args.steps**2
    before = {k: v.clone() for k, v in model.state_dict().items()}

    runs = {"vitlens_data_outer": [], "vitlens_grid_outer": [], "loss_landscapes": []}
    floors, over_floor = [], {k: [] for k in runs}
    centre = {}
    for r in range(args.repeats):
        # The floor is re-measured every repeat: the machine's load drifts between minutes.
        floor = floor_seconds(model, fixed, 3)
        floors.append(floor)
        for order in ("data_outer", "grid_outer"):
            start = time.perf_counter()
            res = loss_landscape(
                model,
                raw,
                dims=2,
                steps=args.steps,
                weight_decay=0.05,
                augment=mixer,
                order=order,
                seed=0,
            )
            runs[f"vitlens_{order}"].append(time.perf_counter() - start)
            mid = args.steps // 2
            centre[order] = res.nll[mid][mid]
        grid, dt = peer_plane(model, fixed, args.steps)
        runs["loss_landscapes"].append(dt)
        for k, v in runs.items():
            over_floor[k].append(v[-1] / points / floor)
        print(
            f"repeat {r}: floor {floor:.3f} s  "
            + "  ".join(f"{k} {v[-1]:.2f} s" for k, v in runs.items())
        )
    with torch.no_grad():
        direct = sum(nll_loss(model(x), t).item() for x, t in fixed) / len(fixed)
    restored = all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    med = {k: statistics.median(v) for k, v in runs.items()}
    per_point = {k: v / points for k, v in med.items()}
    report = {
        "benchmark": f"2-D loss landscape, {args.steps}x{args.steps} grid",
        "model": args.model,
        "params": count_parameters(model),
        "batches": args.batches,
        "batch": args.batch,
        "images_per_point": args.batches * args.batch,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "peer": "loss-landscapes 3.0.6 random_plane(normalization='filter', deepcopy_model=True)",
        "weights_restored_bit_exactly": restored,
        "centre_nll_vitlens": centre,
        "centre_nll_direct": direct,
        "floor_forward_pass_seconds": floors,
        "seconds_median": med,
        "seconds_all": runs,
        "seconds_per_point": per_point,
        "point_over_floor_per_repeat": over_floor,
        "point_over_floor_median": {k: statistics.median(v) for k, v in over_floor.items()},
        "speedup_vs_loss_landscapes": {
            k: med["loss_landscapes"] / med[k] for k in ("vitlens_data_outer", "vitlens_grid_outer")
        },
    }
    print(json.dumps({k: report[k] for k in list(report)[-4:]}, indent=1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
