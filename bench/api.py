"""The Python API: what the `bench` command does, callable from a notebook or a script.

```python
import bench
record = bench.run(model="cnn-tiny", loss="focal", dataset="cifar10-sample", epochs=2, gamma=1.0)
df = bench.load_runs("runs")              # one row per record
bench.grid("experiment.toml")             # a whole experiment file, [tune] included
bench.leaderboard(["runs"], out="boards")
```
Bad input raises `bench.UsageError` with the same one-line message the command prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench.config import SETTINGS, RunConfig, to_flags
from bench.errors import UsageError


def config(model: str, loss: str, dataset: str, loss_params: dict | None = None, **options) -> RunConfig:
    """The RunConfig of one run, built here for the CLI and the API alike.

    Parameters
    ----------
    model, loss, dataset: registered names, timm:<name>, folder:PATH or a plug-in FILE.py:NAME;
        unknown names are a UsageError that suggests the near ones.
    loss_params: the loss's hyperparameters.
    options: run settings by their RunConfig names (epochs=3, lr=0.1, classes="a,b", ...); keywords
        that are not run settings are loss hyperparameters too.
    """
    from bench.datasets import get_dataset
    from bench.losses import get_loss
    from bench.models import get_model

    get_model(model), get_loss(loss), get_dataset(dataset)  # name errors first
    keywords = {k: v for k, v in options.items() if k not in SETTINGS}
    params = dict(loss_params or {}) | keywords
    settings = {k: v for k, v in options.items() if k in SETTINGS}
    declared = get_loss(loss).params
    # loss_params: the loss checks them
    unknown = sorted(k for k in keywords if declared and k not in declared)
    if unknown:
        raise UsageError(f"{', '.join(unknown)}: neither a run setting ({', '.join(sorted(SETTINGS))}) nor "
                         f"a hyperparameter of loss {loss!r} ({', '.join(declared)})")
    return RunConfig(model=model, loss=loss, dataset=dataset, loss_params=params, **settings)


def run(model: str, loss: str, dataset: str, out: str | Path = "runs", quiet: bool = True,
        resume: bool = False,
        loss_params: dict | None = None, params: str | Path | None = None, command: str | None = None,
        **options) -> dict:
    """Train and test one configuration; returns its run record, written to
    `<out>/<record["run_id"]>/record.json` (`record_path`).

    Parameters
    ----------
    model, loss, dataset, loss_params, options: as `config` takes them (epochs=3, data_root=...,
        lr=0.1, limit_train=1000, label_noise=0.4, gamma=2.0, ...).
    out: the results folder.
    quiet: no progress output.
    resume: continue this configuration's unfinished run in `out` from its checkpoint.
    params: a best-parameters file of `bench tune`, whose lr, weight decay and loss
        hyperparameters the run uses; giving one of them here as well is a UsageError.
    command: the command line the record states (default: "bench.run(...)").
    """
    from bench.report import make_reporter
    from bench.train import run as run_one

    if params is not None:
        options, loss_params = _with_params(Path(params), loss, options, loss_params)
    outcome = run_one(config(model, loss, dataset, loss_params, **options), Path(out), make_reporter(quiet),
                      command=command or "bench.run(...)", resume=resume)
    return outcome.record


def _with_params(path: Path, loss: str, options: dict, loss_params: dict | None) -> tuple[dict, dict]:
    """The run's options and loss hyperparameters with a best-parameters file's values added."""
    from bench.tuning import load_params

    tuned = load_params(path, loss)
    given = dict(loss_params or {}) | {k: v for k, v in options.items() if k not in SETTINGS}
    clash = [
        f"--{key.replace('_', '-')}" for key in ("lr", "weight_decay") if key in tuned and key in options
    ]
    clash += [f"--{k.replace('_', '-')}" for k in tuned.get("loss_params", {}) if k in given]
    if clash:
        raise UsageError(f"{', '.join(clash)} and --params both set the same value; give one of them")
    settings = {k: v for k, v in options.items() if k in SETTINGS}
    return settings | {k: v for k, v in tuned.items() if k != "loss_params"}, {**tuned.get("loss_params", {}),
                                                                               **given}


def record_path(record: dict, out: str | Path = "runs") -> Path:
    """Where `run` wrote a record: its run folder (named by its run_id) under `out`."""
    from bench.record import RECORD_NAME

    return Path(out) / record["run_id"] / RECORD_NAME


def tune(
    model: str,
    loss: str,
    dataset: str,
    trials: int = 20,
    out: str | Path = "runs",
    storage: str | None = None,
    objective: str = "val_acc",
    pruner: str = "hyperband",
    loss_params: dict | None = None,
    study_name: str | None = None,
    tune_weight_decay: bool = False,
    quiet: bool = True,
    **options,
) -> dict:
    """Add `trials` trials to the study of this configuration (on val); returns the best
    parameters (the content of `<out>/<study>.best.json`).

    Parameters
    ----------
    trials: trials to add (at least 1).
    storage: an Optuna storage URL (default: sqlite file `<out>/optuna.db`; journal:PATH too).
    objective: "val_acc" or "val_nll"; pruner: "hyperband" or "median".
    study_name: default DATASET-MODEL-LOSS.
    tune_weight_decay: search weight decay too.
    quiet: no line per trial.
    loss_params, options: as `config` takes them. Loss hyperparameters given here stay fixed; an
        `lr` given here is fixed too.
    """
    from bench.tuning import tune as tune_study

    if trials < 1:
        raise UsageError(f"trials must be at least 1, got {trials}")
    run_config = config(model, loss, dataset, loss_params, **options)
    _, best_path = tune_study(run_config, trials, Path(out), storage, study_name, objective, pruner,
                              tune_weight_decay, lr_fixed=options.get("lr") is not None,
                              log=(lambda *_: None) if quiet else print)
    return json.loads(best_path.read_text())


def trials(study: str, storage: str):
    """A study's trials as a pandas DataFrame (Optuna's `trials_dataframe`: number, value,
    params_*, state, ...), e.g. for the `study` and `storage` of `tune`'s result."""
    from bench.studies import load_trials

    return load_trials(study, storage)


class GridTally(dict):
    """How many of a grid's runs ended in each status ('skipped': already completed), with the
    grid's size (`runs`), folder (`out`) and, for local workers, their exit codes."""

    runs: int = 0
    out: Path = Path("runs")
    worker_codes: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return set(self) <= {"completed", "skipped"} and not any(self.worker_codes)


def experiment_of(path: str | Path | None = None, *, models=None, losses=None, dataset: str | None = None,
               seeds=(0, 1, 2, 3, 4), **settings):
    """An experiment: from a file, or (without one) models x losses on a dataset with each loss's
    default hyperparameters, no tuning, and run `settings` (epochs, data_root, limit_train, ...)."""
    from bench.experiment import Cell, Experiment, load_experiment

    if path is not None:
        return load_experiment(Path(path))
    if not (models and losses and dataset):
        raise UsageError("bench grid needs an experiment file, or --models, --losses and --dataset")
    models, losses = (v.split(",") if isinstance(v, str) else list(v) for v in (models, losses))
    seeds = tuple(seeds)
    cells = [Cell(config(model, loss, dataset, seed=seeds[0], **settings), lr_fixed=False)
             for model in models for loss in losses]
    return Experiment(None, tuple(cells), seeds)


def grid(experiment: str | Path | None = None, out: str | Path | None = None, storage: str | None = None,
         quiet: bool = True, workers: int = 1, log=None, **flags) -> GridTally:
    """Every run of an experiment (both stages of a [tune] study); finished runs are skipped.
    Returns how many runs ended in each status (a `GridTally`, 'skipped' for those already completed).

    Parameters
    ----------
    experiment: a TOML experiment file; without one, `flags` give the grid as `experiment_of` takes
        them (models, losses, dataset, seeds, epochs, data_root, limit_train, limit_test).
    out: the results folder (default: runs/ beside the experiment file, else runs/).
    storage: an Optuna storage URL to share the grid through (`grid_storage` decides the default).
    workers: worker processes on this machine, sharing the storage (one GPU each where there are several).
    quiet: no progress bars; log: where a line per run goes (default: print, or nowhere when quiet).
    """
    from bench.report import make_reporter

    loaded = experiment_of(experiment, **flags)
    folder = (
        Path(out) if out is not None else (Path(experiment).parent / "runs" if experiment else Path("runs"))
    )
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    url = grid_storage(folder, storage, workers, bool(loaded.tune))
    tally = GridTally()
    if workers > 1:
        tally.worker_codes = _run_workers(experiment, folder, url, workers, quiet, flags, tally)
    else:
        log = log or ((lambda *_: None) if quiet else print)
        tally.update(run_experiment(loaded, folder, url, lambda: make_reporter(quiet), log))
    tally.runs, tally.out = len(loaded.cells) * len(loaded.seeds), folder
    return tally


def _run_workers(experiment_file, out: Path, url: str, workers: int, quiet: bool, flags: dict,
                 tally: GridTally) -> tuple[int, ...]:
    """`workers` processes of `bench grid --workers 1` on one storage; their tallies added to `tally`."""
    from bench.studies import open_storage

    out.mkdir(parents=True, exist_ok=True)
    open_storage(url)  # create the schema once, before the workers race for it
    grid_keys = ("models", "losses", "dataset", "seeds")
    source = [str(experiment_file)] if experiment_file else [
        arg for key in grid_keys if flags.get(key) is not None
        for arg in (f"--{key}", ",".join(map(str, flags[key])) if isinstance(flags[key], (list, tuple, range))
                    else str(flags[key]))
    ] + to_flags({k: v for k, v in flags.items() if k not in grid_keys})
    procs, files = [], []
    for i in range(workers):
        files.append(out / f".worker-{os.getpid()}-{i}.json")
        cmd = [sys.executable, "-m", "bench", "grid", *source, "--workers", "1", "--storage", url, "--out",
               str(out),
               "--tally-file", str(files[-1]), *(["--quiet"] if quiet else [])]
        procs.append(subprocess.Popen(cmd, env=worker_env(i)))
    codes = tuple(p.wait() for p in procs)
    for file in files:
        if file.exists():
            for status, n in json.loads(file.read_text()).items():
                tally[status] = tally.get(status, 0) + n
            file.unlink()
    return codes


def worker_env(index: int) -> dict:
    """A local worker's environment: on a machine with several GPUs, each worker gets its own."""
    import torch

    gpus = torch.cuda.device_count()
    return {**os.environ, **({"CUDA_VISIBLE_DEVICES": str(index % gpus)} if gpus > 1 else {})}


def grid_storage(out: Path, storage: str | None, workers: int, tuned: bool) -> str | None:
    """The storage a grid runs on, decided here for the CLI and the API alike: the given URL; else
    `out/grid.db` (SQLite) when several local workers share the grid or an earlier run made it
    (its tuning studies live there: the default journal would tune every cell anew); else None
    (a tuned grid's journal, an untuned grid's plain loop). A journal cannot be shared."""
    local_db = out / "grid.db"
    chosen = storage or (f"sqlite:///{local_db.resolve()}" if workers > 1 or local_db.exists() else None)
    if chosen and chosen.startswith("journal:") and (workers > 1 or not tuned):
        raise UsageError(
            f"bench grid cannot share {chosen!r}: a journal storage has no heartbeat, so a killed worker's "
            "point would never be re-queued; use sqlite:///FILE or postgresql://USER@HOST/DB"
        )
    return chosen


def run_experiment(experiment, out: Path, storage: str | None, make_reporter, log=print) -> Counter:
    """One worker's share of an experiment: the tuned study when it has [tune], else its grid
    (shared through `storage` when given)."""
    from bench.grids import run_grid, run_grid_shared

    if experiment.tune:
        from bench.study import run_study

        return run_study(experiment, out, storage, make_reporter, log)
    if storage:
        return run_grid_shared(experiment.configs, out, storage, make_reporter, log)
    return run_grid(experiment.configs, out, make_reporter, log)


def estimate(experiment=None, **flags) -> list[dict]:
    """What a grid would cost on this machine, one row per cell, from a few timed steps of each
    model (nothing is run): eval runs, seconds each, tuning trials and their seconds at most.
    `experiment`: a file, an already loaded Experiment, or None with `flags` (see `experiment_of`)."""
    from bench.estimate import estimate as estimate_grid

    from bench.experiment import Experiment

    loaded = experiment if isinstance(experiment, Experiment) else experiment_of(experiment, **flags)
    return estimate_grid(loaded)


def speed(model: str, dataset: str, loss: str = "ce", steps: int = 30, warmup: int = 5, **options) -> dict:
    """Training, evaluation and compute-only images/s of one model on this machine (`bench speed`),
    with MACs, FLOP/s against a measured matmul peak, host syncs and peak memory; returns a dict.

    Parameters
    ----------
    model, dataset, loss: as `config` takes them.
    steps: timed steps, after `warmup` untimed ones.
    options: run settings (batch_size, image_size, limit_train, device, precision, compile, data_root).
    """
    from bench.speed import measure_speed

    if steps < 1 or warmup < 0:
        raise UsageError(f"--steps must be at least 1 and --warmup at least 0, got {steps} and {warmup}")
    return measure_speed(config(model, loss, dataset, **options), steps, warmup)


def leaderboard(paths, out: str | Path = "leaderboards", format: str = "markdown", margin: float = 0.5,
                command: str | None = None) -> list[Path]:
    """Leaderboards from run records; returns the files written.

    Parameters
    ----------
    paths: folders (searched recursively) or record files.
    out: where to write.
    format: "markdown" (tables, figures, summary JSON), "csv" or "json".
    margin: the practical margin in accuracy points (a loss within ±margin of ce, shown by an
        equivalence test, is 'equivalent').
    command: the command line the boards state (default: "bench.leaderboard(...)").
    """
    from bench.leaderboards import write_leaderboards

    paths = _results(paths)
    if not 0 < margin < 100:
        raise UsageError(f"--margin is in percentage points of accuracy, between 0 and 100; got {margin:g}")
    return write_leaderboards(paths, Path(out), format, command or "bench.leaderboard(...)", margin / 100)


ROLES = ("eval", "tuning", "all")


def _results(paths) -> list[Path]:
    """Results folders or records (one, or a list) as paths; a missing one is a UsageError."""
    paths = [Path(p) for p in (paths if isinstance(paths, (list, tuple)) else [paths])]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such results folder or record: {', '.join(missing)}")
    return paths


def load_runs(path: str | Path | list = "runs", role: str = "eval"):
    """Run records as a pandas DataFrame, one row per record.

    `path`: a results folder (searched recursively), one record.json, or a list of them. `role`:
    "eval" (default: the runs a leaderboard ranks), "tuning" (a tuned study's trials, which have
    no test metrics) or "all". Records that cannot be read (torn, foreign files) are left out.

    Columns: run_id, status, role ('eval' or 'tuning'), model, loss, loss_params (a dict), dataset,
    seed, epochs, lr, precision, tuned (the tuned values, a dict, for eval runs of a study; else
    None), test_accuracy, test_macro_f1, test_nll, test_ece (NaN without test metrics),
    test_tta_accuracy (with --tta; else NaN),
    train_seconds, path (the record) and history_csv.
    """
    import pandas as pd

    from bench.leaderboards.collect import is_eval_record, read_records
    from bench.record import HISTORY_NAME

    if role not in ROLES:
        raise UsageError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    # torn or foreign files are left out, as the leaderboard leaves them out
    loaded, _ = read_records(_results(path))
    rows = []
    for r, file in loaded:
        kind = "eval" if is_eval_record(r) else "tuning"
        if role != "all" and kind != role:
            continue
        config, test = r["config"], r.get("metrics", {}).get("test", {})
        rows.append({
            "run_id": r["run_id"], "status": r["status"], "role": kind,
            "model": config["model"], "loss": config["loss"],
            "loss_params": dict(config.get("loss_params", {})),
            "dataset": r.get("dataset", {}).get("name", config.get("dataset")), "seed": config["seed"],
            "epochs": config.get("epochs"), "lr": config.get("lr"), "precision": config.get("precision"),
            "tuned": dict(r["tuning"]["params"]) if r.get("tuning") else None,
            **{f"test_{m}": test.get(m, float("nan")) for m in ("accuracy", "macro_f1", "nll", "ece")},
            "test_tta_accuracy": (r.get("metrics", {}).get("test_tta") or {}).get("accuracy", float("nan")),
            "train_seconds": r.get("timing", {}).get("train_seconds"),
            "path": str(file),
            "history_csv": str(file.parent / HISTORY_NAME) if (file.parent / HISTORY_NAME).exists() else None,
        })
    return pd.DataFrame(rows)
