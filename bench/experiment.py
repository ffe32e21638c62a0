"""Experiment files: a TOML description of a grid (models x losses x seeds) on one dataset.

```toml
dataset = "cifar10"
data_root = "../../shared/datasets/cifar10-jpeg.tar.gz"   # relative to this file
models = ["cnn-tiny", "cnn", {name = "timm:convnext_atto", optimizer = "adamw", warmup_epochs = 1}]
                              # bench models, timm:<name>, FILE.py:NAME; a table adds the model's own settings
seeds = [0, 1, 2, 3, 4]       # default: 0..4
split_per_seed = false        # true: a protocol split (imagenet10 3:1:1, folder 4:1) drawn per seed
epochs = 4                    # any other `bench run` setting (its flag name with _) applies to every run

[tune]                        # optional: tune on val first
trials = 12                   # per study, in total (a rerun of a finished study adds none)
per_seed = true               # default: a study per (cell, eval seed), tuning seed = seed + eval seed;
                              #   false: one study per cell, its best values on every seed
lr_points = 6                 # the first trials: one log-spaced lr grid shared by every loss
                              #   (never pruned; default: half the trials; 0: none)
epochs = 2                    # one trial's budget (default: the eval epochs); limit_train too
seed = 100                    # the tuning seed(s); never an eval seed
objective = "val_acc"         # or "val_nll"
lr = [0.005, 0.5]             # default: the optimizer's range
pruner = "hyperband"          # or "median"; no trial is pruned before half its epochs

[[losses]]
name = "ce"
label_smoothing = 0.0         # given: fixed

[[losses]]
name = "focal"                # gamma not given: tuned in its registry range (with [tune])
lr = 0.01                     # optional: this loss's own fixed lr
```
Unknown keys, wrong types and out-of-range values are one clear line each (UsageError).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from bench.config import PRUNERS, SETTINGS, TUNE_OBJECTIVES, RunConfig
from bench.errors import UsageError
from bench.losses import get_loss, resolve_loss_params
from bench.models import get_model

GRID_KEYS = {"dataset", "models", "losses", "seeds", "tune", "split_per_seed"}
RUN_FIELDS = SETTINGS
SHARED_KEYS = set(SETTINGS) - {"seed"}  # the file's `seeds` list sets the seed
DEFAULT_SEEDS = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class TuneSpec:
    """The [tune] table: the budget and search of stage 1 (Optuna studies on val).

    `per_seed` (the default): each eval seed s runs its own study with tuning seed `seed + s` (its
    own train/val partition and initial weights, never an eval seed's) and its eval run uses that
    study's best values, so the seeds repeat the whole procedure and the paired tests over seeds
    see the search's luck too. False: one study per cell, its best values on every eval seed.

    `lr_points`: the first trials of every study are the same log-spaced lr grid over the range
    (the loss's own hyperparameters at their defaults), never pruned, so every loss of a model
    sees the same lr candidates at full fidelity; the rest is TPE over lr and the loss's free
    hyperparameters. None: half the trials (at least 3, at most `trials`); 0: no grid.
    """

    trials: int
    seed: int = 100
    epochs: int | None = None  # None: the eval epochs
    limit_train: int | None = None  # None: the eval runs' training set
    objective: str = "val_acc"
    lr: tuple[float, float] | None = None  # None: the optimizer's range (config.LR_RANGES)
    pruner: str = "hyperband"
    per_seed: bool = True
    lr_points: int | None = None

    @property
    def mode(self) -> str:
        return "per_seed" if self.per_seed else "single"

    @property
    def legacy(self) -> bool:
        """One study per cell and no lr grid: the protocol of the boards published before per-seed
        tuning, whose study names and run identities stay as they were."""
        return not self.per_seed and self.lr_points == 0

    def tuning_seed(self, eval_seed: int) -> int:
        return self.seed + eval_seed if self.per_seed else self.seed

    def grid_size(self) -> int:
        if self.lr_points is not None:
            return min(self.lr_points, self.trials)
        return min(self.trials, max(3, self.trials // 2))

    def trial_config(self, cell: RunConfig, eval_seed: int = 0) -> RunConfig:
        """A cell's settings at the tuning budget and seed (lr and free hyperparameters still open);
        `cell` carries the eval seed's data split (split_per_seed)."""
        return replace(cell, seed=self.tuning_seed(eval_seed), epochs=self.epochs or cell.epochs,
                       limit_train=self.limit_train if self.limit_train is not None else cell.limit_train)


@dataclass(frozen=True)
class Cell:
    """One (model, [[losses]] entry): its settings, with the loss hyperparameters the entry gives.

    Under [tune], what the entry (or the file's top level, for lr) gives stays fixed; lr and the
    loss's other numeric hyperparameters are tuned.
    """

    config: RunConfig
    lr_fixed: bool


@dataclass(frozen=True)
class Experiment:
    """A grid: one cell per (model, [[losses]] entry), each run for every eval seed.

    `split_per_seed`: a protocol split (imagenet10's 3:1:1, a folder's 4:1) is drawn from each
    eval seed (split_seed = seed), so the seeds vary which images train, validate and test."""

    path: Path | None
    cells: tuple[Cell, ...]
    seeds: tuple[int, ...]
    tune: TuneSpec | None = None
    split_per_seed: bool = False

    def config_for(self, cell: Cell, seed: int) -> RunConfig:
        """A cell on one eval seed (with that seed's split when split_per_seed)."""
        return replace(cell.config, seed=seed, **({"split_seed": seed} if self.split_per_seed else {}))

    @property
    def configs(self) -> list[RunConfig]:
        """Every run of an untuned grid, in a stable order (model, loss, seed)."""
        return [self.config_for(cell, seed) for cell in self.cells for seed in self.seeds]


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


def load_experiment(path: Path) -> Experiment:
    """The grid an experiment file describes; every value is checked here, before any run."""
    try:
        spec = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"experiment file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}") from None
    where = str(path)
    unknown = sorted(set(spec) - GRID_KEYS - SHARED_KEYS)
    if unknown:
        raise UsageError(f"{where}: unknown key {', '.join(unknown)}; accepted: "
                         f"{', '.join(sorted(GRID_KEYS | SHARED_KEYS))}")
    missing = sorted({"dataset", "models", "losses"} - set(spec))
    if missing:
        raise UsageError(f"{where}: missing {', '.join(missing)}")
    if not isinstance(spec["models"], list) or not spec["models"]:
        raise UsageError(f"{where}: models must be a non-empty list of model names")
    models = [_model_entry(where, m) for m in spec["models"]]
    if not isinstance(spec["losses"], list) or not all(
        isinstance(x, dict) and "name" in x for x in spec["losses"]
    ):
        raise UsageError(f"{where}: losses must be a list of tables, each with a name ([[losses]] name = "
                         "\"ce\")")
    seeds = spec.get("seeds", list(DEFAULT_SEEDS))
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise UsageError(f"{where}: seeds must be a non-empty list of integers")
    shared = {k: v for k, v in spec.items() if k in SHARED_KEYS}
    for key, value in shared.items():
        _check_type(where, key, value, RUN_FIELDS[key].type)
    # records keep data_root and FILE.py plug-in paths as written; runs resolve them against this folder
    shared["base_dir"] = str(path.parent.resolve())
    for model, _ in models:
        get_model(model, shared["base_dir"])
    split_per_seed = spec.get("split_per_seed", False)
    if not isinstance(split_per_seed, bool):
        raise UsageError(f"{where}: split_per_seed must be true or false, got {split_per_seed!r}")
    if split_per_seed and "split_seed" in shared:
        raise UsageError(f"{where}: split_seed is fixed and split_per_seed draws it from each seed; keep one")
    tune = _tune_spec(where, spec["tune"], seeds) if "tune" in spec else None
    if split_per_seed and tune is not None and not tune.per_seed:
        raise UsageError(f"{where}: split_per_seed needs [tune] per_seed = true: one study would tune on "
                         "images that other seeds' splits test on")
    if tune is not None and tune.lr is not None and "lr" in shared:
        raise UsageError(f"{where}: lr is fixed at the top level and given a range in [tune]; keep one")
    cells = []
    for model, own in models:
        if tune is not None and tune.lr is not None and "optimizer" in own:
            raise UsageError(f"{where}: model {model} sets its own optimizer while [tune] lr fixes one lr "
                             "range for every model; leave [tune] lr out, and each cell searches its "
                             "optimizer's range")
        for entry in spec["losses"]:
            params = {k: tuple(v) if isinstance(v, list) else v for k,
                      v in entry.items() if k not in ("name", "lr")}
            get_loss(entry["name"], shared["base_dir"])
            resolve_loss_params(entry["name"], params, 10 if not params else _classes_hint(params),
                                shared["base_dir"])
            lr = entry.get("lr", own.get("lr", shared.get("lr")))
            _check_type(f"{where}: [[losses]] {entry['name']}", "lr", lr, RUN_FIELDS["lr"].type)
            config = RunConfig(model=model, loss=entry["name"], loss_params=params, dataset=spec["dataset"],
                               seed=seeds[0], **(shared | own | {"lr": lr}))
            cells.append(Cell(config, lr_fixed=lr is not None))
    return Experiment(path, tuple(cells), tuple(seeds), tune, split_per_seed)


def _model_entry(where: str, entry) -> tuple[str, dict]:
    """A `models` item: a name, or a table with a name and run settings of its own (a timm backbone
    that needs AdamW with warm-up: {name = "timm:convnext_atto", optimizer = "adamw", warmup_epochs = 1})."""
    if isinstance(entry, str):
        return entry, {}
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise UsageError(f"{where}: each models item is a name or a table with a name, got {entry!r}")
    own = {k: v for k, v in entry.items() if k != "name"}
    unknown = sorted(set(own) - SHARED_KEYS)
    if unknown:
        raise UsageError(f"{where}: model {entry['name']} has no setting {', '.join(unknown)}; accepted: "
                         f"{', '.join(sorted(SHARED_KEYS))}")
    for key, value in own.items():
        _check_type(f"{where}: model {entry['name']}", key, value, RUN_FIELDS[key].type)
    return entry["name"], own


def _tune_spec(where: str, table, seeds: list[int]) -> TuneSpec:
    """The [tune] table, checked key by key."""
    if not isinstance(table, dict):
        raise UsageError(f"{where}: tune must be a table ([tune] with trials = N, ...)")
    fields = {f.name: f for f in dataclasses.fields(TuneSpec)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise UsageError(f"{where}: [tune] has no key {', '.join(unknown)}; accepted: {', '.join(fields)}")
    if "trials" not in table:
        raise UsageError(f"{where}: [tune] needs trials (the number of trials per model x loss cell)")
    for key in ("trials", "seed", "epochs", "limit_train", "lr_points"):
        value = table.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise UsageError(f"{where}: [tune] {key} must be an integer, got {value!r}")
    for key, low in (("trials", 1), ("epochs", 1), ("limit_train", 2), ("lr_points", 0)):
        if key in table and table[key] < low:
            raise UsageError(f"{where}: [tune] {key} must be at least {low}, got {table[key]}")
    if not isinstance(table.get("per_seed", True), bool):
        raise UsageError(f"{where}: [tune] per_seed must be true or false, got {table['per_seed']!r}")
    spec = TuneSpec(**{**table, "lr": None})
    clashes = sorted({spec.tuning_seed(s) for s in seeds} & set(seeds))
    if clashes and not spec.per_seed:
        raise UsageError(
            f"{where}: [tune] seed {spec.seed} is one of the eval seeds {seeds}; tune on a seed of its own "
            "so that no eval run is the run its settings were chosen on"
        )
    if clashes:
        raise UsageError(
            f"{where}: [tune] seed {spec.seed} + eval seed (per-seed tuning) gives tuning seeds "
            f"{', '.join(map(str, clashes))}, which are also eval seeds {seeds}; choose a [tune] seed above "
            f"{max(seeds) - min(seeds)} so that no eval run is the run its settings were chosen on"
        )
    for key, choices in (("objective", TUNE_OBJECTIVES), ("pruner", PRUNERS)):
        if key in table and table[key] not in choices:
            raise UsageError(f"{where}: [tune] {key} must be one of {', '.join(choices)}, got {table[key]!r}")
    lr = table.get("lr")
    if lr is not None:
        ok = (
            isinstance(lr, list)
            and len(lr) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in lr)
            and 0 < lr[0] < lr[1]
        )
        if not ok:
            raise UsageError(f"{where}: [tune] lr must be [low, high] with 0 < low < high, got {lr!r}")
        lr = (float(lr[0]), float(lr[1]))
    return replace(spec, lr=lr)


def _classes_hint(params: dict) -> int:
    """Per-class lists are checked against the dataset when the run starts; here only ranges."""
    lengths = {len(v) for v in params.values() if isinstance(v, tuple)}
    return lengths.pop() if len(lengths) == 1 else 10
