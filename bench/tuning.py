"""`bench tune`: Optuna search over the learning rate and the loss's own hyperparameters.

The search space comes from the loss registry's tuning ranges. The objective is measured on the
validation split, never on test. Studies live in an Optuna storage chosen by URL (SQLite file by
default, any RDB URL such as postgresql://..., or journal:PATH), so rerunning the same command
adds trials to the same study, and several workers can share one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.checkpoint import Interrupted
from bench.config import LR_RANGES, RunConfig, lr_edge_note
from bench.errors import UsageError
from bench.losses import get_loss
from bench.report import QuietReporter
from bench.studies import (
    GRID_ATTR,
    enqueue,
    open_storage,
    open_study,
    quiet_optuna,
    requeue_stopped,
    states,
    worker_tag,
)
from bench.train import RunStopped, run

WEIGHT_DECAY_RANGE = (1e-5, 1e-2)
OBJECTIVES = {"val_acc": ("val_acc", "maximize"), "val_nll": ("val_nll", "minimize")}  # -> history key
TRIALS_DIR = "trials"  # tuning runs' folders, under the study's output folder


def tunable_params(loss: str, fixed=(), base_dir: str | None = None) -> dict:
    """The loss hyperparameters the tuner searches: those with a numeric tuning range that are
    not `fixed` (given by the user). Per-class and word-valued ones are never tuned."""
    return {k: hp for k, hp in get_loss(loss, base_dir).params.items()
            if hp.tune is not None and hp.numeric and not hp.per_class and k not in fixed}


class PruningReporter(QuietReporter):
    """Reports each epoch's validation metric to the trial and stops the run when told to
    (an lr-grid trial runs to the end: every loss sees those candidates at full fidelity)."""

    def __init__(self, trial, key: str) -> None:
        self.trial, self.key = trial, key
        self.prunable = not trial.user_attrs.get(GRID_ATTR)

    def epoch(self, entry: dict) -> None:
        self.trial.report(entry[self.key], entry["epoch"])
        if self.prunable and self.trial.should_prune():
            raise RunStopped("pruned", f"pruned by the tuner after epoch {entry['epoch']}")


@dataclass(frozen=True)
class SearchSpace:
    """What one study searches: lr (unless fixed), the free loss hyperparameters, weight decay."""

    lr: tuple[float, float] | None  # None: lr fixed at the config's value
    loss_params: tuple[str, ...]
    weight_decay: bool = False
    hps: dict = field(default_factory=dict, compare=False, repr=False)  # loss_params' HParams, resolved once

    @classmethod
    def of(
        cls, config: RunConfig, lr_fixed: bool, lr_range=None, weight_decay: bool = False
    ) -> "SearchSpace":
        """Everything the user left open: lr unless given, loss hyperparameters not in config.loss_params."""
        lr = None if lr_fixed else (lr_range or LR_RANGES[config.optimizer])
        free = tunable_params(config.loss, config.loss_params, config.base_dir)
        return cls(lr, tuple(free), weight_decay, free)

    def suggest(self, trial, config: RunConfig) -> RunConfig:
        hps = self.hps
        if self.lr:
            trial.suggest_float("lr", *self.lr, log=True)
        for k in self.loss_params:
            hp = hps[k]
            if hp.log_complement:  # Optuna's parameter is 1 - value, named so
                trial.suggest_float(f"1-{k}", 1 - hp.tune[1], 1 - hp.tune[0], log=True)
            else:
                trial.suggest_float(k, *hp.tune, log=hp.log)
        if self.weight_decay:
            trial.suggest_float("weight_decay", *WEIGHT_DECAY_RANGE, log=True)
        return self.apply(trial.params, config)

    def values(self, params: dict) -> dict:
        """A trial's parameters as the values a run uses (`1-beta` becomes `beta`)."""
        loss = {k: params[k] if k in params else 1 - params[f"1-{k}"] for k in self.loss_params}
        return {k: params[k] for k in ("lr", "weight_decay") if k in params} | loss

    def apply(self, params: dict, config: RunConfig) -> RunConfig:
        """The config with a trial's tuned values (the best trial's, for the eval runs)."""
        values = self.values(params)
        return replace(config, lr=values.get("lr", config.lr),
                       weight_decay=values.get("weight_decay", config.weight_decay),
                       loss_params={**config.loss_params, **{k: values[k] for k in self.loss_params}})


def make_sampler(seed: int, trials: int):
    """TPE, seeded. Its random start-up is a third of the study's trials (at least 3, at most Optuna's
    default 10): with the default, a study of 10 trials or fewer would be a plain random search."""
    import optuna

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(3, trials // 3)))


def pruning_warmup(epochs: int) -> int:
    """No trial is judged before half its epochs: one epoch's validation score is mostly noise
    (the noise board's ce trial at the lr that won for sce was pruned after epoch 1)."""
    return max(1, epochs // 2)


def make_pruner(name: str, epochs: int):
    import optuna

    warmup = pruning_warmup(epochs)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=warmup, max_resource=epochs, reduction_factor=3)
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=warmup)


def lr_grid(lr_range: tuple[float, float], points: int) -> list[float]:
    """`points` lr values evenly spaced in log over the range, ends included (one: its log-middle)."""
    low, high = (math.log(v) for v in lr_range)
    if points == 1:
        return [math.exp((low + high) / 2)]
    return [math.exp(low + (high - low) * i / (points - 1)) for i in range(points)]


def enqueue_lr_grid(study, space: "SearchSpace", config: RunConfig, points: int) -> list[float]:
    """The same lr candidates for every loss of a model, first in every study: each point with the
    loss's free hyperparameters at their defaults (on the tuner's scale). Enqueued once even when
    several workers start together (skip_if_exists)."""
    if not space.lr or points < 1:
        return []
    defaults = {}
    for k in space.loss_params:
        hp = space.hps[k]
        value = min(max(float(hp.default), hp.tune[0]), hp.tune[1])
        defaults |= {f"1-{k}": 1 - value} if hp.log_complement else {k: value}
    grid = lr_grid(space.lr, points)
    for lr in grid:
        enqueue(study, {"lr": lr, **defaults}, **{GRID_ATTR: True})
    return grid


def best_trial(study, objective: str):
    """The best completed trial; an exact tie (accuracy counts images) goes to the better
    validation NLL (accuracy for an NLL objective), not to trial order."""
    done = states(study, "COMPLETE")
    sign = 1 if OBJECTIVES[objective][1] == "maximize" else -1
    other, other_sign = ("val_nll", -1) if objective == "val_acc" else ("val_acc", 1)
    return max(done, key=lambda t: (sign * t.value, other_sign * t.user_attrs.get(other, 0.0), -t.number))


def search_evidence(study, objective: str, best) -> dict:
    """How decided the search was: the trials tied with the best, and the lr span of the trials
    within one standard error of it (binomial, from the validation size) where the objective is
    accuracy. A span over many lr values means the objective is flat there: the best lr is noise."""
    done = states(study, "COMPLETE")
    tied = sum(t.value == best.value for t in done)
    evidence = {"completed_trials": len(done), "tied_with_best": tied,
                "all_tied": len(done) > 1 and tied == len(done)}
    n_val = best.user_attrs.get("val_size")
    if objective == "val_acc" and n_val and "lr" in best.params:
        se = math.sqrt(max(best.value * (1 - best.value), 1e-12) / n_val)
        near = [t.params["lr"] for t in done if t.value >= best.value - se and "lr" in t.params]
        evidence |= {"standard_error": se, "lr_within_se": [min(near), max(near)]}
    return evidence


def trial_objective(config: RunConfig, space: SearchSpace, out: Path, objective: str, study_name: str, log,
                    trials: int | None = None):
    """Optuna objective: one run of the suggested config on train/val, never on test.

    Runs resume (`resume=True`): a trial re-queued with the same parameters after its worker died
    continues from the checkpoint instead of starting over.
    """
    import optuna

    key = OBJECTIVES[objective][0]

    def objective_fn(trial) -> float:
        # lets a later start tell a killed run's trial from a live one
        trial.set_user_attr("worker", worker_tag())
        try:
            outcome = run(space.suggest(trial, config), out / TRIALS_DIR, PruningReporter(trial, key),
                          resume=True, test=False,
                          extra={"trial": {"study": study_name, "number": trial.number}})
        except RunStopped:
            raise optuna.TrialPruned()
        except (Interrupted, KeyboardInterrupt):  # the latter: SIGINT outside the training loop's handler
            # re-queued by the next tune / study (requeue_interrupted)
            trial.set_user_attr("interrupted", True)
            raise
        if not outcome.completed:
            raise optuna.TrialPruned()  # diverged: nothing to learn from its value
        record = outcome.record
        value = record["history"][-1][key]
        last = record["history"][-1]
        trial.set_user_attr("val_nll", last["val_nll"])  # breaks exact ties (best_trial)
        trial.set_user_attr("val_acc", last["val_acc"])
        trial.set_user_attr("val_size", record["dataset"]["splits"]["val"])
        of = f" of {trials}" if trials else ""
        done = len(states(trial.study, "COMPLETE", "PRUNED")) + 1  # re-queued trials counted once
        log(f"{study_name} trial {done}{of}: {objective} {value:.4f} with " +
            ", ".join(f"{k}={v:.4g}" for k, v in trial.params.items()))
        return value

    return objective_fn


def tune(
    config: RunConfig, trials: int, out: Path, storage: str | None = None, study_name: str | None = None,
    objective: str = "val_acc", pruner: str = "hyperband", tune_weight_decay: bool = False,
    lr_fixed: bool = False,
    log=print,
):
    """Run `trials` more trials of the study; returns (study, path of the best-parameters file).

    Loss hyperparameters in `config.loss_params` (and lr with `lr_fixed`) were given: they stay fixed.
    """
    quiet_optuna()
    out.mkdir(parents=True, exist_ok=True)
    study_name = study_name or f"{config.dataset}-{config.model}-{config.loss}"
    url = storage or f"sqlite:///{(out / 'optuna.db').resolve()}"
    space = SearchSpace.of(config, lr_fixed, weight_decay=tune_weight_decay)
    if not space.lr and not space.loss_params and not space.weight_decay:
        raise UsageError(f"nothing to tune: lr and every tunable hyperparameter of {config.loss} are given")
    study = open_study(study_name, open_storage(url), OBJECTIVES[objective][1],
                       make_pruner(pruner, config.epochs))
    # several `bench tune` processes may share a journal: only a gone process's RUNNING trial is a leftover
    requeue_stopped(study, url, one_worker=False)
    # reseed per invocation so that a resumed study does not replay its first random draws
    study.sampler = make_sampler(config.seed + len(study.trials), len(study.trials) + trials)
    study.optimize(
        trial_objective(config, space, out, objective, study_name, log, len(study.trials) + trials),
        n_trials=trials,
        catch=(),
    )
    if not states(study, "COMPLETE"):
        raise UsageError(f"no trial of study {study_name} completed (all pruned or diverged); widen the "
                         "budget")
    best = best_trial(study, objective)
    best_path = out / f"{study_name}.best.json"
    tuned = space.apply(best.params, config)
    if note := lr_edge_note(tuned.lr, space.lr):
        log(f"warning: {note}; an experiment file's [tune] lr = [low, high] searches a wider range")
    best_path.write_text(json.dumps({
        "model": config.model, "loss": config.loss, "dataset": config.dataset,
        "lr": tuned.lr, "weight_decay": tuned.weight_decay, "loss_params": tuned.loss_params,
        "objective": objective, "value": best.value, "trial": best.number,
        "study": study_name, "storage": url,
    }, indent=2))
    return study, best_path


PARAMS_KEYS = {"lr", "weight_decay", "loss_params"}
PARAMS_INFO = {"model", "loss", "dataset", "objective", "value", "trial", "study", "storage"}


def load_params(path: Path, loss: str) -> dict:
    """A best-parameters file as RunConfig overrides; bad files are one clear line."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"--params {path} does not exist") from None
    except ValueError as exc:
        raise UsageError(f"--params {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"--params {path} must hold a JSON object")
    unknown = sorted(set(data) - PARAMS_KEYS - PARAMS_INFO)
    if unknown:
        raise UsageError(f"--params {path}: unknown key {', '.join(unknown)}; accepted: "
                         f"{', '.join(sorted(PARAMS_KEYS | PARAMS_INFO))}")
    if data.get("loss", loss) != loss:
        raise UsageError(f"--params {path} was tuned for loss {data['loss']!r}, not {loss!r}")
    for key in ("lr", "weight_decay"):
        if key in data and (
            isinstance(data[key], bool)
            or not isinstance(data[key], (int, float))
            or not math.isfinite(data[key])
        ):
            raise UsageError(f"--params {path}: {key} must be a number, got {data[key]!r}")
    if not isinstance(data.get("loss_params", {}), dict):
        raise UsageError(f"--params {path}: loss_params must be an object")
    return {k: data[k] for k in PARAMS_KEYS if k in data}
