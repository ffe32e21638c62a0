"""Loss registry: every loss takes raw logits [N, C] and integer targets [N] and returns a scalar.

Register with `@register_loss("name", params={...})` on an `nn.Module` class whose constructor
takes exactly those hyperparameters as keyword arguments. The CLI flags (`--gamma`, ...) and the
tuner's search space are generated from these declarations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from torch import nn

from bench.errors import UsageError
from bench.registry import Registry

HParamValue = float | tuple[float, ...] | None


@dataclass(frozen=True)
class HParam:
    """One loss hyperparameter: default, valid range (inclusive unless open) and tuning range."""

    default: HParamValue
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    tune: tuple[float, float] | None = None
    log: bool = False
    per_class: bool = False
    help: str = ""

    def range_text(self) -> str:
        left = "(" if self.low_open else "["
        right = ")" if self.high_open or self.high == math.inf else "]"
        return f"{left}{self.low:g}, {self.high:g}{right}"

    def check(self, name: str, value: HParamValue, num_classes: int) -> HParamValue:
        if value is None:
            return None
        values = value if isinstance(value, tuple) else (value,)
        if isinstance(value, tuple):
            if not self.per_class:
                raise UsageError(f"{name} takes one number, got a list of {len(value)}")
            if len(value) != num_classes:
                raise UsageError(
                    f"{name} needs one value per class ({num_classes}), got {len(value)}"
                )
        for v in values:
            too_low = v <= self.low if self.low_open else v < self.low
            too_high = v >= self.high if self.high_open else v > self.high
            if too_low or too_high or math.isnan(v):
                raise UsageError(f"{name} must lie in {self.range_text()}, got {v:g}")
        return value


@dataclass(frozen=True)
class LossSpec:
    name: str
    cls: type[nn.Module]
    params: dict[str, HParam] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        doc = (self.cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


LOSSES: Registry[LossSpec] = Registry("loss")


def register_loss(name: str, params: dict[str, HParam] | None = None):
    """Class decorator adding a loss to the registry under `name`."""
    return LOSSES.decorator(name, lambda cls: LossSpec(name, cls, dict(params or {})))


def resolve_loss_params(name: str, given: dict[str, HParamValue], num_classes: int) -> dict:
    """Defaults overlaid with `given`, each checked against its declared range."""
    spec = LOSSES.get(name)
    unknown = sorted(set(given) - set(spec.params))
    if unknown:
        accepted = ", ".join(spec.params) or "none"
        raise UsageError(
            f"loss {name!r} has no hyperparameter {', '.join(unknown)}; its hyperparameters: {accepted}"
        )
    resolved = {k: p.default for k, p in spec.params.items()}
    resolved.update(given)
    return {k: spec.params[k].check(k, v, num_classes) for k, v in resolved.items()}


def build_loss(name: str, params: dict[str, HParamValue]) -> nn.Module:
    """Instantiate a registered loss with already-resolved hyperparameters."""
    return LOSSES.get(name).cls(**params)


def all_hparams() -> dict[str, HParam]:
    """Every hyperparameter name any loss declares (first declaration wins, for CLI help)."""
    merged: dict[str, HParam] = {}
    for name in LOSSES:
        for key, hp in LOSSES.get(name).params.items():
            merged.setdefault(key, hp)
    return merged


def as_tuple(values: Sequence[float] | float | None) -> HParamValue:
    if values is None or isinstance(values, (int, float)):
        return None if values is None else float(values)
    return tuple(float(v) for v in values)


from losses import classic  # noqa: E402,F401  (fills the registry)
