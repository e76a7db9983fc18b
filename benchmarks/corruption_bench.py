"""Time to generate the 75 corrupted versions (15 corruptions x 5 severities) of 32x32 images.

vitlens (`vitlens.robustness.corrupt`, batched torch, uint8 in and out) against the imagecorruptions
package (bethgelab, 1.1.2 from PyPI; numpy/OpenCV/scikit-image, one image per call), which is what
most people use. The peer:

- imports `pkg_resources`, gone from current setuptools: a two-line shim is installed into
  `sys.modules` for this process only;
- cannot run every corruption on current numpy / scikit-image: failures are recorded with their
  error and left out of the ratio;
- applies the ImageNet-C severities to every image size. vitlens is therefore timed twice: with
  the CIFAR-10-C parameters it uses for 32x32 images (the intended use) and with the ImageNet-C
  parameters (the same work as the peer).

vitlens is timed with each torch thread count in `--threads` (default 1 and 2) on 1,000-image
chunks (3M elements; `corrupt` forces one thread only below 1M). On an idle 2-core machine two
threads are about 1.35x faster; when other jobs share the cores they can be several times slower.

The peer runs on `--peer-images` images (default 1,000) and its time is extrapolated linearly to
`--images` (default 10,000); vitlens runs on all of them. Corruptions are timed interleaved (ours,
ours-ImageNet, peer, next corruption) so that load on a shared machine hits both alike, and the
whole pass is repeated `--repeats` times. Images are Fashion-MNIST garments (shipped) combined
into colour 32x32 images over colour gradients. Writes JSON to benchmarks/results/.

    python benchmarks/corruption_bench.py [--images 10000] [--peer-images 1000] [--repeats 2]
    (pip install imagecorruptions into the environment first; it is not a vitlens dependency)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
import types
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vitlens.robustness import CORRUPTIONS, corrupt


def make_images(n: int) -> torch.Tensor:
    """n uint8 (3, 32, 32) images: three garments as channels over a colour gradient."""
    from vitlens.data import load_dataset

    g = load_dataset("fashion-mnist-mini", "test").images.float() / 255  # (2000, 1, 28, 28)
    g = F.pad(g, (2, 2, 2, 2))
    rng = np.random.default_rng(0)
    idx = torch.from_numpy(rng.integers(0, len(g), size=(n, 3)))
    garments = g[idx.flatten()].view(n, 3, 32, 32)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    ramp = torch.stack([yy, xx, 1 - (yy + xx) / 2])[None]
    return ((0.6 * garments + 0.4 * ramp).clamp(0, 1) * 255).round().to(torch.uint8)


def load_peer():
    """imagecorruptions' `corrupt`, with a `pkg_resources` shim; None if not installed."""
    if "pkg_resources" not in sys.modules:
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            shim = types.ModuleType("pkg_resources")

            def resource_filename(package: str, name: str) -> str:
                origin = importlib.util.find_spec(package).origin
                return os.path.join(os.path.dirname(origin), name)

            shim.resource_filename = resource_filename
            sys.modules["pkg_resources"] = shim
    try:
        from imagecorruptions import corrupt as peer_corrupt
    except ImportError as err:
        print(f"imagecorruptions not importable ({err}); timing vitlens only")
        return None
    return peer_corrupt


def time_ours(images: torch.Tensor, name: str, params: str, chunk: int) -> float:
    start = time.perf_counter()
    for s in range(1, 6):
        for i in range(0, len(images), chunk):
            corrupt(images[i : i + chunk], name, s, seed=s * 1000 + i, params=params)
    return time.perf_counter() - start


def time_peer(peer, images: np.ndarray, name: str) -> tuple[float | None, str | None]:
    np.random.seed(0)
    try:
        peer(images[0], corruption_name=name, severity=1)  # fails fast on a broken corruption
    except Exception as err:  # noqa: BLE001 - any failure of the peer is the result
        return None, f"{type(err).__name__}: {err}"
    start = time.perf_counter()
    for s in range(1, 6):
        for img in images:
            peer(img, corruption_name=name, severity=s)
    return time.perf_counter() - start, None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--peer-images", type=int, default=1_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=1000, help="vitlens batch size")
    ap.add_argument("--threads", default="1,2", help="torch thread counts to time vitlens with")
    ap.add_argument("--out", default="benchmarks/results/corruption_bench.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    images = make_images(args.images)
    peer = load_peer()
    peer_imgs = images[: args.peer_images].permute(0, 2, 3, 1).numpy().copy()  # (M, 32, 32, 3)
    scale = args.images / args.peer_images
    threads = [int(t) for t in args.threads.split(",")]
    variants = [(t, p) for t in threads for p in ("cifar", "imagenet")]
    runs = []
    for r in range(args.repeats):
        rows = {}
        for name in CORRUPTIONS:
            row: dict = {}
            for t, p in variants:
                torch.set_num_threads(t)
                row[f"vitlens_{p}_{t}thr_s"] = time_ours(images, name, p, args.chunk)
            if peer is not None:
                measured, error = time_peer(peer, peer_imgs, name)
                row["peer_measured_s"] = measured
                row["peer_extrapolated_s"] = None if measured is None else measured * scale
                row["peer_error"] = error
            rows[name] = row
            shown = " ".join(f"{k}={v:.2f}" for k, v in row.items() if isinstance(v, float))
            print(f"run {r + 1} {name:18s} {shown}", flush=True)
        runnable = [n for n, v in rows.items() if v.get("peer_measured_s") is not None]
        peer_total = sum(rows[n]["peer_extrapolated_s"] for n in runnable)
        summary: dict = {"peer_runnable": runnable, "peer_extrapolated_runnable_s": peer_total}
        for t, p in variants:
            key = f"vitlens_{p}_{t}thr"
            summary[f"{key}_all15_s"] = sum(v[f"{key}_s"] for v in rows.values())
            ours = sum(rows[n][f"{key}_s"] for n in runnable)
            summary[f"{key}_runnable_s"] = ours
            if runnable:
                summary[f"ratio_peer_over_{key}"] = peer_total / ours
        print(json.dumps(summary, indent=1), flush=True)
        runs.append({"per_corruption": rows, "summary": summary})

    versions = {"torch": torch.__version__, "numpy": np.__version__}
    for mod in ("imagecorruptions", "cv2", "skimage", "scipy", "PIL"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            versions[mod] = None
    out = {
        "benchmark": "corruption generation, 15 corruptions x 5 severities, 32x32 RGB uint8",
        "images": args.images,
        "peer_images": args.peer_images,
        "peer_extrapolation": f"linear, x{scale:g} (peer timed on {args.peer_images} images)",
        "peer_notes": [
            "imagecorruptions 1.1.2 needs pkg_resources (absent in setuptools >= 81): shimmed",
            "imagecorruptions applies ImageNet-C severities to 32x32 images (its only table)",
            "peer is one image per call (numpy/OpenCV/scikit-image); vitlens is batched torch",
        ],
        "vitlens_chunk": args.chunk,
        "torch_threads_timed": threads,
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
        "processor": platform.processor(),
        "versions": versions,
        "runs": runs,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
