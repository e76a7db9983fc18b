"""Writing figures: every PNG goes to a temporary name and is renamed, so none is half-written."""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG to `path` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fig.savefig(tmp, format="png", dpi=120)
    os.replace(tmp, path)
    return path
