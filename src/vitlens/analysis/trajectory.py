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

Beside it, Li et al.'s (2018, "Visualizing the Loss Landscape of Neural Nets", §7) PCA view: the
differences w_t - w* of the snapshots (all but w* itself) are stacked as rows of a matrix M,
centred as scikit-learn's PCA in their code does (`pca_center`), and the optimisation path is
drawn in the plane of M's top-2 right singular vectors (principal directions), each snapshot at
the projection of w_t - w* (w* at the origin). Only the T x T Gram matrix of the differences is
formed, tensor by tensor, so memory holds one tensor of every snapshot at a time, never all
weights: with M_c = C M (C the centring matrix) and C G C = U S^2 U^T, the directions are
V = M^T C U / S and the coordinates M V = G C U / S. Each direction's sign is chosen so that the
first snapshot has a non-negative coordinate.
"""

from __future__ import annotations

import contextlib
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
from vitlens.analysis.spec import AnalysisSpec, Figure, Inputs, Option
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
        pca_coordinates: Per snapshot, its (x, y) in the plane of the top-2 principal
            directions of the snapshot differences (Li et al. 2018); [] when not computed.
        pca_explained: Fraction of the variance of the differences along each direction.
        pca_center: Whether the differences were centred before the SVD (as sklearn's PCA).
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
    pca_coordinates: list[list[float]] = field(default_factory=list)
    pca_explained: list[float] = field(default_factory=list)
    pca_center: bool = True


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
    pca: bool = True,
    pca_center: bool = True,
    provenance: Provenance | None = None,
) -> TrajectoryResult:
    """Radius and angle of every snapshot relative to the optimum (and the PCA view).

    Args:
        snapshots: A run folder, its `snapshots/` folder, or `(epoch, path)` pairs.
        reference: Weights w* as a safetensors file; None uses the last snapshot.
        exclude: Regex patterns of tensor names to leave out (default: BatchNorm statistics).
        pca: Also project the path on the top-2 principal directions (`trajectory_pca`).
        pca_center: Centre the differences before the SVD (Li et al.'s sklearn PCA does).
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
    w_star, dropped = _load(ref_path, exclude)
    polar = _polar(found, ref_path, w_star, exclude)
    stats = Provenance.now() if provenance is None else provenance
    paths = [p for _, p in found]
    view = trajectory_pca(paths, ref_path, sorted(w_star), pca_center) if pca else None
    return TrajectoryResult(
        provenance=dataclasses.replace(stats, wall_seconds=time.perf_counter() - started),
        **polar,
        reference_epoch=-1 if reference is not None else found[-1][0],
        reference=str(ref_path),
        n_values=sum(t.numel() for t in w_star.values()),
        excluded=sorted(dropped),
        pca_coordinates=view.coordinates.tolist() if view else [],
        pca_explained=view.explained.tolist() if view else [],
        pca_center=pca_center,
    )


def _polar(found, ref_path: Path, w_star: dict[str, torch.Tensor], exclude) -> dict[str, list]:
    """epochs, radius, angle_deg and distance of every snapshot (one in memory at a time)."""
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
    out: dict[str, list] = {"epochs": [], "radius": [], "angle_deg": [], "distance": []}
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
        out["epochs"].append(epoch)
        out["distance"].append(norm)
        out["radius"].append(norm / norm0)
        out["angle_deg"].append(math.degrees(math.acos(max(-1.0, min(1.0, cos)))))
    return out


@dataclass(frozen=True)
class TrajectoryPCA:
    """The top-2 principal directions of snapshot differences and the path's coordinates.

    Attributes:
        coordinates: (T, 2) float64, the projection of each w_t - w* on the directions.
        explained: (2,) fraction of the (centred) variance along each direction.
        singular_values: (2,) of the (centred) difference matrix; 0 past its rank.
        directions: name -> (2, *shape) tensor of the two unit directions, if asked for.
    """

    coordinates: torch.Tensor
    explained: torch.Tensor
    singular_values: torch.Tensor
    directions: dict[str, torch.Tensor] | None = None


def _differences(handles, ref, name: str) -> torch.Tensor:
    star = ref.get_tensor(name).double().reshape(-1)
    return torch.stack([h.get_tensor(name).double().reshape(-1) - star for h in handles])


def trajectory_pca(
    paths: Sequence[str | Path],
    reference: str | Path,
    names: Sequence[str],
    center: bool = True,
    *,
    return_directions: bool = False,
) -> TrajectoryPCA:
    """Li et al.'s PCA of the differences w_t - w* (tensors `names`; see the module docstring).

    The snapshot equal to `reference`, if among `paths`, is a zero row: it is left out of the
    fit (it would only pull the centre towards w*) and sits at the origin.
    """
    from safetensors import safe_open

    with contextlib.ExitStack() as stack:
        handles = [stack.enter_context(safe_open(str(p), framework="pt")) for p in paths]
        ref = stack.enter_context(safe_open(str(reference), framework="pt"))
        gram = torch.zeros(len(paths), len(paths), dtype=torch.float64)
        for name in names:
            block = _differences(handles, ref, name)
            gram += block @ block.T
        fit = torch.tensor([Path(p).resolve() != Path(reference).resolve() for p in paths])
        u_scaled, values = _principal_axes(gram, fit, center)  # (T, 2): C U / S, and S
        coordinates = gram @ u_scaled
        sign = torch.where(coordinates[0] < 0, -1.0, 1.0).to(torch.float64)
        coordinates, u_scaled = coordinates * sign, u_scaled * sign
        directions = None
        if return_directions:
            directions = {
                n: (_differences(handles, ref, n).T @ u_scaled).T.reshape(
                    2, *ref.get_slice(n).get_shape()
                )
                for n in names
            }
    total = _centred(gram, fit, center).trace()
    explained = values**2 / total if total > 0 else torch.zeros(2, dtype=torch.float64)
    return TrajectoryPCA(coordinates, explained, values, directions)


def _centred(gram: torch.Tensor, fit: torch.Tensor, center: bool) -> torch.Tensor:
    """C G C restricted to the fitted rows, C the centring matrix (identity if not `center`)."""
    g = gram[fit][:, fit]
    if not center:
        return g
    c = torch.eye(len(g), dtype=g.dtype) - 1.0 / len(g)
    return c @ g @ c


def _principal_axes(gram: torch.Tensor, fit: torch.Tensor, center: bool):
    """(T, 2) weights W with directions V = M^T W (zero rows for unfitted snapshots), and S."""
    n_fit = int(fit.sum())
    if n_fit == 0:
        raise VitlensError("PCA of a trajectory needs a snapshot other than the reference")
    evals, evecs = torch.linalg.eigh(_centred(gram, fit, center))
    order = evals.argsort(descending=True)[:2]
    values = evals[order].clamp(min=0).sqrt()
    u = evecs[:, order]
    if center:
        u = u - u.mean(dim=0)  # C U
    scale = torch.where(values > 1e-12 * max(float(values[0]), 1e-300), 1 / values, 0.0)
    weights = torch.zeros(len(gram), 2, dtype=torch.float64)
    weights[fit, : len(order)] = u * scale
    padded = torch.zeros(2, dtype=torch.float64)
    padded[: len(order)] = values
    return weights, padded


# -- spec -----------------------------------------------------------------------------------------


def _run(inputs: Inputs) -> TrajectoryResult:
    return polar_trajectory(inputs.checkpoint, provenance=inputs.provenance, **inputs.options)


SPEC = register_analysis(
    AnalysisSpec(
        name="trajectory",
        summary="optimization trajectory from the run's weight snapshots: polar form and PCA",
        run=_run,
        function=polar_trajectory,
        data="snapshots",
        section="optimization",
        order=80,
        options=(
            Option(
                "pca", True, "also project the path on its top-2 principal directions", kind="bool"
            ),
        ),
        figures=(
            Figure(
                "trajectory",
                "vitlens.report.plots.trajectory:plot_trajectory",
                "Optimization trajectory. Left, in polar form: distance to the final weights "
                "against the angle to the initial displacement (paper Fig. 1b). Right: the path "
                "projected on the top-2 principal directions of the snapshots' differences from "
                "the final weights (Li et al. 2018).",
            ),
        ),
    )
)
