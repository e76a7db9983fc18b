"""Build `src/vitlens/data/mini/fashion_mnist_mini.npz`, the dataset shipped inside vitlens.

It takes the first k images of a seeded permutation of each class of the original Fashion-MNIST
IDX files (Xiao et al. 2017; by default from the Debian package `dataset-fashion-mnist`), keeps them
in their original order, and writes a zip of `.npy` arrays with fixed timestamps, so the same
inputs, seed and zlib give the same bytes (and SHA-256):

    train_images uint8 (10*k_train, 28, 28)   train_labels uint8 (10*k_train,)
    test_images  uint8 (10*k_test, 28, 28)    test_labels  uint8 (10*k_test,)
    train_source_indices / test_source_indices uint16: rows of the original files

Usage:
    python scripts/build_fashion_mnist_mini.py [--source /usr/share/datasets/fashion-mnist]
        [--out src/vitlens/data/mini/fashion_mnist_mini.npz] [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from vitlens.data.idx import read_idx

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "src" / "vitlens" / "data" / "mini" / "fashion_mnist_mini.npz"


def select(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """First `per_class` rows of a seeded permutation of each class, returned sorted."""
    picks = []
    for c in range(10):
        rows = np.flatnonzero(labels == c)
        if len(rows) < per_class:
            raise SystemExit(f"class {c} has only {len(rows)} images, {per_class} requested")
        picks.append(rows[rng.permutation(len(rows))[:per_class]])
    return np.sort(np.concatenate(picks))


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write a reproducible `.npz` (fixed zip timestamps), atomically."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compresslevel=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-per-class", type=int, default=1000)
    parser.add_argument("--test-per-class", type=int, default=200)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    arrays: dict[str, np.ndarray] = {}
    for split, prefix, k in (
        ("train", "train", args.train_per_class),
        ("test", "t10k", args.test_per_class),
    ):
        images = read_idx(args.source / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(args.source / f"{prefix}-labels-idx1-ubyte.gz")
        rows = select(labels, k, rng)
        arrays[f"{split}_images"] = images[rows]
        arrays[f"{split}_labels"] = labels[rows]
        arrays[f"{split}_source_indices"] = rows.astype(np.uint16)
        x = images[rows].astype(np.float64) / 255
        print(f"{split}: {len(rows)} images, mean {x.mean():.4f}, std {x.std():.4f}")
    write_npz(args.out, arrays)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)\nsha256 {digest}")


if __name__ == "__main__":
    main()
