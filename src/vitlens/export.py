"""`vitlens export`: one CSV per Result of a Result file, a run or a study, in the tidy long format
of `vitlens.analysis.tables` (one row per number; reading the CSV back gives the JSON's floats).

    vitlens export runs/vit/analysis/fourier.json --csv tables/   # one Result
    vitlens export runs/vit --csv tables/                         # every Result of a run
    vitlens export studies/quick --csv tables/                    # every Result of a study
    vitlens export explained/ --csv tables/                       # every Result of `explain`
"""

from __future__ import annotations

from pathlib import Path

from vitlens.analysis.result import load_result
from vitlens.analysis.tables import COLUMNS, rows, to_csv_text, to_frame
from vitlens.atomic import write_text
from vitlens.errors import VitlensError
from vitlens.folders import StudyFolder
from vitlens.locks import holding_lock

__all__ = ["COLUMNS", "export_csv", "rows", "to_csv_text", "to_frame"]


def _results_under(path: Path) -> list[tuple[Path, Path]]:
    """(Result JSON, its CSV's path relative to the output folder) for a Result, run or study."""
    if path.is_file():
        return [(path, Path(f"{path.stem}.csv"))]
    study = StudyFolder(path)
    if study.plan_file.is_file():
        return [(f, Path(f.parent.name) / f"{f.stem}.csv") for f in study.result_files()]
    if (path / "checkpoints").is_dir() or (path / "analysis").is_dir():
        return [(f, Path(f"{f.stem}.csv")) for f in sorted((path / "analysis").glob("*.json"))]
    if (path / "explain.html").is_file() and (path / "results").is_dir():  # `vitlens explain`
        return [(f, Path(f"{f.stem}.csv")) for f in sorted((path / "results").glob("*.json"))]
    raise VitlensError(
        f"{path} is neither a Result JSON nor a run, study or `vitlens explain` folder"
    )


@holding_lock("out", "export folder")
def export_csv(path: str | Path, out: str | Path) -> list[Path]:
    """One CSV per Result in `path` (a Result, a run or a study) under `out`; returns them."""
    path, out = Path(path), Path(out)
    if not path.exists():
        raise VitlensError(f"nothing to export at {path}")
    found = _results_under(path)
    if not found:
        raise VitlensError(f"{path} holds no Results yet (run `vitlens analyze` first)")
    written = []
    for source, relative in found:
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        written.append(write_text(target, to_csv_text(load_result(source))))
    return written
