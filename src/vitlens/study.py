"""The paper as one pipeline: train the zoo, run every registered analysis, write the report.

The folder layout is `vitlens.folders.StudyFolder`'s. Every step writes its outputs atomically
and is then marked done in `steps.json`, so `vitlens study --resume DIR` redoes no finished step;
a training step that was interrupted continues from its last checkpoint.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vitlens import distributed as dist
from vitlens.atomic import visible_entries
from vitlens.atomic import write_text as atomic_write_text
from vitlens.errors import VitlensError
from vitlens.folders import StudyFolder
from vitlens.locks import folder_lock
from vitlens.plan import StudyPlan, runs_overrides
from vitlens.presets import STUDY_PRESETS


def start_study(
    *,
    preset: str,
    out: Path | None,
    resume: Path | None,
    quiet: bool,
    ablations: bool | None,
    runs: list[str] | None,
    images: int | None = None,
    **overrides: Any,
) -> Study:
    """The study `vitlens study` runs: `resume` reopened, or a new one from `preset` in `out`
    (default `studies/PRESET-TIME`), with `overrides` (None: keep) applied."""
    import datetime

    from vitlens.device import resolve_device

    # Under torchrun, join the process group before any rank touches the study folder.
    dist.init(resolve_device(overrides.get("device") or "auto"))
    if resume is not None:
        _check_resume_options(ablations, runs, images, overrides)
    if ablations is False:
        overrides["ablations"] = {}  # an empty set of ablations: none are trained
    if runs:
        if overrides.get("models"):
            raise VitlensError("give --runs (existing runs) or --models (to train), not both")
        resolved = [str(Path(r).resolve()) for r in runs]
        if len(set(resolved)) != len(resolved):
            twice = sorted({r for r in resolved if resolved.count(r) > 1})
            raise VitlensError(f"--runs names the same run more than once: {twice}")
        overrides.update(runs_overrides(runs, overrides.get("dataset")))
    elif resume is None and STUDY_PRESETS.get(preset) and STUDY_PRESETS[preset].imports:
        overrides.update(imports_overrides(overrides.pop("models", None), images))
    if resume is not None:
        return Study.open(resume, quiet=quiet, **overrides)
    plan = StudyPlan.from_preset(preset, **overrides)
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("studies") / f"{preset}-{stamp}"
    return Study.create(out, plan, quiet=quiet)


# What a resumed study may change: where it runs and finds its data, not what it measures.
RESUME_OPTIONS = ("device", "data_dir")


def _check_resume_options(ablations, runs, images, overrides: dict[str, Any]) -> None:
    """A resumed study keeps its plan (study.json): options that change what it measures are
    refused, not silently ignored for the finished steps and applied to the rest."""
    given = [k for k, v in overrides.items() if v is not None and k not in RESUME_OPTIONS]
    given += [
        k
        for k, v in (("ablations", ablations), ("runs", runs), ("images", images))
        if v is not None
    ]
    if given:
        flags = {"analyses": "only"}
        named = ", ".join("--" + flags.get(k, k).replace("_", "-") for k in sorted(given))
        raise VitlensError(
            f"{named} would change what the study measures; a resumed study keeps its "
            "study.json (it may only take --device and --data-dir). Start a new study with --out."
        )


def imports_overrides(models: list[str] | None, images: int | None) -> dict[str, Any]:
    """Plan settings of a study of pretrained models: `models` as sources (timm:NAME.TAG,
    torchvision:NAME, hf:ORG/NAME), each labelled by its name; `images` validation images."""
    out: dict[str, Any] = {}
    if images is not None:
        if images < 1:
            raise VitlensError(f"--images must be at least 1, got {images}")
        out["dataset"] = f"imagenet:{images}"
    if models:
        if not all(":" in m for m in models):
            raise VitlensError(
                "this preset imports pretrained models: name them as timm:NAME[.TAG], "
                "torchvision:NAME or hf:ORG/NAME"
            )
        labels = {m.split(":", 1)[1].split("/")[-1].split(".")[0]: m for m in models}
        if len(labels) != len(models):
            raise VitlensError(f"two of {models} would share a run folder name")
        out.update(models=list(labels), imports=labels)
    return out


def study_member_model(plan: StudyPlan, key: str) -> str:
    from vitlens.ablations import study_members

    return next(m.model for m in study_members(plan) if m.key == key)


class Study:
    """Runs a `StudyPlan` in a folder, step by step, resumably."""

    def __init__(self, folder: str | Path, plan: StudyPlan, *, quiet: bool = False):
        self.folder = StudyFolder(Path(folder))
        self.plan = plan
        self.quiet = quiet
        self.steps: dict[str, dict[str, Any]] = {}

    # -- creating and reopening ------------------------------------------------------------

    @staticmethod
    def create(folder: str | Path, plan: StudyPlan, *, quiet: bool = False) -> Study:
        study = Study(folder, plan, quiet=quiet)
        root = study.folder.root
        if dist.is_main():
            study.lock = folder_lock(root, "study folder").acquire()  # released at exit
            if visible_entries(root):
                study.lock.release()
                raise VitlensError(
                    f"{root} already exists and is not empty; use `vitlens study --resume "
                    f"{root}` to continue it or choose another --out (nothing was overwritten)"
                )
            root.mkdir(parents=True, exist_ok=True)
            plan_text = json.dumps(asdict(plan), indent=1)
            atomic_write_text(study.folder.sealed_plan_file, plan_text)
            atomic_write_text(study.folder.plan_file, plan_text)
            study._save_steps()
        dist.barrier()
        return study

    @staticmethod
    def open(folder: str | Path, *, quiet: bool = False, **overrides: Any) -> Study:
        where = StudyFolder(Path(folder))
        data, steps = where.read_state()
        plan = StudyPlan.from_json(data, where=where.plan_file)
        study = Study(folder, plan.with_overrides(**overrides), quiet=quiet)
        study.steps = steps
        if dist.is_main():
            study.lock = folder_lock(folder, "study folder").acquire()  # released at exit
        return study

    # -- running -----------------------------------------------------------------------------

    def run(self, workers: int | None = None) -> Path:
        """Train, analyse and report; returns the report's path.

        Args:
            workers: processes that run independent steps side by side (None: automatic, see
                `vitlens.parallel.plan_workers`; 1: every step in this process).
        """
        from vitlens.ablations import study_members
        from vitlens.analysis.registry import get_analysis
        from vitlens.device import resolve_device
        from vitlens.parallel import plan_workers

        side_by_side = plan_workers(workers, resolve_device(self.plan.device).type)
        members = study_members(self.plan)
        training = [
            (f"import/{m.key}", ("import", m))
            if m.key in self.plan.imports
            else (f"train/{m.key}", ("train", m))
            for m in members
            if m.key not in self.plan.runs
        ]
        self._steps(training, side_by_side)
        analysing = []
        for name in self.plan.analyses:
            spec = get_analysis(name)
            for m in members:
                if m.analyses is not None and name not in m.analyses:
                    continue
                if not spec.needs <= self._kinds(m.key):
                    continue
                analysing.append((f"{name}/{m.key}", (name, m)))
        self._steps(analysing, side_by_side)
        if dist.is_main():
            from vitlens.report.html import write_report

            return write_report(self.folder.root)
        return self.folder.report

    def _steps(self, steps: list[tuple[str, tuple]], workers) -> None:
        """Run the steps not yet done: here one by one, or side by side in worker processes
        (each step is independent of the others of its list)."""
        pending = [(n, job) for n, job in steps if not self._done(n)]
        if workers.processes <= 1 or len(pending) <= 1:
            for name, job in pending:
                self._step(name, lambda job=job: run_step(self, *job))
            return
        from vitlens.parallel import run_side_by_side

        self._say(f"[study] {len(pending)} steps, {workers.processes} side by side ...")
        jobs = [(str(self.folder.root), self.plan, *job) for _, job in pending]
        errors = []
        for i, outputs, seconds, error in run_side_by_side(_worker_step, jobs, workers):
            name = pending[i][0]
            if error is not None:
                errors.append((name, error))
                continue
            self._say(f"[study] {name} done ({seconds:.0f} s)")
            self._record(name, seconds, outputs)
        if errors:  # every finished step is recorded; `--resume` redoes only the failed ones
            name, error = errors[0]
            if isinstance(error, VitlensError):
                raise error
            raise VitlensError(f"study step {name} failed: {type(error).__name__}: {error}")

    def _record(self, name: str, seconds: float, outputs) -> None:
        self.steps[name] = {
            "status": "done",
            "seconds": round(seconds, 2),
            "outputs": [self.folder.stored(p) for p in outputs],
        }
        self._save_steps()

    def _done(self, name: str) -> bool:
        """Done, with everything it wrote still there: a deleted Result is redone."""
        record = self.steps.get(name, {})
        return record.get("status") == "done" and not self.folder.missing_outputs(record)

    def _step(self, name: str, work) -> None:
        if self._done(name):
            return
        self._say(f"[study] {name} ...")
        start = time.perf_counter()
        outputs = work()
        if dist.is_main():
            self._record(name, time.perf_counter() - start, outputs)
        dist.barrier()

    def _save_steps(self) -> None:
        atomic_write_text(self.folder.steps_file, json.dumps(self.steps, indent=1))

    def _say(self, text: str) -> None:
        if not self.quiet and dist.is_main():
            from rich.console import Console

            Console(stderr=True).print(text, highlight=False)

    def run_folder(self, model: str) -> Path:
        return self.plan.run_path(model, self.folder)

    def _train(self, member) -> list[Path]:
        from vitlens.train import Trainer

        out = self.folder.run(member.key)
        resume = (out / "checkpoints" / "last.json").exists()
        if not resume and out.exists() and dist.is_main():
            # Killed before its first checkpoint: nothing in it is worth keeping.
            shutil.rmtree(out)
        dist.barrier()
        # The report reads each run's final metrics only: no test pass after every epoch.
        Trainer(
            self.plan.train_config(member),
            out,
            resume=resume,
            quiet=self.quiet,
            evaluate_every_epoch=False,
        ).run()
        return [out]

    def _import(self, member) -> list[Path]:
        """A pretrained model imported as the study's run `runs/KEY/` (with its own
        preprocessing, on the study's dataset)."""
        from vitlens.importing import import_model

        out = self.folder.run(member.key)
        if out.exists() and dist.is_main():
            shutil.rmtree(out)  # an import is written whole or not at all; redo a stray one
        source = self.plan.imports[member.key]
        if dist.is_main():
            import_model(
                source,
                out,
                pretrained=source.startswith("timm:"),
                weights="DEFAULT" if source.startswith("torchvision:") else None,
                dataset=self.plan.dataset,
                data_dir=self.plan.data_dir,
            )
        dist.barrier()
        return [out]

    @functools.cache  # noqa: B019  (a few models per study; the Study lives for one run)
    def _kinds(self, key: str) -> set[str]:
        import torch

        from vitlens.anatomy import anatomy_of
        from vitlens.models import create_model
        from vitlens.train.runs import load_model

        if key in self.plan.runs or key in self.plan.imports:
            run = self.plan.run_path(key, self.folder)
            return anatomy_of(load_model(run, "cpu")[0]).kinds()
        with torch.device("meta"):
            return anatomy_of(create_model(study_member_model(self.plan, key))).kinds()

    def _analyse(self, analysis: str, member) -> list[Path]:
        from vitlens.analysis.runner import run_analysis

        key = member.key
        batches, batch_size = self.plan.budget.get(analysis, (None, None))
        # Existing runs are analysed on their own data unless the study names a dataset.
        dataset = (self.plan.dataset or None) if key in self.plan.runs else None
        result = run_analysis(
            analysis,
            self.plan.run_path(key, self.folder),
            batches=batches,
            batch_size=batch_size,
            dataset=dataset,
            data_dir=self.plan.data_dir,
            device=self.plan.device,
            seed=self.plan.seed,
            progress=not self.quiet,
            options={**self.plan.options.get(analysis, {}), **member.options.get(analysis, {})},
        )
        if not dist.is_main():
            return []
        return [result.save(self.folder.result(analysis, key))]


def run_step(study: Study, kind: str, member) -> list[Path]:
    """One step of `study`: "train" a member, or run the analysis named `kind` on it."""
    if kind == "train":
        return study._train(member)
    if kind == "import":
        return study._import(member)
    return study._analyse(kind, member)


def _worker_step(folder: str, plan: StudyPlan, kind: str, member) -> list[str]:
    """A step in a worker process (`vitlens.parallel`): the study folder's lock stays with the
    parent; each run folder is locked by its own Trainer as usual."""
    outputs = run_step(Study(folder, plan, quiet=True), kind, member)
    return [str(p) for p in outputs]
