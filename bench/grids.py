"""Run a grid of configurations one after another; finished runs are skipped, so running the
same grid again resumes it (an interrupted run continues from its checkpoint)."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from pathlib import Path

from bench.checkpoint import Interrupted
from bench.config import RunConfig
from bench.errors import OutOfMemory, UsageError
from bench.record import Status
from bench.report import duration
from bench.studies import fail_stale, open_point_queue, open_storage, states, wait
from bench.train import Refs, find_resumable, run, run_identity


def run_grid(configs: list[RunConfig], out_dir: Path, make_reporter, log=print,
             extras: list[dict] | None = None) -> Counter:
    """Returns how many runs ended in each status ('skipped' for those already completed).

    `extras[i]` adds keys to run i's record (the `tuning` of a tuned study's eval runs).
    """
    extras = extras or [{}] * len(configs)
    tally: Counter = Counter()
    ran, seconds = 0, 0.0
    for i, config in enumerate(configs, 1):
        start = time.perf_counter()
        status = run_point(config, out_dir, make_reporter, label_of(i, len(configs), config), log,
                           extras[i - 1])
        tally[status] += 1
        if status != "skipped":  # the grid's pace from the runs it ran, not from the skipped ones
            ran, seconds = ran + 1, seconds + time.perf_counter() - start
            if i < len(configs):
                log(f"  pace {duration(seconds / ran)} a run: about "
                    f"{duration(seconds / ran * (len(configs) - i))} left for the {len(configs) - i} "
                    "remaining (fewer if some are done)")
    return tally


def run_point(
    config: RunConfig, out_dir: Path, make_reporter, label: str, log, extra: dict | None = None
) -> Status | str:
    """Run one grid point (resuming it if it was interrupted); returns how it ended, or
    "skipped" for a point already completed."""
    refs = Refs.of(config)  # the model and loss resolved once for the point
    _, done = find_resumable(out_dir, run_identity(config, extra, refs.sources))
    if done is not None:
        log(f"{label}: already completed")
        return "skipped"
    start = time.perf_counter()
    try:
        outcome = run(config, out_dir, make_reporter(), resume=True, extra=extra, refs=refs)
    except OutOfMemory as exc:  # recorded as failed; smaller models may still fit
        log(f"{label}: failed ({exc})")
        return Status.FAILED
    except (UsageError, Interrupted):
        raise  # bad input concerns the whole grid; a signal stops it (rerun to resume)
    except Exception as exc:  # recorded as failed by run(); the grid goes on
        log(f"{label}: failed ({type(exc).__name__}: {exc})")
        return Status.FAILED
    test = outcome.record["metrics"].get("test")
    log(
        f"{label}: {outcome.status} "
        + (f"test acc {test['accuracy']:.2%}" if test else outcome.record.get("reason", ""))
        + f" ({duration(time.perf_counter() - start)})"
    )
    return outcome.status


def label_of(i: int, n: int, config: RunConfig) -> str:
    params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k,
                      v in sorted(config.loss_params.items()))
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

    storage = open_storage(storage_url)
    hashes = [run_identity(c, extras[i] if extras else None) for i, c in enumerate(configs)]
    name = "grid-" + hashlib.sha1(" ".join(hashes).encode()).hexdigest()[:12]
    study = open_point_queue(name, storage, storage_url, hashes,
                             unfinished=lambda i: find_resumable(out_dir, hashes[i])[1] is None)
    tally: Counter = Counter()

    def objective(trial) -> float:
        if "config_hash" not in trial.user_attrs:  # not a point: another worker took the last one first
            study.stop()
            raise optuna.TrialPruned()  # Optuna's way to end a trial with no value
        i = trial.suggest_int("point", 0, len(configs) - 1)
        if any(t.params.get("point") == i and t.number < trial.number for t in states(study, "RUNNING")):
            raise optuna.TrialPruned()  # re-queued twice by workers starting at once: the older trial runs it
        status = run_point(configs[i], out_dir, make_reporter, label_of(i + 1, len(configs), configs[i]), log,
                           extras[i] if extras else None)
        tally[status] += 1
        if status == Status.FAILED:
            raise RuntimeError(f"grid point {i} failed")
        return 1.0 if status in ("completed", "skipped") else 0.0

    def stop_when_handed_out(study, _trial) -> None:  # spares a placeholder trial in most cases
        if not states(study, "WAITING"):
            study.stop()

    while True:
        fail_stale(study)  # re-queues the points of dead workers
        if states(study, "WAITING"):
            study.optimize(objective, catch=(RuntimeError,), callbacks=[stop_when_handed_out])
        # Points still RUNNING belong to other workers, or to dead ones whose heartbeat will go
        # stale and re-queue them: wait for them before calling the grid done.
        if not states(study, "RUNNING"):
            return tally
        wait()
