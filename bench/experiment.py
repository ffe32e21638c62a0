"""Experiment files: a TOML description of a grid (models x losses x seeds) on one dataset.

```toml
dataset = "cifar10"
data_root = "../../shared/datasets/cifar10-jpeg.tar.gz"   # relative to this file
models = ["cnn-tiny", "cnn"]
seeds = [0, 1, 2]
epochs = 4                    # any other RunConfig field applies to every run

[[losses]]
name = "ce"

[[losses]]
name = "focal"
gamma = 0.5                   # the loss's own hyperparameters
```
Unknown keys, wrong types and out-of-range values are one clear line each (UsageError).
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from bench.config import RunConfig
from bench.errors import UsageError
from losses import LOSSES, resolve_loss_params
from models import check_model

GRID_KEYS = {"dataset", "models", "losses", "seeds"}
RUN_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
SHARED_KEYS = set(RUN_FIELDS) - {"model", "loss", "loss_params", "seed", "dataset"}


def _matches(value, type_name: str) -> bool:
    """Does a TOML value fit one alternative of a RunConfig annotation ('int', 'float | None', ...)?"""
    if isinstance(value, bool):
        return type_name == "bool"
    return {
        "None": value is None,
        "int": isinstance(value, int),
        "float": isinstance(value, (int, float)),
        "str": isinstance(value, str),
    }.get(type_name, isinstance(value, list) and type_name.startswith("tuple"))


def _check_type(where: str, key: str, value, annotation: str) -> None:
    names = [t.strip() for t in str(annotation).split("|")]
    if not any(_matches(value, n) for n in names):
        raise UsageError(f"{where}: {key} must be {' or '.join(names)}, got {value!r}")


def load_experiment(path: Path) -> list[RunConfig]:
    """Every run of the grid, in a stable order (dataset, model, loss, seed)."""
    try:
        spec = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"experiment file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}") from None
    where = str(path)
    unknown = sorted(set(spec) - GRID_KEYS - SHARED_KEYS)
    if unknown:
        raise UsageError(f"{where}: unknown key {', '.join(unknown)}; accepted: {', '.join(sorted(GRID_KEYS | SHARED_KEYS))}")
    missing = sorted({"dataset", "models", "losses"} - set(spec))
    if missing:
        raise UsageError(f"{where}: missing {', '.join(missing)}")
    if not isinstance(spec["models"], list) or not spec["models"]:
        raise UsageError(f"{where}: models must be a non-empty list of model names")
    if not isinstance(spec["losses"], list) or not all(isinstance(x, dict) and "name" in x for x in spec["losses"]):
        raise UsageError(f"{where}: losses must be a list of tables, each with a name ([[losses]] name = \"ce\")")
    seeds = spec.get("seeds", [0])
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise UsageError(f"{where}: seeds must be a list of integers")
    shared = {k: v for k, v in spec.items() if k in SHARED_KEYS}
    for key, value in shared.items():
        _check_type(where, key, value, RUN_FIELDS[key].type)
    if "data_root" in shared:
        shared["data_root"] = str((path.parent / shared["data_root"]).resolve())
    if "classes" in shared:
        shared["classes"] = tuple(shared["classes"])
    for model in spec["models"]:
        check_model(model)
    configs = []
    for model in spec["models"]:
        for entry in spec["losses"]:
            params = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items() if k != "name"}
            LOSSES.get(entry["name"])
            resolve_loss_params(entry["name"], params, num_classes=10 if not params else _classes_hint(params))
            for seed in seeds:
                configs.append(RunConfig(model=model, loss=entry["name"], loss_params=params,
                                         dataset=spec["dataset"], seed=seed, **shared))
    return configs


def _classes_hint(params: dict) -> int:
    """Per-class lists are checked against the dataset when the run starts; here only ranges."""
    lengths = {len(v) for v in params.values() if isinstance(v, tuple)}
    return lengths.pop() if len(lengths) == 1 else 10
