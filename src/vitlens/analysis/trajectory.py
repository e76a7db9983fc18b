"""The optimization trajectory in polar coordinates (paper Fig. 1b; notes §1.6).

From weight snapshots w_0, ..., w_T of one run (the trainer writes `RUN/snapshots/epochNNNN.
safetensors`) and the optimum w* (by default the last snapshot), with displacement
Delta_t = w_t - w*:

    r_t = ||Delta_t|| / ||Delta_0||,
    theta_t = arccos(<Delta_t, Delta_0> / (||Delta_t|| ||Delta_0||))

"ViT converges to the optimum along a smooth trajectory" while ResNet's angle swings. Norms and
inner products are accumulated tensor by tensor in float64, so only w_0, w* and one snapshot are
in memory at a time. BatchNorm statistics (running_mean/var, num_batches_tracked) are buffers,
not weights, and are left out by default, as is every non-floating tensor.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from vitlens.analysis.registry import register_analysis
from vitlens.analysis.result import Provenance, Result
from vitlens.analysis.spec import AnalysisSpec, Figure, Inputs
from vitlens.errors import VitlensError

DEFAULT_EXCLUDE = (r"running_mean$", r"running_var$", r"num_batches_tracked$")
_EPOCH = re.compile(r"epoch(\d+)\.safetensors$")


@dataclass(frozen=True)
class TrajectoryResult(Result):
    """Polar trajectory of one run.

    Attributes:
        epochs: Epoch of each snapshot, ascending.
        radius: ||w_t - w*|| / ||w_0 - w*||.
        angle_deg: Angle between w_t - w* and w_0 - w*, in degrees in [0, 180] (0 where
            w_t = w*, where it is undefined).
        distance: ||w_t - w*|| (unnormalized).
        reference_epoch: Epoch of w* (-1 if it came from a separate file).
        reference: Path of w*.
        n_values: Number of weight values compared; excluded: tensor names left out.
    """

    analysis: ClassVar[str] = "trajectory"

    epochs: list[int] = field(default_factory=list)
    radius: list[float] = field(default_factory=list)
    angle_deg: list[float] = field(default_factory=list)
    distance: list[float] = field(default_factory=list)
    reference_epoch: int = -1
    reference: str = ""
    n_values: int = 0
    excluded: list[str] = field(default_factory=list)


def find_snapshots(source: str | Path) -> list[tuple[int, Path]]:
    """`(epoch, path)` of every `epochNNNN.safetensors` in a run folder or its `snapshots/`.

    Raises:
        VitlensError: No snapshots there.
    """
    folder = Path(source)
    if (folder / "snapshots").is_dir():
        folder = folder / "snapshots"
    found = sorted(
        (int(m.group(1)), p)
        for p in folder.glob("epoch*.safetensors")
        if (m := _EPOCH.search(p.name))
    )
    if not found:
        raise VitlensError(
            f"no weight snapshots (epochNNNN.safetensors) in {folder}; train with snapshots on "
            "(the trainer's snapshot_every option) to record a trajectory"
        )
    return found


def _load(path: Path, exclude: Sequence[str]) -> tuple[dict[str, torch.Tensor], list[str]]:
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except Exception as err:  # safetensors raises several kinds for damaged files
        raise VitlensError(f"cannot read weight snapshot {path}: {err}") from None
    keep, dropped = {}, []
    for name, t in tensors.items():
        if not t.is_floating_point() or any(re.search(p, name) for p in exclude):
            dropped.append(name)
        else:
            keep[name] = t
    return keep, dropped


def polar_trajectory(
    snapshots: str | Path | Sequence[tuple[int, str | Path]],
    *,
    reference: str | Path | None = None,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    provenance: Provenance | None = None,
) -> TrajectoryResult:
    """Radius and angle of every snapshot relative to the optimum.

    Args:
        snapshots: A run folder, its `snapshots/` folder, or `(epoch, path)` pairs.
        reference: Weights w* as a safetensors file; None uses the last snapshot.
        exclude: Regex patterns of tensor names to leave out (default: BatchNorm statistics).
        provenance: What to record about the run; wall time is filled in.

    Raises:
        VitlensError: Fewer than two snapshots, mismatched tensors, or w_0 = w*.
    """
    started = time.perf_counter()
    if isinstance(snapshots, str | Path):
        found = find_snapshots(snapshots)
    else:
        found = sorted((int(e), Path(p)) for e, p in snapshots)
    if len(found) < 2 and reference is None:
        raise VitlensError("a trajectory needs at least two snapshots (w_0 and w*)")
    ref_path = Path(reference) if reference is not None else found[-1][1]
    ref_epoch = -1 if reference is not None else found[-1][0]
    w_star, dropped = _load(ref_path, exclude)
    w_0, _ = _load(found[0][1], exclude)
    if set(w_0) != set(w_star):
        raise VitlensError(
            f"{found[0][1]} and {ref_path} hold different tensors: "
            f"{sorted(set(w_0) ^ set(w_star))[:5]}"
        )
    d0 = {n: w_0[n].double() - w_star[n].double() for n in w_star}
    norm0 = math.sqrt(sum(float(d.pow(2).sum()) for d in d0.values()))
    if norm0 == 0.0:
        raise VitlensError(f"the first snapshot {found[0][1]} equals the reference weights")
    epochs, radius, angle, distance = [], [], [], []
    for epoch, path in found:
        w_t, _ = _load(path, exclude)
        if set(w_t) != set(w_star):
            raise VitlensError(f"snapshot {path} holds different tensors than {ref_path}")
        sq, dot = 0.0, 0.0
        for n, ref in w_star.items():
            d = w_t[n].double() - ref.double()
            sq += float(d.pow(2).sum())
            dot += float((d * d0[n]).sum())
        norm = math.sqrt(sq)
        cos = dot / (norm * norm0) if norm > 0 else 1.0
        epochs.append(epoch)
        distance.append(norm)
        radius.append(norm / norm0)
        angle.append(math.degrees(math.acos(max(-1.0, min(1.0, cos)))))
    stats = Provenance.now() if provenance is None else provenance
    return TrajectoryResult(
        provenance=dataclasses.replace(stats, wall_seconds=time.perf_counter() - started),
        epochs=epochs,
        radius=radius,
        angle_deg=angle,
        distance=distance,
        reference_epoch=ref_epoch,
        reference=str(ref_path),
        n_values=sum(t.numel() for t in w_star.values()),
        excluded=sorted(dropped),
    )


# -- spec -----------------------------------------------------------------------------------------


def _run(inputs: Inputs) -> TrajectoryResult:
    return polar_trajectory(inputs.checkpoint, provenance=inputs.provenance, **inputs.options)


SPEC = register_analysis(
    AnalysisSpec(
        name="trajectory",
        summary="optimization trajectory in polar form from the run's weight snapshots",
        run=_run,
        data="snapshots",
        section="optimization",
        order=80,
        figures=(
            Figure(
                "trajectory",
                "vitlens.report.figures_surface:plot_trajectory",
                "Optimization trajectory in polar form: distance to the final weights against "
                "the angle to the initial displacement (paper Fig. 1b).",
            ),
        ),
    )
)
