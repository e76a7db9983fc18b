"""Single images a user names (`vitlens explain --image`): read, checked, converted, resized.

Each file is read with the same checks as an image folder (`decode_image`: unreadable, truncated
and decompression-bomb files are clear errors), converted to the model's channels where that is
safe (RGB or RGBA to grayscale by luma, grayscale to RGB by repetition, palette images through RGB;
each conversion is said), and resized as evaluation does (shorter side to the model's size, then a
centre crop). Anything else is refused with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vitlens.data.imagefolder import decode_image, resize_square
from vitlens.data.preprocess import Preprocessing, resize_image
from vitlens.errors import VitlensError

# Modes converted without loss of meaning, per number of channels the model takes.
SAFE = {
    1: {"L": None, "RGB": "L", "RGBA": "L", "LA": "L", "P": "L"},
    3: {"RGB": None, "L": "RGB", "RGBA": "RGB", "LA": "RGB", "P": "RGB"},
}


@dataclass
class UserImages:
    """Images ready for a model: uint8 (N, C, size, size), their names, and what was converted."""

    pixels: torch.Tensor
    names: list[str]
    notes: list[str] = field(default_factory=list)


def _checked_file(path: Path) -> Path:
    if not path.exists():
        raise VitlensError(f"no image at {path}")
    if not path.is_file():
        raise VitlensError(f"{path} is not a file; give an image file")
    if path.stat().st_size == 0:
        raise VitlensError(f"image {path} is empty (0 bytes)")
    return path


def _converted(img: Image.Image, path: Path, channels: int, notes: list[str]) -> Image.Image:
    target = SAFE.get(channels, {})
    if img.mode not in target:
        raise VitlensError(
            f"image {path} is {img.mode} ({len(img.getbands())} bands); the model takes "
            f"{channels} channel(s) and vitlens converts only "
            f"{', '.join(sorted(target)) or 'nothing'} to that: convert the image first"
        )
    mode = target[img.mode]
    if mode is None:
        return img
    if img.mode == "P":  # a palette image: through RGB, so the palette's colours are used
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    how = {"L": "to grayscale (luma)", "RGB": "to RGB"}[mode]
    notes.append(f"{path.name}: {img.mode} converted {how} for a {channels}-channel model")
    return img.convert(mode)


def read_images(
    paths: list[str | Path], *, channels: int, size: int, preprocessing: Preprocessing | None = None
) -> UserImages:
    """Read, check, convert and resize the images at `paths` for a model of `channels` x `size`².

    Raises:
        VitlensError: a missing, empty, unreadable, truncated or oversized file, or channels
            that cannot be converted safely.
    """
    if not paths:
        raise VitlensError("no images given")
    pixels, names, notes = [], [], []
    for raw in paths:
        path = _checked_file(Path(raw))
        img = _converted(decode_image(path), path, channels, notes)
        img = resize_image(img, preprocessing) if preprocessing else resize_square(img, size)
        array = np.asarray(img, dtype=np.uint8)
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)  # (C, H, W)
        pixels.append(torch.from_numpy(array.copy()))
        names.append(path.name)
    return UserImages(torch.stack(pixels), names, notes)
