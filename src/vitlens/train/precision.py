"""Training precision: fp32, or bf16 autocast where the hardware runs bf16 natively and it pays.

`--precision fp32|bf16|auto`. Only the forward pass runs under autocast; master weights, AdamW
state, the loss reduction (fp32 logits), evaluation and every analysis stay fp32.

`auto` chooses per model and machine:

* CUDA with native bf16 -> bf16 (what vitlens always did on CUDA); MPS -> fp32.
* A CPU without native bf16 (no AMX-BF16, AVX512-BF16 or Arm BF16; detected at run time) -> fp32:
  there autocast emulates bf16 and a step is several times slower.
* A CPU with native bf16 -> measured, not guessed. bf16 is not a free win on a CPU: at tiny sizes
  its gains in the matmuls can be lost to casts, to small bf16 GEMMs (oneDNN's per-call overhead
  inside the blocked SDPA kernel: one GEMM per (batch, head) block) and to bf16 element-wise and
  norm kernels that convert on the fly. So a few training steps of a throw-away copy of the model
  are timed, interleaved, in fp32, in bf16, and in bf16 with attention (SDPA) kept in fp32; the
  fastest wins if it beats fp32 by `MARGIN`, else fp32. The decision is cached per machine, model
  and batch shape (`$VITLENS_CACHE_DIR`, default ~/.cache/vitlens), so repeated runs on one
  machine agree and pay the probe once.

The choice and its evidence are written to the run's `precision.json`; a resumed run reuses it, so
a resumed `auto` run continues in the precision it started with (bit-exact resume).
"""

from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import time
import warnings
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from vitlens import distributed as dist

PRECISIONS = ("auto", "fp32", "bf16")
MODES = ("fp32", "bf16", "bf16-fp32attn")  # what a run can actually train in
MARGIN = 1.05  # bf16 must beat fp32 by 5% to be chosen: a tie is not worth the rounding
PROBE_WARMUP, PROBE_REPEATS = 1, 2
RECORD = "precision.json"
_CPU_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")  # x86 AMX, x86 AVX512-BF16, Arm BF16


@dataclass
class Precision:
    """The mode a run trains in, why, and the step timings behind an `auto` choice."""

    requested: str
    mode: str
    reason: str
    device: str = "cpu"
    native_bf16: bool = False
    seconds_per_step: dict[str, float] = field(default_factory=dict)

    def autocast(self):
        """The context the forward pass runs in."""
        return mode_context(self.mode, self.device)

    def record(self) -> dict[str, Any]:
        return asdict(self)


# -- hardware detection ----------------------------------------------------------------------


def cpu_bf16_features() -> list[str]:
    """The native-bf16 features of this CPU: /proc/cpuinfo flags, or torch's own cpuinfo."""
    try:
        found = bf16_flags(Path("/proc/cpuinfo").read_text())
    except OSError:
        found = set()
    probes = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported"}
    for flag, probe in probes.items():
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            found.add(flag)
    return sorted(found)


def bf16_flags(cpuinfo: str) -> set[str]:
    """The native-bf16 flags in /proc/cpuinfo text (its first CPU's `flags` or `Features`)."""
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):  # x86 / Arm
            return {f for f in line.partition(":")[2].split() if f in _CPU_FLAGS}
    return set()


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether `device` computes bf16 natively (not by emulation), and what says so."""
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported(including_emulation=False)
        return ok, f"CUDA {torch.cuda.get_device_name(device)}: bf16 {'native' if ok else 'absent'}"
    if device.type == "cpu":
        features = cpu_bf16_features()
        capability = torch.backends.cpu.get_cpu_capability()
        if features:
            return True, f"CPU with {', '.join(features)} (torch capability {capability})"
        return False, f"CPU without AMX-BF16/AVX512-BF16 (torch capability {capability})"
    return False, f"{device.type}: vitlens trains in fp32 there"


# -- the modes -------------------------------------------------------------------------------


class _Fp32Attention(TorchFunctionMode):
    """Under bf16 autocast, runs `scaled_dot_product_attention` in fp32 (casts in and out)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        q = args[0]
        up = [
            a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args
        ]
        mask = kwargs.get("attn_mask")
        if isinstance(mask, torch.Tensor) and mask.is_floating_point():
            kwargs = {**kwargs, "attn_mask": mask.float()}
        with torch.autocast(q.device.type, enabled=False):
            return func(*up, **kwargs).to(q.dtype)


class mode_context:  # noqa: N801 (used like a function: `with mode_context("bf16", "cpu"):`)
    """Runs the code inside it in `mode`; reusable, so one object can serve every step."""

    def __init__(self, mode: str, device: str | torch.device):
        if mode not in MODES:
            raise ValueError(f"unknown precision mode {mode!r}; choose from {MODES}")
        self.mode, self.device_type = mode, torch.device(device).type
        self._stack: ExitStack | None = None

    def __enter__(self) -> mode_context:
        self._stack = ExitStack()
        if self.mode != "fp32":
            self._stack.enter_context(torch.autocast(self.device_type, dtype=torch.bfloat16))
        if self.mode == "bf16-fp32attn":
            self._stack.enter_context(_Fp32Attention())
        return self

    def __exit__(self, *exc) -> None:
        stack, self._stack = self._stack, None
        stack.__exit__(*exc)


# -- measuring -------------------------------------------------------------------------------


def time_modes(
    model: nn.Module,
    modes: list[str],
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    warmup: int = PROBE_WARMUP,
    repeats: int = PROBE_REPEATS,
    aliases: dict[str, str] | None = None,
) -> dict[str, float]:
    """Median seconds of one training step (forward, loss, backward, AdamW) in each mode.

    Runs on a copy of `model` with a fixed random batch; the modes take turns, so load on a
    busy machine hits each alike. The model and the global random state are left untouched.
    `aliases` names extra entries that run another mode (a benchmark's "auto": "bf16").
    """
    aliases = aliases or {}
    probe = copy.deepcopy(model).train()
    device = next(probe.parameters()).device
    params = [p for p in probe.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-6)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(input_shape, generator=g).to(device)
    y = torch.randint(0, num_classes, (input_shape[0],), generator=g).to(device)
    times: dict[str, list[float]] = {m: [] for m in modes}
    with torch.random.fork_rng(devices=[]):
        for r in range(warmup + repeats):
            for mode in modes[r % len(modes) :] + modes[: r % len(modes)]:
                start = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                with mode_context(aliases.get(mode, mode), device):
                    logits = probe(x)
                F.cross_entropy(logits.float(), y).backward()
                optimizer.step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if r >= warmup:
                    times[mode].append(time.perf_counter() - start)
    return {m: statistics.median(t) for m, t in times.items()}


def fastest_mode(seconds: dict[str, float], margin: float = MARGIN) -> str:
    """The fastest mode if it beats fp32 by `margin`, else fp32 (never slower than fp32)."""
    best = min(seconds, key=seconds.get)
    if best != "fp32" and seconds["fp32"] >= margin * seconds[best]:
        return best
    return "fp32"


def has_attention(model: nn.Module) -> bool:
    from vitlens.models.layers import Attention

    return any(isinstance(m, Attention) for m in model.modules())


# -- choosing --------------------------------------------------------------------------------


def cache_path() -> Path:
    root = os.environ.get("VITLENS_CACHE_DIR") or Path.home() / ".cache" / "vitlens"
    return Path(root) / "precision.json"


def _cache_key(cfg, model_spec: dict, input_shape: tuple[int, ...], device: torch.device) -> str:
    what = {
        "model": cfg.model,
        "spec": model_spec,
        "input": list(input_shape),
        "freeze": cfg.freeze,
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "features": cpu_bf16_features(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    return json.dumps(what, sort_keys=True, default=str)


def _read_cache() -> dict[str, Any]:
    try:
        return json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}  # no cache yet, or a damaged one: measure again


def _write_cache(key: str, seconds: dict[str, float]) -> None:
    from vitlens.atomic import write_text as atomic_write_text

    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({**_read_cache(), key: seconds}, indent=1))
    except OSError:
        pass  # a read-only home only costs the probe again next time


def measured_choice(cfg, model, device, *, input_shape, num_classes, model_spec) -> Precision:
    """`auto` on a CPU with native bf16: time the modes (or reuse the cached timings)."""
    key = _cache_key(cfg, model_spec, input_shape, device)
    seconds = _read_cache().get(key)
    source = "cached probe"
    if seconds is None:
        modes = ["fp32", "bf16"] + (["bf16-fp32attn"] if has_attention(model) else [])
        seconds = time_modes(model, modes, input_shape=input_shape, num_classes=num_classes)
        source = "probe"
        if dist.is_main():
            _write_cache(key, seconds)
    mode = fastest_mode(seconds)
    ratio = seconds["fp32"] / seconds[mode] if mode != "fp32" else 1.0
    shown = ", ".join(f"{m} {s * 1e3:.0f} ms" for m, s in seconds.items())
    reason = f"{source} of one training step: {shown}; {mode} ({ratio:.2f}x fp32)"
    return Precision("auto", mode, reason, str(device), True, dict(seconds))


def choose_precision(
    cfg, model: nn.Module, device: torch.device, *, input_shape, num_classes, model_spec
) -> Precision:
    """Resolve `cfg.precision` for this model on this device (see the module docstring)."""
    native, why = native_bf16(device)
    if cfg.precision == "fp32":
        return Precision("fp32", "fp32", "asked for", str(device), native)
    if cfg.precision == "bf16":
        note = "asked for" if native else f"asked for, though emulated here ({why}): slow"
        if not native:
            message = f"--precision bf16 on a {why}: bf16 is emulated, several times slower"
            warnings.warn(message, stacklevel=2)
        return Precision("bf16", "bf16", note, str(device), native)
    if not native:
        return Precision("auto", "fp32", f"no native bf16: {why}", str(device), False)
    if device.type == "cuda":
        return Precision("auto", "bf16", why, str(device), True)
    choice = measured_choice(
        cfg, model, device, input_shape=input_shape, num_classes=num_classes, model_spec=model_spec
    )
    return _agree_across_ranks(choice)


def _agree_across_ranks(choice: Precision) -> Precision:
    """Under torchrun every rank trains in rank 0's mode (timings differ between ranks)."""
    if dist.world() == 1:
        return choice
    vote = torch.zeros(len(MODES), dtype=torch.float64)
    if dist.is_main():
        vote[MODES.index(choice.mode)] = 1
    choice.mode = MODES[int(dist.all_reduce_sum(vote).argmax())]
    return choice


def resolve_for_run(cfg, model, device, run: Path, *, resume: bool, **probe: Any) -> Precision:
    """The precision of the run in `run`: a resumed `auto` run keeps its recorded mode."""
    path = Path(run) / RECORD
    if resume and cfg.precision == "auto":
        try:
            recorded = json.loads(path.read_text())
        except (OSError, ValueError):
            recorded = None
        if recorded is not None and recorded.get("mode") in MODES:
            known = {k: v for k, v in recorded.items() if k in Precision.__dataclass_fields__}
            return Precision(**{**known, "reason": f"resumed: {known.get('reason', '')}"})
        # A run from before precision.json existed trained in bf16 on CUDA, in fp32 elsewhere.
        legacy = "bf16" if device.type == "cuda" else "fp32"
        return Precision("auto", legacy, "resumed a run without precision.json", str(device))
    return choose_precision(cfg, model, device, **probe)


def record_precision(run: Path, choice: Precision) -> None:
    """Write the run's `precision.json` (rank 0, with the run's other first writes)."""
    from vitlens.atomic import write_text

    write_text(Path(run) / RECORD, json.dumps(choice.record(), indent=1) + "\n")
