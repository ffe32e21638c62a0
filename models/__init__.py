"""Model registry: `@register_model("name")` on a builder `(input_shape, num_classes) -> nn.Module`.

Every model is sized from the dataset: `input_shape` is (channels, height, width) and the
model returns raw logits [N, num_classes].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

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


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return MODELS.get(name).build(input_shape, num_classes)


from models import cnn, mlp  # noqa: E402,F401  (fill the registry)
