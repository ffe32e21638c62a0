"""Model registry: `@register_model("name")` on a builder `(input_shape, num_classes) -> nn.Module`.

Every model is sized from the dataset: `input_shape` is (channels, height, width) and the
model returns raw logits [N, num_classes].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from bench.errors import UsageError
from bench.registry import Registry

Builder = Callable[[tuple[int, int, int], int], nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Builder
    convolutional: bool  # trains in channels_last memory format

    @property
    def summary(self) -> str:
        doc = (self.build.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


MODELS: Registry[ModelSpec] = Registry("model")


def register_model(name: str, convolutional: bool = False):
    """Decorator adding a model builder to the registry under `name`."""
    return MODELS.decorator(name, lambda fn: ModelSpec(name, fn, convolutional))


TIMM_PREFIX = "timm:"


@dataclass
class BuiltModel:
    module: nn.Module
    convolutional: bool  # trains in channels_last
    stem: str | None  # timm models: 'cifar' or 'imagenet'; bench's own models: None

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.convolutional else torch.contiguous_format


def check_model(name: str) -> None:
    """Raise a UsageError naming the choices unless `name` is registered or `timm:<a timm name>`."""
    if name.startswith(TIMM_PREFIX):
        from models.timm_adapter import check_name

        check_name(name[len(TIMM_PREFIX):])
    else:
        MODELS.get(name)


def build_model(
    name: str, input_shape: tuple[int, int, int], num_classes: int,
    stem: str = "auto", pretrained: bool = False, weights: str | None = None,
) -> BuiltModel:
    if name.startswith(TIMM_PREFIX):
        from models.timm_adapter import build_timm

        module, used = build_timm(name[len(TIMM_PREFIX):], input_shape, num_classes, stem, pretrained, weights)
        return BuiltModel(module, True, used)
    if pretrained or weights or stem == "cifar":
        raise UsageError(f"--pretrained, --weights and --stem cifar apply to timm:<name> models, not {name}")
    spec = MODELS.get(name)
    return BuiltModel(spec.build(input_shape, num_classes), spec.convolutional, None)


from models import cnn, mlp  # noqa: E402,F401  (fill the registry)
