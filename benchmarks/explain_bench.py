"""How long `vitlens explain` takes for one image, on vit_nano and on a ViT-B/16-sized model.

Both go through the real command's library function (`vitlens.explaining.explain`): the model is
loaded from a run folder, the image read from a PNG, every per-image analysis run and the page
written. vit_nano is trained for one epoch first (not timed); the ViT-B/16 is timm's
`vit_base_patch16_224` (86 M parameters, 224 px, 196 patches + CLS, 12 blocks x 12 heads) imported
at random init with `vitlens import` (nothing downloaded). Times are wall seconds of the
`explain` call, best of `--repeats`, with the machine's CPU, bf16 support and load average.

Usage:
    python benchmarks/explain_bench.py [--repeats 2] [--out benchmarks/results/explain_bench.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from precision_bench import machine  # noqa: E402

from vitlens.explaining import explain  # noqa: E402


def vitlens_cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "vitlens.cli", *args], check=True, capture_output=True)


def timed(run: Path, image: Path, out: Path, repeats: int) -> dict:
    times, size = [], 0
    for i in range(repeats):
        started = time.perf_counter()
        done = explain(run, out=out / f"try{i}", images=[image], device="cpu")
        times.append(time.perf_counter() - started)
        size = done.page.stat().st_size
    return {"seconds_best": min(times), "seconds_all": times, "page_bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/explain_bench.json"))
    args = parser.parse_args()
    report = {"machine": machine(), "threads": torch.get_num_threads(), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        image = tmp / "image.png"
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (300, 240, 3), np.uint8)).save(image)
        vitlens_cli("train", "vit_nano", "--epochs", "1", "--quiet", "--out", str(tmp / "nano"))
        vitlens_cli("import", "timm:vit_base_patch16_224", "--image-size", "224",
                    "--dataset", "fashion-mnist-mini", "--out", str(tmp / "vitb"))  # fmt: skip
        for name, run in (("vit_nano (28 px, 7x7 patches)", tmp / "nano"),
                          ("ViT-B/16 (timm, 224 px, 14x14 patches)", tmp / "vitb")):  # fmt: skip
            report["models"][name] = timed(run, image, tmp / "explain", args.repeats)
            print(name, report["models"][name])
    report["machine"]["load_average_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(args.out)


if __name__ == "__main__":
    main()
