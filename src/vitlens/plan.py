"""What a study is: the `StudyPlan` (models, data, budgets, seeds, ablations, analysis options)
and the helpers that read a model's family. Torch-free at import, so the report can read a plan
without the pipeline that runs it (`vitlens.study`).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vitlens.config import check_field_types
from vitlens.errors import ConfigError, UnknownNameError
from vitlens.folders import StudyFolder
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
    imports: dict[str, str] = field(default_factory=dict)  # label -> pretrained source to import
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
            analyses=[s.name for s in specs if not base.imports or _on_test_images(s)],
            imports=dict(base.imports),
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
        if self.imports:
            return self._validate_imports()
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

    def _validate_imports(self) -> None:
        from vitlens.analysis.registry import get_analysis
        from vitlens.models.foreign import parse_source

        if list(self.imports) != list(self.models) or self.runs:
            raise ConfigError("a study of pretrained models studies exactly its imports")
        if self.seeds != 1 or self.ablations:
            raise ConfigError("a study of pretrained models trains nothing: no seeds, no ablations")
        for source in self.imports.values():
            if parse_source(source)[0] not in ("timm", "torchvision", "hf"):
                raise ConfigError(f"{source}: a study imports timm:, torchvision: or hf: models")
        for name in self.analyses:
            if not _on_test_images(get_analysis(name)):
                raise ConfigError(
                    f"{name} needs the models' training data; a study of pretrained models runs "
                    "the analyses of test images only"
                )

    def run_path(self, key: str, folder: StudyFolder) -> Path:
        """Where the run of member `key` lives: an existing run, or `runs/KEY/` of the study."""
        return Path(self.runs[key]) if key in self.runs else folder.run(key)

    def family(self, model: str) -> str:
        """The family of a member: its ModelSpec's, or read from an existing run's blocks."""
        if model in self.imports:
            return source_family(self.imports[model])
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
def source_family(source: str) -> str:
    """The family of an outside model, read from the blocks of a random-init copy."""
    from vitlens.anatomy import anatomy_of
    from vitlens.models import create_model

    return kinds_family(anatomy_of(create_model(source), need_blocks=False).kinds())


def kinds_family(kinds: set[str]) -> str:
    """`transformer` (attention, no convolution blocks), `cnn` (the reverse) or `hybrid`."""
    if "msa" in kinds:
        return "transformer" if "conv" not in kinds else "hybrid"
    return "cnn" if "conv" in kinds else "unknown"


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
    return kinds_family(anatomy_of(model, need_blocks=False).kinds())


def runs_overrides(paths: list[str], dataset: str | None) -> dict[str, Any]:
    """Plan settings for a study of existing run folders: each labelled by its folder name."""
    labels: dict[str, str] = {}
    for path in paths:
        label = Path(path).resolve().name or "run"
        while label in labels:
            label += "'"
        labels[label] = str(Path(path).resolve())
    return dict(runs=labels, models=list(labels), seeds=1, ablations={}, dataset=dataset or "")


def _on_test_images(spec) -> bool:
    """Whether an analysis can run on a pretrained model's test images alone."""
    return spec.split == "test" or spec.held_out
