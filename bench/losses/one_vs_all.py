"""Losses that score each class on its own: one-vs-all sigmoid BCE and focal, and ZLPR."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.losses import HParam, register_loss
from bench.losses.functional import one_hot, upcast


def bce_per_sample(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over classes of the sigmoid binary cross-entropy against one-hot targets, [N]."""
    x = upcast(logits)
    return F.binary_cross_entropy_with_logits(x, one_hot(targets, x), reduction="none").mean(1)


@register_loss("bce")
class OneVsAllBCE(nn.Module):
    """One-vs-all binary cross-entropy on sigmoid(logits) vs one-hot targets, mean over N x C."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return bce_per_sample(logits, targets).mean()


@register_loss(
    "sigmoid-focal",
    params={
        "gamma": HParam(2.0, low=0.0, tune=(0.0, 5.0), help="focusing exponent; 0 is cross-entropy"),
        "alpha": HParam(0.25, low=0.0, high=1.0, tune=(0.05, 0.95),
                        help="weight of the positive class (RetinaNet)"),
    },
)
class SigmoidFocal(nn.Module):
    """One-vs-all sigmoid focal loss (RetinaNet, Lin et al. 2017), mean over N x C:
    -alpha_t (1 - p_t)^gamma log p_t with p_t = sigmoid(+-s)."""

    def __init__(self, gamma: float = 2.0, alpha: float = 0.25) -> None:
        super().__init__()
        self.gamma, self.alpha = gamma, alpha

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = upcast(logits)
        y = one_hot(targets, x)
        # log p_t = logsigmoid(s) for positives and logsigmoid(-s) for negatives
        log_pt = F.logsigmoid(torch.where(y > 0, x, -x))
        modulator = (-torch.expm1(log_pt)).clamp_min(1e-12).pow(self.gamma) if self.gamma else 1.0
        alpha_t = self.alpha * y + (1 - self.alpha) * (1 - y)
        return (-alpha_t * modulator * log_pt).mean()


@register_loss("zlpr")
class ZLPR(nn.Module):
    """ZLPR / multi-label softmax cross-entropy (Su 2020), single-label case:
    log(1 + sum_{k != y} e^{s_k}) + log(1 + e^{-s_y}). Logits above 0 mean "this class"."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = upcast(logits)
        positive = one_hot(targets, x) > 0
        zero = torch.zeros_like(x[:, :1])
        negatives = torch.cat([zero, x.masked_fill(positive, float("-inf"))], dim=1)
        target_logit = x.gather(1, targets[:, None])
        pos_term = torch.cat([zero, -target_logit], dim=1)
        return (torch.logsumexp(negatives, 1) + torch.logsumexp(pos_term, 1)).mean()
