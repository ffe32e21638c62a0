"""Loss registry: every loss takes raw logits [N, C] and integer targets [N] and returns a scalar.

Register with `@register_loss("name", params={...})` on an `nn.Module` class whose constructor
takes exactly those hyperparameters as keyword arguments. The CLI flags (`--gamma`, ...) and the
tuner's search space are generated from these declarations.

A user's loss is `FILE.py:NAME` / `package.module:NAME` (an nn.Module class, built with the
experiment entry's extra keys as keyword arguments, or a function (logits, targets) -> scalar),
or an installed package's `bench.losses` entry point. Undeclared, its hyperparameters are
passed through unchecked and never tuned.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, replace
from typing import Sequence

from torch import nn

from bench import plugins
from bench.errors import UsageError
from bench.registry import Registry

HParamValue = float | str | tuple[float, ...] | None


@dataclass(frozen=True)
class HParam:
    """One loss hyperparameter: default, valid range (inclusive unless open) and tuning range.

    `choices` are words accepted besides numbers (`numeric=False`: words only).
    """

    default: HParamValue
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    tune: tuple[float, float] | None = None
    log: bool = False
    # tune 1 - value on a log scale: for a value near 1 such as class-balanced beta, where 0.9, 0.99
    # and 0.9999 differ in kind; a linear range would hardly ever draw above 0.999
    log_complement: bool = False
    per_class: bool = False
    choices: tuple[str, ...] = ()
    numeric: bool = True
    integer: bool = False
    help: str = ""

    def __post_init__(self) -> None:
        if self.log_complement and not (self.tune and self.tune[1] < 1):
            raise ValueError(f"log_complement needs a tuning range below 1, got {self.tune}")

    def default_text(self) -> str:
        if self.default is None:
            return "none"
        return self.default if isinstance(self.default, str) else f"{self.default:g}"

    def tune_text(self) -> str:
        if self.tune is None:
            return ""
        scale = " (log of 1 - x)" if self.log_complement else " (log)" if self.log else ""
        return f"{self.tune[0]:g} .. {self.tune[1]:g}{scale}"

    def range_text(self) -> str:
        words = " | ".join(self.choices)
        if not self.numeric:
            return words
        left = "(" if self.low_open else "["
        right = ")" if self.high_open or self.high == math.inf else "]"
        numbers = f"{left}{self.low:g}, {self.high:g}{right}" + (" per class" if self.per_class else "")
        return f"{words} | {numbers}" if words else numbers

    def check(self, name: str, value: HParamValue, num_classes: int) -> HParamValue:
        if value is None:
            return None
        if isinstance(value, str) or not self.numeric:
            if value not in self.choices:
                raise UsageError(f"{name} must be {self.range_text()}, got {value!r}")
            return value
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
            if self.integer and v != int(v):
                raise UsageError(f"{name} must be a whole number, got {v:g}")
        return value


@dataclass(frozen=True)
class LossSpec:
    name: str
    cls: type[nn.Module]
    params: dict[str, HParam] = field(default_factory=dict)
    needs_class_counts: bool = False  # the constructor takes `class_counts` of the training split
    source: str = "bench"  # or where a plug-in came from
    # False: its value or gradient moves under bf16-rounded logits, so --precision auto keeps fp32
    # (bench.precision); None: a user's loss, probed when a run starts
    bf16: bool | None = True
    origin: dict | None = None  # a plug-in's {"ref", "path", "sha256"}, kept in the record

    @property
    def summary(self) -> str:
        """The docstring's first paragraph on one line (and where a plug-in came from)."""
        text = " ".join((self.cls.__doc__ or "").strip().split("\n\n")[0].split())
        return text if self.source == "bench" else f"{text} (plug-in: {self.source})".strip()


LOSSES: Registry[LossSpec] = Registry("loss")


def register_loss(
    name: str,
    params: dict[str, HParam] | None = None,
    aliases: tuple[str, ...] = (),
    needs_class_counts: bool = False,
    bf16: bool = True,
):
    """Class decorator adding a loss to the registry under `name` (and each alias)."""

    def register(cls: type[nn.Module]) -> type[nn.Module]:
        for key in (name, *aliases):
            LOSSES.add(key, LossSpec(key, cls, dict(params or {}), needs_class_counts, bf16=bf16))
        return cls

    return register


class FunctionLoss(nn.Module):
    """A user's loss function (logits, targets) -> scalar as a module; subclassed per function."""

    function = None  # staticmethod(the user's function) in each subclass

    def forward(self, logits, targets):
        return self.function(logits, targets)


def spec_of(obj, name: str, source: str) -> LossSpec:
    """The registry entry of a user's loss: an nn.Module class or a function (logits, targets) -> scalar."""
    if isinstance(obj, type) and issubclass(obj, nn.Module):
        return LossSpec(name, obj, {}, False, source, bf16=None)
    if callable(obj) and not isinstance(obj, type):
        cls = type(getattr(obj, "__name__", "loss"), (FunctionLoss,),
                   {"__doc__": obj.__doc__, "function": staticmethod(obj)})
        return LossSpec(name, cls, {}, False, source, bf16=None)
    raise UsageError(f"loss {name!r} is an object of type {type(obj).__name__}, not an nn.Module class or a "
                     "function (logits, targets) -> scalar")


def get_loss(name: str, base_dir: str | None = None) -> LossSpec:
    """The loss `name` refers to, resolved once: a registered loss, or a user's `FILE.py:NAME` /
    `package.module:NAME` reference (imported and hashed)."""
    if plugins.is_reference(name):
        plugin = plugins.resolve("loss", name, base_dir)
        return replace(spec_of(plugin.obj, name, plugin.source["path"]), origin=plugin.source)
    return LOSSES.get(name)


def resolve_loss_params(name: str | LossSpec, given: dict[str, HParamValue], num_classes: int,
                        base_dir: str | None = None) -> dict:
    """Defaults overlaid with `given`, each checked against its declared range (a plug-in's own
    hyperparameters are passed through as given). `name`: the loss, or its spec already resolved."""
    spec = name if isinstance(name, LossSpec) else get_loss(name, base_dir)
    name = name if isinstance(name, str) else spec.name
    if spec.source != "bench" and not spec.params:
        return dict(given)
    unknown = sorted(set(given) - set(spec.params))
    if unknown:
        accepted = ", ".join(spec.params) or "none"
        raise UsageError(
            f"loss {name!r} has no hyperparameter {', '.join(unknown)}; its hyperparameters: {accepted}"
        )
    resolved = {k: p.default for k, p in spec.params.items()}
    resolved.update(given)
    return {k: spec.params[k].check(k, v, num_classes) for k, v in resolved.items()}


def build_loss(
    name: str | LossSpec, params: dict[str, HParamValue], class_counts: Sequence[int] | None = None,
    base_dir: str | None = None
) -> nn.Module:
    """Instantiate a loss with already-resolved hyperparameters (`name`: the loss, or its spec
    already resolved).

    Losses that weight classes by frequency get the training split's `class_counts`.
    """
    spec = name if isinstance(name, LossSpec) else get_loss(name, base_dir)
    name = name if isinstance(name, str) else spec.name
    if spec.needs_class_counts:
        if class_counts is None:
            raise ValueError(f"loss {name!r} needs the training split's class counts")
        params = {**params, "class_counts": tuple(int(c) for c in class_counts)}
    try:
        return spec.cls(**params)
    except TypeError as exc:
        if spec.source == "bench":
            raise
        raise UsageError(f"loss {name!r} cannot be built with {params or 'no arguments'}: {exc}") from None


def all_hparams() -> dict[str, HParam]:
    """Every hyperparameter name any loss declares (first declaration wins, for CLI help)."""
    merged: dict[str, HParam] = {}
    for name in LOSSES:
        for key, hp in LOSSES.get(name).params.items():
            merged.setdefault(key, hp)
    return merged


from bench.losses import classic, imbalance, one_vs_all, robust  # noqa: E402,F401  (fill the registry)

for _name, _obj, _origin in plugins.entry_points("loss"):  # installed packages' losses, by name
    try:
        LOSSES.add(_name, spec_of(_obj, _name, _origin))
    except (UsageError, ValueError) as _exc:
        print(f"bench: warning: loss plug-in {_name!r} from {_origin} skipped: {_exc}", file=sys.stderr)
