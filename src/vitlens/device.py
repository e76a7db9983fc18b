"""The one device resolver: `auto`, `cpu`, `cuda`, `cuda:N` or `mps` to a `torch.device`.

`auto` picks CUDA, then MPS, then the CPU (DESIGN.md §5). Under torchrun a bare `cuda` (or
`auto` on a CUDA machine) means this process's own GPU, `cuda:LOCAL_RANK`. A device that is
asked for but absent, or a name torch does not know, is a `VitlensError`, not a RuntimeError.
"""

from __future__ import annotations

import os

import torch

from vitlens.errors import VitlensError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def resolve_device(device: str | torch.device) -> torch.device:
    """The torch device that `device` names, checked to exist on this machine."""
    if isinstance(device, torch.device):
        return device
    name = str(device).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", _local_rank())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise VitlensError("--device mps was asked for but MPS is not available")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        return _cuda(name)
    raise VitlensError(f"unknown device {device!r}; choose from {DEVICE_CHOICES}")


def _cuda(name: str) -> torch.device:
    if not torch.cuda.is_available():
        raise VitlensError(f"--device {name} was asked for but no CUDA device is available")
    if name == "cuda":
        return torch.device("cuda", _local_rank())
    index = name.removeprefix("cuda:")
    if not index.isdigit():
        raise VitlensError(f"device {name!r} needs a GPU number, e.g. cuda:0")
    if int(index) >= torch.cuda.device_count():
        raise VitlensError(
            f"device {name} does not exist: this machine has {torch.cuda.device_count()} GPU(s)"
        )
    return torch.device("cuda", int(index))
