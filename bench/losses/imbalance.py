"""Losses for class imbalance and hard examples: class-balanced re-weighting, soft Dice, logit
adjustment and GHM-C."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.losses import HParam, register_loss
from bench.losses.functional import (
    focal_per_sample,
    log_probs,
    one_hot,
    target_log_prob,
    upcast,
    weighted_mean,
)
from bench.losses.one_vs_all import bce_per_sample


def effective_number_weights(class_counts: tuple[int, ...], beta: float) -> torch.Tensor:
    """(1 - beta) / (1 - beta^n_c), normalised to sum to C (Cui et al. 2019); beta = 0: all ones."""
    n = torch.tensor(class_counts, dtype=torch.float64)
    weights = (1 - beta) / (1 - torch.pow(beta, n)) if beta > 0 else torch.ones_like(n)
    return (weights * len(n) / weights.sum()).float()


@register_loss(
    "class-balanced",
    params={
        "beta": HParam(
            0.999,
            low=0.0,
            high=1.0,
            high_open=True,
            tune=(0.9, 0.9999),
            log_complement=True,
            help="effective-number decay; 0 weights every class equally",
        ),
        "base": HParam(
            "ce", choices=("ce", "focal", "bce"), numeric=False, help="the loss being re-weighted"
        ),
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
    params={"smooth": HParam(1.0, low=0.0, low_open=True, tune=(0.01, 10.0), log=True,
                             help="additive smoothing")},
)
class SoftDice(nn.Module):
    """Soft Dice over classes (Milletari et al. 2016):
    1 - mean_c (2 sum_i p_ic y_ic + s) / (sum_i p_ic + sum_i y_ic + s).

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


@register_loss(
    "logit-adjust",
    params={"tau": HParam(1.0, low=0.0, tune=(0.25, 2.0),
                          help="scale of the log-prior offset; 1 is balanced softmax, 0 is ce")},
    needs_class_counts=True,
)
class LogitAdjusted(nn.Module):
    """Logit-adjusted cross-entropy (Menon et al. 2021): ce on z_k + tau log pi_k, pi the training
    split's class frequencies; predictions use the plain logits. tau = 1 is balanced softmax.

    A class with no training image counts as one (its log-prior stays finite).
    """

    def __init__(self, tau: float = 1.0, class_counts=()) -> None:
        super().__init__()
        counts = torch.tensor(class_counts, dtype=torch.float64).clamp_min(1)
        self.register_buffer("offset", (tau * (counts / counts.sum()).log()).float(), persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = upcast(logits)
        return F.cross_entropy(x + self.offset.to(x.dtype), targets)


@register_loss(
    "ghm-c",
    params={
        "bins": HParam(10.0, low=1.0, high=100.0, integer=True,
                       help="unit bins of the gradient norm 1 - p_y over [0, 1]"),
        # the paper's "momentum"; named apart from SGD's --momentum, whose flag it would shadow
        "bin_momentum": HParam(0.0, low=0.0, high=1.0, high_open=True,
                               help="0: bin counts of the batch; > 0: their moving average across batches "
                                    "(stateful)"),
    },
    bf16=False,  # bf16 rounding of logits moves samples across g's bins: 40% gradient error
)
class GHMC(nn.Module):
    """GHM-C (Li, Liu & Wang 2019), softmax form: ce weighted by the inverse density of the
    gradient norm g = 1 - p_y, so the many easy samples and the few outliers both count less.

    Sample i in bin b gets w_i = N / count_b / (number of non-empty bins); loss = sum_i w_i ce_i / N.
    With bin_momentum m > 0 (the paper's momentum) the counts are a moving average across training
    batches, as in the paper
    (count_b <- m count_b + (1 - m) n_b for each bin hit): the loss is then stateful. Its state is
    a buffer that training checkpoints save and --resume restores; evaluation never updates it.
    """

    def __init__(self, bins: float = 10.0, bin_momentum: float = 0.0) -> None:
        super().__init__()
        self.bins, self.momentum = int(bins), bin_momentum
        self.register_buffer("average_counts", torch.zeros(self.bins, dtype=torch.float64))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = target_log_prob(logits, targets)
        g = -torch.expm1(log_p.detach())
        b = (g * self.bins).long().clamp_(0, self.bins - 1)
        counts = torch.bincount(b, minlength=self.bins).to(torch.float64)
        hit = counts > 0
        if self.momentum > 0:
            if self.training:
                updated = self.momentum * self.average_counts + (1 - self.momentum) * counts
                self.average_counts.copy_(torch.where(hit, updated, self.average_counts))
            counts = torch.where(hit, self.average_counts, counts)
        weight = len(targets) / counts[b].clamp_min(1e-12) / hit.sum()
        return (weight.to(log_p.dtype) * -log_p).sum() / len(targets)
