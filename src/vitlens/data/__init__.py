"""Datasets, augmentation and batch mixing for training and analysis.

The data stage of vitlens (DESIGN.md §1): datasets by name, held in memory as uint8 tensors
(`ArrayDataset`), seeded per-image augmentation presets (`build_transform`), class-balanced
subsets, and the paper's Mixup/CutMix + label smoothing (`BatchMixer`). The default dataset,
fashion-mnist-mini, ships with the package, so nothing needs downloading.
"""

from vitlens.data.cifar import read_cifar_batches
from vitlens.data.dataset import ArrayDataset, Normalize, mix_seed
from vitlens.data.idx import read_idx
from vitlens.data.info import DatasetInfo
from vitlens.data.mixing import BatchMixer, MixParams, smooth_targets
from vitlens.data.paths import data_root
from vitlens.data.sources import DEFAULT_DATASET, dataset_info, list_datasets, load_dataset
from vitlens.data.subsets import class_balanced_subset
from vitlens.data.transforms import PRESETS, build_transform

__all__ = [
    "DEFAULT_DATASET",
    "PRESETS",
    "ArrayDataset",
    "BatchMixer",
    "DatasetInfo",
    "MixParams",
    "Normalize",
    "build_transform",
    "class_balanced_subset",
    "data_root",
    "dataset_info",
    "list_datasets",
    "load_dataset",
    "mix_seed",
    "read_cifar_batches",
    "read_idx",
    "smooth_targets",
]
