"""Forward FLOPs of a model, counted on the meta device (no memory, no compute).

`torch.utils.flop_counter` counts matmuls, convolutions and attention; one multiply-add is two
FLOPs. Element-wise work (norms, activations, softmax) is not counted, as in fvcore and timm.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def forward_flops(
    build: Callable[[], nn.Module], *, image_size: int = 32, in_chans: int = 3
) -> int:
    """FLOPs of one forward pass of a single image through the model that `build()` returns."""
    with torch.device("meta"):
        model = build().eval()
        x = torch.empty(1, in_chans, image_size, image_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()
