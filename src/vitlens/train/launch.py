"""From command-line choices to a run: config merging and the resume decision.

A new run's config is the preset, then the `--config` file, then the options given. A resumed
run's config is the run's own `config.yaml`, then the file, then the options; the checkpoint
then decides whether those changes are allowed (see `vitlens.train.resume`).
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from vitlens.config import TrainConfig, config_from_dict, load_config_file, make_config
from vitlens.errors import VitlensError


def training_config(
    model: str,
    *,
    preset: str = "quick",
    config_file: str | Path | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    **options: Any,
) -> TrainConfig:
    """The validated config of a new or resumed run; options of None are not given."""
    given = {k: v for k, v in options.items() if v is not None}
    file_values = load_config_file(config_file) if config_file else {}
    if not resume:
        return make_config(preset, **{**file_values, **given, "model": model})
    if out is None:
        raise VitlensError("--resume needs --out, the run folder to continue")
    saved = Path(out) / "config.yaml"
    if not saved.is_file():
        raise VitlensError(f"cannot resume: {saved} does not exist")
    base = config_from_dict(load_config_file(saved)).to_dict()
    if base["model"] != model:
        raise VitlensError(f"{out} trains {base['model']}, not {model}")
    return config_from_dict({**base, **file_values, **given})


def default_run_folder(cfg: TrainConfig) -> Path:
    """runs/MODEL-DATASET-TIME."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.model}-{cfg.dataset.replace(':', '_').replace('/', '_')}-{stamp}"


def train(
    model: str,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    quiet: bool = False,
    preset: str = "quick",
    config_file: str | Path | None = None,
    **options: Any,
) -> tuple[TrainConfig, dict[str, Any], Path]:
    """Train (or continue) a run; returns its config, last metrics row and folder."""
    from vitlens.train.loop import Trainer

    cfg = training_config(
        model, preset=preset, config_file=config_file, out=out, resume=resume, **options
    )
    folder = Path(out) if out is not None else default_run_folder(cfg)
    return cfg, Trainer(cfg, folder, resume=resume, quiet=quiet).run(), folder
