"""The losses of the seed reports: cross-entropy, focal and L1 (MAE) on probabilities."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from losses import HParam, register_loss

ALPHA = HParam(
    None, low=0.0, low_open=True, per_class=True,
    help="class weight: one number for every class, or one per class (comma-separated)",
)


def class_weights(alpha: float | tuple[float, ...] | None) -> torch.Tensor | None:
    """Per-class weights as a buffer-able tensor (a scalar alpha is kept as a 0-d tensor)."""
    return None if alpha is None else torch.tensor(alpha, dtype=torch.float32)


def weighted_mean(per_sample: torch.Tensor, targets: torch.Tensor, alpha: torch.Tensor | None):
    """Mean over the batch, each sample weighted by its class's alpha when given."""
    if alpha is None:
        return per_sample.mean()
    weight = alpha if alpha.dim() == 0 else alpha.to(per_sample.device)[targets]
    return (per_sample * weight).mean()


@register_loss(
    "ce",
    params={
        "label_smoothing": HParam(
            0.0, low=0.0, high=1.0, high_open=True, tune=(0.0, 0.3),
            help="mass spread uniformly over all classes",
        )
    },
)
class CrossEntropy(nn.Module):
    """Softmax cross-entropy: -log p_y, optionally against label-smoothed targets."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets, label_smoothing=self.label_smoothing)


@register_loss(
    "focal",
    params={
        "gamma": HParam(2.0, low=0.0, tune=(0.0, 5.0), help="focusing exponent; 0 is cross-entropy"),
        "alpha": ALPHA,
    },
)
class FocalLoss(nn.Module):
    """Multi-class focal loss (Lin et al. 2017): -alpha_y (1 - p_y)^gamma log p_y."""

    def __init__(self, gamma: float = 2.0, alpha: float | tuple[float, ...] | None = None) -> None:
        super().__init__()
        self.gamma = gamma
        self.register_buffer("alpha", class_weights(alpha), persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1).gather(1, targets[:, None]).squeeze(1)
        per_sample = -log_p
        if self.gamma > 0:
            # 1 - p computed as -expm1(log p) keeps precision near p = 1; the clamp keeps the
            # gradient of (1 - p)^gamma finite there when gamma < 1.
            one_minus_p = (-torch.expm1(log_p)).clamp_min(1e-12)
            per_sample = one_minus_p.pow(self.gamma) * per_sample
        return weighted_mean(per_sample, targets, self.alpha)


@register_loss("l1")
class L1Loss(nn.Module):
    """Mean absolute error between softmax probabilities and one-hot targets (MAE).

    Averaged over samples and classes, as `nn.L1Loss` on probabilities would be.
    """

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        probs = logits.float().softmax(dim=1)
        one_hot = F.one_hot(targets, probs.shape[1]).to(probs.dtype)
        return (probs - one_hot).abs().mean()
