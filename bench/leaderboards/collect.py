"""Collecting run records and grouping them into a board's rows: one row per (dataset, model, loss
with its parameters, training settings), its seeds the records. `read_records` is shared with
`bench.load_runs`, so both treat a torn or foreign file the same way."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from bench.config import SETTINGS as RUN_SETTINGS
from bench.losses import LOSSES
from bench.record import RECORD_NAME, load_record
from bench.stats import (
    Summary,
    summarize,
)

SETTINGS = ("epochs", "batch_size", "lr", "optimizer", "momentum", "schedule", "warmup_epochs", "warmup_from",
            "decay_to", "weight_decay", "limit_train", "limit_test", "image_size", "augment", "translate",
            "crop_fill", "flip", "lookahead", "tta", "precision")


CHANCE_MARGIN = 0.02  # a row whose 95% interval does not clear chance by 2 pp learned nothing certain


def read_records(paths: list[Path]) -> tuple[list[tuple[dict, Path]], list[str]]:
    """Valid records under `paths` (files, or folders searched recursively) with their files, and
    the unreadable ones ('file: why'): a torn or foreign file is never a run. `bench.load_runs`
    reads records this way too."""
    found, bad = [], []
    for path in paths:
        for file in [path] if path.is_file() else sorted(path.rglob(RECORD_NAME)):
            try:
                found.append((load_record(file), file))
            except (OSError, ValueError) as exc:
                bad.append(f"{file}: {exc}")
    return found, bad


def find_records(paths: list[Path]) -> tuple[list[dict], list[str]]:
    """Valid records under `paths` and the unreadable ones (see `read_records`)."""
    found, bad = read_records(paths)
    return [record for record, _ in found], bad


def tuned_text(name: str, key: str, value: float) -> str:
    """A tuned value to 3 digits; a value tuned as 1 - value on a log scale (class-balanced beta) to
    3 digits of its distance from 1, so beta 0.99984 reads 0.99984, not 1."""
    declared = LOSSES.get(name).params.get(key) if name in LOSSES else None
    if declared is None or not declared.log_complement or not 0 < 1 - value < 1:
        return f"{value:.3g}"
    decimals = 2 - math.floor(math.log10(1 - value))
    return f"{value:.{decimals}f}".rstrip("0").rstrip(".")


def loss_label(name: str, params: dict, tuned=(), lr: float | None = None) -> str:
    """'focal(gamma=0.5)'; parameters that are off (None, or 0 by default and 0) are left out.

    A tuned row shows its tuned values to 3 digits and its lr: 'focal(gamma=1.39, lr 0.0311)'.
    """
    declared = LOSSES.get(name).params if name in LOSSES else {}
    shown = []
    for key, value in sorted(params.items()):
        default = declared[key].default if key in declared else None
        if value is None or (value == default and default in (0, 0.0, None) and key not in tuned):
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = tuned_text(name, key, value) if key in tuned else f"{value:g}"
        shown.append(f"{key}={value}")
    if "lr" in tuned and lr is not None:
        shown.append(f"lr {lr:.3g}")
    return f"{name}({', '.join(shown)})" if shown else name


def tuned_keys(record: dict) -> set[str]:
    return set(record.get("tuning", {}).get("params", {}))


def per_seed_loss_label(records: list[dict]) -> str:
    """A per-seed-tuned row: its fixed parameters, then the span of the values its studies chose,
    'focal (tuned per seed: lr 0.0031–0.041, gamma 0.42–2.1)'."""
    config = records[0]["config"]
    tuned = set().union(*(tuned_keys(r) for r in records))
    fixed = {k: v for k, v in config["loss_params"].items() if k not in tuned}
    spans = []
    for key in sorted(tuned, key=lambda k: (k != "lr", k)):
        values = [r["tuning"]["params"][key] for r in records if key in r["tuning"]["params"]]
        low, high = (tuned_text(config["loss"], key, v) for v in (min(values), max(values)))
        spans.append(f"{key} {low}" + (f"–{high}" if high != low else ""))
    label = loss_label(config["loss"], fixed)
    return f"{label} (tuned per seed: {', '.join(spans)})" if spans else label


def is_per_seed(record: dict) -> bool:
    return (record.get("tuning") or {}).get("mode") == "per_seed"


def record_loss_label(record: dict) -> str:
    """A record's loss as its row shows it, with the values its cell tuned."""
    config = record["config"]
    return loss_label(config["loss"], config["loss_params"], tuned_keys(record), config["lr"])


def settings_of(record: dict) -> tuple:
    """Training settings a row is defined by; values its cell tuned (lr, ...) belong to the row's loss."""
    tuned, config = tuned_keys(record), record["config"]
    # a record from before a setting existed ran at its default
    return tuple((k, None if k in tuned else config.get(k, RUN_SETTINGS[k].default)) for k in SETTINGS)


def compared_settings(record: dict) -> tuple:
    """The settings a loss is compared with ce under: its row's, except a precision that
    `--precision auto` chose for the loss itself (fp32 where its values move under bf16-rounded
    logits), which is part of running that loss, not a setting the user varied."""
    auto = record["config"].get("precision_reason", "").startswith("auto")
    return tuple((k, "auto" if k == "precision" and auto else v) for k, v in settings_of(record))


def chosen_on_grid(tuning: dict | None) -> bool | None:
    """Whether a study's chosen lr is a point of its shared lr grid (None: no grid). The grid's
    trials run every loss at its default hyperparameters and the sampler's lrs are continuous, so
    a chosen lr on the grid means a grid trial won and the sampler's own trials did not beat it."""
    if not tuning or not tuning.get("lr_grid") or "lr" not in tuning.get("params", {}):
        return None
    return any(math.isclose(tuning["params"]["lr"], x, rel_tol=1e-9) for x in tuning["lr_grid"])


def is_eval_record(record: dict) -> bool:
    """Tuning trials (they carry `trial`, and no test metrics) never enter a table."""
    return "trial" not in record


class Group:
    """The seeds of one (dataset, model, loss with its parameters, training settings)."""

    def __init__(self, records: list[dict]) -> None:
        self.records = sorted(records, key=lambda r: r["config"]["seed"])
        first = self.records[0]
        config = first["config"]
        self.dataset = first["dataset"]["name"]
        self.model = config["model"]
        self.tuning = first.get("tuning")
        self.per_seed = is_per_seed(first)
        self.loss = per_seed_loss_label(self.records) if self.per_seed else record_loss_label(first)
        self.is_baseline = config["loss"] == "ce" and not any(
            v not in (None, 0, 0.0) for v in config["loss_params"].values())
        self.settings = settings_of(first)
        self.compared_settings = compared_settings(first)
        self.seeds = [r["config"]["seed"] for r in self.records]
        self.several_seeds = len(self.seeds) >= 2  # a mean to rank and test; one run may be a lucky one
        self.label_suffix = ""  # the settings that tell this row from the other rows of its model
        self.model_settings = ""  # settings every row of its model shares but other models do not

    @property
    def chance(self) -> float:
        return 1 / len(self.records[0]["dataset"]["class_names"])

    @property
    def learned(self) -> bool:
        """Clearly above chance: the 95% interval's low end (the mean, for one seed) more than
        CHANCE_MARGIN above 1 / classes."""
        acc = self.summary("accuracy")
        low = acc.mean if acc.n < 2 else acc.ci_low
        return bool(low > self.chance + CHANCE_MARGIN)

    @property
    def search_tied(self) -> bool:
        """Every tuning trial of its studies scored the same: the search chose nothing."""
        return bool(self.tuning) and all((r.get("tuning") or {}).get("all_tied") for r in self.records)

    def values(self, metric: str) -> list[float]:
        return [r["metrics"]["test"][metric] for r in self.records]

    def summary(self, metric: str) -> Summary:
        return summarize(self.values(metric))

    def tta_summary(self) -> Summary | None:
        """Test accuracy with test-time augmentation (`--tta`), where every seed has it."""
        values = [(r["metrics"].get("test_tta") or {}).get("accuracy") for r in self.records]
        return summarize(values) if values and None not in values else None

    def by_seed(self, metric: str) -> dict[int, float]:
        return dict(zip(self.seeds, self.values(metric)))


def superseded(records: list[dict]) -> list[dict]:
    """Eval records whose cell was tuned further afterwards (its study, same budget, more trials)
    and got other best values: the records of the study's longest tuning are the cell's rows."""
    tuned = [((r["dataset"]["name"], r["tuning"]["study"]), r) for r in records
             if r.get("tuning", {}).get("study") and is_eval_record(r)]
    latest = {key: r["tuning"] for key, r in sorted(tuned, key=lambda kr: kr[1]["tuning"]["trials"])}
    return [r for key, r in tuned if r["tuning"]["params"] != latest[key]["params"]]


def group_records(records: list[dict]) -> dict[str, list[Group]]:
    """Completed eval records grouped per dataset (its variant included), then per configuration."""
    buckets: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if r["status"] == "completed" and is_eval_record(r) and "test" in r["metrics"]:
            if is_per_seed(r):  # one row per cell: its seeds' studies chose their own values
                fixed = {k: v for k, v in r["config"]["loss_params"].items() if k not in tuned_keys(r)}
                key = (r["dataset"]["name"], r["config"]["model"], r["config"]["loss"],
                       json.dumps(fixed, sort_keys=True), settings_of(r), r["tuning"]["cell"])
            else:
                key = (r["dataset"]["name"], r["config"]["model"], r["config"]["loss"],
                       json.dumps(r["config"]["loss_params"], sort_keys=True), settings_of(r),
                       r.get("tuning", {}).get("study"), r["config"]["lr"])
            buckets[key].append(r)
    per_dataset: dict[str, list[Group]] = defaultdict(list)
    for recs in buckets.values():
        # one record per seed: a rerun of the same seed keeps the newest
        newest = {r["config"]["seed"]: r for r in sorted(recs, key=lambda r: r.get("finished", ""))}
        group = Group(list(newest.values()))
        per_dataset[group.dataset].append(group)
    for groups in per_dataset.values():
        label_settings(groups)
    return dict(per_dataset)


def label_settings(groups: list[Group]) -> None:
    """Name the settings that differ between a dataset's rows: in a row's label where they differ
    between the rows of one model (the rows its verdicts compare), once per model where every row
    of the model shares them (bf16 chosen for one model, fp32 for another)."""
    def text(g: Group, indices) -> str:
        return " ".join(f"{SETTINGS[i]}={g.settings[i][1]}" for i in indices if g.settings[i][1] is not None)

    varying = [i for i in range(len(SETTINGS)) if len({g.settings[i][1] for g in groups}) > 1]
    for model in {g.model for g in groups}:
        rows = [g for g in groups if g.model == model]
        within = [i for i in varying if len({g.settings[i][1] for g in rows}) > 1]
        for g in rows:
            g.label_suffix = text(g, within)
            g.model_settings = text(g, [i for i in varying if i not in within])
