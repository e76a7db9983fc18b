"""ImageNet-1k validation images, as the paper's pretrained-model analyses read them.

`--dataset imagenet` (every validation image) or `imagenet:N` (a class-balanced subset of N:
image k of every class before image k + 1 of any) with `--data-dir DIR`, where DIR (or DIR/val,
DIR/imagenet/val) is either

- one folder per WordNet id (`n01440764/…`), the layout timm and torchvision read; or
- a flat folder of images with a ground-truth file beside them: `LOC_val_solution.csv`
  (Kaggle's: `ImageId,PredictionString` whose first word is the wnid) or a text file
  `val_wnids.txt` with one `FILENAME WNID` (or just `WNID`, in sorted file order) per line,
  or the devkit's `ILSVRC2012_validation_ground_truth.txt` (one ILSVRC2012_ID per image in
  sorted file order), whose IDs are mapped to wnids by the devkit's `data/meta.mat` (found
  beside the images, in DIR or DIR/ILSVRC2012_devkit_t12; read with scipy).

Class indices follow the sorted wnids, as timm's and torchvision's pretrained heads do; the
1000 wnids and their names ship with vitlens (`imagenet_classes.tsv`). Images are decoded with
Pillow in worker processes and resized as the model's recorded preprocessing says (else the
shorter side to the size and a centre crop). The training split is not read: analyses that
need training batches refuse with a clear error.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from vitlens.data.imagefolder import IMAGE_EXTENSIONS, decode_image, resize_square
from vitlens.data.paths import data_root
from vitlens.data.preprocess import Preprocessing, resize_image
from vitlens.errors import VitlensError

CLASSES_FILE = Path(__file__).with_name("imagenet_classes.tsv")
DEVKIT_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
GROUND_TRUTH = ("LOC_val_solution.csv", "val_wnids.txt", DEVKIT_TRUTH)
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(wnids in sorted order, their names)."""
    rows = [line.split("\t", 1) for line in CLASSES_FILE.read_text().splitlines()]
    return tuple(r[0] for r in rows), tuple(r[1].split(",")[0] for r in rows)


def parse_name(name: str) -> int | None:
    """The subset size of `imagenet:N` (None for every image)."""
    _, sep, count = name.partition(":")
    if not sep:
        return None
    if not count.isdigit() or int(count) < 1:
        raise VitlensError(f"{name}: write imagenet:N with N a positive number of images")
    return int(count)


def validation_folder(data_dir: str | Path | None) -> Path:
    """Where the validation images are under `data_dir`."""
    root = Path(data_dir).expanduser() if data_dir is not None else data_root()
    for folder in (root / "imagenet" / "val", root / "val", root):
        if folder.is_dir() and (_wnid_dirs(folder) or _ground_truth(folder)):
            return folder
    raise VitlensError(
        f"no ImageNet validation images under {root}: expected wnid folders (n01440764/...) or "
        f"a flat folder with {' or '.join(GROUND_TRUTH)}, in DIR, DIR/val or DIR/imagenet/val "
        "(ImageNet is not downloadable: pass --data-dir DIR)"
    )


def _wnid_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("n"))


def _ground_truth(folder: Path) -> Path | None:
    return next((folder / n for n in GROUND_TRUTH if (folder / n).is_file()), None)


def labelled_files(folder: Path) -> list[tuple[Path, int]]:
    """(image, class index) for every validation image, in sorted file order per class."""
    wnids, _ = imagenet_classes()
    index = {w: i for i, w in enumerate(wnids)}
    dirs = _wnid_dirs(folder)
    if dirs:
        unknown = [d.name for d in dirs if d.name not in index]
        if unknown:
            raise VitlensError(
                f"{folder} has folders that are not ImageNet-1k wnids: {unknown[:5]}"
            )
        return [
            (p, index[d.name])
            for d in dirs
            for p in sorted(d.iterdir())
            if p.suffix.lower() in IMAGE_EXTENSIONS
        ]
    return _flat_files(folder, _ground_truth(folder), index)


def _check_every_class(files: list[tuple[Path, int]]) -> None:
    """`imagenet` means the whole validation set: refuse a folder that lacks classes (an
    incomplete copy would silently change what accuracy means)."""
    present = {label for _, label in files}
    if files and len(present) < 1000:
        wnids, _ = imagenet_classes()
        missing = [w for i, w in enumerate(wnids) if i not in present]
        raise VitlensError(
            f"the validation folder has images of {len(present)} of the 1000 classes (missing "
            f"{len(missing)}, e.g. {', '.join(missing[:3])}): complete it, or pass imagenet:N "
            "to use a class-balanced subset of N of the images it has"
        )


def _flat_files(folder: Path, truth: Path, index: dict[str, int]) -> list[tuple[Path, int]]:
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    labels = _read_truth(truth, [p.stem for p in images])
    out = []
    for p in images:
        wnid = labels.get(p.stem)
        if wnid is None:
            raise VitlensError(f"{truth.name} has no label for {p.name}")
        if wnid not in index:
            raise VitlensError(f"{truth.name} labels {p.name} {wnid!r}, not an ImageNet-1k wnid")
        out.append((p, index[wnid]))
    return out


def _devkit_wnids(truth: Path) -> dict[int, str]:
    """ILSVRC2012_ID -> wnid of the 1000 leaf synsets, from the devkit's `data/meta.mat`."""
    places = [truth.parent / "meta.mat", truth.parent / "data" / "meta.mat"]
    places += [p / "ILSVRC2012_devkit_t12" / "data" / "meta.mat" for p in truth.parents[:2]]
    meta = next((p for p in places if p.is_file()), None)
    if meta is None:
        where = ", ".join(str(p) for p in places)
        raise VitlensError(
            f"{truth.name} holds devkit IDs; their wnids are in the devkit's "
            f"data/meta.mat, not found at {where}"
        )
    try:
        from scipy.io import loadmat
    except ImportError:
        raise VitlensError(f"reading {meta} needs scipy: pip install scipy") from None
    try:
        synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
        rows = [(int(s[0]), str(s[1])) for s in synsets if int(s[4]) == 0]  # leaves: 1000
    except Exception as err:  # a damaged or foreign .mat file
        raise VitlensError(f"{meta} is not the ImageNet devkit's meta.mat: {err}") from None
    return dict(rows)


def _read_devkit_truth(truth: Path, stems: list[str]) -> dict[str, str]:
    ids = truth.read_text().split()
    if len(ids) != len(stems) or not all(i.isdigit() for i in ids):
        raise VitlensError(
            f"{truth} has {len(ids)} entries for {len(stems)} images; it holds one integer "
            "ILSVRC2012_ID per image in sorted file order"
        )
    wnids = _devkit_wnids(truth)
    unknown = sorted({i for i in ids if int(i) not in wnids})
    if unknown:
        raise VitlensError(f"{truth} has IDs the devkit does not list: {unknown[:5]}")
    return {stem: wnids[int(i)] for stem, i in zip(stems, ids, strict=True)}


def _read_truth(truth: Path, stems: list[str]) -> dict[str, str]:
    """Image stem -> wnid from any of the ground-truth formats."""
    if truth.name == DEVKIT_TRUTH:
        return _read_devkit_truth(truth, stems)
    if truth.name.endswith(".csv"):
        with truth.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if rows and not {"ImageId", "PredictionString"} <= set(rows[0]):
            raise VitlensError(f"{truth} lacks the columns ImageId,PredictionString")
        return {r["ImageId"]: (r["PredictionString"].split() or [""])[0] for r in rows}
    lines = [line.split() for line in truth.read_text().splitlines() if line.strip()]
    if all(len(parts) == 2 for parts in lines):
        return {Path(name).stem: wnid for name, wnid in lines}
    if len(lines) != len(stems):
        raise VitlensError(
            f"{truth} has {len(lines)} labels for {len(stems)} images; one WNID per image in "
            "sorted file order, or FILENAME WNID per line"
        )
    return {stem: parts[0] for stem, parts in zip(stems, lines, strict=True)}


def balanced(files: list[tuple[Path, int]], count: int | None) -> list[tuple[Path, int]]:
    """The first `count` images taking image k of every class before image k + 1 of any."""
    if count is None or count >= len(files):
        return files
    rank: dict[int, int] = {}
    keyed = []
    for position, (path, label) in enumerate(files):
        keyed.append((rank.get(label, 0), label, position, path))
        rank[label] = rank.get(label, 0) + 1
    chosen = sorted(keyed)[:count]
    return [(path, label) for _, label, _, path in sorted(chosen, key=lambda k: k[2])]


def _decode(job: tuple[Path, int, Preprocessing | None]) -> np.ndarray:
    path, size, preprocessing = job
    image = decode_image(path).convert("RGB")
    image = resize_image(image, preprocessing) if preprocessing else resize_square(image, size)
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()


def decode_all(paths: list[Path], size: int, preprocessing: Preprocessing | None) -> torch.Tensor:
    """(N, 3, size, size) uint8, decoded side by side in worker processes for large sets."""
    jobs = [(p, size, preprocessing) for p in paths]
    workers = min(len(jobs) // 64, os.cpu_count() or 1, 8)
    if workers < 2:
        arrays = [_decode(j) for j in jobs]
    else:
        context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            arrays = list(pool.map(_decode, jobs, chunksize=16))
    return torch.from_numpy(np.stack(arrays)) if arrays else torch.zeros(0, 3, size, size)


def load_imagenet(
    name: str,
    split: str,
    *,
    data_dir: str | Path | None,
    image_size: int,
    preprocessing: Preprocessing | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of the validation set (`split` "test"), or of `imagenet:N`'s subset."""
    if split != "test":
        raise VitlensError(
            "vitlens reads ImageNet's validation set only (split 'test'); analyses that need "
            "the training split (landscape, trajectory) do not apply to it, and the Hessian runs "
            "on validation minibatches"
        )
    count = parse_name(name)
    found = labelled_files(validation_folder(data_dir))
    if count is None:
        _check_every_class(found)
    files = balanced(found, count)
    if not files:
        raise VitlensError(f"no images found in the ImageNet folder under {data_dir}")
    size = preprocessing.size if preprocessing else image_size
    images = decode_all([p for p, _ in files], size, preprocessing)
    return images, torch.tensor([label for _, label in files], dtype=torch.long)
