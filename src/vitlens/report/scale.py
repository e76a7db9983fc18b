"""The report's "Scale of this study" box, built from what each run recorded, not from the plan.

A study can analyse runs it did not train (`--runs`), imported models that were never trained,
or runs of different datasets; its plan then says little about them. Each run's checkpoint
record (`checkpoints/final.json`, else `last.json`) says what happened: epochs finished, share
of the training set, dataset, seed, or where an imported model came from.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunFacts:
    """What one run's record says about how its model came to be."""

    key: str
    dataset: str
    epochs: int | None = None  # epochs finished (None: not trained here)
    fraction: float | None = None
    seed: int | None = None
    imported_from: str | None = None  # the source of an imported model
    pretrained: bool = False

    def how(self) -> str:
        """One phrase: how this model came to be (the grouping key of the box)."""
        if self.imported_from is not None:
            weights = "pretrained weights" if self.pretrained else "random weights"
            return f"imported ({weights}), not trained here; analysed on {self.dataset}"
        if self.epochs is None:
            return f"no checkpoint record found; dataset {self.dataset or 'unknown'}"
        share = "the whole training set" if self.fraction == 1 else f"{self.fraction:.0%}"
        unit = "epoch" if self.epochs == 1 else "epochs"
        return f"trained for {self.epochs} {unit} on {share} of {self.dataset}"


def _record(run: Path) -> dict[str, Any] | None:
    for name in ("final.json", "last.json"):
        path = run / "checkpoints" / name
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            return data
    return None


def run_facts(key: str, run: Path) -> RunFacts:
    """The facts of `run` from its checkpoint record (a run without one says so)."""
    record = _record(run)
    if record is None:
        return RunFacts(key, dataset="")
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    dataset = str(record.get("dataset") or config.get("dataset") or "")
    origin = record.get("import")
    if isinstance(origin, dict):
        return RunFacts(
            key,
            dataset,
            imported_from=str(origin.get("source", "?")),
            pretrained=bool(origin.get("weights") or origin.get("pretrained")),
        )
    epoch, fraction, seed = record.get("epoch"), config.get("fraction"), config.get("seed")
    return RunFacts(
        key,
        dataset,
        epochs=epoch if isinstance(epoch, int) else None,
        fraction=float(fraction) if isinstance(fraction, int | float) else None,
        seed=seed if isinstance(seed, int) else None,
    )


def _group(facts: list[RunFacts]) -> dict[str, list[RunFacts]]:
    groups: dict[str, list[RunFacts]] = {}
    for fact in facts:
        groups.setdefault(fact.how(), []).append(fact)
    return groups


def _names(facts: list[RunFacts]) -> str:
    shown = []
    for f in facts:
        extra = f" from {f.imported_from}" if f.imported_from else ""
        extra += f", seed {f.seed}" if f.seed is not None else ""
        shown.append(f"<b>{html.escape(f.key)}</b>{html.escape(extra)}")
    return ", ".join(shown)


def scale_box(plan: dict[str, Any], facts: list[RunFacts], wall_seconds: float) -> str:
    """The box: each group of runs with how it came to be, then the study's preset and time."""
    lines = "".join(
        f"<li>{_names(group)}: {html.escape(how)}</li>" for how, group in _group(facts).items()
    )
    datasets = sorted({f.dataset for f in facts if f.dataset})
    mixed = ""
    if len(datasets) > 1:
        named = html.escape(", ".join(datasets))
        mixed = (
            f" <b>The runs come from {len(datasets)} datasets</b> ({named}): comparisons "
            "across them are not like for like."
        )
    return (
        f"<div class=scale><b>Scale of this study.</b> {len(facts)} models, as their runs "
        f"recorded them:<ul>{lines}</ul>Study preset <b>{html.escape(str(plan.get('preset')))}</b>"
        f"; analyses streamed the batches listed in study.json. Total step time "
        f"{wall_seconds / 60:.1f} min.{mixed} The paper trains on CIFAR-100 for 300 epochs: at "
        "this scale only the <i>direction</i> of each claim can be checked, not its "
        "magnitude.</div>"
    )
