"""The Hessian of a model's loss as an operator: which parameters it is taken over, and products.

Shared by the Hessian spectrum (`analysis/hessian.py`) and the loss landscape's Hessian directions
(`analysis/landscape.py`), so neither analysis imports the other. Not an analysis itself: it
registers no spec.

- `ParamSelection` / `select_parameters` pick parameters by anatomy block kind, stage, block name or
  parameter-name prefix; `parameter_blocks` assigns each parameter to the block that first uses it.
- `HessianOperator` is a `vitlens.analysis.linalg.LinearOperator`. It runs the forward pass and
  the first backward (create_graph=True) ONCE per batch, under `explicit_attention` (fused SDPA
  has no double backward), and every product H v is one more backward through that retained
  graph (Pearlmutter 1994); `matmat` batches b products into one vmapped backward.
- The L2 convention is L2 = (weight_decay / 2) * sum ||theta||^2 over the selected parameters,
  applied analytically (H v + wd v), so the shift of every eigenvalue is exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from vitlens.analysis.loss_surface import (
    Criterion,
    model_state,
    nll_loss,
    restore_buffers,
    save_buffers,
    seeded_rng,
)
from vitlens.anatomy import Block, anatomy_of, describe, explicit_attention, tapping, unwrap
from vitlens.errors import ConfigError, VitlensError

L2_CONVENTION = (
    "L2 = (weight_decay / 2) * sum of squared parameter norms over the selected parameters; "
    "adds weight_decay * I to the Hessian"
)


# --------------------------------------------------------------------------- parameter selection


@dataclass(frozen=True)
class ParamSelection:
    """Which parameters a Hessian is taken over; empty fields do not filter, filled ones AND.

    Attributes:
        kinds: Anatomy block kinds, e.g. ("msa",).
        stages: Anatomy stage indices.
        blocks: Block-name prefixes, e.g. ("block3",) or ("stage2.",).
        prefixes: Parameter-name prefixes (as in `named_parameters`), e.g. ("blocks.0.attn",).
    """

    kinds: tuple[str, ...] = ()
    stages: tuple[int, ...] = ()
    blocks: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = [
            f"{name}={list(value)}"
            for name, value in vars(self).items()
            if value  # only the criteria that filter
        ]
        return "all" if not parts else " & ".join(parts)

    @property
    def needs_blocks(self) -> bool:
        return bool(self.kinds or self.stages or self.blocks)


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, list | tuple):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def parameter_blocks(model: nn.Module, example: torch.Tensor) -> dict[str, Block]:
    """Assign every parameter to the anatomy block in whose span it is first used.

    One forward pass (no grad) on `example` records, in execution order, each parameter's first
    use by any torch operation and each block's tap; a parameter belongs to the first block whose
    tap fires after it is used. This works for any described model without knowing its module
    names (in a ViT, norm1 and attention go to `msa`, norm2 and MLP to `mlp`, the final norm to
    `head`). Parameters the forward never touches are left out.

    Args:
        model: A model `vitlens.anatomy.describe` knows.
        example: An input batch (one image is enough).
    """
    model = unwrap(model)
    anatomy = anatomy_of(model)
    blocks = list(anatomy.blocks)
    names = {id(p): n for n, p in model.named_parameters()}
    owner: dict[str, Block] = {}
    current = [0]

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            for t in _tensors((args, kwargs)):
                name = names.get(id(t))
                if name is not None and name not in owner:
                    owner[name] = blocks[min(current[0], len(blocks) - 1)]
            return func(*args, **kwargs)

    order = {id(b): i for i, b in enumerate(blocks)}

    def on_tap(block: Block, _t: torch.Tensor) -> None:
        current[0] = max(current[0], order[id(block)] + 1)

    with torch.no_grad(), tapping(blocks, on_tap), Watch():
        anatomy.run(model, example)
    return owner


def select_parameters(
    model: nn.Module,
    selection: ParamSelection | None = None,
    example: torch.Tensor | None = None,
) -> list[tuple[str, nn.Parameter]]:
    """The trainable `(name, parameter)` pairs that `selection` picks, in `named_parameters` order.

    Args:
        model: The model.
        selection: None for all trainable parameters.
        example: An input batch; needed when selecting by block kind, stage or name.

    Raises:
        VitlensError: The selection picks nothing, or needs `example` and got none.
    """
    model = unwrap(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if selection is None:
        return named
    owner: dict[str, Block] = {}
    if selection.needs_blocks:
        if example is None:
            raise VitlensError("selecting parameters by block needs an example input batch")
        owner = parameter_blocks(model, example[:1])

    def keep(name: str) -> bool:
        if selection.prefixes and not name.startswith(selection.prefixes):
            return False
        if not selection.needs_blocks:
            return True
        block = owner.get(name)
        if block is None:
            return False
        return (
            (not selection.kinds or block.kind in selection.kinds)
            and (not selection.stages or block.stage in selection.stages)
            and (not selection.blocks or block.name.startswith(selection.blocks))
        )

    chosen = [(n, p) for n, p in named if keep(n)]
    if not chosen:
        raise VitlensError(
            f"parameter selection {selection.describe()} picks no trainable parameter; block "
            f"kinds here: {sorted({b.kind for b in describe(model)})}"
        )
    return chosen


# ------------------------------------------------------------------------------------ operator


def check_objective(objective: str, weight_decay: float) -> None:
    """Refuse an unknown objective, and an L2 coefficient that is negative, not finite or set
    where the objective ignores it."""
    if objective not in ("nll", "nll+l2"):
        raise ConfigError(f"objective must be 'nll' or 'nll+l2', got {objective!r}")
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, int | float):
        raise ConfigError(f"weight_decay must be a number, got {weight_decay!r}")
    if not math.isfinite(weight_decay) or weight_decay < 0:
        raise ConfigError(f"weight_decay must be a finite number of at least 0, got {weight_decay}")
    if objective == "nll" and weight_decay != 0.0:
        raise ConfigError(
            f"objective 'nll' ignores weight_decay={weight_decay}; use objective='nll+l2'"
        )


class HessianOperator:
    """The Hessian of a model's loss on one batch, as a symmetric linear operator on flat vectors.

    The forward pass and first backward run once, in `__init__`; `matvec` reuses their graph.
    Release it with `close()` (or use the operator as a context manager).

    Attributes:
        size: Number of selected parameter values.
        dtype, device: Those of the parameters (all selected parameters must share them).
        names: Names of the selected parameters, in vector order.
        nll: NLL on the batch (float).
        l2: The L2 term (weight_decay / 2) * sum ||theta||^2 (0.0 for objective "nll").
        loss: nll + l2.
        n_matvecs: Products computed so far.
    """

    def __init__(
        self,
        model: nn.Module,
        batch: tuple[torch.Tensor, torch.Tensor],
        *,
        objective: Literal["nll", "nll+l2"] = "nll",
        weight_decay: float = 0.0,
        params: ParamSelection | list[tuple[str, nn.Parameter]] | None = None,
        train_mode: bool = False,
        criterion: Criterion | None = None,
        seed: int | None = None,
    ) -> None:
        """Run the forward and first backward on `batch`.

        Args:
            model: Any model; attention takes the explicit path automatically.
            batch: (inputs, targets); targets are integer labels or soft (B, K) rows. Inputs are
                cast to the parameters' dtype and device.
            objective: "nll", or "nll+l2" which adds (weight_decay / 2) ||theta||^2.
            weight_decay: The L2 coefficient (must be 0 for "nll").
            params: A `ParamSelection`, explicit `(name, parameter)` pairs, or None for all.
            train_mode: Evaluate in train mode (BatchNorm batch statistics, dropout drawn once
                and then fixed for every product); buffers are restored afterwards.
            criterion: Replaces the NLL, `criterion(outputs, targets) -> scalar` (for tests).
            seed: Seeds the global generators during the forward pass (dropout in train mode);
                None leaves them alone.
        """
        check_objective(objective, weight_decay)
        model = unwrap(model)
        x, targets = batch
        first = next(model.parameters())
        x = x.to(device=first.device, dtype=first.dtype if x.is_floating_point() else x.dtype)
        targets = targets.to(first.device)
        self._select(model, params, x)
        self.weight_decay = float(weight_decay) if objective == "nll+l2" else 0.0
        self.n_matvecs = 0
        criterion = criterion or nll_loss
        # Buffers go back only when the operator closes: writing them now would bump their
        # version and invalidate the retained graph (BatchNorm saves its running statistics).
        self._saved_buffers = save_buffers(model)
        with (
            model_state(model, train_mode, restore=False),
            explicit_attention(model),
            seeded_rng(seed, first.device),
        ):
            loss = criterion(anatomy_of(model, need_blocks=False).forward(model, x), targets)
            # A parameter the forward never uses (DINOv2's mask token) has no gradient.
            grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
        # Only gradients that still depend on parameters carry second-order information.
        self._live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        self._grads: tuple[torch.Tensor, ...] | None = grads
        self.nll = loss.item()
        sq = sum(p.detach().double().pow(2).sum() for p in self.params)
        self.l2 = 0.5 * self.weight_decay * float(sq)
        self.loss = self.nll + self.l2

    def _select(self, model: nn.Module, params, x: torch.Tensor) -> None:
        """The parameters the operator differentiates, their names, dtype, device and size."""
        if params is None or isinstance(params, ParamSelection):
            params = select_parameters(model, params, x)
        self.names = [n for n, _ in params]
        self.params = [p for _, p in params]
        dtypes = {p.dtype for p in self.params}
        if len(dtypes) != 1:
            raise VitlensError(f"selected parameters mix dtypes {dtypes}; cast the model first")
        self.dtype = self.params[0].dtype
        self.device = self.params[0].device
        self.size = sum(p.numel() for p in self.params)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """H v for a flat vector `v` (one backward through the retained graph)."""
        if self._grads is None:
            raise VitlensError("this HessianOperator was closed")
        self.n_matvecs += 1
        pieces = list(torch.split(v, [p.numel() for p in self.params]))
        pieces = [piece.view_as(p) for piece, p in zip(pieces, self.params, strict=True)]
        hv = self._double_backward(pieces, [torch.zeros_like(p) for p in self.params])
        flat = torch.cat([h.reshape(-1) for h in hv])
        return flat + self.weight_decay * v if self.weight_decay else flat

    def _double_backward(self, pieces, zeros, *, batched: bool = False) -> list[torch.Tensor]:
        """Per-parameter Hessian products with `pieces` (batched: a leading column axis);
        `zeros` stand in for parameters with no second-order term."""
        if not self._live:
            return zeros
        out = torch.autograd.grad(
            [self._grads[i] for i in self._live],
            self.params,
            grad_outputs=[pieces[i] for i in self._live],
            retain_graph=True,
            allow_unused=True,
            is_grads_batched=batched,
        )
        return [h if h is not None else z for h, z in zip(out, zeros, strict=True)]

    def matmat(self, v: torch.Tensor) -> torch.Tensor:
        """H V for a (size, b) block: one batched backward through the retained graph.

        `torch.autograd.grad(..., is_grads_batched=True)` vmaps the double backward over the b
        columns. On GPUs that costs far less than b products; on CPUs (measured on vit_nano,
        benchmarks/hessian_bench.py) it is ~20% slower per product than `matvec`.
        """
        if self._grads is None:
            raise VitlensError("this HessianOperator was closed")
        b = v.shape[1]
        self.n_matvecs += b
        rows = torch.split(v.T, [p.numel() for p in self.params], dim=1)  # each (b, numel)
        pieces = [r.reshape(b, *p.shape) for r, p in zip(rows, self.params, strict=True)]
        zeros = [torch.zeros(b, *p.shape, dtype=p.dtype, device=p.device) for p in self.params]
        hv = self._double_backward(pieces, zeros, batched=True)
        flat = torch.cat([h.reshape(b, -1) for h in hv], dim=1).T
        return flat + self.weight_decay * v if self.weight_decay else flat

    def gradient(self) -> torch.Tensor:
        """The flat gradient of the objective (NLL gradient + weight_decay * theta)."""
        if self._grads is None:
            raise VitlensError("this HessianOperator was closed")
        g = torch.cat(
            [
                (torch.zeros_like(p) if g is None else g.detach()).reshape(-1)
                for g, p in zip(self._grads, self.params, strict=True)
            ]
        )
        if self.weight_decay:
            g = g + self.weight_decay * torch.cat([p.detach().reshape(-1) for p in self.params])
        return g

    def close(self) -> None:
        """Free the retained graph and restore the model's buffers."""
        self._grads = None
        if self._saved_buffers is not None:
            restore_buffers(self._saved_buffers)
            self._saved_buffers = None

    def __enter__(self) -> HessianOperator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
