"""All-pairs minibatch CKA: vectorized HSIC (vitlens) against per-pair loops, same activations.

Model: vitlens ViT-Ti (patch 2, 26 blocks: embedding, 12 x (MSA, MLP), head), random weights,
random CIFAR-sized images. The activations of every block are recorded once per batch; then each
method turns the same activations into the 26 x 26 CKA matrix (unbiased HSIC, float64 throughout):

- `vitlens`: one Gram matrix per block per batch, unbiased centering, one (L, n²) @ (n², L) matmul
  (`vitlens.analysis.cka.MinibatchCKA`).
- `per_pair_torch_cka`: the loop of torch-cka (AntixK/PyTorch-Model-Compare): for each block i
  its Gram K and HSIC(K, K); for each block j its Gram L (recomputed for every i), HSIC(K, L)
  and HSIC(L, L), each HSIC by the trace formula with n x n matmuls and a `.item()`.
- `per_pair_cached_grams`: the same loop, but with every block's Gram computed once per batch,
  so the difference to `vitlens` is the pairwise HSIC alone (also timed on its own, from ready
  Gram matrices of one batch: `pairwise_stage_one_batch_s`).

Writes benchmarks/results/cka_bench.json.

    python benchmarks/cka_bench.py [--batches 3] [--batch 64] [--repeats 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from vitlens.analysis.cka import MinibatchCKA, gram
from vitlens.anatomy import describe, record
from vitlens.models import create_model


def hsic_trace(k: torch.Tensor, l_: torch.Tensor) -> float:
    """Unbiased HSIC by Song et al.'s trace formula, as torch-cka writes it (diagonals zeroed)."""
    n = k.shape[0]
    ones = torch.ones(n, 1, dtype=k.dtype)
    result = torch.trace(k @ l_)
    result += ((ones.T @ k @ ones @ ones.T @ l_ @ ones) / ((n - 1) * (n - 2))).item()
    result -= ((ones.T @ k @ l_ @ ones) * 2 / (n - 2)).item()
    return (1 / (n * (n - 3)) * result).item()


def zero_diag_gram(x: torch.Tensor) -> torch.Tensor:
    k = gram(x)
    k.fill_diagonal_(0.0)
    return k


def per_pair_torch_cka(acts: list[list[torch.Tensor]]) -> torch.Tensor:
    L = len(acts[0])
    h = torch.zeros(L, L, 3, dtype=torch.float64)
    for batch in acts:
        for i, xi in enumerate(batch):
            k = zero_diag_gram(xi)
            h[i, :, 0] += hsic_trace(k, k)
            for j, xj in enumerate(batch):
                l_ = zero_diag_gram(xj)
                h[i, j, 1] += hsic_trace(k, l_)
                h[i, j, 2] += hsic_trace(l_, l_)
    return h[..., 1] / (h[..., 0].sqrt() * h[..., 2].sqrt())


def per_pair_cached_grams(acts: list[list[torch.Tensor]]) -> torch.Tensor:
    L = len(acts[0])
    cross = torch.zeros(L, L, dtype=torch.float64)
    for batch in acts:
        grams = [zero_diag_gram(x) for x in batch]
        for i in range(L):
            for j in range(L):
                cross[i, j] += hsic_trace(grams[i], grams[j])
    d = cross.diagonal()
    return cross / (d[:, None] * d[None, :]).sqrt()


def vitlens_vectorized(acts: list[list[torch.Tensor]]) -> torch.Tensor:
    acc = MinibatchCKA(len(acts[0]), len(acts[0]), same=True, device=torch.device("cpu"))
    for batch in acts:
        acc.update(torch.stack([gram(x) for x in batch]))
    return acc.value()


METHODS = {
    "vitlens": vitlens_vectorized,
    "per_pair_torch_cka": per_pair_torch_cka,
    "per_pair_cached_grams": per_pair_cached_grams,
}


def pairwise_stage(grams: list[torch.Tensor]) -> dict[str, float]:
    """Seconds from ready Gram matrices to all pair HSICs: one matmul vs a loop of traces."""
    acc = MinibatchCKA(len(grams), len(grams), same=True, device=torch.device("cpu"))
    stacked = torch.stack(grams)
    started = time.perf_counter()
    acc.update(stacked)
    vectorized = time.perf_counter() - started
    zeroed = [g.clone().fill_diagonal_(0.0) for g in grams]
    started = time.perf_counter()
    for gi in zeroed:
        for gj in zeroed:
            hsic_trace(gi, gj)
    return {"vitlens": vectorized, "per_pair": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/cka_bench.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = create_model("vit_ti", num_classes=10).eval()
    blocks = describe(model)
    acts, started = [], time.perf_counter()
    with torch.no_grad():
        for _ in range(args.batches):
            maps, _ = record(model, torch.randn(args.batch, 3, 32, 32), blocks)
            acts.append([maps[b.name] for b in blocks])
    record_s = time.perf_counter() - started
    features = [int(a[0].numel()) for a in acts[0]]
    print(f"{len(blocks)} blocks, features per image {min(features)}..{max(features)}")

    timings: dict[str, list[float]] = {m: [] for m in METHODS}
    matrices: dict[str, torch.Tensor] = {}
    for r in range(args.repeats):  # interleaved, so machine load hits every method alike
        for name, method in METHODS.items():
            started = time.perf_counter()
            matrices[name] = method(acts)
            timings[name].append(time.perf_counter() - started)
            print(f"repeat {r}: {name:24s} {timings[name][-1]:8.3f} s")

    grams = [gram(x) for x in acts[0]]
    pairwise = [pairwise_stage(grams) for _ in range(args.repeats)]
    print("pairwise stage only (one batch):", pairwise)

    base = matrices["vitlens"]
    report = {
        "benchmark": "cka_all_pairs",
        "model": "vitlens vit_ti (patch 2, 16x16 tokens, random weights)",
        "blocks": len(blocks),
        "pairs": len(blocks) ** 2,
        "batches": args.batches,
        "batch_size": args.batch,
        "dtype": "float64",
        "threads": args.threads,
        "record_activations_s": record_s,
        "seconds": timings,
        "best_seconds": {m: min(t) for m, t in timings.items()},
        "speedup_vs_vitlens": {
            m: [t / v for t, v in zip(timings[m], timings["vitlens"], strict=True)]
            for m in METHODS
            if m != "vitlens"
        },
        "pairwise_stage_one_batch_s": pairwise,
        "max_abs_difference_vs_vitlens": {
            m: float((matrices[m] - base).abs().max()) for m in METHODS if m != "vitlens"
        },
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "torch": torch.__version__,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("best_seconds", "speedup_vs_vitlens")}, indent=1))


if __name__ == "__main__":
    main()
