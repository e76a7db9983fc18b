"""Atomic file writes: every file vitlens writes goes to a temporary name and is renamed.

Each writer puts its bytes into a hidden temporary file next to the target
(`.NAME.tmpPID`), fsyncs it, renames it over the target with `os.replace` and fsyncs the
folder, so a reader sees either the old file or the whole new one, never a part. When a
write fails (a full disk, a read-only mount, a directory in the way) the temporary file is
removed and a `VitlensError` naming the path is raised. Leftover temporary files of a killed
process are recognised by `is_temporary` and ignored by every "is this folder empty" check.

Nothing heavy is imported here: the safetensors writer imports torch and safetensors lazily,
so writing an HTML report or a JSON file never loads torch.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitlens.errors import VitlensError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.figure import Figure

_TEMP_NAME = re.compile(r"^\..+\.tmp\d*$")
LOCK_NAME = ".vitlens.lock"  # the lock file of an output folder (see vitlens.locks)

_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EISDIR: "a directory is in the way",
    errno.ENOTDIR: "a file is in the way of a folder on the path",
    errno.EEXIST: "a file is in the way of a folder on the path",
    errno.ENOENT: "its folder does not exist",
}


class WriteError(VitlensError):
    """A file could not be written (disk full, read-only, a directory in the way, ...)."""


def temp_path(path: Path) -> Path:
    """The hidden temporary name a write of `path` uses in the same folder."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def is_temporary(path: str | Path) -> bool:
    """Whether `path` is a leftover temporary file of an interrupted write."""
    return bool(_TEMP_NAME.match(Path(path).name))


def visible_entries(folder: Path) -> list[Path]:
    """The entries of `folder` other than leftover temporary files and its lock file."""
    return [p for p in folder.iterdir() if not is_temporary(p) and p.name != LOCK_NAME]


def remove_temporaries(folder: Path) -> None:
    """Delete leftover temporary files of interrupted writes in `folder` (not recursive)."""
    if folder.is_dir():
        for p in folder.iterdir():
            if is_temporary(p) and p.is_file():
                p.unlink(missing_ok=True)


def write_error(path: Path, err: OSError) -> WriteError:
    """A WriteError that names `path` and says in words what went wrong."""
    reason = _REASONS.get(err.errno, err.strerror or str(err))
    return WriteError(f"cannot write {path}: {reason} ({err.__class__.__name__}: {err})")


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def _replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to fill; on success fsync and rename it over `path`."""
    path = Path(path)
    if path.is_dir():
        raise WriteError(f"cannot write {path}: a directory is in the way")
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise write_error(path, err) from None
    finally:
        if tmp.exists():
            tmp.unlink(missing_ok=True)
    _fsync_folder(path.parent)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns the path."""
    with _replacing(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, data: Any, *, indent: int | None = 1) -> Path:
    """Write `data` as JSON to `path` atomically (NaN and infinity allowed: Results hold them)."""
    return write_text(path, json.dumps(data, indent=indent, allow_nan=True))


def write_with(path: str | Path, fill: Callable[[Path], None]) -> Path:
    """Write `path` atomically by calling `fill(temporary_path)`, which creates the file."""
    with _replacing(path) as tmp:
        fill(tmp)
    return Path(path)


def write_png(fig: Figure, path: str | Path, *, dpi: int = 120) -> Path:
    """Write a matplotlib figure as a PNG to `path` atomically."""
    return write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))


def write_safetensors(
    path: str | Path, tensors: dict[str, Any], metadata: dict[str, str] | None = None
) -> Path:
    """Write tensors as safetensors to `path` atomically (torch is imported only here)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}

    def fill(tmp: Path) -> None:
        try:
            save_file(flat, str(tmp), metadata)
        except SafetensorError as err:  # its I/O errors arrive without an errno
            raise WriteError(f"cannot write {path}: {err}") from None

    return write_with(path, fill)


def append_json_line(path: str | Path, row: Any) -> None:
    """Append one JSON line to `path`, flushed and fsynced, so a kill loses at most this row.

    The row is written with one `write` call; a kill can at worst leave a torn last line,
    which readers (e.g. a resumed run) drop.
    """
    path = Path(path)
    line = json.dumps(row) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise write_error(path, err) from None


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks (checkpoints, imports and data share it)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
