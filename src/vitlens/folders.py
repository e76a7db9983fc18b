"""Where a study keeps what: the one place that knows a study folder's layout.

    study.json                  the plan (what was asked)
    study.sealed.json           study.json as the study started (an edited plan is refused)
    steps.json                  what is done, step by step
    runs/MODEL/                 training runs
    results/ANALYSIS/MODEL.json Results
    buildup/buildup.json        the build-up search's Result, when a study has one
    figures/NAME.png            figures drawn from the Results
    report.html                 the report

Used by the study (which writes it) and the report (which reads it); imports nothing heavy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitlens.errors import VitlensError


@dataclass(frozen=True)
class StudyFolder:
    root: Path

    @property
    def plan_file(self) -> Path:
        return self.root / "study.json"

    @property
    def sealed_plan_file(self) -> Path:
        return self.root / "study.sealed.json"

    @property
    def steps_file(self) -> Path:
        return self.root / "steps.json"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def buildup_result(self) -> Path:
        return self.root / "buildup" / "buildup.json"

    def run(self, model: str) -> Path:
        return self.root / "runs" / model

    def result(self, analysis: str, model: str) -> Path:
        return self.root / "results" / analysis / f"{model}.json"

    def result_files(self) -> list[Path]:
        """Every saved Result, as `results/ANALYSIS/MODEL.json`."""
        return sorted((self.root / "results").glob("*/*.json"))

    def stored(self, path: str | Path) -> str:
        """How steps.json names an output: relative to the study folder when inside it (the
        folder may be moved), else as given."""
        path = Path(path)
        try:
            return str(path.resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)

    def missing_outputs(self, record: dict[str, Any]) -> list[str]:
        """The outputs a step's record names that no longer exist."""
        outputs = record.get("outputs", [])
        names = outputs if isinstance(outputs, list) else []
        return [str(p) for p in names if not (self.root / str(p)).exists()]

    def read_state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """`study.json` and `steps.json`; a clear error if this is not a study folder."""
        try:
            plan = json.loads(self.plan_file.read_text())
            steps = json.loads(self.steps_file.read_text())
        except (FileNotFoundError, NotADirectoryError):
            raise VitlensError(
                f"{self.root} is not a study folder (no study.json/steps.json); start one with "
                "`vitlens study --out DIR`"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise VitlensError(f"{self.root}/study.json or steps.json is corrupt: {err}") from None
        if not isinstance(plan, dict):
            raise VitlensError(f"{self.plan_file} must hold a JSON mapping of plan fields")
        if not isinstance(steps, dict) or not all(isinstance(v, dict) for v in steps.values()):
            raise VitlensError(f"{self.steps_file} is damaged: not a mapping of step records")
        self._check_sealed(plan)
        return plan, steps

    def _check_sealed(self, plan: dict[str, Any]) -> None:
        """Refuse a study.json edited after the study started, naming what changed: the
        finished steps were measured under the sealed plan (a study from before the seal
        has none and is read as it is)."""
        try:
            sealed = json.loads(self.sealed_plan_file.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as err:
            raise VitlensError(f"{self.sealed_plan_file} is damaged: {err}") from None
        if sealed == plan:
            return
        keys = sorted(set(plan) | set(sealed), key=str) if isinstance(sealed, dict) else []
        changes = [
            f"{k}: {json.dumps(sealed.get(k))[:40]} -> {json.dumps(plan.get(k))[:40]}"
            for k in keys
            if sealed.get(k) != plan.get(k)
        ]
        said = "; ".join(changes) or "the seal is not a plan"
        raise VitlensError(
            f"{self.plan_file} was edited after the study started ({said}); "
            f"restore it from {self.sealed_plan_file.name}, or start a new study with --out"
        )
