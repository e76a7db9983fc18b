"""Any folder of labelled images, as `imagefolder:PATH`.

The layout is torchvision's `ImageFolder`: one sub-folder per class (class index = position in the
sorted folder names), images inside (png, jpg, jpeg, bmp, webp). The training split is `PATH/train/`
if it exists, else `PATH/` itself; the test split is `PATH/test/` or `PATH/val/`. Everything is
decoded once into a uint8 tensor, so the rest of vitlens treats it like CIFAR: fine for the small
datasets this package trains on, not for ImageNet.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vitlens.data.info import DatasetInfo
from vitlens.data.preprocess import Preprocessing, resize_image
from vitlens.errors import VitlensError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def split_folder(root: Path, split: str) -> Path:
    """The folder that holds `split`'s class sub-folders.

    Raises:
        VitlensError: If the folder does not exist or the layout is ambiguous.
    """
    if not root.is_dir():
        raise VitlensError(
            f"image folder {root} does not exist; pass imagefolder:PATH to a folder."
        )
    if split == "train":
        if (root / "train").is_dir():
            return root / "train"
        for other in ("test", "val"):
            if (root / other).is_dir():
                raise VitlensError(
                    f"{root} has a {other}/ folder but no train/ folder; put the training images "
                    f"in {root / 'train'}/<class>/ so that '{other}' is not taken for a class."
                )
        return root
    for name in ("test", "val"):
        if (root / name).is_dir():
            return root / name
    raise VitlensError(
        f"no test split in {root}: expected {root / 'test'}/ or {root / 'val'}/ "
        "with one sub-folder per class."
    )


def _class_dirs(folder: Path) -> list[Path]:
    dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise VitlensError(
            f"{folder} has no class sub-folders; expected {folder}/<class name>/<image files>."
        )
    return dirs


def resize_square(img: Image.Image, size: int) -> Image.Image:
    # Shorter side to `size`, then a centre crop: keeps the aspect ratio (ImageNet-style eval).
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def _labelled_images(dirs: list[Path], classes: tuple[str, ...]) -> list[tuple[Path, int]]:
    """(image file, class index) for every image in the class folders."""
    paths: list[tuple[Path, int]] = []
    empty = []
    for d in dirs:
        label = classes.index(d.name)
        found = [
            (p, label)
            for p in sorted(d.iterdir())
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        ]
        empty += [d.name] if not found else []
        paths += found
    if empty and len(empty) < len(dirs):  # all empty is an error, said by the caller
        warnings.warn(
            f"{dirs[0].parent}: class folder(s) {empty} hold no images; the model still gets "
            f"these classes (chance level counts them) but never sees one",
            stacklevel=3,
        )
    return paths


def decode_image(p: Path) -> Image.Image:
    """One image, fully decoded; a clear error for unreadable files and decompression bombs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # half a bomb
            with Image.open(p) as im:
                im.load()
                return im
    except (UnidentifiedImageError, OSError) as e:
        raise VitlensError(f"cannot read image {p} ({e}); remove or replace it.") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise VitlensError(
            f"image {p} declares more pixels than PIL decodes safely ({e}); it may be a "
            "decompression bomb: remove it or shrink it."
        ) from None


def read_image_folder(
    folder: Path,
    *,
    image_size: int | None = None,
    classes: tuple[str, ...] | None = None,
    preprocessing: Preprocessing | None = None,
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Decode every image under `folder/<class>/` into memory.

    Args:
        folder: Folder of class sub-folders.
        image_size: Resize (shorter side, then centre crop) to this square size; if None, all
            images must already share one square size.
        classes: Class names to use (the training split's), so that test labels line up; if None,
            the sorted sub-folder names.
        preprocessing: A pretrained model's resize, crop and interpolation (replaces the
            default bilinear shorter-side resize; its `size` is the image size).

    Returns:
        Images as uint8 `(N, C, H, W)` (C = 1 if every image is grayscale, else 3), labels as int64
        `(N,)`, and the class names.

    Raises:
        VitlensError: On unreadable images, mixed sizes without `image_size`, or unknown classes.
    """
    dirs = _class_dirs(folder)
    names = tuple(d.name for d in dirs)
    if classes is None:
        classes = names
    elif unknown := sorted(set(names) - set(classes)):
        raise VitlensError(
            f"{folder} has class folders {unknown} that the training split lacks; "
            f"the classes are {list(classes)}."
        )
    paths = _labelled_images(dirs, classes)
    if not paths:
        raise VitlensError(
            f"no images in {folder}/<class>/ (looked for {', '.join(IMAGE_EXTENSIONS)})."
        )

    images = [decode_image(p) for p, _ in paths]
    gray = all(im.mode in _GRAY_MODES for im in images)
    mode = "L" if gray else "RGB"

    arrays, first = _fitted(paths, images, mode, image_size, preprocessing)
    w, h = first[1] if first is not None else (image_size, image_size)
    if w != h:
        raise VitlensError(
            f"images in {folder} are {w}x{h}, not square; pass image_size (--image-size) to resize "
            "and centre-crop them to a square."
        )
    stack = np.stack(arrays)
    stack = stack[:, None] if gray else stack.transpose(0, 3, 1, 2)  # (N,H,W[,C]) -> (N,C,H,W)
    labels = torch.tensor([label for _, label in paths], dtype=torch.int64)
    return torch.from_numpy(np.ascontiguousarray(stack)), labels, classes


def _fitted(paths, images, mode: str, image_size: int | None, preprocessing):
    """The images as uint8 arrays of one size (resized as asked), and the first image's
    (path, size) when they were not resized."""
    arrays, first = [], None
    for (p, _), im in zip(paths, images, strict=True):
        im = im.convert(mode)
        if preprocessing is not None:
            im = resize_image(im, preprocessing)
        elif image_size is not None:
            if im.size != (image_size, image_size):
                im = resize_square(im, image_size)
        else:
            first = first or (p, im.size)
            if im.size != first[1]:
                raise VitlensError(
                    f"images differ in size: {first[0]} is {first[1][0]}x{first[1][1]}, {p} is "
                    f"{im.size[0]}x{im.size[1]}. Pass image_size (--image-size) to resize them all."
                )
        arrays.append(np.asarray(im, dtype=np.uint8))
    return arrays, first


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 `(N, C, H, W)` images, on [0, 1]."""
    x = images.to(torch.float64).div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    mean = x.mean(dim=1)
    std = x.std(dim=1, correction=0).clamp_min(1e-6)  # a blank dataset must not divide by 0
    return tuple(round(float(m), 6) for m in mean), tuple(round(float(s), 6) for s in std)


def load_image_folder(
    path: str | Path,
    split: str,
    *,
    image_size: int | None = None,
    preprocessing: Preprocessing | None = None,
) -> tuple[torch.Tensor, torch.Tensor, DatasetInfo]:
    """Load a split of `imagefolder:PATH`, with an info whose mean/std come from the train split.

    Args:
        path: The dataset folder.
        split: "train" or "test".
        image_size: Optional square size to resize to.

    Returns:
        Images, labels and the dataset's `DatasetInfo`.
    """
    root = Path(path).expanduser().resolve()
    train_x, train_y, classes = read_image_folder(
        split_folder(root, "train"), image_size=image_size, preprocessing=preprocessing
    )
    if len(classes) < 2:
        raise VitlensError(
            f"{split_folder(root, 'train')} has a single class ({classes[0]!r}); a classifier "
            "needs at least two class sub-folders."
        )
    mean, std = channel_stats(train_x)
    info = DatasetInfo(
        name=f"imagefolder:{root}",
        num_classes=len(classes),
        classes=classes,
        in_chans=train_x.shape[1],
        image_size=train_x.shape[-1],
        mean=mean,
        std=std,
        hflip=True,
    )
    if split == "train":
        return train_x, train_y, info
    x, y, _ = read_image_folder(
        split_folder(root, split),
        image_size=image_size,
        classes=classes,
        preprocessing=preprocessing,
    )
    if x.shape[1:] != train_x.shape[1:]:
        # e.g. the test split is RGB while the training split is grayscale: convert to match.
        if x.shape[-2:] != train_x.shape[-2:]:
            raise VitlensError(
                f"test images are {x.shape[-1]}x{x.shape[-2]} but training images are "
                f"{train_x.shape[-1]}x{train_x.shape[-2]}; pass image_size (--image-size)."
            )
        x = _match_channels(x, train_x.shape[1])
    return x, y, info


def _match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    if channels == 3:  # (N, 1, H, W) -> (N, 3, H, W)
        return x.expand(-1, 3, -1, -1).contiguous()
    # ITU-R 601-2 luma, as PIL's convert("L") computes it.
    w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(1, 3, 1, 1)
    return (x.to(torch.float64) * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
