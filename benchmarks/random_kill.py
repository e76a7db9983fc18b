"""SIGKILL a small training run at random instants, resume it each time, compare bit for bit.

One uninterrupted `vitlens train` run is the reference. Then, in each trial, the same run is
started, killed with SIGKILL after a random delay (uniform over the reference's wall time),
resumed with `--resume`, killed again, ... `--kills-per-trial` times, and finally resumed to the
end. Its final weights must equal the reference's bit for bit, and its metric rows must match.
For every kill the script notes where it landed (before the first checkpoint, with a temporary
file of an interrupted write left behind, ...). Writes benchmarks/results/random_kill.json.

    python benchmarks/random_kill.py [--trials 4] [--kills-per-trial 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from vitlens.atomic import is_temporary, write_json

RUN = ["vit_nano", "--seed", "5", "--epochs", "2", "--fraction", "0.02", "--batch-size", "20"]
RUN += ["--checkpoint-every", "2", "--quiet"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# Wall-clock fields differ between runs by nature; everything else in a row must match.
TIMING = {"train_seconds", "images_per_second", "config_changes"}


def train(out: Path, resume: bool) -> subprocess.Popen:
    args = [sys.executable, "-m", "vitlens.cli", "train", *RUN, "--out", str(out)]
    return subprocess.Popen(
        args + (["--resume"] if resume else []),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def where(out: Path) -> dict:
    """What a kill left behind."""
    last = out / "checkpoints" / "last.json"
    step = json.loads(last.read_text())["step"] if last.exists() else None
    temporaries = sorted(p.name for p in out.rglob("*") if is_temporary(p))
    return {"checkpoint_step": step, "temporaries": temporaries}


def rows(out: Path) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING} for x in lines]


def same_weights(a: Path, b: Path) -> bool:
    x = load_file(str(a / "checkpoints" / "final.model.safetensors"))
    y = load_file(str(b / "checkpoints" / "final.model.safetensors"))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def trial(out: Path, kills: int, duration: float, rng: random.Random) -> dict:
    """Kill the run up to `kills` times at random instants, resuming each time, then finish it
    (a run that finishes before its next kill ends the trial early)."""
    landed, launches = [], 0
    while True:
        proc = train(out, resume=(out / "config.yaml").exists())
        launches += 1
        delay = rng.uniform(0.0, duration)
        if len(landed) == kills:
            delay = None  # the last launch runs to the end
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            landed.append({"after_seconds": round(delay, 3), **where(out)})
            continue
        if proc.returncode != 0:
            raise SystemExit(f"a resumed run failed: {proc.stderr.read()}")
        return {"folder": out.name, "kills": landed, "launches": launches}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--kills-per-trial", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/random_kill.json")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "reference"
        start = time.perf_counter()
        proc = train(ref, resume=False)
        if proc.wait() != 0:
            raise SystemExit(f"the reference run failed: {proc.stderr.read()}")
        duration = time.perf_counter() - start
        trials, needed, t = [], args.trials * args.kills_per_trial, 0
        while sum(len(x["kills"]) for x in trials) < needed:
            result = trial(Path(tmp) / f"trial{t}", args.kills_per_trial, duration, rng)
            folder = Path(tmp) / result["folder"]
            result["weights_bit_identical"] = same_weights(folder, ref)
            result["metric_rows_identical"] = rows(folder) == rows(ref)
            trials.append(result)
            t += 1
            print(json.dumps(result), flush=True)
    kills = [k for t in trials for k in t["kills"]]
    summary = {
        "command": "vitlens train " + " ".join(RUN),
        "reference_wall_seconds": round(duration, 2),
        "trials": len(trials),
        "kills": len(kills),
        "kills_before_first_checkpoint": sum(k["checkpoint_step"] is None for k in kills),
        "kills_leaving_a_temporary_file": sum(bool(k["temporaries"]) for k in kills),
        "all_weights_bit_identical": all(t["weights_bit_identical"] for t in trials),
        "all_metric_rows_identical": all(t["metric_rows_identical"] for t in trials),
        "host": platform.node(),
        "torch": torch.__version__,
        "details": trials,
    }
    write_json(args.out, summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "details"}, indent=1))


if __name__ == "__main__":
    main()
