"""The tuned study protocol behind an experiment file's [tune] table, as one resumable command.

Stage 1: Optuna studies on the validation split, with pruning, over lr and the loss
hyperparameters a [[losses]] entry leaves open; tuning runs never touch test. Per-seed mode (the
default): one study per cell and eval seed, with its own tuning seed (and so its own train/val
partition); single mode: one study per cell. Every study starts with the same log-spaced lr grid
(never pruned), then TPE. Stage 2: each study's best parameters, unchanged, on its eval seed(s),
as an ordinary grid; every eval record carries `tuning`. Each study holds `trials` trials in
total, so a rerun of a finished study adds none and changes no record.

Sharing: with an RDB storage (sqlite:///, postgresql://) any number of workers split both
stages; a dead worker's trial is failed by its stale heartbeat and re-queued with the same
parameters (its run resumes from its checkpoint), and a trial stopped by SIGINT / SIGTERM is
re-queued by the next worker to start (two starting at once may both re-queue it: the same run
twice from the same checkpoint, so the same result, at the cost of the time). A journal storage
has no heartbeat: it is for one worker, which takes trials still RUNNING at its start for the
leftovers of a killed run.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

from bench.config import tuned_lr_note
from bench.errors import UsageError
from bench.experiment import Cell, Experiment, TuneSpec
from bench.grids import run_grid, run_grid_shared
from bench.studies import (
    fail_stale,
    is_journal,
    open_storage,
    open_study,
    quiet_optuna,
    requeue_stopped,
    states,
    wait,
)
from bench.tuning import (
    OBJECTIVES,
    SearchSpace,
    best_trial,
    enqueue_lr_grid,
    make_pruner,
    make_sampler,
    search_evidence,
    trial_objective,
)

TUNING_DIR = "tuning"  # under the grid's output folder: the journal and the tuning runs


def default_storage(out: Path) -> str:
    return f"journal:{out / TUNING_DIR / 'tuning.journal'}"


def _budget(spec: TuneSpec) -> dict:
    """The tuning budget that names a study; the trial count is left out so it can grow, and the
    single-study mode without an lr grid keeps the names its published studies have."""
    budget = {k: v for k, v in asdict(spec).items() if k != "trials"}
    if spec.legacy:
        del budget["per_seed"], budget["lr_points"]
    return budget


def cell_id(cell: Cell, spec: TuneSpec) -> str:
    """A cell's identity across its eval seeds (per-seed studies differ in seed and split only)."""
    identity = json.dumps({"cell": replace(cell.config, seed=0, split_seed=0).config_hash(),
                           "lr_fixed": cell.lr_fixed,
                           "budget": _budget(spec)}, sort_keys=True)
    return hashlib.sha1(identity.encode()).hexdigest()[:8]


def study_name(cell: Cell, spec: TuneSpec, config=None, eval_seed: int | None = None) -> str:
    """Stable per cell, tuning budget and (per-seed mode) eval seed: readable model, loss and
    dataset, then a hash of the rest. `config` is the cell on that eval seed (its split)."""
    config = config or cell.config
    identity = json.dumps({"cell": spec.trial_config(config, eval_seed or 0).config_hash(),
                           "lr_fixed": cell.lr_fixed,
                           "budget": _budget(spec)}, sort_keys=True)
    name = f"tune-{cell.config.dataset}-{cell.config.model}-{cell.config.loss}"
    if spec.per_seed:
        name += f"-seed{eval_seed}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name) + "-" + hashlib.sha1(identity.encode()).hexdigest()[:8]


def tune_cell(cell: Cell, spec: TuneSpec, storage, out: Path, url: str, log, config=None,
              eval_seed: int = 0, space: SearchSpace | None = None) -> dict:
    """Stage 1 for one cell (per-seed mode: for one eval seed, `config` being the cell on that
    seed): fill its study up to `spec.trials` finished trials (with other workers, if shared),
    wait for the trials still running elsewhere, and return the `tuning` entry of its eval records."""
    import optuna

    config = spec.trial_config(config or cell.config, eval_seed)
    space = space or search_space(cell, spec)
    info = {"study": None, "mode": spec.mode, **({} if spec.legacy else {"cell": cell_id(cell, spec)}),
            "trials": 0, "objective": spec.objective, "best_value": None, "params": {}, "seed": config.seed,
            "epochs": config.epochs, "limit_train": config.limit_train, "pruner": spec.pruner,
            "lr_range": list(space.lr) if space.lr else None}
    if not space.lr and not space.loss_params:
        return info  # everything given: nothing to tune, the cell runs as written
    name = study_name(cell, spec, config, eval_seed)
    study = open_study(name, storage, OBJECTIVES[spec.objective][1], make_pruner(spec.pruner, config.epochs))
    requeue_stopped(study, url, one_worker=True)  # a tuned grid's journal has one worker
    grid = enqueue_lr_grid(study, space, config, spec.grid_size())
    objective = trial_objective(config, space, out, spec.objective, name, log, spec.trials)
    limit = optuna.study.MaxTrialsCallback(spec.trials, states=tuple(
        getattr(optuna.trial.TrialState, n) for n in ("COMPLETE", "PRUNED", "RUNNING")))
    while True:
        fail_stale(study)  # a dead worker's trial: failed and re-queued
        finished, running = len(states(study, "COMPLETE", "PRUNED")), len(states(study, "RUNNING"))
        if spec.trials - finished - running > 0:
            # seeded by position, so a resumed study does not replay its first random draws
            study.sampler = make_sampler(config.seed + len(study.trials), spec.trials)
            study.optimize(objective, n_trials=spec.trials - finished - running, callbacks=[limit], catch=())
        elif running:
            wait()  # other workers' trials decide the best too: wait for them
        else:
            break
    if not states(study, "COMPLETE"):
        raise UsageError(f"no tuning trial of {name} completed (all pruned or diverged); widen [tune] lr or "
                         "epochs")
    best = best_trial(study, spec.objective)
    return info | {"study": name, "trials": finished, "best_value": best.value,
                   "params": space.values(best.params),
                   "lr_grid": grid, "split_seed": config.split_seed,
                   **search_evidence(study, spec.objective, best)}


def search_space(cell: Cell, spec: TuneSpec) -> SearchSpace:
    """What a cell's studies search: the same for each of its seeds (they differ in seed and split)."""
    return SearchSpace.of(cell.config, cell.lr_fixed, spec.lr)


def eval_config(cell: Cell, spec: TuneSpec, tuning: dict, config, space: SearchSpace | None = None):
    """A cell's eval run: its settings on an eval seed (`config`) with the best trial's values, unchanged."""
    return (space or search_space(cell, spec)).apply(tuning["params"], config)


def run_study(
    experiment: Experiment, out: Path, storage_url: str | None, make_reporter, log=print
) -> Counter:
    """Both stages of a tuned experiment; returns the eval runs' statuses as `bench grid` counts them."""
    quiet_optuna()
    spec = experiment.tune
    url = storage_url or default_storage(out)
    storage = open_storage(url)
    configs, extras = [], []
    for i, cell in enumerate(experiment.cells, 1):
        label = f"cell {i}/{len(experiment.cells)} {cell.config.model} x {cell.config.loss}"
        space = search_space(cell, spec)  # resolved once per cell, not per seed
        single = None if spec.per_seed else tune_cell(cell, spec, storage, out / TUNING_DIR, url, log,
                                                      space=space)
        for seed in experiment.seeds:
            config = experiment.config_for(cell, seed)
            tuning = single or tune_cell(cell, spec, storage, out / TUNING_DIR, url, log, config, seed, space)
            if single is None or seed == experiment.seeds[0]:
                shown = ", ".join(f"{k}={v:.4g}" for k, v in tuning["params"].items()) or "nothing tuned"
                log(
                    f"{label}{f' seed {seed}' if single is None else ''}: {shown} ({tuning['trials']} trials)"
                )
                if note := tuned_lr_note(tuning):
                    log(f"  warning: {note}; widen [tune] lr = [low, high] (every cell is then tuned anew)")
            configs.append(eval_config(cell, spec, tuning, config, space))
            extras.append({"tuning": tuning})
    if not is_journal(url):
        return run_grid_shared(configs, out, url, make_reporter, log, extras)
    return run_grid(configs, out, make_reporter, log, extras)
