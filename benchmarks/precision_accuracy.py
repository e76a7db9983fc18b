"""Accuracy of `--precision auto` against fp32 after the quick recipe, over seeds.

Every (model, seed) is trained twice with `vitlens train MODEL --seed S` (the quick preset:
5 epochs on fashion-mnist-mini), once with `--precision fp32` and once with `--precision auto`,
the two orders alternating, and the final test accuracy is read from each run's last metrics
row. Reported per model: the mean and sample standard deviation of each precision over the seeds,
the mode `auto` chose (from its `precision.json`), and whether |mean(auto) - mean(fp32)| is within
one standard deviation of fp32, the acceptance rule of issue 21.

    python benchmarks/precision_accuracy.py [--models vit_nano,...] [--seeds 0,1,2]

Writes benchmarks/results/precision_accuracy.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from precision_bench import NANO, machine  # noqa: E402


def train_once(model: str, seed: int, precision: str, out: Path) -> dict:
    """One quick-recipe training process; its final test accuracy, mode and wall seconds."""
    cmd = [sys.executable, "-m", "vitlens.cli", "train", model, "--out", str(out)]
    cmd += ["--seed", str(seed), "--precision", precision, "--quiet"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.perf_counter() - start
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    mode = json.loads((out / "precision.json").read_text())["mode"]
    return {"test_acc": last["test_acc"], "mode": mode, "wall_seconds": round(wall, 1)}


def summarise(runs: dict[str, list[dict]]) -> dict:
    """Mean and standard deviation per precision, and the one-standard-deviation rule."""
    acc = {p: [r["test_acc"] for r in rs] for p, rs in runs.items()}
    mean = {p: statistics.mean(a) for p, a in acc.items()}
    std = {p: statistics.stdev(a) if len(a) > 1 else 0.0 for p, a in acc.items()}
    gap = mean["auto"] - mean["fp32"]
    return {
        "test_acc": acc,
        "mean": mean,
        "std": std,
        "auto_minus_fp32": gap,
        "within_one_std_of_fp32": abs(gap) <= std["fp32"],
        "auto_modes": sorted({r["mode"] for r in runs["auto"]}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(NANO))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="benchmarks/results/precision_accuracy.json")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    result = {"machine_at_start": machine(), "recipe": "quick (vitlens train defaults)"}
    per_model = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            runs: dict[str, list[dict]] = {"fp32": [], "auto": []}
            for i, seed in enumerate(seeds):
                order = ("fp32", "auto") if i % 2 == 0 else ("auto", "fp32")
                for precision in order:
                    out = Path(tmp) / f"{model}-{seed}-{precision}"
                    runs[precision].append(train_once(model, seed, precision, out))
                    print(model, seed, precision, runs[precision][-1], flush=True)
            per_model[model] = {"runs": runs, **summarise(runs)}
            print(model, {k: v for k, v in per_model[model].items() if k != "runs"}, flush=True)
    result["models"] = per_model
    result["machine_at_end"] = machine()
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
