"""The model zoo: ViT, PiT, Swin, ResNet and AlterNet at the paper's CIFAR configurations."""

from vitlens.models.alternet import AlterNet
from vitlens.models.pit import PiT
from vitlens.models.registry import MODELS, count_parameters, create_model, list_models
from vitlens.models.resnet import ResNet
from vitlens.models.swin import Swin
from vitlens.models.vit import ViT

__all__ = [
    "MODELS",
    "AlterNet",
    "PiT",
    "ResNet",
    "Swin",
    "ViT",
    "count_parameters",
    "create_model",
    "list_models",
]
