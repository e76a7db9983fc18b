"""Load the released CIFAR-10-C / CIFAR-100-C arrays (Hendrycks & Dietterich, ICLR 2019).

The release (Zenodo 2535967 for CIFAR-10-C, 3555552 for CIFAR-100-C) is one folder of `.npy`
files: `<corruption>.npy`, uint8 `(50000, 32, 32, 3)` holding severities 1..5 in blocks of 10,000
test images (in test-set order), and `labels.npy`, the test labels repeated five times
(`cifar_c_params.md` §1.1). Unlike the authors' loader, only the files a call needs must exist.
Arrays are memory-mapped, so reading one severity does not read the whole file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from vitlens.errors import VitlensError

#: Every file of the release: the 15 benchmark corruptions and the 4 extra ("validation") ones.
RELEASED = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
    "speckle_noise",
    "gaussian_blur",
    "spatter",
    "saturate",
)

_HINT = (
    "Download CIFAR-10-C (https://zenodo.org/record/2535967) or CIFAR-100-C "
    "(https://zenodo.org/record/3555552), unpack it, and pass the folder holding the .npy files."
)


def check_cifar_c(root: str | Path, corruptions: Sequence[str]) -> Path:
    """Check that `root` holds `labels.npy` and `<c>.npy` for every corruption asked for.

    Returns:
        `root` as a Path.

    Raises:
        VitlensError: naming the unknown corruptions or every missing file.
    """
    root = Path(root)
    unknown = [c for c in corruptions if c not in RELEASED]
    if unknown:
        raise VitlensError(f"unknown CIFAR-C corruption(s) {unknown}; released: {list(RELEASED)}")
    if not root.is_dir():
        raise VitlensError(f"CIFAR-C folder {root} does not exist. {_HINT}")
    missing = [f"{n}.npy" for n in ("labels", *corruptions) if not (root / f"{n}.npy").is_file()]
    if missing:
        nested = [d.name for d in root.iterdir() if d.is_dir() and d.name.upper().endswith("-C")]
        also = f" (did you mean {root / nested[0]}?)" if nested else ""
        raise VitlensError(f"{root} lacks {', '.join(missing)}{also}. {_HINT}")
    return root


def _open(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise VitlensError(f"{path} is not a readable .npy array: {err}") from None


def load_cifar_c(
    root: str | Path, corruption: str, severity: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of one corruption (and optionally one severity) of CIFAR-10/100-C.

    Args:
        root: Folder with `<corruption>.npy` and `labels.npy`.
        corruption: File name without `.npy`, e.g. "fog".
        severity: 1..5 for one block of test images; None for all five (severity-major).

    Returns:
        uint8 images `(N, 3, 32, 32)` and int64 labels `(N,)`.

    Raises:
        VitlensError: missing files, a bad severity, or arrays of the wrong shape or type.
    """
    root = check_cifar_c(root, [corruption])
    images = _open(root / f"{corruption}.npy")
    labels = _open(root / "labels.npy")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise VitlensError(
            f"{root / corruption}.npy should be uint8 (N, H, W, C), got {images.dtype} "
            f"{images.shape}"
        )
    if labels.ndim != 1 or len(labels) != len(images) or len(images) % 5:
        raise VitlensError(
            f"{root} holds {len(images)} {corruption} images and {len(labels)} labels; expected "
            "the same number, a multiple of 5 (five severities)"
        )
    if severity is not None:
        if severity not in (1, 2, 3, 4, 5):
            raise VitlensError(f"severity must be 1..5, got {severity!r}")
        n = len(images) // 5
        images = images[n * (severity - 1) : n * severity]
        labels = labels[n * (severity - 1) : n * severity]
    x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.from_numpy(np.array(labels, dtype=np.int64))


def cifar_c_batches(
    root: str | Path,
    corruption: str,
    severity: int,
    *,
    batch_size: int = 256,
    limit: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches `(images in [0, 1] float32, labels)` of one corruption and severity.

    Args:
        root: Folder with the release's `.npy` files.
        corruption: File name without `.npy`.
        severity: 1..5.
        batch_size: Images per batch.
        limit: Use only the first `limit` test images (None: all).
    """
    images, labels = load_cifar_c(root, corruption, severity)
    n = len(images) if limit is None else min(limit, len(images))
    for i in range(0, n, batch_size):
        j = min(i + batch_size, n)
        yield images[i:j].float() / 255, labels[i:j]
