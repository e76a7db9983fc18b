"""The paper as one pipeline: train the zoo, run every registered analysis, write the report.

The folder layout is `vitlens.folders.StudyFolder`'s. Every step writes its outputs atomically
and is then marked done in `steps.json`, so `vitlens study --resume DIR` redoes no finished step;
a training step that was interrupted continues from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vitlens import distributed as dist
from vitlens.atomic import visible_entries
from vitlens.atomic import write_text as atomic_write_text
from vitlens.config import check_field_types
from vitlens.errors import ConfigError, UnknownNameError, VitlensError
from vitlens.folders import StudyFolder
from vitlens.locks import folder_lock
from vitlens.presets import NANO, STUDY_PRESETS


def _all_analyses() -> list[str]:
    from vitlens.analysis.registry import analysis_names

    return analysis_names()


@dataclass(frozen=True)
class StudyPlan:
    """What a study trains and analyses; saved as `study.json`. Change it with
    `dataclasses.replace` (or `with_overrides`), which validates again.

    `budget` maps an analysis to `[batches, batch_size]`; `options` maps an analysis to keyword
    options for it (e.g. the landscape's grid size at this scale).
    """

    preset: str = "quick"
    models: list[str] = field(default_factory=lambda: list(NANO))
    dataset: str = "fashion-mnist-mini"
    fraction: float = 1.0
    epochs: int = 3
    train_preset: str = "quick"
    analyses: list[str] = field(default_factory=_all_analyses)
    budget: dict[str, list] = field(default_factory=dict)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: int = 0
    seeds: int = 1
    ablations: dict[str, Any] | None = None  # `vitlens.presets.Ablations` as a dict; None: none
    runs: dict[str, str] = field(default_factory=dict)  # label -> run folder, not trained here
    data_dir: str | None = None
    device: str = "auto"
    precision: str = "auto"  # auto, fp32 or bf16 (vitlens.train.precision)

    def __post_init__(self):
        self.validate()

    @staticmethod
    def from_preset(preset: str, **overrides: Any) -> StudyPlan:
        """The preset's plan, with each analysis's budget at that preset, then `overrides`
        (None means "keep"; `ANALYSIS_OPTION=value` sets one analysis option)."""
        from vitlens.analysis.registry import analyses

        if preset not in STUDY_PRESETS:
            raise ConfigError(f"unknown study preset {preset!r}; choose from {list(STUDY_PRESETS)}")
        base = STUDY_PRESETS[preset]
        specs = analyses()
        plan = StudyPlan(
            preset=preset,
            models=list(base.models),
            dataset=base.dataset,
            fraction=base.fraction,
            epochs=base.epochs,
            train_preset=base.train_preset,
            seeds=base.seeds,
            ablations=None if base.ablations is None else asdict(base.ablations),
            analyses=[s.name for s in specs],
            budget={s.name: [s.budget(preset).batches, s.budget(preset).batch_size] for s in specs},
            options={
                s.name: dict(s.budget(preset).options) for s in specs if s.budget(preset).options
            },
        )
        return plan.with_overrides(**overrides)

    @staticmethod
    def from_json(data: dict[str, Any], *, where: Path) -> StudyPlan:
        """The plan saved as `study.json`; keys of older plans (such as `landscape_steps`)
        become analysis options."""
        known = {f.name for f in dataclasses.fields(StudyPlan)}
        fields_ = {k: v for k, v in data.items() if k in known}
        legacy = {k: v for k, v in data.items() if k not in known}
        for key in legacy:
            _analysis_option(key)  # an analysis option, or a clear error naming the key
        check_field_types(StudyPlan, fields_, str(where))
        return StudyPlan(**fields_).with_overrides(**legacy)

    def with_overrides(self, **overrides: Any) -> StudyPlan:
        """A copy with `overrides` applied (None values are ignored), validated."""
        known = {f.name for f in dataclasses.fields(self)}
        fields_ = {k: v for k, v in overrides.items() if k in known and v is not None}
        options = {k: dict(v) for k, v in self.options.items()}
        for key, value in overrides.items():
            if key not in known and value is not None:
                analysis, option = _analysis_option(key)
                options.setdefault(analysis, {})[option] = value
        return dataclasses.replace(self, **fields_, options=fields_.get("options", options))

    def validate(self) -> None:
        from vitlens.analysis.registry import analysis_names
        from vitlens.models import MODELS

        if not self.models:
            raise ConfigError("a study needs at least one model")
        if self.runs:
            return self._validate_runs()
        unknown = [m for m in self.models if m not in MODELS]
        if unknown:
            raise UnknownNameError(f"unknown model(s) {unknown}; see `vitlens models`")
        names = analysis_names()
        bad = [a for a in self.analyses if a not in names]
        if bad:
            raise UnknownNameError(f"unknown analysis {bad}; choose from {', '.join(names)}")
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ConfigError(f"seeds must be a whole number of at least 1, got {self.seeds!r}")
        _check_ablations(self.ablations)
        # The training rules (epochs, fraction, seed, device, ...) are the training config's own.
        from vitlens.ablations import study_members

        for member in study_members(self):
            self.train_config(member)

    def _validate_runs(self) -> None:
        from vitlens.train.runs import resolve_checkpoint

        if list(self.runs) != list(self.models):
            raise ConfigError("a study of existing runs studies exactly those runs")
        if self.seeds != 1 or self.ablations:
            raise ConfigError("a study of existing runs trains nothing: no --seeds, no ablations")
        for path in self.runs.values():
            resolve_checkpoint(path)  # a clear error if it is not a run folder

    def run_path(self, key: str, folder: StudyFolder) -> Path:
        """Where the run of member `key` lives: an existing run, or `runs/KEY/` of the study."""
        return Path(self.runs[key]) if key in self.runs else folder.run(key)

    def family(self, model: str) -> str:
        """The family of a member: its ModelSpec's, or read from an existing run's blocks."""
        if model not in self.runs:
            return model_family(model)
        return run_family(self.runs[model])

    def train_config(self, member):
        """The training config of one member of the study (validated by `TrainConfig`)."""
        from vitlens.config import make_config

        return make_config(
            self.train_preset,
            model=member.model,
            model_args=dict(member.model_args),
            dataset=self.dataset,
            epochs=self.epochs,
            warmup_epochs=min(1.0, self.epochs / 3) if self.train_preset == "quick" else None,
            fraction=self.fraction * member.fraction,
            seed=self.seed + member.seed,
            data_dir=self.data_dir,
            device=self.device,
            precision=self.precision,
            snapshot_every=1,
        )


def _check_ablations(ablations: dict[str, Any] | None) -> None:
    from vitlens.presets import Ablations

    if ablations is None:
        return
    try:
        typed = Ablations(**ablations)
    except TypeError as err:
        raise ConfigError(f"ablations: {err}") from None
    if not all(0 < f < 1 for f in typed.fractions) or not 0 < typed.scale <= 1:
        raise ConfigError("ablation fractions must be in (0, 1) and their scale in (0, 1]")
    if any(w < 1 for w in typed.windows) or any(h < 1 for h in typed.heads):
        raise ConfigError("ablation windows and head counts must be at least 1")


def _analysis_option(key: str) -> tuple[str, str]:
    """`landscape_steps` -> ("landscape", "steps"), for any registered analysis and option."""
    from vitlens.analysis.registry import analyses

    for spec in analyses():
        prefix = spec.name + "_"
        option = key[len(prefix) :]
        if key.startswith(prefix) and option in {o.name for o in spec.options}:
            return spec.name, option
    raise ConfigError(f"a study has no setting {key!r}")


def model_family(model: str) -> str:
    """The family of a zoo model (`vit`, `pit`, `swin`, `resnet`, `alternet`)."""
    from vitlens.models import MODELS

    return MODELS[model].family.__name__.lower()


@functools.cache
def run_family(path: str) -> str:
    """The family of the model in a run folder: its zoo model's, or a guess from its block kinds
    (`transformer`: attention and no convolution blocks; `cnn`: the reverse; else `hybrid`)."""
    from vitlens.anatomy import anatomy_of
    from vitlens.models import MODELS
    from vitlens.train.runs import load_model

    model, record = load_model(path, "cpu")
    name = record.get("model_spec", {}).get("name")
    if name in MODELS:
        return model_family(name)
    kinds = anatomy_of(model, need_blocks=False).kinds()
    if "msa" in kinds:
        return "transformer" if "conv" not in kinds else "hybrid"
    return "cnn" if "conv" in kinds else "unknown"


def runs_overrides(paths: list[str], dataset: str | None) -> dict[str, Any]:
    """Plan settings for a study of existing run folders: each labelled by its folder name."""
    labels: dict[str, str] = {}
    for path in paths:
        label = Path(path).resolve().name or "run"
        while label in labels:
            label += "'"
        labels[label] = str(Path(path).resolve())
    return dict(runs=labels, models=list(labels), seeds=1, ablations={}, dataset=dataset or "")


def start_study(
    *,
    preset: str,
    out: Path | None,
    resume: Path | None,
    quiet: bool,
    ablations: bool | None,
    runs: list[str] | None,
    **overrides: Any,
) -> Study:
    """The study `vitlens study` runs: `resume` reopened, or a new one from `preset` in `out`
    (default `studies/PRESET-TIME`), with `overrides` (None: keep) applied."""
    import datetime

    from vitlens.device import resolve_device

    # Under torchrun, join the process group before any rank touches the study folder.
    dist.init(resolve_device(overrides.get("device") or "auto"))
    if ablations is False:
        overrides["ablations"] = {}  # an empty set of ablations: none are trained
    if runs:
        overrides.update(runs_overrides(runs, overrides.get("dataset")))
    if resume is not None:
        return Study.open(resume, quiet=quiet, **overrides)
    plan = StudyPlan.from_preset(preset, **overrides)
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("studies") / f"{preset}-{stamp}"
    return Study.create(out, plan, quiet=quiet)


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
            atomic_write_text(study.folder.plan_file, json.dumps(asdict(plan), indent=1))
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
            (f"train/{m.key}", ("train", m)) for m in members if m.key not in self.plan.runs
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
        pending = [(n, job) for n, job in steps if self.steps.get(n, {}).get("status") != "done"]
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
            "outputs": [str(p) for p in outputs],
        }
        self._save_steps()

    def _step(self, name: str, work) -> None:
        if self.steps.get(name, {}).get("status") == "done":
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
            self.plan.train_config(member), out, resume=resume, quiet=self.quiet,
            evaluate_every_epoch=False,
        ).run()  # fmt: skip
        return [out]

    @functools.cache  # noqa: B019  (a few models per study; the Study lives for one run)
    def _kinds(self, key: str) -> set[str]:
        import torch

        from vitlens.anatomy import anatomy_of
        from vitlens.models import create_model
        from vitlens.train.runs import load_model

        if key in self.plan.runs:
            return anatomy_of(load_model(self.plan.runs[key], "cpu")[0]).kinds()
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
    return study._analyse(kind, member)


def _worker_step(folder: str, plan: StudyPlan, kind: str, member) -> list[str]:
    """A step in a worker process (`vitlens.parallel`): the study folder's lock stays with the
    parent; each run folder is locked by its own Trainer as usual."""
    outputs = run_step(Study(folder, plan, quiet=True), kind, member)
    return [str(p) for p in outputs]
