"""Run a grid of configurations one after another; finished runs are skipped, so running the
same grid again resumes it (an interrupted run continues from its checkpoint)."""

from __future__ import annotations

import hashlib
import time
import warnings
from collections import Counter
from pathlib import Path

from bench.checkpoint import Interrupted
from bench.config import RunConfig
from bench.errors import OutOfMemory, UsageError
from bench.report import duration
from bench.train import find_resumable, run, run_identity


def run_grid(configs: list[RunConfig], out_dir: Path, make_reporter, log=print, extras: list[dict] | None = None) -> Counter:
    """Returns how many runs ended in each status ('skipped' for those already completed).

    `extras[i]` adds keys to run i's record (the `tuning` of a tuned study's eval runs).
    """
    extras = extras or [{}] * len(configs)
    tally: Counter = Counter()
    ran, seconds = 0, 0.0
    for i, config in enumerate(configs, 1):
        start = time.perf_counter()
        status = run_point(config, out_dir, make_reporter, label_of(i, len(configs), config), log, extras[i - 1])
        tally[status] += 1
        if status != "skipped":  # the grid's pace from the runs it ran, not from the skipped ones
            ran, seconds = ran + 1, seconds + time.perf_counter() - start
            if i < len(configs):
                log(f"  pace {duration(seconds / ran)} a run: about {duration(seconds / ran * (len(configs) - i))} "
                    f"left for the {len(configs) - i} remaining (fewer if some are done)")
    return tally


def run_point(config: RunConfig, out_dir: Path, make_reporter, label: str, log, extra: dict | None = None) -> str:
    """Run one grid point (resuming it if it was interrupted); returns how it ended."""
    _, done = find_resumable(out_dir, run_identity(config, extra))
    if done is not None:
        log(f"{label}: already completed")
        return "skipped"
    start = time.perf_counter()
    try:
        record, _ = run(config, out_dir, make_reporter(), resume=True, extra=extra)
    except OutOfMemory as exc:  # recorded as failed; smaller models may still fit
        log(f"{label}: failed ({exc})")
        return "failed"
    except (UsageError, Interrupted):
        raise  # bad input concerns the whole grid; a signal stops it (rerun to resume)
    except Exception as exc:  # recorded as failed by run(); the grid goes on
        log(f"{label}: failed ({type(exc).__name__}: {exc})")
        return "failed"
    test = record["metrics"].get("test")
    log(f"{label}: {record['status']} " + (f"test acc {test['accuracy']:.2%}" if test else record.get("reason", ""))
        + f" ({duration(time.perf_counter() - start)})")
    return record["status"]


def label_of(i: int, n: int, config: RunConfig) -> str:
    params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(config.loss_params.items()))
    return f"[{i}/{n}] {config.model} x {config.loss}{' ' + params if params else ''} seed {config.seed}"


def run_grid_shared(
    configs: list[RunConfig], out_dir: Path, storage_url: str, make_reporter, log=print,
    extras: list[dict] | None = None,
) -> Counter:
    """One worker of a grid shared through an Optuna storage.

    Every grid point is an enqueued trial; workers pop them (atomically, in the storage), so
    several processes or machines split the grid with no point run twice. A worker killed
    mid-run stops its heartbeat; its point is then re-queued (RDB storages) and resumed from
    its checkpoint by whichever worker pops it. As with a grid of one process, starting it again
    re-runs every point that has not completed (stopped by a signal, failed).
    """
    import optuna

    from bench.tuning import HEARTBEAT_SECONDS, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = open_storage(storage_url)
    hashes = [run_identity(c, extras[i] if extras else None) for i, c in enumerate(configs)]
    name = "grid-" + hashlib.sha1(" ".join(hashes).encode()).hexdigest()[:12]
    try:
        study = optuna.create_study(study_name=name, storage=storage)
        for i, h in enumerate(hashes):
            study.enqueue_trial({"point": i}, user_attrs={"config_hash": h})
        study.set_user_attr("points", len(hashes))
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
        deadline = time.monotonic() + 120
        while study.user_attrs.get("points") != len(hashes):  # the creating worker is still enqueueing
            if time.monotonic() > deadline:
                raise UsageError(f"grid study {name} in {storage_url} never finished enqueueing its points")
            time.sleep(0.5)
        requeue_unfinished(study, hashes, out_dir)
    tally: Counter = Counter()

    def objective(trial) -> float:
        if "config_hash" not in trial.user_attrs:  # another worker took the last point first
            study.stop()
            raise optuna.TrialPruned()
        i = trial.suggest_int("point", 0, len(configs) - 1)
        if any(t.params.get("point") == i and t.number < trial.number for t in points(optuna.trial.TrialState.RUNNING)):
            raise optuna.TrialPruned()  # re-queued twice by workers starting at once: the older trial runs it
        status = run_point(configs[i], out_dir, make_reporter, label_of(i + 1, len(configs), configs[i]), log,
                           extras[i] if extras else None)
        tally[status] += 1
        if status == "failed":
            raise RuntimeError(f"grid point {i} failed")
        return 1.0 if status in ("completed", "skipped") else 0.0

    def points(state) -> list:
        return study.get_trials(deepcopy=False, states=(state,))

    def stop_when_handed_out(study, _trial) -> None:  # spares a placeholder trial in most cases
        if not points(optuna.trial.TrialState.WAITING):
            study.stop()

    while True:
        optuna.storages.fail_stale_trials(study)  # re-queues the points of dead workers
        if points(optuna.trial.TrialState.WAITING):
            study.optimize(objective, catch=(RuntimeError,), callbacks=[stop_when_handed_out])
        # Points still RUNNING belong to other workers, or to dead ones whose heartbeat will go
        # stale and re-queue them: wait for them before calling the grid done.
        if not points(optuna.trial.TrialState.RUNNING):
            return tally
        time.sleep(HEARTBEAT_SECONDS)


def requeue_unfinished(study, hashes: list[str], out_dir: Path) -> None:
    """Enqueue again each point with no completed run and no trial waiting or running: its trial
    failed, or was stopped by SIGINT / SIGTERM (resumed from its checkpoint when popped)."""
    import optuna

    held = {t.params.get("point", t.system_attrs.get("fixed_params", {}).get("point"))
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING))}
    for i, h in enumerate(hashes):
        if i not in held and find_resumable(out_dir, h)[1] is None:
            study.enqueue_trial({"point": i}, user_attrs={"config_hash": h})
