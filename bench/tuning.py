"""`bench tune`: Optuna search over the learning rate and the loss's own hyperparameters.

The search space comes from the loss registry's tuning ranges. The objective is measured on the
validation split, never on test. Studies live in an Optuna storage chosen by URL (SQLite file by
default, any RDB URL such as postgresql://..., or journal:PATH), so rerunning the same command
adds trials to the same study, and several workers can share one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bench.checkpoint import Interrupted
from bench.config import LR_RANGES, RunConfig, lr_edge_note
from bench.errors import UsageError
from bench.losses import get_loss
from bench.report import QuietReporter
from bench.train import RunStopped, run

log = logging.getLogger("bench")
WEIGHT_DECAY_RANGE = (1e-5, 1e-2)
# A worker beats every HEARTBEAT_SECONDS; one silent for three beats is taken for dead.
HEARTBEAT_SECONDS = int(os.environ.get("BENCH_HEARTBEAT_SECONDS", "20"))
OBJECTIVES = {"val_acc": ("val_acc", "maximize"), "val_nll": ("val_nll", "minimize")}  # -> history key
TRIALS_DIR = "trials"  # tuning runs' folders, under the study's output folder


def tunable_params(loss: str, fixed=(), base_dir: str | None = None) -> dict:
    """The loss hyperparameters the tuner searches: those with a numeric tuning range that are
    not `fixed` (given by the user). Per-class and word-valued ones are never tuned."""
    return {k: hp for k, hp in get_loss(loss, base_dir).params.items()
            if hp.tune is not None and hp.numeric and not hp.per_class and k not in fixed}


def open_storage(url: str):
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        check_journal(path)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    import warnings

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    for attempt in range(5):
        try:
            # A worker killed mid-trial stops beating; after the grace period its trial is marked
            # failed and re-queued with the same parameters instead of staying RUNNING forever.
            storage = optuna.storages.RDBStorage(
                url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=3 * HEARTBEAT_SECONDS,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
                engine_kwargs={"connect_args": {"timeout": 120}} if url.startswith("sqlite") else None,
            )
            if storage.engine.name == "sqlite":
                serialize_sqlite_transactions(storage.engine)
            return storage
        except ImportError as exc:
            raise UsageError(f"storage {url!r} needs a database driver: {exc} (for PostgreSQL: pip install 'psycopg[binary]')") from None
        except Exception as exc:  # several workers creating the schema at once: try again
            error = exc
            time.sleep(0.5 + random.random())
    raise UsageError(
        f"cannot open Optuna storage {url!r} ({type(error).__name__}); use sqlite:///FILE, "
        "postgresql://USER@HOST/DB or journal:PATH"
    )


def check_journal(path: Path) -> None:
    """A journal whose last line was cut short (a writer killed mid-line, a full disk) loses that
    line to a side file, so the next append does not fuse with it; a broken line anywhere else is
    one clear error instead of Optuna's traceback."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        side = path.with_name(f"{path.name}.torn-{int(time.time())}")
        side.write_bytes(data[keep:])
        with open(path, "r+b") as f:
            f.truncate(keep)
        log.warning("warning: the last line of %s was cut short (a stopped writer); it was moved to %s and the "
                    "trial it described will run again", path, side)
        data = data[:keep]
    for number, line in enumerate(data.splitlines(), 1):
        try:
            json.loads(line)
        except ValueError:
            raise UsageError(f"{path} line {number} is not a complete journal entry; restore the file (for a "
                             "published board: git checkout it) or delete the line, losing that trial") from None


def serialize_sqlite_transactions(engine) -> None:
    """Make every transaction on a SQLite engine take the write lock when it begins.

    Python's sqlite3 driver begins a transaction only at the first write, so Optuna's
    read-then-update of a WAITING trial is not atomic there: two workers can pop the same
    enqueued trial and run one grid point twice. BEGIN IMMEDIATE (SQLAlchemy's documented
    recipe for pysqlite) serializes them; waiting workers retry for the connect timeout.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection, _record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # pooled connections were opened before the listeners


GRID_ATTR = "lr_grid"  # user attribute of the enqueued lr-grid trials, which are never pruned


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

    @classmethod
    def of(cls, config: RunConfig, lr_fixed: bool, lr_range=None, weight_decay: bool = False) -> "SearchSpace":
        """Everything the user left open: lr unless given, loss hyperparameters not in config.loss_params."""
        lr = None if lr_fixed else (lr_range or LR_RANGES[config.optimizer])
        return cls(lr, tuple(tunable_params(config.loss, config.loss_params, config.base_dir)), weight_decay)

    def suggest(self, trial, config: RunConfig) -> RunConfig:
        hps = get_loss(config.loss, config.base_dir).params
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
        return replace(config, lr=values.get("lr", config.lr), weight_decay=values.get("weight_decay", config.weight_decay),
                       loss_params={**config.loss_params, **{k: values[k] for k in self.loss_params}})


def requeue_interrupted(study, also=()) -> None:
    """Re-queue, once each, the parameters of trials stopped by SIGINT / SIGTERM (marked `interrupted`)
    and of `also`, so their runs resume from their checkpoints instead of being lost."""
    import optuna

    retried = {t.user_attrs.get("retry_of") for t in study.trials}
    stopped = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
               if t.user_attrs.get("interrupted")]
    for trial in [*also, *stopped]:
        if trial.number not in retried and trial.params:
            grid = {GRID_ATTR: True} if trial.user_attrs.get(GRID_ATTR) else {}
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number, **grid})
            retried.add(trial.number)


def states(study, *names: str) -> list:
    import optuna

    return study.get_trials(deepcopy=False, states=tuple(getattr(optuna.trial.TrialState, n) for n in names))


def worker_tag() -> dict:
    """Who runs a trial: this machine (a hash of its name, so no host name is stored) and process."""
    return {"host": hashlib.sha1(socket.gethostname().encode()).hexdigest()[:12], "pid": os.getpid()}


def is_dead(worker: dict | None) -> bool:
    """A RUNNING trial's worker is gone: its process on this machine no longer exists. A trial
    without a tag (from before tags) counts as gone; one from another machine cannot be checked."""
    if not worker:
        return True
    if worker.get("host") != worker_tag()["host"]:
        return False
    try:
        os.kill(worker["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def requeue_leftovers(study, only_dead: bool = False) -> None:
    """A journal has no heartbeat. Trials RUNNING at start are failed and their parameters
    re-queued, with those of the trials marked `interrupted` (failed on SIGINT / SIGTERM), so their
    runs resume from their checkpoints. A tuned grid's journal has one worker, so every RUNNING
    trial is a leftover (whatever machine ran it); `only_dead` (bench tune, whose journal workers
    on one machine may share a study) takes only trials whose process is gone."""
    import optuna

    leftovers = [t for t in states(study, "RUNNING") if not only_dead or is_dead(t.user_attrs.get("worker"))]
    for trial in leftovers:
        study._storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL)
    requeue_interrupted(study, also=leftovers)


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
    hps = get_loss(config.loss, config.base_dir).params
    defaults = {}
    for k in space.loss_params:
        hp = hps[k]
        value = min(max(float(hp.default), hp.tune[0]), hp.tune[1])
        defaults |= {f"1-{k}": 1 - value} if hp.log_complement else {k: value}
    grid = lr_grid(space.lr, points)
    for lr in grid:
        study.enqueue_trial({"lr": lr, **defaults}, user_attrs={GRID_ATTR: True}, skip_if_exists=True)
    return grid


def best_trial(study, objective: str):
    """The best completed trial; an exact tie (accuracy counts images) goes to the better
    validation NLL (accuracy for an NLL objective), not to trial order."""
    import optuna

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    sign = 1 if OBJECTIVES[objective][1] == "maximize" else -1
    other, other_sign = ("val_nll", -1) if objective == "val_acc" else ("val_acc", 1)
    return max(done, key=lambda t: (sign * t.value, other_sign * t.user_attrs.get(other, 0.0), -t.number))


def search_evidence(study, objective: str, best) -> dict:
    """How decided the search was: the trials tied with the best, and the lr span of the trials
    within one standard error of it (binomial, from the validation size) where the objective is
    accuracy. A span over many lr values means the objective is flat there: the best lr is noise."""
    import optuna

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    tied = sum(t.value == best.value for t in done)
    evidence = {"completed_trials": len(done), "tied_with_best": tied, "all_tied": len(done) > 1 and tied == len(done)}
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
        trial.set_user_attr("worker", worker_tag())  # lets a later start tell a killed run's trial from a live one
        try:
            record, _ = run(space.suggest(trial, config), out / TRIALS_DIR, PruningReporter(trial, key), resume=True,
                            test=False, extra={"trial": {"study": study_name, "number": trial.number}})
        except RunStopped:
            raise optuna.TrialPruned()
        except (Interrupted, KeyboardInterrupt):  # the latter: SIGINT outside the training loop's handler
            trial.set_user_attr("interrupted", True)  # re-queued by the next tune / study (requeue_interrupted)
            raise
        if record["status"] != "completed":
            raise optuna.TrialPruned()  # diverged: nothing to learn from its value
        value = record["history"][-1][key]
        last = record["history"][-1]
        trial.set_user_attr("val_nll", last["val_nll"])  # breaks exact ties (best_trial)
        trial.set_user_attr("val_acc", last["val_acc"])
        trial.set_user_attr("val_size", record["dataset"]["splits"]["val"])
        of = f" of {trials}" if trials else ""
        log(f"{study_name} trial {trial.number + 1}{of}: {objective} {value:.4f} with " +
            ", ".join(f"{k}={v:.4g}" for k, v in trial.params.items()))
        return value

    return objective_fn


def tune(
    config: RunConfig, trials: int, out: Path, storage: str | None = None, study_name: str | None = None,
    objective: str = "val_acc", pruner: str = "hyperband", tune_weight_decay: bool = False, lr_fixed: bool = False,
    log=print,
):
    """Run `trials` more trials of the study; returns (study, path of the best-parameters file).

    Loss hyperparameters in `config.loss_params` (and lr with `lr_fixed`) were given: they stay fixed.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out.mkdir(parents=True, exist_ok=True)
    study_name = study_name or f"{config.dataset}-{config.model}-{config.loss}"
    url = storage or f"sqlite:///{(out / 'optuna.db').resolve()}"
    space = SearchSpace.of(config, lr_fixed, weight_decay=tune_weight_decay)
    if not space.lr and not space.loss_params and not space.weight_decay:
        raise UsageError(f"nothing to tune: lr and every tunable hyperparameter of {config.loss} are given")
    study = optuna.create_study(study_name=study_name, storage=open_storage(url),
                                direction=OBJECTIVES[objective][1], pruner=make_pruner(pruner, config.epochs),
                                load_if_exists=True)
    if url.startswith("journal:"):  # no heartbeat: a RUNNING trial whose process is gone is a killed run's
        requeue_leftovers(study, only_dead=True)
    else:  # two workers starting at once may both re-queue one: a duplicate trial, no loss
        requeue_interrupted(study)
    # reseed per invocation so that a resumed study does not replay its first random draws
    study.sampler = make_sampler(config.seed + len(study.trials), len(study.trials) + trials)
    study.optimize(trial_objective(config, space, out, objective, study_name, log, len(study.trials) + trials),
                   n_trials=trials, catch=())
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise UsageError(f"no trial of study {study_name} completed (all pruned or diverged); widen the budget")
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
        raise UsageError(f"--params {path}: unknown key {', '.join(unknown)}; accepted: {', '.join(sorted(PARAMS_KEYS | PARAMS_INFO))}")
    if data.get("loss", loss) != loss:
        raise UsageError(f"--params {path} was tuned for loss {data['loss']!r}, not {loss!r}")
    for key in ("lr", "weight_decay"):
        if key in data and (isinstance(data[key], bool) or not isinstance(data[key], (int, float)) or not math.isfinite(data[key])):
            raise UsageError(f"--params {path}: {key} must be a number, got {data[key]!r}")
    if not isinstance(data.get("loss_params", {}), dict):
        raise UsageError(f"--params {path}: loss_params must be an object")
    return {k: data[k] for k in PARAMS_KEYS if k in data}
