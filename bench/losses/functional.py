"""Small pieces the losses share: probabilities in float32, one-hot targets, class weights."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def upcast(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits (from autocast) to float32; float32 and float64 stay as they are."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """log-softmax in at least float32, whatever precision the model ran in."""
    return F.log_softmax(upcast(logits), dim=1)


def target_log_prob(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p_y per sample, [N]."""
    return log_probs(logits).gather(1, targets[:, None]).squeeze(1)


def one_hot(targets: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """One-hot targets shaped and typed like the (upcast) logits `like` [N, C]."""
    return F.one_hot(targets, like.shape[1]).to(like.dtype)


def one_minus_p(log_p: torch.Tensor) -> torch.Tensor:
    """1 - p from log p, precise near p = 1 and clamped away from 0 so that (1 - p)^gamma
    keeps a finite gradient for gamma < 1."""
    return (-torch.expm1(log_p)).clamp_min(1e-12)


def focal_per_sample(logits: torch.Tensor, targets: torch.Tensor, gamma: float) -> torch.Tensor:
    """-(1 - p_y)^gamma log p_y per sample; exactly -log p_y for gamma = 0."""
    log_p = target_log_prob(logits, targets)
    return -log_p if gamma == 0 else -one_minus_p(log_p).pow(gamma) * log_p


def class_weights(alpha: float | Sequence[float] | None) -> torch.Tensor | None:
    """Per-class weights as a tensor (a scalar alpha becomes a 0-d tensor)."""
    return None if alpha is None else torch.tensor(alpha, dtype=torch.float32)


def balanced_weights(class_counts: Sequence[int]) -> tuple[float, ...]:
    """N / (C n_c): inverse class frequency, 1 for every class of a balanced split."""
    total, k = sum(class_counts), len(class_counts)
    return tuple(total / (k * max(n, 1)) for n in class_counts)


def weighted_mean(
    per_sample: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None
) -> torch.Tensor:
    """Mean over the batch, each sample weighted by its class's weight when given."""
    if weight is None:
        return per_sample.mean()
    w = weight if weight.dim() == 0 else weight.to(per_sample.device)[targets]
    return (per_sample * w).mean()
