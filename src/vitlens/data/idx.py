"""MNIST and Fashion-MNIST from their IDX files (LeCun et al. 1998; Xiao et al. 2017).

An IDX file is a big-endian header -- two zero bytes, a type code (0x08 = unsigned byte), the
number of dimensions, then one int32 per dimension -- followed by the raw array. Images are
`(N, 28, 28)` (magic 0x00000803) and labels `(N,)` (magic 0x00000801); files may be gzipped.

Files are looked for, in order, in `data_dir/<name>/`, `data_dir/`, torchvision's layout
(`data_dir/FashionMNIST/raw/`), the Debian package folder (`dataset-fashion-mnist` installs
`/usr/share/datasets/fashion-mnist/`) and the cache (`$VITLENS_DATA` or `~/.cache/vitlens/data`).
Downloads (only with `download=True`) come from the official mirrors, are MD5-checked, and go to
`data_dir/<name>/` or, without `data_dir`, the cache.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from vitlens.data.paths import data_root, download_file
from vitlens.errors import VitlensError

_UBYTE = 0x08

# name -> (official base URL, torchvision folder name, Debian folder, {file: md5 of the .gz})
IDX_SOURCES: dict[str, tuple[str, str, Path, dict[str, str]]] = {
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "FashionMNIST",
        Path("/usr/share/datasets/fashion-mnist"),
        {
            "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "MNIST",
        Path("/usr/share/datasets/mnist"),
        {
            "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
}

_SPLIT_PREFIX = {"train": "train", "test": "t10k"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or gzipped) of unsigned bytes.

    Args:
        path: The file; gzip is detected from its first bytes, not its name.

    Returns:
        A uint8 array with the shape the header declares.

    Raises:
        VitlensError: If the file is missing, not IDX, not unsigned bytes, or truncated.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError as e:
        raise VitlensError(f"IDX file not found: {path}") from e
    except (OSError, EOFError, zlib.error) as e:
        raise VitlensError(
            f"{path} is a corrupt or truncated gzip file ({e}); delete it and download it again."
        ) from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise VitlensError(f"{path} is not an IDX file (bad magic number); is it the right file?")
    if raw[2] != _UBYTE:
        raise VitlensError(f"{path}: IDX type code {raw[2]:#04x}, expected 0x08 (unsigned byte).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise VitlensError(f"{path} is truncated (header cut short); download it again.")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != expected:
        raise VitlensError(
            f"{path} is truncated or corrupt: header says shape {shape} ({expected} bytes of "
            f"data), the file holds {len(raw) - header}. Delete it and download it again."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def _find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def idx_search_dirs(name: str, data_dir: str | Path | None) -> list[Path]:
    """Folders searched for `name`'s IDX files, in order (see the module docstring)."""
    _, tv_folder, debian, _ = IDX_SOURCES[name]
    dirs: list[Path] = []
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        dirs += [root / name, root, root / tv_folder / "raw"]
    dirs.append(debian)
    cache = data_root(None)
    dirs += [cache / name, cache / tv_folder / "raw"]
    return list(dict.fromkeys(dirs))  # drop duplicates, keep order


def load_idx_split(
    name: str, split: str, *, data_dir: str | Path | None = None, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split of MNIST or Fashion-MNIST.

    Args:
        name: "mnist" or "fashion-mnist".
        split: "train" or "test".
        data_dir: Extra folder to search first.
        download: Download missing files into `data_root(data_dir)/<name>/` (by default the
            cache, `$VITLENS_DATA` or `~/.cache/vitlens/data`).

    Returns:
        Images as uint8 `(N, 1, 28, 28)` and labels as int64 `(N,)`.

    Raises:
        VitlensError: If the files are missing (and not downloaded), corrupt or inconsistent.
    """
    base_url, _, _, md5s = IDX_SOURCES[name]
    stems = [
        f"{_SPLIT_PREFIX[split]}-images-idx3-ubyte",
        f"{_SPLIT_PREFIX[split]}-labels-idx1-ubyte",
    ]
    searched = idx_search_dirs(name, data_dir)
    found: list[Path] | None = None
    for folder in searched:
        files = [_find_file(folder, s) for s in stems]
        if all(f is not None for f in files):
            found = files  # type: ignore[assignment]
            break
    target = data_root(data_dir) / name  # where downloads go, and where files should be put
    if found is None:
        if not download:
            where = "\n  ".join(str(d) for d in searched)
            raise VitlensError(
                f"{name} ({split}) not found. Looked for {stems[0]}[.gz] and {stems[1]}[.gz] in:\n"
                f"  {where}\nPut the four IDX files from {base_url} into {target}/, "
                "or run with --download (download=True)."
            )
        found = [download_file(f"{base_url}{s}.gz", target / f"{s}.gz", md5=md5s[s]) for s in stems]
    images, labels = read_idx(found[0]), read_idx(found[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise VitlensError(
            f"{found[0]} and {found[1]} do not match: images {images.shape}, labels "
            f"{labels.shape}; they should be (N, H, W) and (N,)."
        )
    if labels.size and labels.max() > 9:
        raise VitlensError(f"{found[1]} has label {labels.max()}; {name} labels are 0..9.")
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
