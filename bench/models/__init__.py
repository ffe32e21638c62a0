"""Model registry: `@register_model("name")` on a builder `(input_shape, num_classes) -> nn.Module`.

Every model is sized from the dataset: `input_shape` is (channels, height, width) and the
model returns raw logits [N, num_classes]. Besides the registry: `timm:<name>`, a user's
`FILE.py:NAME` / `package.module:NAME` (an nn.Module class built as NAME(num_classes=...) or a
builder like the registry's), and installed packages' `bench.models` entry points.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from bench import plugins
from bench.errors import UsageError
from bench.registry import Registry

Builder = Callable[[tuple[int, int, int], int], nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """A model reference resolved once (`get_model`) and passed down to whatever builds, counts
    or records it."""

    name: str
    build: Builder | None  # None: a timm model, built with its stem and weights (build_timm)
    convolutional: bool | None  # trains in channels_last memory format; None: has a Conv2d
    source: str = "bench"  # or the package an entry point came from, or a plug-in's path
    origin: dict | None = None  # a plug-in's {"ref", "path", "sha256"}, kept in the record

    @property
    def summary(self) -> str:
        doc = (self.build.__doc__ or "").strip()
        text = doc.splitlines()[0] if doc else ""
        return text if self.source == "bench" else f"{text} (plug-in: {self.source})".strip()


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


def get_model(name: str, base_dir: str | None = None) -> ModelSpec:
    """The model `name` refers to, resolved once: a registered name, `timm:<a timm name>` or a
    plug-in reference (imported and hashed). Anything else is a UsageError naming the choices."""
    if name.startswith(TIMM_PREFIX):
        from bench.models.timm_adapter import check_name

        check_name(name[len(TIMM_PREFIX):])
        return ModelSpec(name, None, True, "timm")
    if plugins.is_reference(name):
        plugin = plugins.resolve("model", name, base_dir)
        return ModelSpec(name, builder_of(plugin.obj, name), None, plugin.source["path"], plugin.source)
    return MODELS.get(name)


def instantiate(obj, ref: str, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """An nn.Module class is built as cls(num_classes=...); a function as
    builder(input_shape, num_classes)."""
    try:
        module = obj(num_classes=num_classes) if isinstance(obj, type) else obj(input_shape, num_classes)
    except Exception as exc:
        call = "(num_classes=...)" if isinstance(obj, type) else "(input_shape, num_classes)"
        raise UsageError(f"model {ref!r}: building it as {getattr(obj, '__name__', ref)}{call} failed: "
                         f"{type(exc).__name__}: {exc}") from None
    if not isinstance(module, nn.Module):
        raise UsageError(f"model {ref!r} returned a {type(module).__name__}, not an nn.Module")
    return module


def builder_of(obj, ref: str) -> Builder:
    """A registry-style builder for a user's nn.Module class or builder function."""
    if isinstance(obj, type) and not issubclass(obj, nn.Module) or not callable(obj):
        raise UsageError(f"model {ref!r} is an object of type {type(obj).__name__}, not an nn.Module class "
                         "or a builder function (input_shape, num_classes) -> nn.Module")
    return lambda input_shape, num_classes: instantiate(obj, ref, input_shape, num_classes)


def build_model(
    model: str | ModelSpec, input_shape: tuple[int, int, int], num_classes: int,
    stem: str = "auto", pretrained: bool = False, weights: str | None = None, base_dir: str | None = None,
) -> BuiltModel:
    """A fresh model for `input_shape` and `num_classes` (`model`: a name, or its spec already
    resolved by `get_model`). `stem`, `pretrained` and `weights` apply to timm models only."""
    spec = model if isinstance(model, ModelSpec) else get_model(model, base_dir)
    if spec.build is None:
        from bench.models.timm_adapter import build_timm

        module, used = build_timm(spec.name[len(TIMM_PREFIX):], input_shape, num_classes, stem, pretrained,
                                  weights)
        return BuiltModel(module, True, used)
    if pretrained or weights or stem == "cifar":
        raise UsageError(f"--pretrained, --weights and --stem cifar apply to timm:<name> models, "
                         f"not {spec.name}")
    module = spec.build(input_shape, num_classes)
    convolutional = spec.convolutional
    if convolutional is None:
        convolutional = any(isinstance(m, nn.Conv2d) for m in module.modules())
    return BuiltModel(module, convolutional, None)


from bench.models import airbench, cnn, mlp  # noqa: E402,F401  (fill the registry)

for _name, _obj, _origin in plugins.entry_points("model"):  # installed packages' models, by name
    try:
        MODELS.add(_name, ModelSpec(_name, builder_of(_obj, _name), None, _origin))
    except (UsageError, ValueError) as _exc:
        print(f"bench: warning: model plug-in {_name!r} from {_origin} skipped: {_exc}", file=sys.stderr)
