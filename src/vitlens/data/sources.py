"""Datasets by name: `list_datasets`, `dataset_info` and `load_dataset`.

Names: "fashion-mnist-mini" (shipped, the default), "fashion-mnist", "mnist", "cifar10",
"cifar100", and "imagefolder:PATH". Every loader returns uint8 images in memory, wrapped in an
`ArrayDataset` with the dataset's `DatasetInfo`; the formats are read in `mini`, `idx`, `cifar`
and `imagefolder`.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as TF

from vitlens.data.cifar import load_cifar_split
from vitlens.data.dataset import ArrayDataset
from vitlens.data.idx import load_idx_split
from vitlens.data.imagefolder import load_image_folder
from vitlens.data.imagenet import MEAN as IMAGENET_MEAN
from vitlens.data.imagenet import STD as IMAGENET_STD
from vitlens.data.imagenet import imagenet_classes, load_imagenet, parse_name
from vitlens.data.info import BUILTIN_INFOS, DatasetInfo
from vitlens.data.mini import load_mini_split
from vitlens.data.preprocess import Preprocessing, resize_tensor
from vitlens.errors import UnknownNameError, VitlensError

DEFAULT_DATASET = "fashion-mnist-mini"
IMAGEFOLDER_PREFIX = "imagefolder:"
SPLITS = ("train", "test")


def list_datasets() -> list[str]:
    """Names of the built-in datasets (`imagefolder:PATH` is accepted as well)."""
    return list(BUILTIN_INFOS)


def has_training_split(name: str) -> bool:
    """Whether vitlens reads a training split of the dataset `name` (not ImageNet's: only its
    validation images are read)."""
    return name.strip().lower().split(":")[0] != "imagenet"


def _canonical(name: str) -> str:
    """Resolve a dataset name ("FashionMNIST", "cifar-10" and such are accepted)."""
    if name.strip().lower().split(":")[0] == "imagenet":
        parse_name(name)
        return name.strip().lower()
    if name.startswith(IMAGEFOLDER_PREFIX):
        if not name[len(IMAGEFOLDER_PREFIX) :]:
            raise VitlensError("imagefolder: needs a path, e.g. imagefolder:/data/flowers.")
        return name
    key = name.strip().lower().replace("_", "-")
    aliases = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100"}
    key = aliases.get(key, key)
    if key in BUILTIN_INFOS:
        return key
    close = difflib.get_close_matches(key, list(BUILTIN_INFOS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownNameError(
        f"unknown dataset {name!r}.{hint} Known datasets: {', '.join(BUILTIN_INFOS)}, "
        "imagenet[:N] (its validation set under --data-dir), or imagefolder:PATH for a folder "
        "of class sub-folders."
    )


def dataset_info(
    name: str, data_dir: str | Path | None = None, image_size: int | None = None
) -> DatasetInfo:
    """Describe a dataset without loading it (an image folder's training split is read for its
    mean and std).

    Args:
        name: A name from `list_datasets()` or `imagefolder:PATH`.
        data_dir: Only used to resolve a relative `imagefolder:` path that does not exist as given.
        image_size: The side an image folder's images of mixed sizes are read at.

    Returns:
        The dataset's `DatasetInfo`.

    Raises:
        UnknownNameError: For an unknown name.
    """
    name = _canonical(name)
    if name.startswith(IMAGEFOLDER_PREFIX):
        _, _, info = load_image_folder(_folder_path(name, data_dir), "train", image_size=image_size)
        return info
    if name.startswith("imagenet"):
        return imagenet_info(name, image_size or 224)
    return BUILTIN_INFOS[name]


def imagenet_info(name: str, image_size: int) -> DatasetInfo:
    wnids, names = imagenet_classes()
    return DatasetInfo(
        name=name,
        num_classes=len(wnids),
        classes=names,
        in_chans=3,
        image_size=image_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        hflip=True,
    )


def _folder_path(name: str, data_dir: str | Path | None) -> Path:
    path = Path(name[len(IMAGEFOLDER_PREFIX) :]).expanduser()
    if not path.is_absolute() and not path.exists() and data_dir is not None:
        path = Path(data_dir).expanduser() / path
    return path


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    # (N, C, H, W) uint8 -> (N, C, size, size); antialiased bilinear, like PIL.
    return TF.resize(images, [size, size], antialias=True)


def load_dataset(
    name: str = DEFAULT_DATASET,
    split: str = "train",
    *,
    data_dir: str | Path | None = None,
    download: bool = False,
    image_size: int | None = None,
    preprocessing: Preprocessing | None = None,
) -> ArrayDataset:
    """Load a split of a dataset into memory.

    Args:
        name: A name from `list_datasets()` or `imagefolder:PATH`.
        split: "train" or "test".
        data_dir: Where to look for (and download) data; default `$VITLENS_DATA` or
            `~/.cache/vitlens/data`.
        download: Download missing files (MNIST, Fashion-MNIST, CIFAR).
        image_size: Resize to this square size (the built-in datasets are resized with
            antialiased bilinear interpolation; image folders are resized and centre-cropped).
        preprocessing: A pretrained model's own resize, crop, interpolation and mean/std
            (`vitlens.data.preprocess`), which replace the defaults above and the dataset's
            normalisation; its `size` is the image size.

    Returns:
        An `ArrayDataset` without transform (normalization only) and without seed.

    Raises:
        VitlensError: If the name or split is unknown, or the files are missing or damaged.
    """
    name = _canonical(name)
    if split not in SPLITS:
        raise VitlensError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}.")
    if image_size is not None and image_size < 1:
        raise VitlensError(f"image_size must be a positive number of pixels, got {image_size}.")

    if preprocessing is not None:
        image_size = preprocessing.size
    if name.startswith("imagenet"):
        size = image_size or 224
        images, labels = load_imagenet(
            name, split, data_dir=data_dir, image_size=size, preprocessing=preprocessing
        )
        info = imagenet_info(name, images.shape[-1])
        return ArrayDataset(images, labels, _normalised(info, preprocessing))
    if name.startswith(IMAGEFOLDER_PREFIX):
        images, labels, info = load_image_folder(
            _folder_path(name, data_dir), split, image_size=image_size, preprocessing=preprocessing
        )
        return ArrayDataset(images, labels, _normalised(info, preprocessing))

    images, labels = _builtin_split(name, split, data_dir, download)
    info = BUILTIN_INFOS[name]
    if preprocessing is not None:
        images = resize_tensor(images, preprocessing)
        info = info.with_image_size(preprocessing.size)
    elif image_size is not None and image_size != info.image_size:
        images = _resize(images, image_size)
        info = info.with_image_size(image_size)
    return ArrayDataset(images, labels, _normalised(info, preprocessing))


def _builtin_split(name: str, split: str, data_dir, download: bool):
    """Images and labels of a built-in dataset's split, as stored (uint8, N x C x H x W)."""
    if name == "fashion-mnist-mini":
        return load_mini_split(split)
    if name in ("fashion-mnist", "mnist"):
        return load_idx_split(name, split, data_dir=data_dir, download=download)
    images, labels, classes = load_cifar_split(name, split, data_dir=data_dir, download=download)
    expected = BUILTIN_INFOS[name].classes
    if classes != expected:
        raise VitlensError(
            f"the {name} meta file lists classes {list(classes)[:5]}..., expected "
            f"{list(expected)[:5]}...; is this really {name}?"
        )
    return images, labels


def _normalised(info, preprocessing: Preprocessing | None):
    """`info` with the model's mean/std where its preprocessing has one value per channel."""
    if preprocessing is None:
        return info
    p = preprocessing.for_channels(info.in_chans)
    if p.mean is None:
        return info
    return dataclasses.replace(info, mean=p.mean, std=p.std)
