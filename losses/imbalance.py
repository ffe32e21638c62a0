"""Losses for class imbalance: class-balanced re-weighting and soft Dice."""

from __future__ import annotations

import torch
from torch import nn

from losses import HParam, register_loss
from losses.functional import focal_per_sample, log_probs, one_hot, weighted_mean
from losses.one_vs_all import bce_per_sample


def effective_number_weights(class_counts: tuple[int, ...], beta: float) -> torch.Tensor:
    """(1 - beta) / (1 - beta^n_c), normalised to sum to C (Cui et al. 2019); beta = 0: all ones."""
    n = torch.tensor(class_counts, dtype=torch.float64)
    weights = (1 - beta) / (1 - torch.pow(beta, n)) if beta > 0 else torch.ones_like(n)
    return (weights * len(n) / weights.sum()).float()


@register_loss(
    "class-balanced",
    params={
        "beta": HParam(0.999, low=0.0, high=1.0, high_open=True, tune=(0.9, 0.9999),
                       help="effective-number decay; 0 weights every class equally"),
        "base": HParam("ce", choices=("ce", "focal", "bce"), numeric=False, help="the loss being re-weighted"),
        "gamma": HParam(2.0, low=0.0, tune=(0.0, 5.0), help="focusing exponent when base is focal"),
    },
    needs_class_counts=True,
)
class ClassBalanced(nn.Module):
    """Class-balanced loss (Cui et al. 2019): each sample's base loss times the weight of its class,
    (1 - beta) / (1 - beta^n_y), from the training split's class counts n."""

    def __init__(self, beta: float = 0.999, base: str = "ce", gamma: float = 2.0, class_counts=()) -> None:
        super().__init__()
        self.base, self.gamma = base, gamma
        self.register_buffer("weight", effective_number_weights(tuple(class_counts), beta), persistent=False)

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.base == "bce":
            return bce_per_sample(logits, targets)
        return focal_per_sample(logits, targets, self.gamma if self.base == "focal" else 0.0)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return weighted_mean(self.per_sample(logits, targets), targets, self.weight)


@register_loss(
    "dice",
    params={"smooth": HParam(1.0, low=0.0, low_open=True, tune=(0.01, 10.0), log=True, help="additive smoothing")},
)
class SoftDice(nn.Module):
    """Soft Dice over classes (Milletari et al. 2016): 1 - mean_c (2 sum_i p_ic y_ic + s) / (sum_i p_ic + sum_i y_ic + s).

    A batch statistic: unlike the other losses it is not a mean of per-sample terms.
    """

    def __init__(self, smooth: float = 1.0) -> None:
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        probs = log_probs(logits).exp()
        y = one_hot(targets, probs)
        dice = (2 * (probs * y).sum(0) + self.smooth) / (probs.sum(0) + y.sum(0) + self.smooth)
        return 1 - dice.mean()
