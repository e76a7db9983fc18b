"""Where a study keeps what: the one place that knows a study folder's layout.

    study.json                  the plan (what was asked)
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
        return plan, steps
