"""fashion-mnist-mini: the dataset shipped inside vitlens, so everything runs with no download.

A class-balanced subset of Fashion-MNIST (Xiao, Rasul & Vollgraf 2017; Zalando Research, MIT
License): 1,000 training and 200 test images per class, 12,000 in all, chosen reproducibly by
`scripts/build_fashion_mnist_mini.py` (see `mini/README.md`). The file's SHA-256 is pinned here and
checked on every load, so a damaged or swapped file is an error, never silently different numbers.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import torch

from vitlens.atomic import file_digest
from vitlens.errors import VitlensError

MINI_FILENAME = "fashion_mnist_mini.npz"
MINI_SHA256 = "7705c97e0f87ab8fff37aa71888caa8c1609db89413708968bdf7987d3d81340"
TRAIN_PER_CLASS = 1000
TEST_PER_CLASS = 200


def mini_path() -> Path:
    """Path of the shipped `.npz` file inside the installed package."""
    return Path(str(resources.files("vitlens.data").joinpath("mini", MINI_FILENAME)))


def load_mini_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split of the shipped dataset after checking its SHA-256.

    Args:
        split: "train" or "test".

    Returns:
        Images as uint8 `(N, 1, 28, 28)` and labels as int64 `(N,)`.

    Raises:
        VitlensError: If the file is missing or its checksum does not match.
    """
    path = mini_path()
    if not path.is_file():
        raise VitlensError(
            f"the shipped dataset {path} is missing; reinstall vitlens (pip install "
            "--force-reinstall vitlens), or rebuild it with scripts/build_fashion_mnist_mini.py."
        )
    digest = file_digest(path, "sha256")
    if digest != MINI_SHA256:
        raise VitlensError(
            f"checksum (SHA-256) mismatch for the shipped dataset {path}: got {digest}, expected "
            f"{MINI_SHA256}. The file is damaged or was replaced; reinstall vitlens or rebuild it "
            "with scripts/build_fashion_mnist_mini.py."
        )
    with np.load(path, allow_pickle=False) as z:
        images, labels = z[f"{split}_images"], z[f"{split}_labels"]
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
