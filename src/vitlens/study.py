"""The paper as one pipeline: train the zoo, run every analysis, write the report.

A study folder holds `study.json` (what was asked), `steps.json` (what is done), `runs/MODEL/`
(training runs), `results/ANALYSIS/MODEL.json` (Results), `figures/` and `report.html`. Every step
writes its outputs atomically and is then marked done, so `vitlens study --resume DIR` redoes no
finished step; a training step that was interrupted continues from its last checkpoint.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vitlens import distributed as dist
from vitlens.analysis.runner import ANALYSES
from vitlens.errors import ConfigError, UnknownNameError, VitlensError
from vitlens.train.checkpoint import atomic_write_text

NANO = ["vit_nano", "pit_nano", "swin_nano", "resnet_nano", "alternet_nano"]
PAPER = ["vit_ti", "pit_ti", "swin_ti", "resnet50", "alternet50"]

# How much data each analysis streams, per preset: (batches, batch size); None = whole split.
_QUICK_BUDGET = {
    "fourier": (4, 128),
    "variance": (4, 128),
    "cka": (4, 128),
    "lesion": (4, 128),
    "attention": (2, 64),
    "hessian": (10, 16),
    "landscape": (1, 128),
    "trajectory": (None, None),
    "corruptions": (2, 128),
    "freqnoise": (2, 250),
}
_STANDARD_BUDGET = {
    **{k: (10, 128) for k in ("fourier", "variance", "cka", "lesion")},
    "attention": (5, 64),
    "hessian": (20, 16),
    "landscape": (4, 128),
    "trajectory": (None, None),
    "corruptions": (8, 250),
    "freqnoise": (8, 250),
}
_PAPER_BUDGET = {
    **{k: (None, 256) for k in ("fourier", "variance", "cka", "lesion", "corruptions")},
    "attention": (20, 64),
    "hessian": (100, 16),
    "landscape": (10, 256),
    "trajectory": (None, None),
    "freqnoise": (None, 256),
}

STUDY_PRESETS: dict[str, dict[str, Any]] = {
    "quick": dict(
        models=NANO,
        dataset="fashion-mnist-mini",
        train_preset="quick",
        epochs=5,
        fraction=1.0,
        budget=_QUICK_BUDGET,
        landscape_steps=11,
    ),
    "standard": dict(
        models=NANO,
        dataset="fashion-mnist-mini",
        train_preset="quick",
        epochs=20,
        fraction=1.0,
        budget=_STANDARD_BUDGET,
        landscape_steps=15,
    ),
    "paper": dict(
        models=PAPER,
        dataset="cifar100",
        train_preset="paper",
        epochs=300,
        fraction=1.0,
        budget=_PAPER_BUDGET,
        landscape_steps=21,
    ),
}


@dataclass
class StudyPlan:
    """What a study trains and analyses; saved as `study.json`."""

    preset: str = "quick"
    models: list[str] = field(default_factory=lambda: list(NANO))
    dataset: str = "fashion-mnist-mini"
    fraction: float = 1.0
    epochs: int = 3
    train_preset: str = "quick"
    analyses: list[str] = field(default_factory=lambda: list(ANALYSES))
    budget: dict[str, list] = field(default_factory=dict)
    landscape_steps: int = 9
    seed: int = 0
    data_dir: str | None = None
    device: str = "auto"
    precision: str = "auto"  # auto, fp32 or bf16 (vitlens.train.precision)

    @staticmethod
    def from_preset(preset: str, **overrides: Any) -> StudyPlan:
        if preset not in STUDY_PRESETS:
            raise ConfigError(f"unknown study preset {preset!r}; choose from {list(STUDY_PRESETS)}")
        base = {k: v for k, v in STUDY_PRESETS[preset].items()}
        base["budget"] = {k: list(v) for k, v in base["budget"].items()}
        plan = StudyPlan(preset=preset, **base)
        for key, value in overrides.items():
            if value is not None:
                setattr(plan, key, value)
        plan.validate()
        return plan

    def validate(self) -> None:
        from vitlens.models import MODELS

        unknown = [m for m in self.models if m not in MODELS]
        if unknown:
            raise UnknownNameError(f"unknown model(s) {unknown}; see `vitlens models`")
        if not self.models:
            raise ConfigError("a study needs at least one model")
        bad = [a for a in self.analyses if a not in ANALYSES]
        if bad:
            raise UnknownNameError(f"unknown analysis {bad}; choose from {', '.join(ANALYSES)}")
        if not 0 < self.fraction <= 1:
            raise ConfigError("fraction must be in (0, 1]")
        if self.epochs < 1:
            raise ConfigError("epochs must be at least 1")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"precision {self.precision!r}: choose from auto, fp32, bf16")


class Study:
    """Runs a `StudyPlan` in a folder, step by step, resumably."""

    def __init__(self, folder: str | Path, plan: StudyPlan, *, quiet: bool = False):
        self.folder = Path(folder)
        self.plan = plan
        self.quiet = quiet
        self.steps: dict[str, dict[str, Any]] = {}

    # -- creating and reopening ------------------------------------------------------------

    @staticmethod
    def create(folder: str | Path, plan: StudyPlan, *, quiet: bool = False) -> Study:
        folder = Path(folder)
        study = Study(folder, plan, quiet=quiet)
        if dist.is_main():
            if folder.exists() and any(folder.iterdir()):
                raise VitlensError(
                    f"{folder} already exists and is not empty; use `vitlens study --resume "
                    f"{folder}` to continue it or choose another --out (nothing was overwritten)"
                )
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(folder / "study.json", json.dumps(asdict(plan), indent=1))
            study._save_steps()
        dist.barrier()
        return study

    @staticmethod
    def open(folder: str | Path, *, quiet: bool = False, **overrides: Any) -> Study:
        folder = Path(folder)
        try:
            data = json.loads((folder / "study.json").read_text())
            steps = json.loads((folder / "steps.json").read_text())
        except (FileNotFoundError, NotADirectoryError):
            raise VitlensError(
                f"{folder} is not a study folder (no study.json/steps.json); start one with "
                "`vitlens study --out DIR`"
            ) from None
        except json.JSONDecodeError as err:
            raise VitlensError(f"{folder}/study.json or steps.json is corrupt: {err}") from None
        plan = StudyPlan(**data)
        for key, value in overrides.items():
            if value is not None:
                setattr(plan, key, value)
        plan.validate()
        study = Study(folder, plan, quiet=quiet)
        study.steps = steps
        return study

    # -- running -----------------------------------------------------------------------------

    def run(self) -> Path:
        """Train, analyse and report; returns the report's path."""
        for model in self.plan.models:
            self._step(f"train/{model}", lambda m=model: self._train(m))
        for analysis in self.plan.analyses:
            for model in self.plan.models:
                if analysis == "attention" and not self._has_msa(model):
                    continue
                self._step(f"{analysis}/{model}", lambda a=analysis, m=model: self._analyse(a, m))
        if dist.is_main():
            from vitlens.report.html import write_report

            return write_report(self.folder)
        return self.folder / "report.html"

    def _step(self, name: str, work) -> None:
        if self.steps.get(name, {}).get("status") == "done":
            return
        self._say(f"[study] {name} ...")
        start = time.perf_counter()
        outputs = work()
        if dist.is_main():
            self.steps[name] = {
                "status": "done",
                "seconds": round(time.perf_counter() - start, 2),
                "outputs": [str(p) for p in outputs],
            }
            self._save_steps()
        dist.barrier()

    def _save_steps(self) -> None:
        atomic_write_text(self.folder / "steps.json", json.dumps(self.steps, indent=1))

    def _say(self, text: str) -> None:
        if not self.quiet and dist.is_main():
            from rich.console import Console

            Console(stderr=True).print(text, highlight=False)

    def run_folder(self, model: str) -> Path:
        return self.folder / "runs" / model

    def _train(self, model: str) -> list[Path]:
        from vitlens.config import make_config
        from vitlens.train import Trainer

        p = self.plan
        out = self.run_folder(model)
        cfg = make_config(
            p.train_preset,
            model=model,
            dataset=p.dataset,
            epochs=p.epochs,
            warmup_epochs=min(1.0, p.epochs / 3) if p.train_preset == "quick" else None,
            fraction=p.fraction,
            seed=p.seed,
            data_dir=p.data_dir,
            device=p.device,
            precision=p.precision,
            snapshot_every=1,
        )
        resume = (out / "checkpoints" / "last.json").exists()
        if not resume and out.exists() and dist.is_main():
            # Killed before its first checkpoint: nothing in it is worth keeping.
            shutil.rmtree(out)
        dist.barrier()
        Trainer(cfg, out, resume=resume, quiet=self.quiet).run()
        return [out]

    def _has_msa(self, model: str) -> bool:
        import torch

        from vitlens.anatomy import describe
        from vitlens.models import create_model

        with torch.device("meta"):
            blocks = describe(create_model(model))
        return any(b.kind == "msa" for b in blocks)

    def _analyse(self, analysis: str, model: str) -> list[Path]:
        from vitlens.analysis.runner import run_analysis

        batches, batch_size = self.plan.budget.get(analysis, (None, None))
        options: dict[str, Any] = {}
        if analysis == "landscape":
            options["steps"] = self.plan.landscape_steps
        result = run_analysis(
            analysis,
            self.run_folder(model),
            batches=batches,
            batch_size=batch_size,
            data_dir=self.plan.data_dir,
            device=self.plan.device,
            seed=self.plan.seed,
            progress=not self.quiet,
            options=options,
        )
        if not dist.is_main():
            return []
        return [result.save(self.folder / "results" / analysis / f"{model}.json")]
