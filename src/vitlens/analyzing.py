"""`vitlens analyze NAME RUN`: one analysis of a run, its Result saved as JSON and its figures
drawn, under the run's `analysis/` folder (or `out`), locked while it writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitlens import distributed as dist
from vitlens.analysis.result import Result
from vitlens.analysis.runner import run_analysis
from vitlens.locks import folder_lock
from vitlens.report.figures import draw


@dataclass(frozen=True)
class Analyzed:
    """What `analyze` wrote (`path` is None off torchrun's rank 0, which writes nothing)."""

    result: Result
    path: Path | None = None
    figures: list[Path] = field(default_factory=list)


def analysis_folder(checkpoint: Path, out: Path | None) -> Path:
    """`out`, or the run's own `analysis/` folder (RUN/analysis for RUN or RUN/checkpoints/X)."""
    if out is not None:
        return out
    return (checkpoint if checkpoint.is_dir() else checkpoint.parent.parent) / "analysis"


def analyze(
    analysis: str, checkpoint: str | Path, *, out: Path | None = None, **kw: Any
) -> Analyzed:
    """Run `analysis` on a run (keywords as `run_analysis`), save its Result, draw its figures."""
    checkpoint = Path(checkpoint)
    folder = analysis_folder(checkpoint, out)
    with folder_lock(folder, "analysis folder"):  # rank 0 only; one writer at a time
        result = run_analysis(analysis, checkpoint, **kw)
        if not dist.is_main():
            return Analyzed(result)
        path = result.save(folder / f"{analysis}.json")
        return Analyzed(result, path, draw([result], folder))
