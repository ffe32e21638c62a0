"""Softmax losses: cross-entropy, focal, PolyLoss, the probability-space L1 and Brier, hinge,
perceptron, exponential and KL divergence."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bench.losses import HParam, register_loss
from bench.losses.functional import (
    balanced_weights, class_weights, focal_per_sample, log_probs, one_hot, target_log_prob, upcast,
    weighted_mean,
)

ALPHA = HParam(
    None, low=0.0, low_open=True, per_class=True,
    help="class weight: one number for every class, or one per class (comma-separated)",
)


@register_loss(
    "ce",
    params={
        "label_smoothing": HParam(
            0.0, low=0.0, high=1.0, high_open=True, tune=(0.0, 0.3),
            help="mass spread uniformly over all classes",
        ),
        "class_weights": HParam(
            None, low=0.0, low_open=True, per_class=True, choices=("balanced",),
            help="'balanced' (N / (C n_c) from the training split) or one weight per class",
        ),
    },
    needs_class_counts=True,
)
class CrossEntropy(nn.Module):
    """Softmax cross-entropy: -sum_k q_k log p_k, q one-hot or label-smoothed; optional class weights.

    With class weights w the mean is sum_i w_{y_i} l_i / sum_i w_{y_i}, as torch computes it.
    """

    def __init__(self, label_smoothing: float = 0.0, class_weights=None, class_counts=()) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing
        if class_weights == "balanced":
            class_weights = balanced_weights(class_counts)
        self.register_buffer("weight", None if class_weights is None else torch.tensor(class_weights),
                             persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = upcast(logits)
        weight = None if self.weight is None else self.weight.to(x.dtype)
        return F.cross_entropy(x, targets, weight=weight, label_smoothing=self.label_smoothing)


@register_loss(
    "focal",
    params={
        "gamma": HParam(2.0, low=0.0, tune=(0.0, 5.0), help="focusing exponent; 0 is cross-entropy"),
        "alpha": ALPHA,
    },
)
class FocalLoss(nn.Module):
    """Multi-class focal loss (Lin et al. 2017): -alpha_y (1 - p_y)^gamma log p_y."""

    def __init__(self, gamma: float = 2.0, alpha=None) -> None:
        super().__init__()
        self.gamma = gamma
        self.register_buffer("alpha", class_weights(alpha), persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return weighted_mean(focal_per_sample(logits, targets, self.gamma), targets, self.alpha)


@register_loss(
    "poly1",
    params={"epsilon": HParam(1.0, low=-1.0, tune=(-1.0, 5.0), help="weight of the (1 - p_y) term; 0 is ce")},
)
class Poly1Loss(nn.Module):
    """Poly-1 (Leng et al. 2022, PolyLoss): -log p_y + epsilon (1 - p_y)."""

    def __init__(self, epsilon: float = 1.0) -> None:
        super().__init__()
        self.epsilon = epsilon

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = target_log_prob(logits, targets)
        return (-log_p + self.epsilon * (1 - log_p.exp())).mean()


@register_loss("l1", aliases=("mae",))
class L1Loss(nn.Module):
    """Mean absolute error between softmax probabilities and one-hot targets (MAE).

    Averaged over samples and classes, as `nn.L1Loss` on probabilities is: (2/C) mean (1 - p_y).
    """

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        probs = log_probs(logits).exp()
        return (probs - one_hot(targets, probs)).abs().mean()


@register_loss("brier", aliases=("mse",))
class BrierLoss(nn.Module):
    """Brier score: sum_k (p_k - y_k)^2 per sample, averaged over samples (squared error on probabilities)."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        probs = log_probs(logits).exp()
        return (probs - one_hot(targets, probs)).square().sum(1).mean()


@register_loss(
    "hinge",
    params={"margin": HParam(1.0, low=0.0, low_open=True, tune=(0.1, 5.0), log=True,
                             help="required logit margin")},
)
class MultiMarginLoss(nn.MultiMarginLoss):
    """Multi-class hinge (Weston & Watkins 1999): sum_{k != y} max(0, margin - s_y + s_k) / C."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return super().forward(upcast(logits), targets)  # torch's, on fp32 logits


@register_loss("perceptron")
class PerceptronLoss(nn.Module):
    """Multi-class perceptron: max(0, max_{k != y} z_k - z_y), i.e. hinge with margin 0.

    Zero once the target's logit is the largest, so a correct sample never moves the weights.
    """

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = upcast(logits)
        rival = x.scatter(1, targets[:, None], float("-inf")).amax(1)
        return (rival - x.gather(1, targets[:, None]).squeeze(1)).clamp_min(0).mean()


EXP_CAP = 50.0  # the exponent beyond which the exponential loss continues linearly (e^50 ~ 5.2e21)


@register_loss("exponential", bf16=False)  # exp amplifies bf16 rounding of logits: 1% loss error
class ExponentialLoss(nn.Module):
    """Exponential (AdaBoost-style) loss: sum_{k != y} exp(z_k - z_y) = 1/p_y - 1. Very sensitive
    to outliers and label noise: a confidently wrong sample's loss grows exponentially.

    Computed as expm1(-log p_y) from a stable log-softmax. Where -log p_y exceeds 50 the loss
    continues on its tangent, e^50 (1 + s - 50) - 1, so one confidently wrong sample gives a
    huge but finite loss and gradient in float32 instead of inf.
    """

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        s = -target_log_prob(logits, targets)
        tangent = math.exp(EXP_CAP) * (1 + s - EXP_CAP) - 1
        return torch.where(s > EXP_CAP, tangent, torch.expm1(s.clamp_max(EXP_CAP))).mean()


@register_loss(
    "kl",
    params={"smoothing": HParam(0.1, low=0.0, high=1.0, high_open=True, tune=(0.0, 0.3),
                                help="mass of the target q spread uniformly over all classes")},
)
class KLDivergence(nn.Module):
    """KL(q || p) with q the label-smoothed one-hot target, (1 - smoothing) y + smoothing / C.

    Its gradient equals cross-entropy's with the same label smoothing (the two differ by the
    entropy of q, a constant); unlike that cross-entropy, its value is 0 at a perfect prediction p = q.
    """

    def __init__(self, smoothing: float = 0.1) -> None:
        super().__init__()
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = log_probs(logits)
        q = one_hot(targets, log_p) * (1 - self.smoothing) + self.smoothing / log_p.shape[1]
        return (torch.xlogy(q, q) - q * log_p).sum(1).mean()
