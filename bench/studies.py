"""The Optuna queue, in one place: opening a storage, creating or loading a study, enqueuing
points, re-queueing stopped trials and waiting for running ones. `bench tune`, tuned grids
(bench.study) and untuned shared grids (bench.grids) all go through here, so a stopped trial is
handled the same way everywhere.

How a stopped trial comes back:
- RDB storages (sqlite:///, postgresql://) have heartbeats: a killed worker's RUNNING trial goes
  stale, is failed and re-queued with the same parameters (`wait`, `fail_stale`).
- A trial stopped by SIGINT / SIGTERM is marked `interrupted` and failed; the next start
  re-queues its parameters once (`requeue_stopped`).
- A journal has no heartbeat: RUNNING trials at start are a killed run's leftovers (for a tuned
  grid's one worker, all of them; for `bench tune`, whose journal several processes on one
  machine may share, those whose process is gone).
A re-queued trial's run resumes from its checkpoint, since runs are found by identity.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import socket
import time
import warnings
from pathlib import Path

from bench.errors import UsageError

log = logging.getLogger("bench")
# A worker beats every HEARTBEAT_SECONDS; one silent for three beats is taken for dead.
HEARTBEAT_SECONDS = int(os.environ.get("BENCH_HEARTBEAT_SECONDS", "20"))
GRID_ATTR = "lr_grid"  # user attribute of the enqueued lr-grid trials, which are never pruned


def quiet_optuna() -> None:
    """Optuna's own INFO lines and experimental-feature warnings stay out of bench's output."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def is_journal(url: str) -> bool:
    """A journal storage has no heartbeat, so several workers cannot share it safely."""
    return url.startswith("journal:")


def open_storage(url: str):
    """An Optuna storage from a URL: journal:PATH, or an RDB URL (with heartbeats and, for
    SQLite, serialized transactions). Bad URLs and missing drivers are one clear line."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    quiet_optuna()
    if is_journal(url):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        check_journal(path)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    for _ in range(5):
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
            raise UsageError(f"storage {url!r} needs a database driver: {exc} (for PostgreSQL: pip install "
                             "'psycopg[binary]')") from None
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
        log.warning("warning: the last line of %s was cut short (a stopped writer); it was moved to %s and "
                    "the trial it described will run again", path, side)
        data = data[:keep]
    for number, line in enumerate(data.splitlines(), 1):
        try:
            json.loads(line)
        except ValueError:
            raise UsageError(
                f"{path} line {number} is not a complete journal entry; restore the file (for a published "
                "board: git checkout it) or delete the line, losing that trial"
            ) from None


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


def open_study(name: str, storage, direction: str = "minimize", pruner=None):
    """The study `name`, created if it does not exist. Loading comes first: a create call on an
    existing study still appends a line to a journal."""
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage, pruner=pruner)
    except KeyError:
        return optuna.create_study(study_name=name, storage=storage, direction=direction, pruner=pruner,
                                   load_if_exists=True)


def load_trials(name: str, url: str):
    """A stored study's trials as Optuna's DataFrame (number, value, params_*, state, ...)."""
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=open_storage(url)).trials_dataframe()
    except KeyError:
        raise UsageError(f"no study {name!r} in {url}") from None


def states(study, *names: str) -> list:
    """The study's trials in these states ('COMPLETE', 'RUNNING', ...), without copies."""
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


def enqueue(study, params: dict, **user_attrs) -> None:
    """Queue a trial with these parameters; one already queued with them is not queued again
    (several workers starting together)."""
    study.enqueue_trial(params, user_attrs=user_attrs or None, skip_if_exists=True)


def requeue_interrupted(study, also=()) -> None:
    """Re-queue, once each, the parameters of trials stopped by SIGINT / SIGTERM (marked
    `interrupted`) and of `also`, so their runs resume from their checkpoints instead of being lost."""
    retried = {t.user_attrs.get("retry_of") for t in study.trials}
    stopped = [t for t in states(study, "FAIL") if t.user_attrs.get("interrupted")]
    for trial in [*also, *stopped]:
        if trial.number not in retried and trial.params:
            grid = {GRID_ATTR: True} if trial.user_attrs.get(GRID_ATTR) else {}
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number, **grid})
            retried.add(trial.number)


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


def requeue_stopped(study, url: str, one_worker: bool) -> None:
    """At a start: bring back the trials earlier runs stopped. An RDB storage's dead workers are
    handled by heartbeats (`fail_stale`), so only SIGINT / SIGTERM stops are re-queued there (two
    workers starting at once may both re-queue one: the same run twice from its checkpoint, the
    same result). A journal's RUNNING trials are leftovers: all of them for a storage with
    `one_worker`, else those whose process is gone."""
    if is_journal(url):
        requeue_leftovers(study, only_dead=not one_worker)
    else:
        requeue_interrupted(study)


def fail_stale(study) -> None:
    """Fail (and, by the storage's callback, re-queue) the trials of workers whose heartbeat stopped."""
    import optuna

    optuna.storages.fail_stale_trials(study)


def wait() -> None:
    """One heartbeat's pause while other workers' trials run."""
    time.sleep(HEARTBEAT_SECONDS)


def open_point_queue(name: str, storage, url: str, points: list[str], unfinished) -> object:
    """A study whose trials are the points of a shared grid, each enqueued once with its identity
    (`config_hash`). The first worker creates and fills it; later ones wait until it is filled,
    then re-queue each `unfinished(i)` point that no trial holds (failed, or stopped by a signal)."""
    import optuna

    try:
        study = optuna.create_study(study_name=name, storage=storage)
        for i, identity in enumerate(points):
            study.enqueue_trial({"point": i}, user_attrs={"config_hash": identity})
        study.set_user_attr("points", len(points))
        return study
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
    deadline = time.monotonic() + 120
    while study.user_attrs.get("points") != len(points):  # the creating worker is still enqueueing
        if time.monotonic() > deadline:
            raise UsageError(f"grid study {name} in {url} never finished enqueueing its points")
        time.sleep(0.5)
    held = {t.params.get("point", t.system_attrs.get("fixed_params", {}).get("point"))
            for t in states(study, "WAITING", "RUNNING")}
    for i, identity in enumerate(points):
        if i not in held and unfinished(i):
            study.enqueue_trial({"point": i}, user_attrs={"config_hash": identity})
    return study
