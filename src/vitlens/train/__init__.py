"""Training: the paper's recipe, checkpoints, metrics and run folders."""

from vitlens.device import resolve_device
from vitlens.train.loop import Trainer, evaluate
from vitlens.train.metrics import MetricSums, soft_cross_entropy
from vitlens.train.runs import init_from_checkpoint, load_model, resolve_checkpoint

__all__ = [
    "MetricSums",
    "Trainer",
    "evaluate",
    "init_from_checkpoint",
    "load_model",
    "resolve_checkpoint",
    "resolve_device",
    "soft_cross_entropy",
]
