"""Losses designed to be robust to label noise: GCE, SCE, NCE+RCE, and the robust regression
losses of the seed survey applied to probabilities: Huber and log-cosh."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bench.losses import HParam, register_loss
from bench.losses.functional import log_probs, one_hot, target_log_prob

# Reverse cross-entropy needs log 0 for the zero entries of a one-hot target; the reference
# implementations clamp the target to 1e-4, so log 0 is taken as log 1e-4 = -9.21.
RCE_LOG_ZERO = math.log(1e-4)


def reverse_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-sum_k p_k log q_k with q the clamped one-hot target: -RCE_LOG_ZERO (1 - p_y), per sample."""
    return -RCE_LOG_ZERO * -torch.expm1(target_log_prob(logits, targets))


class PlusReverseCE(nn.Module):
    """alpha * an active term + beta * reverse cross-entropy, averaged over samples: the robust
    pairs of Wang et al. 2019 (sce) and Ma et al. 2020 (nce+rce) differ in the active term only."""

    def __init__(self, alpha: float, beta: float) -> None:  # defaults: the registry's (sce's differ)
        super().__init__()
        self.alpha, self.beta = alpha, beta

    def active(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (self.alpha * self.active(logits, targets) + self.beta * reverse_ce(logits, targets)).mean()


RCE_WEIGHT = HParam(1.0, low=0.0, tune=(0.1, 10.0), log=True, help="weight of reverse cross-entropy")
# the papers' CIFAR-10 defaults: sce weighs CE by 0.1 (Wang et al. 2019), nce+rce NCE by 1 (Ma et al. 2020)
CE_WEIGHT = HParam(0.1, low=0.0, tune=(0.01, 1.0), log=True, help="weight of cross-entropy")
NCE_WEIGHT = HParam(1.0, low=0.0, tune=(0.1, 10.0), log=True, help="weight of normalized cross-entropy")


@register_loss(
    "gce",
    params={"q": HParam(0.7, low=0.0, high=1.0, low_open=True, tune=(0.1, 1.0),
                        help="q -> 0 is ce, q = 1 is MAE")},
)
class GeneralizedCE(nn.Module):
    """Generalized cross-entropy (Zhang & Sabuncu 2018): (1 - p_y^q) / q."""

    def __init__(self, q: float = 0.7) -> None:
        super().__init__()
        self.q = q

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (-torch.expm1(self.q * target_log_prob(logits, targets)) / self.q).mean()


@register_loss("sce", params={"alpha": CE_WEIGHT, "beta": RCE_WEIGHT})
class SymmetricCE(PlusReverseCE):
    """Symmetric cross-entropy (Wang et al. 2019): alpha CE + beta RCE, RCE = -log(1e-4) (1 - p_y)."""

    def active(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return -target_log_prob(logits, targets)


@register_loss("nce+rce", params={"alpha": NCE_WEIGHT, "beta": RCE_WEIGHT})
class NCEandRCE(PlusReverseCE):
    """Active-passive loss NCE+RCE (Ma et al. 2020): alpha (-log p_y) / (-sum_k log p_k) + beta RCE."""

    def active(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = log_probs(logits)
        return log_p.gather(1, targets[:, None]).squeeze(1) / log_p.sum(1)


@register_loss(
    "huber",
    params={"delta": HParam(0.5, low=0.0, high=1.0, low_open=True, tune=(0.05, 1.0), log=True,
                            help="where the quadratic turns linear, in probability units")},
)
class HuberLoss(nn.Module):
    """Huber on probabilities: sum_k H_delta(p_k - y_k), H = r^2 / 2 within delta, else
    delta (|r| - delta / 2).

    Summed over classes like `brier`, averaged over samples.
    """

    def __init__(self, delta: float = 0.5) -> None:
        super().__init__()
        self.delta = delta

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        probs = log_probs(logits).exp()
        return F.huber_loss(probs, one_hot(targets, probs), reduction="none", delta=self.delta).sum(1).mean()


@register_loss("log-cosh")
class LogCoshLoss(nn.Module):
    """Log-cosh on probabilities: sum_k log cosh(p_k - y_k), averaged over samples."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        probs = log_probs(logits).exp()
        r = probs - one_hot(targets, probs)
        # log cosh r = |r| + log1p(exp(-2|r|)) - log 2: no overflow of cosh for any r
        return (r.abs() + torch.log1p(torch.exp(-2 * r.abs())) - math.log(2)).sum(1).mean()
