"""Classification metrics summed over batches and ranks: accuracy, NLL, ECE, confident accuracy.

ECE uses equal-width confidence bins (Guo et al. 2017; the authors use 10). "Confident" means a
top-1 probability of at least 0.9: the paper's Acc-90 and Freq-90. Sums are kept in float64 so
that merging batches or ranks does not change the result beyond rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class MetricSums:
    """Running sums; `add` a batch, `merge` across ranks with `as_tensor`, read with `result`."""

    bins: int = 10
    threshold: float = 0.9

    def __post_init__(self):
        self.count = 0.0
        self.correct = 0.0
        self.nll = 0.0
        self.confident = 0.0
        self.confident_correct = 0.0
        self.bin_count = torch.zeros(self.bins, dtype=torch.float64)
        self.bin_conf = torch.zeros(self.bins, dtype=torch.float64)
        self.bin_correct = torch.zeros(self.bins, dtype=torch.float64)

    @torch.no_grad()
    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logp = F.log_softmax(logits.double(), dim=1)
        conf, pred = logp.exp().max(dim=1)
        hit = (pred == labels).double()
        self.count += labels.numel()
        self.correct += hit.sum().item()
        self.nll += F.nll_loss(logp, labels, reduction="sum").item()
        sure = conf >= self.threshold
        self.confident += sure.sum().item()
        self.confident_correct += hit[sure].sum().item()
        # Bin i holds confidences in (i/bins, (i+1)/bins]; confidence 0 cannot occur.
        idx = (conf * self.bins).ceil().long().clamp(1, self.bins) - 1
        self.bin_count += torch.bincount(idx, minlength=self.bins).double().cpu()
        self.bin_conf += torch.bincount(idx, weights=conf, minlength=self.bins).cpu()
        self.bin_correct += torch.bincount(idx, weights=hit, minlength=self.bins).cpu()

    def as_tensor(self) -> torch.Tensor:
        head = torch.tensor(
            [self.count, self.correct, self.nll, self.confident, self.confident_correct],
            dtype=torch.float64,
        )
        return torch.cat([head, self.bin_count, self.bin_conf, self.bin_correct])

    def load_tensor(self, t: torch.Tensor) -> None:
        t = t.double().cpu()
        self.count, self.correct, self.nll, self.confident, self.confident_correct = t[:5].tolist()
        b = self.bins
        self.bin_count, self.bin_conf, self.bin_correct = (
            t[5 : 5 + b],
            t[5 + b : 5 + 2 * b],
            t[5 + 2 * b :],
        )

    def result(self) -> dict[str, float]:
        n = max(self.count, 1.0)
        ece = (self.bin_conf - self.bin_correct).abs().sum().item() / n
        return {
            "samples": int(self.count),
            "acc": self.correct / n,
            "nll": self.nll / n,
            "ece": ece,
            "acc_confident": (
                self.confident_correct / self.confident if self.confident else float("nan")
            ),
            "freq_confident": self.confident / n,
        }


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against soft targets (rows sum to 1): the paper's NLL_train."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
