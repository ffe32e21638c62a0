"""Run a grid of configurations one after another; finished runs are skipped, so running the
same grid again resumes it (an interrupted run continues from its checkpoint)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bench.checkpoint import Interrupted
from bench.config import RunConfig
from bench.errors import UsageError
from bench.train import find_resumable, run


def run_grid(configs: list[RunConfig], out_dir: Path, make_reporter, log=print) -> Counter:
    """Returns how many runs ended in each status ('skipped' for those already completed)."""
    tally: Counter = Counter()
    for i, config in enumerate(configs, 1):
        label = f"[{i}/{len(configs)}] {config.model} x {config.loss} {config.loss_params or ''} seed {config.seed}"
        _, done = find_resumable(out_dir, config.config_hash())
        if done is not None:
            tally["skipped"] += 1
            log(f"{label}: already completed")
            continue
        try:
            record, _ = run(config, out_dir, make_reporter(), resume=True)
        except (UsageError, Interrupted):
            raise  # bad input concerns the whole grid; a signal stops it (rerun to resume)
        except Exception as exc:  # recorded as failed by run(); the grid goes on
            tally["failed"] += 1
            log(f"{label}: failed ({type(exc).__name__}: {exc})")
            continue
        tally[record["status"]] += 1
        test = record["metrics"].get("test")
        outcome = f"test acc {test['accuracy']:.2%}" if test else record.get("reason", "")
        log(f"{label}: {record['status']} {outcome}")
    return tally
