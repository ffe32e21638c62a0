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
from collections import Counter
from pathlib import Path

from bench.config import SETTINGS, RunConfig
from bench.errors import UsageError

RUN_FIELDS = set(SETTINGS)


def _config(model: str, loss: str, dataset: str, loss_params: dict | None, options: dict) -> RunConfig:
    """RunConfig from keyword options; keywords that are not run settings are loss hyperparameters."""
    from bench.losses import get_loss

    params = dict(loss_params or {})
    params.update({k: v for k, v in options.items() if k not in RUN_FIELDS})
    settings = {k: v for k, v in options.items() if k in RUN_FIELDS}
    if isinstance(settings.get("classes"), (list, str)):
        classes = settings["classes"]
        settings["classes"] = tuple(classes.split(",") if isinstance(classes, str) else classes)
    declared = get_loss(loss).params
    unknown = sorted(k for k in params if declared and k not in declared)
    if unknown:
        raise UsageError(f"{', '.join(unknown)}: neither a run setting ({', '.join(sorted(RUN_FIELDS))}) "
                         f"nor a hyperparameter of loss {loss!r} ({', '.join(declared)})")
    return RunConfig(model=model, loss=loss, dataset=dataset, loss_params=params, **settings)


def run(model: str, loss: str, dataset: str, out: str | Path = "runs", quiet: bool = True, resume: bool = False,
        loss_params: dict | None = None, **options) -> dict:
    """Train and test one configuration; returns its run record (also written under `out`).

    `options` are `bench run` settings by their RunConfig names (epochs=3, data_root=..., lr=0.1,
    limit_train=1000, label_noise=0.4, ...) and the loss's hyperparameters (gamma=2.0, ...).
    """
    from bench.report import make_reporter
    from bench.train import run as run_one

    record, _ = run_one(_config(model, loss, dataset, loss_params, options), Path(out), make_reporter(quiet),
                        command="bench.run(...)", resume=resume)
    return record


def tune(model: str, loss: str, dataset: str, trials: int = 20, out: str | Path = "runs", storage: str | None = None,
         objective: str = "val_acc", pruner: str = "hyperband", loss_params: dict | None = None, **options) -> dict:
    """Add `trials` trials to the study of this configuration (on val); returns the best
    parameters (the content of `<out>/<study>.best.json`). Loss hyperparameters given here stay
    fixed; an `lr` given here is fixed too."""
    from bench.tuning import tune as tune_study

    if trials < 1:
        raise UsageError(f"trials must be at least 1, got {trials}")
    config = _config(model, loss, dataset, loss_params, options)
    _, best_path = tune_study(config, trials, Path(out), storage, None, objective, pruner,
                              lr_fixed="lr" in options, log=lambda *_: None)
    return json.loads(best_path.read_text())


def grid(experiment: str | Path, out: str | Path | None = None, storage: str | None = None,
         quiet: bool = True) -> dict[str, int]:
    """Every run of an experiment file (both stages of a [tune] study); finished runs are skipped.
    Returns how many runs ended in each status ('skipped' for those already completed).

    The storage is chosen as `bench grid` chooses it (`grid_storage`): a grid that local workers
    made keeps its `grid.db`."""
    from bench.experiment import load_experiment
    from bench.report import make_reporter

    path = Path(experiment)
    folder = Path(out) if out is not None else path.parent / "runs"
    loaded = load_experiment(path)
    tally = run_experiment(loaded, folder, grid_storage(folder, storage, 1, bool(loaded.tune)),
                           lambda: make_reporter(quiet), (lambda *_: None) if quiet else print)
    return dict(tally)


def grid_storage(out: Path, storage: str | None, workers: int, tuned: bool) -> str | None:
    """The storage a grid runs on, decided here for the CLI and the API alike: the given URL; else
    `out/grid.db` (SQLite) when several local workers share the grid or an earlier run made it
    (its tuning studies live there: the default journal would tune every cell anew); else None
    (a tuned grid's journal, an untuned grid's plain loop). A journal cannot be shared."""
    local_db = out / "grid.db"
    chosen = storage or (f"sqlite:///{local_db.resolve()}" if workers > 1 or local_db.exists() else None)
    if chosen and chosen.startswith("journal:") and (workers > 1 or not tuned):
        raise UsageError(
            f"bench grid cannot share {chosen!r}: a journal storage has no heartbeat, so a killed "
            "worker's point would never be re-queued; use sqlite:///FILE or postgresql://USER@HOST/DB"
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


def leaderboard(paths, out: str | Path = "leaderboards", format: str = "markdown", margin: float = 0.5) -> list[Path]:
    """Leaderboards from the records under `paths` (folders, searched recursively, or files);
    `margin` is the practical margin in accuracy points (equivalence to ce within ±margin)."""
    from bench.leaderboards import write_leaderboards

    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such results folder or record: {', '.join(missing)}")
    if not 0 < margin < 100:
        raise UsageError(f"margin is in percentage points of accuracy, between 0 and 100; got {margin:g}")
    return write_leaderboards(paths, Path(out), format, "bench.leaderboard(...)", margin / 100)


ROLES = ("eval", "tuning", "all")


def load_runs(path: str | Path | list = "runs", role: str = "eval"):
    """Run records as a pandas DataFrame, one row per record.

    `path`: a results folder (searched recursively), one record.json, or a list of them. `role`:
    "eval" (default: the runs a leaderboard ranks), "tuning" (a tuned study's trials, which have
    no test metrics) or "all". Records that cannot be read (torn, foreign files) are left out.

    Columns: run_id, status, role ('eval' or 'tuning'), model, loss, loss_params (a dict), dataset,
    seed, epochs, lr, precision, tuned (the tuned values, a dict, for eval runs of a study; else
    None), test_accuracy, test_macro_f1, test_nll, test_ece (NaN without test metrics),
    train_seconds, path (the record) and history_csv.
    """
    import pandas as pd

    from bench.record import HISTORY_NAME, RECORD_NAME, load_record

    if role not in ROLES:
        raise UsageError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    roots = [Path(p) for p in (path if isinstance(path, (list, tuple)) else [path])]
    missing = [str(p) for p in roots if not p.exists()]
    if missing:
        raise UsageError(f"no such results folder or record: {', '.join(missing)}")
    loaded = []
    for root in roots:
        for file in [root] if root.is_file() else sorted(root.rglob(RECORD_NAME)):
            try:
                loaded.append((load_record(file), file))
            except (OSError, ValueError):
                continue  # a torn or foreign file: not a run
    rows = []
    for r, file in loaded:
        kind = "tuning" if "trial" in r else "eval"
        if role != "all" and kind != role:
            continue
        config, test = r["config"], r.get("metrics", {}).get("test", {})
        rows.append({
            "run_id": r["run_id"], "status": r["status"], "role": kind,
            "model": config["model"], "loss": config["loss"], "loss_params": dict(config.get("loss_params", {})),
            "dataset": r.get("dataset", {}).get("name", config.get("dataset")), "seed": config["seed"],
            "epochs": config.get("epochs"), "lr": config.get("lr"), "precision": config.get("precision"),
            "tuned": dict(r["tuning"]["params"]) if r.get("tuning") else None,
            **{f"test_{m}": test.get(m, float("nan")) for m in ("accuracy", "macro_f1", "nll", "ece")},
            "train_seconds": r.get("timing", {}).get("train_seconds"),
            "path": str(file),
            "history_csv": str(file.parent / HISTORY_NAME) if (file.parent / HISTORY_NAME).exists() else None,
        })
    return pd.DataFrame(rows)
