"""CIFAR-10 and CIFAR-100 from the official "python version" pickles (Krizhevsky 2009).

Layout under the data root: `cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}` and
`cifar-100-python/{train, test, meta}`. Each batch is a pickled dict with `b"data"` (N, 3072)
uint8 in channel-major order and `b"labels"` (CIFAR-10) or `b"fine_labels"` (CIFAR-100).

Integrity is checked with torchvision's per-file MD5 lists (`CIFAR10.train_list` etc.) through
`torchvision.datasets.utils.check_integrity`; downloads go through torchvision's `CIFAR10/100`,
which fetches the archive, checks it and extracts it. The pickles are read with an unpickler that
only rebuilds numpy arrays, so a file that is not a CIFAR batch cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.utils import check_integrity

from vitlens.data.paths import data_root
from vitlens.errors import VitlensError

_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

# name -> (torchvision class, label key, archive name)
_CIFAR: dict[str, tuple[type[CIFAR10], str, str]] = {
    "cifar10": (CIFAR10, "labels", "cifar-10-python.tar.gz"),
    "cifar100": (CIFAR100, "fine_labels", "cifar-100-python.tar.gz"),
}

# What a CIFAR pickle may reference: numpy's array reconstruction and nothing else.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _load_pickle(path: Path) -> dict[Any, Any]:
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise VitlensError(f"{path} is not a readable CIFAR batch ({e}); download it again.") from e
    if not isinstance(obj, dict):
        raise VitlensError(f"{path} is not a CIFAR batch (expected a dict, got {type(obj)}).")
    # Python 2 pickles come back with bytes keys under latin1; accept str keys too.
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def cifar_folder(name: str, data_dir: str | Path | None = None) -> Path:
    """The extracted folder (`cifar-10-batches-py` or `cifar-100-python`) under the data root.

    A `data_dir` that already is that folder is accepted as well.
    """
    base = _CIFAR[name][0].base_folder
    root = data_root(data_dir)
    return root if root.name == base else root / base


def read_cifar_batches(
    root: str | Path, name: str, split: str, verify: bool = True
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Read one split of CIFAR-10/100 from the extracted pickle files.

    `root` holds `cifar-10-batches-py/` or `cifar-100-python/` (or is that folder); `name` is
    "cifar10" or "cifar100", `split` "train" or "test"; `verify` checks each file's MD5 against
    torchvision's list of the official files. Returns uint8 images `(N, 3, 32, 32)`, int64
    labels `(N,)` and the class names of the meta file.

    Raises:
        VitlensError: If a file is missing, fails its checksum, or is not a CIFAR batch.
    """
    tv_cls, label_key, archive = _CIFAR[name]
    folder = cifar_folder(name, root)
    files = tv_cls.train_list if split == "train" else tv_cls.test_list
    meta = tv_cls.meta
    wanted = [(f, md5) for f, md5 in files] + [(meta["filename"], meta["md5"])]

    missing = [f for f, _ in wanted if not (folder / f).is_file()]
    if missing:
        raise VitlensError(
            f"{name} ({split}) not found: {folder}/ lacks {', '.join(missing)}. Download {archive} "
            f"(from {_URL}) and extract it so that the files are in {folder}/, "
            "or run with --download (download=True)."
        )
    if verify:
        for f, md5 in wanted:
            if not check_integrity(str(folder / f), md5):
                raise VitlensError(
                    f"checksum (MD5) mismatch for {folder / f}: it is not the official {name} file "
                    f"(expected MD5 {md5}). Delete {folder}/ and download {archive} again "
                    "(or run with --download)."
                )

    chunks, labels = [], []
    for f, _ in files:
        batch = _load_pickle(folder / f)
        if "data" not in batch or label_key not in batch:
            raise VitlensError(f"{folder / f} lacks the keys 'data' and '{label_key}'.")
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(batch[label_key]):
            raise VitlensError(
                f"{folder / f}: data has shape {data.shape} for {len(batch[label_key])} labels; "
                "expected (N, 3072) and N labels."
            )
        chunks.append(data.reshape(-1, 3, 32, 32))  # (N, 3072) -> (N, C, H, W), channel-major
        labels.append(np.asarray(batch[label_key], dtype=np.int64))

    meta_dict = _load_pickle(folder / meta["filename"])
    if meta["key"] not in meta_dict:
        raise VitlensError(f"{folder / meta['filename']} lacks the key '{meta['key']}'.")
    classes = tuple(c.decode() if isinstance(c, bytes) else str(c) for c in meta_dict[meta["key"]])
    y = np.concatenate(labels)
    if y.size and (y.min() < 0 or y.max() >= len(classes)):
        raise VitlensError(f"{name} ({split}): labels outside 0..{len(classes) - 1} in {folder}/.")
    images = torch.from_numpy(np.ascontiguousarray(np.concatenate(chunks)))
    return images, torch.from_numpy(y), classes


def load_cifar_split(
    name: str, split: str, *, data_dir: str | Path | None = None, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Load (and if asked, download) a verified split of CIFAR-10/100.

    Args:
        name: "cifar10" or "cifar100".
        split: "train" or "test".
        data_dir: The data root (default: `$VITLENS_DATA` or `~/.cache/vitlens/data`).
        download: Let torchvision fetch and extract the official archive if files are missing
            or damaged.

    Returns:
        See `read_cifar_batches`.
    """
    root = data_root(data_dir)
    if download:
        folder = cifar_folder(name, root)
        parent = folder.parent
        try:
            # torchvision skips the download when every file already passes its MD5 check.
            _CIFAR[name][0](str(parent), train=split == "train", download=True)
        except Exception as e:  # network, archive and checksum errors come in many types
            raise VitlensError(
                f"could not download {name} into {parent}/ ({e}). Check the connection, or "
                f"download {_CIFAR[name][2]} from {_URL} and extract it there."
            ) from e
    return read_cifar_batches(root, name, split, verify=True)
