"""Exclusive locks on output folders: one writer per run, study or analysis folder at a time.

A writer holds `FOLDER/.vitlens.lock`: an `flock` on that file (which the kernel drops when the
process dies, however it dies) plus the holder's PID, host and command written inside, so a
second writer is refused with a message that names the holder. A lock file left behind by a
dead process on this host is taken over with a notice; one that names another host is not
(its holder may be alive there), and the message says how to clear it by hand. On this host the
`flock` decides: a file copied with its folder may name a live PID that holds no lock on it.

Under torchrun only rank 0 takes the lock (other ranks get a lock that does nothing).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import fcntl
import functools
import inspect
import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from vitlens.atomic import LOCK_NAME, write_error
from vitlens.errors import VitlensError


class FolderLockedError(VitlensError):
    """Another process is writing into the same folder."""


# Folders this process holds, so that taking the same lock twice in one process is harmless.
_HELD: dict[Path, FolderLock] = {}


class FolderLock:
    """The exclusive lock of one output folder; use as a context manager or acquire/release."""

    def __init__(self, folder: str | Path, what: str = "folder", *, enabled: bool | None = None):
        self.folder = Path(folder)
        self.what = what
        self.enabled = is_rank_zero() if enabled is None else enabled
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._created_folder = False
        self._shared = False

    # -- taking and giving back ------------------------------------------------------------

    def acquire(self) -> FolderLock:
        if not self.enabled:
            return self
        key = self.folder.resolve()
        if key in _HELD:  # this process already writes here (e.g. a study reopened in-process)
            self._shared = True
            return self
        if self.folder.exists() and not self.folder.is_dir():
            raise VitlensError(
                f"{self.what} {self.folder} exists and is not a folder; choose another path"
            )
        self._created_folder = not self.folder.exists()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise write_error(self.folder, err) from None
        for _ in range(5):  # retried only if the file was replaced while we waited
            if self._try_lock():
                break
        else:
            raise FolderLockedError(f"could not lock {self.folder}: its lock file keeps changing")
        _HELD[key] = self
        atexit.register(self.release)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        atexit.unregister(self.release)
        _HELD.pop(self.folder.resolve(), None)
        try:
            self.path.unlink(missing_ok=True)  # unlink first: a waiter then locks a fresh file
        finally:
            os.close(self._fd)
            self._fd = None
        if self._created_folder:
            with contextlib.suppress(OSError):  # only if empty: a refused run leaves no trace
                self.folder.rmdir()

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        if not self._shared:
            self.release()

    # -- internals -------------------------------------------------------------------------

    def _try_lock(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise write_error(self.path, err) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise FolderLockedError(self._busy_message(holder)) from None
        if os.fstat(fd).st_ino != _inode(self.path):  # released and unlinked meanwhile
            os.close(fd)
            return False
        previous = _read_holder(fd)
        if previous and not self._may_take_over(previous):
            os.close(fd)
            raise FolderLockedError(self._foreign_message(previous))
        if previous:
            print(
                f"notice: taking over the lock of {self.folder}, left by PID "
                f"{previous.get('pid')} on {previous.get('host')}, which no longer holds it",
                file=sys.stderr,
            )
        _write_holder(fd, self.path)
        self._fd = fd
        return True

    def _may_take_over(self, previous: dict) -> bool:
        # We hold the flock, so no process on this host holds this file, whatever PID it names
        # (it may be a copy made with its folder); another host's flock is not visible here.
        return previous.get("host") == socket.gethostname()

    def _busy_message(self, holder: dict) -> str:
        who = _describe(holder)
        return (
            f"{self.what} {self.folder} is in use by {who}; wait for it to finish or choose "
            "another output folder (nothing was written)"
        )

    def _foreign_message(self, holder: dict) -> str:
        return (
            f"{self.what} {self.folder} is locked by {_describe(holder)}, which this host cannot "
            f"check; if that process has ended, delete {self.path} and try again"
        )


def is_rank_zero() -> bool:
    """Rank 0 of a torchrun job, or a single process (read from torchrun's environment)."""
    return os.environ.get("RANK", "0") == "0"


def folder_lock(
    folder: str | Path, what: str = "folder", *, enabled: bool | None = None
) -> FolderLock:
    """The lock of `folder` (not yet taken): `with folder_lock(out, "run folder"): ...`."""
    return FolderLock(folder, what, enabled=enabled)


F = TypeVar("F", bound=Callable[..., Any])


def holding_lock(argument: str, what: str) -> Callable[[F], F]:
    """Decorate a function to hold the lock of the folder passed as `argument` while it runs."""

    def decorate(func: F) -> F:
        signature = inspect.signature(func)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            folder = signature.bind(*args, **kwargs).arguments[argument]
            with folder_lock(folder, what):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def _read_holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"unreadable": True} if raw.strip() else {}
    return data if isinstance(data, dict) else {"unreadable": True}


def _write_holder(fd: int, path: Path) -> None:
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:300],
        "since": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    try:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(holder).encode())
        os.fsync(fd)
    except OSError as err:
        os.close(fd)
        raise write_error(path, err) from None


def _describe(holder: dict) -> str:
    if not holder.get("pid"):
        return "another process"
    text = f"PID {holder['pid']} on {holder.get('host', '?')}"
    if holder.get("command"):
        text += f" ({holder['command']}"
        text += f", since {holder['since']})" if holder.get("since") else ")"
    return text
