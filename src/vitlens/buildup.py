"""The AlterNet build-up rule as a search (paper §4.1), decided on a validation split.

Start from a CNN (an AlterNet with no MSA blocks: a pre-activation ResNet). Replace the last Conv
block of the last stage by an MSA block; keep the change if accuracy improves and try one more in
the same stage, otherwise move to the end of the previous stage.

Keeping or rejecting a candidate by test accuracy would tune the architecture on the test set and
bias the accuracy it reports. So a class-balanced, seeded validation split is carved from the
training set first; every candidate trains on (a fraction of) the rest and the search decides on
validation accuracy alone. Only after the search has finished is each candidate evaluated on the
test split, reported in a separate column (`test_accuracy`) and for the final choice.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch

from vitlens.analysis.result import BuildupResult, Provenance
from vitlens.atomic import write_text as atomic_write_text
from vitlens.errors import ConfigError
from vitlens.locks import holding_lock

VALIDATION_FRACTION = 0.1  # share of each class of the training set held out for deciding
_VALIDATION_SALT = 0x56414C  # separates the validation draw from the training-fraction draw
_HOLDOUT_FILE = "holdout.json"


def validation_split(
    labels: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-balanced, seeded (validation, rest) indices into a training set's `labels`."""
    from vitlens.data import class_balanced_subset
    from vitlens.data.dataset import mix_seed

    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"the validation fraction must be in (0, 1), got {fraction}")
    val = class_balanced_subset(labels, fraction, mix_seed(seed, _VALIDATION_SALT))
    held = torch.zeros(len(labels), dtype=torch.bool)
    held[val] = True
    return val, torch.nonzero(~held).flatten()


def _holdout_trainer(config, run: Path, val_fraction: float, **kw):
    """A Trainer that trains on the training set minus the validation split and evaluates on the
    validation split, so its run's `test_*` metrics are validation metrics (the search folder's
    holdout.json records the split). It never loads the test split."""
    from vitlens.data import build_transform, class_balanced_subset, load_dataset
    from vitlens.train import Trainer

    class HoldoutTrainer(Trainer):
        def _data(self):
            cfg = self.cfg
            kw = dict(data_dir=cfg.data_dir, download=cfg.download, image_size=cfg.image_size)
            full = load_dataset(cfg.dataset, "train", **kw)
            info = full.info
            val_idx, rest = validation_split(full.labels, val_fraction, cfg.seed)
            if cfg.fraction < 1:
                rest = rest[class_balanced_subset(full.labels[rest], cfg.fraction, cfg.seed)]
            train = full.subset(rest).with_transform(build_transform(cfg.augment, info, train=True))
            train.seed = cfg.seed
            val = full.subset(val_idx).with_transform(build_transform("none", info, train=False))
            return train, val, info, info.image_size

    return HoldoutTrainer(config, run, **kw)


def _check_holdout(out: Path, holdout: dict[str, Any]) -> None:
    """Record the validation split of the search in `out`, or refuse a folder made with another.

    Runs trained by another search (one that decided on test, or on another split) must not be
    reused: their accuracy would be on the wrong images.
    """
    path = out / _HOLDOUT_FILE
    found = json.loads(path.read_text()) if path.exists() else None
    if found is None and not any((out / "runs").glob("*")):
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(holdout))
    elif found != holdout:
        raise ConfigError(
            f"the runs in {out} were trained with validation split {found}, not {holdout}; "
            "choose another --out for this search"
        )


def _search(
    train, depths: list[int], max_candidates: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The build-up rule on validation accuracy; returns (candidates, the accepted one)."""
    candidates = [train([0] * len(depths))]
    best = candidates[0]
    best["kept"] = True
    stage = len(depths) - 1
    while stage >= 0 and len(candidates) < max_candidates:
        trial = list(best["msa"])
        trial[stage] += 1
        if 2 * trial[stage] > depths[stage]:  # no Conv block left to pair with another MSA
            stage -= 1
            continue
        entry = train(trial)
        candidates.append(entry)
        if entry["accuracy"] > best["accuracy"]:
            entry["kept"] = True
            best = entry
        else:
            stage -= 1
    return candidates, best


def _add_test_columns(candidates: list[dict[str, Any]], device: str, data_dir) -> None:
    """Test metrics of each candidate, after the search has decided (reported, never used)."""
    from vitlens.train.evaluation import evaluate_checkpoint

    for entry in candidates:
        final = Path(entry["run"]) / "checkpoints" / "final.json"
        metrics = evaluate_checkpoint(final, split="test", device=device, data_dir=data_dir)
        entry["test_accuracy"] = metrics["acc"]
        entry["test_nll"] = metrics["nll"]


def _train_candidate(
    out: Path, msa: list[int], settings: dict[str, Any], holdout: dict, quiet: bool
) -> dict[str, Any]:
    """Train (or reuse) the candidate with `msa` MSA blocks per stage; its validation metrics."""
    from vitlens.config import make_config
    from vitlens.train.checkpoint import read_checkpoint

    run = out / "runs" / ("msa-" + "-".join(map(str, msa)))
    final = run / "checkpoints" / "final.json"
    if not final.exists():
        warmup = min(1.0, settings["epochs"] / 3)
        cfg = make_config("quick", model_args={"msa": msa}, warmup_epochs=warmup, **settings)
        resume = (run / "checkpoints" / "last.json").exists()
        _holdout_trainer(cfg, run, holdout["fraction"], resume=resume, quiet=quiet).run()
    record, _ = read_checkpoint(final)
    metrics = record["metrics"]  # the holdout trainer's "test" is the validation split
    return {
        "msa": list(msa),
        "accuracy": metrics["test_acc"],
        "nll": metrics["test_nll"],
        "kept": False,
        "run": str(run),
    }


@holding_lock("out", "buildup folder")
def buildup(
    out: str | Path,
    *,
    base: str = "alternet_nano",
    dataset: str = "fashion-mnist-mini",
    epochs: int = 3,
    fraction: float = 0.5,
    val_fraction: float = VALIDATION_FRACTION,
    max_candidates: int = 6,
    seed: int = 0,
    device: str = "auto",
    precision: str = "auto",
    data_dir: str | None = None,
    quiet: bool = False,
) -> BuildupResult:
    """Run the search; candidates already trained in `out` are reused, not retrained.

    `fraction` is the class-balanced share of the training set left after the validation split
    (`val_fraction` of each class, seeded by `seed`) is held out.
    """
    from vitlens.data import load_dataset
    from vitlens.models import MODELS
    from vitlens.models.alternet import AlterNet

    if base not in MODELS or MODELS[base].family is not AlterNet:
        alternets = [n for n, s in MODELS.items() if s.family is AlterNet]
        raise ConfigError(f"buildup searches an AlterNet configuration; choose from {alternets}")
    labels = load_dataset(dataset, "train", data_dir=data_dir).labels
    val_idx, rest = validation_split(labels, val_fraction, seed)
    defaults = {k: v.default for k, v in inspect.signature(AlterNet.__init__).parameters.items()}
    depths = list(MODELS[base].config.get("depths", defaults["depths"]))
    holdout = {"fraction": val_fraction, "seed": seed, "class_balanced": True}
    _check_holdout(Path(out), holdout)
    settings = dict(model=base, dataset=dataset, epochs=epochs, fraction=fraction, seed=seed)
    settings.update(device=device, precision=precision, data_dir=data_dir)
    candidates, best = _search(
        lambda msa: _train_candidate(Path(out), msa, settings, holdout, quiet),
        depths,
        max_candidates,
    )
    _add_test_columns(candidates, device, data_dir)
    result = BuildupResult(
        provenance=Provenance.now(model=base, dataset=dataset, split="validation", seed=seed),
        base=base,
        depths=depths,
        candidates=candidates,
        best_msa=list(best["msa"]),
        best_accuracy=best["accuracy"],
        best_test_accuracy=best["test_accuracy"],
        # train_size: what is left for training before `fraction` is taken of it
        validation={**holdout, "size": len(val_idx), "train_size": len(rest)},
    )
    result.save(Path(out) / "buildup.json")
    return result
