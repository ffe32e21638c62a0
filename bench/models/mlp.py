"""Fully connected models on flattened pixels: the seed report's 2-layer NN and residual MLP."""

from __future__ import annotations

import math

import torch
from torch import nn

from bench.models import register_model


@register_model("mlp2")
def mlp2(input_shape: tuple[int, int, int], num_classes: int, hidden: int = 512) -> nn.Module:
    """2-layer NN: flatten -> linear(hidden) -> ReLU -> linear(classes)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )


class ResidualBlock(nn.Module):
    """Pre-norm MLP block: x + W2 GELU(W1 LayerNorm(x))."""

    def __init__(self, width: int, expansion: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, width * expansion),
            nn.GELU(),
            nn.Linear(width * expansion, width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@register_model("resmlp")
def resmlp(
    input_shape: tuple[int, int, int], num_classes: int, width: int = 512, depth: int = 3
) -> nn.Module:
    """Residual MLP: flatten -> linear(width) -> pre-norm residual blocks -> LayerNorm -> classes."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), width),
        *[ResidualBlock(width) for _ in range(depth)],
        nn.LayerNorm(width),
        nn.Linear(width, num_classes),
    )
