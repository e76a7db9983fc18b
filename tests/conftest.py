"""Test-wide settings: one intra-op thread, which keeps the many tiny tensor operations of the
tests fast and their timings stable on a 2-core machine."""

import torch

torch.set_num_threads(1)
