"""The AlterNet build-up rule as a search (paper §4.1).

Start from a CNN (an AlterNet with no MSA blocks: a pre-activation ResNet). Replace the last Conv
block of the last stage by an MSA block; keep the change if accuracy improves and try one more in
the same stage, otherwise move to the end of the previous stage. Every trained candidate and its
accuracy is kept in the Result. The shipped datasets have no separate validation split, so the
held-out test split decides; say so when quoting the numbers.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from vitlens.analysis.result import Provenance, Result
from vitlens.errors import ConfigError


@dataclass(frozen=True)
class BuildupResult(Result):
    """Every candidate of a build-up search.

    Attributes:
        base: the registered AlterNet configuration searched over.
        depths: blocks per stage.
        candidates: in training order, dicts with `msa` (MSA blocks per stage), `accuracy`,
            `nll`, `kept` (whether the search accepted it) and `run` (its run folder).
        best_msa: the accepted layout at the end of the search.
        decided_on: which split's accuracy decided.
    """

    analysis: ClassVar[str] = "buildup"

    base: str = ""
    depths: list[int] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    best_msa: list[int] = field(default_factory=list)
    decided_on: str = "test"


def buildup(
    out: str | Path,
    *,
    base: str = "alternet_nano",
    dataset: str = "fashion-mnist-mini",
    epochs: int = 3,
    fraction: float = 0.5,
    max_candidates: int = 6,
    seed: int = 0,
    device: str = "auto",
    precision: str = "auto",
    data_dir: str | None = None,
    quiet: bool = False,
) -> BuildupResult:
    """Run the search; candidates already trained in `out` are reused, not retrained."""
    from vitlens.config import make_config
    from vitlens.models import MODELS
    from vitlens.models.alternet import AlterNet
    from vitlens.train import Trainer
    from vitlens.train.checkpoint import read_checkpoint

    if base not in MODELS or MODELS[base].family is not AlterNet:
        alternets = [n for n, s in MODELS.items() if s.family is AlterNet]
        raise ConfigError(f"buildup searches an AlterNet configuration; choose from {alternets}")
    defaults = {k: v.default for k, v in inspect.signature(AlterNet.__init__).parameters.items()}
    depths = list(MODELS[base].config.get("depths", defaults["depths"]))
    out = Path(out)
    candidates: list[dict[str, Any]] = []

    def train(msa: list[int]) -> dict[str, Any]:
        run = out / "runs" / ("msa-" + "-".join(map(str, msa)))
        final = run / "checkpoints" / "final.json"
        if not final.exists():
            cfg = make_config(
                "quick",
                model=base,
                model_args={"msa": msa},
                dataset=dataset,
                epochs=epochs,
                warmup_epochs=min(1.0, epochs / 3),
                fraction=fraction,
                seed=seed,
                device=device,
                precision=precision,
                data_dir=data_dir,
            )
            resume = (run / "checkpoints" / "last.json").exists()
            Trainer(cfg, run, resume=resume, quiet=quiet).run()
        record, _ = read_checkpoint(final)
        entry = {
            "msa": list(msa),
            "accuracy": record["metrics"]["test_acc"],
            "nll": record["metrics"]["test_nll"],
            "kept": False,
            "run": str(run),
        }
        candidates.append(entry)
        return entry

    best = train([0] * len(depths))
    best["kept"] = True
    stage = len(depths) - 1
    while stage >= 0 and len(candidates) < max_candidates:
        trial = list(best["msa"])
        trial[stage] += 1
        if 2 * trial[stage] > depths[stage]:  # no Conv block left to pair with another MSA
            stage -= 1
            continue
        entry = train(trial)
        if entry["accuracy"] > best["accuracy"]:
            entry["kept"] = True
            best = entry
        else:
            stage -= 1
    result = BuildupResult(
        provenance=Provenance.now(model=base, dataset=dataset, split="test", seed=seed),
        base=base,
        depths=depths,
        candidates=candidates,
        best_msa=list(best["msa"]),
    )
    result.save(out / "buildup.json")
    return result
