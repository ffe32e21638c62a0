"""Checkpoints and graceful stops: nothing a run has finished is lost, whatever happens to it.

A checkpoint holds everything needed to continue bit-for-bit on the same machine: model,
optimizer, schedule and grad-scaler states, the position (epoch and step), the running
epoch sums, the history so far and the RNG states. It is written atomically and loaded with
`weights_only=True`.
"""

from __future__ import annotations

import os
import random
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

CHECKPOINT_NAME = "checkpoint.pt"


class Interrupted(Exception):
    """Raised once a run has checkpointed after SIGINT / SIGTERM; exit code 128 + signal.
    `completed`: the signal came after the run's last training step, so the run finished and its
    record is written as completed; the caller (a grid, a study) still stops."""

    def __init__(self, signum: int, completed: bool = False) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.completed = completed


class StopFlag:
    """Set by SIGINT / SIGTERM; the training loop checks it after each step."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None


@contextmanager
def graceful_stop() -> Iterator[StopFlag]:
    """Within the block, SIGINT and SIGTERM ask the loop to stop after the current step."""
    flag = StopFlag()

    def handler(signum, frame):
        flag.signum = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def rng_states() -> dict:
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: dict) -> None:
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temp file in the same folder, then an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save({**state, "rng": rng_states()}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)
