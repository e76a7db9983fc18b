"""Where datasets live on disk, and how files get there without being half-written.

The data root is, in order: the `data_dir` argument (`--data-dir`), the `VITLENS_DATA` environment
variable, or `~/.cache/vitlens/data`. Downloads go to a temporary name next to their target and are
renamed into place only once complete and verified (DESIGN.md §5).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from vitlens.atomic import file_digest
from vitlens.errors import VitlensError

ENV_VAR = "VITLENS_DATA"


def data_root(data_dir: str | Path | None = None) -> Path:
    """The folder datasets are read from and downloaded into.

    Args:
        data_dir: An explicit folder; wins over the environment and the default.

    Returns:
        `data_dir`, else `$VITLENS_DATA`, else `~/.cache/vitlens/data` (user-expanded, not created).
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "vitlens" / "data"


def download_file(url: str, dest: Path, *, md5: str | None = None, timeout: float = 60.0) -> Path:
    """Download `url` to `dest` atomically, checking its MD5 if given.

    The bytes go to a temporary file in `dest`'s folder, which is renamed to `dest` only after
    the download finished and the checksum matched, so an interrupted run leaves no bad file.

    Args:
        url: Where to download from (any scheme urllib understands).
        dest: Final path of the file; its folder is created.
        md5: Expected MD5 hex digest, or None to skip the check.
        timeout: Socket timeout in seconds.

    Returns:
        `dest`.

    Raises:
        VitlensError: If the download fails or the checksum does not match.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out)
        if md5 is not None:
            got = file_digest(tmp, "md5")
            if got != md5:
                raise VitlensError(
                    f"checksum mismatch for {url}: MD5 {got}, expected {md5}. The server sent a "
                    "different file; try again later or download it by hand into "
                    f"{dest.parent}/."
                )
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise VitlensError(
            f"could not download {url} ({e}). Check your internet connection, or download the file "
            f"by hand and put it at {dest}."
        ) from e
    finally:
        tmp.unlink(missing_ok=True)
    return dest
