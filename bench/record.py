"""Run records and run folders: one JSON record per run, written atomically (temp file + rename),
in a folder that a later --resume or grid finds by the run's config hash."""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import platform
import re
import subprocess
import tempfile
from datetime import datetime, timezone
from enum import StrEnum
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch

if TYPE_CHECKING:
    from bench.config import RunConfig

SCHEMA_VERSION = 1
class Status(StrEnum):
    """How a run ended, as its record says (a str, so records and tallies compare with plain strings)."""

    RUNNING = "running"  # only while it runs: a record never ends so
    COMPLETED = "completed"
    DIVERGED = "diverged"  # a non-finite training loss
    INTERRUPTED = "interrupted"  # a signal or an unwritable output folder: resumable from its checkpoint
    FAILED = "failed"
    PRUNED = "pruned"  # stopped by the tuner


STATUSES = tuple(s.value for s in Status if s is not Status.RUNNING)


class Outcome(NamedTuple):
    """What one run returns (`bench.train.run`): its record and where it was written, and how it
    ended as a `Status`. A tuple, so `record, path = run(...)` reads as before."""

    record: dict
    path: Path

    @property
    def status(self) -> Status:
        return Status(self.record["status"])

    @property
    def completed(self) -> bool:
        return self.status is Status.COMPLETED


RECORD_NAME = "record.json"
HISTORY_NAME = "history.csv"  # one row per epoch, beside the record


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def git_commit(package: Path = Path(__file__).parent) -> str | None:
    """The commit the running code came from, read once per process (a later commit does not
    change what is already imported). `-dirty`: the package's own files differ from it; the
    records and journals a board writes into the same repository do not count."""
    def git(*args: str):
        return subprocess.run(["git", *args], cwd=package, capture_output=True, text=True, timeout=5)

    try:
        head, status = git("rev-parse", "HEAD"), git("status", "--porcelain", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:  # Linux names the CPU model here; platform.processor() often says only "x86_64"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def environment(device: torch.device) -> dict:
    """Software and hardware a result came from; deliberately free of host names and paths."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "timm": _version("timm"),
        "bench": _version("bench"),
        "device": device.type,
        "device_name": device_name(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": f"{platform.system()} {platform.machine()}",
        "git_commit": git_commit(),
    }


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temp file in the same folder and a rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, payload: dict) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, allow_nan=True))


def write_history_csv(path: Path, history: list[dict]) -> None:
    """The record's per-epoch history as CSV (columns in the order of the first epoch), atomically."""
    text = io.StringIO()
    columns = list(history[0]) if history else ["epoch", "train_loss", "train_acc", "val_loss", "val_acc",
                                                "lr", "seconds"]
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_text_atomic(path, text.getvalue())


def load_record(path: Path) -> dict:
    """Read a record; raises ValueError when it is not a complete record of a known schema."""
    record = json.loads(path.read_text())
    missing = {"schema_version", "run_id", "status", "config"} - set(record)
    if missing or record["status"] not in STATUSES:
        raise ValueError(f"{path} is not a valid run record (missing {sorted(missing)})")
    return record


RUN_INFO_NAME = "run.json"  # written at start: lets --resume find a run that never finished


def new_run_id(config: RunConfig) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    name = f"{config.dataset}_{config.model}_{config.loss}_s{config.seed}_{stamp}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


class RunIndex:
    """The run folders of one results folder by identity (config hash), read once.

    Each folder's run.json is read the first time the folder is seen and kept (its identity and
    start time never change); a lookup lists the folder's entries (new runs, other workers' runs)
    and reads only the new ones. A grid of N points then reads N run.json files, not N^2.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.seen: dict[str, tuple[str, str] | None] = {}  # folder name -> (config hash, started)

    def folders(self, config_hash: str) -> list[Path]:
        """This identity's run folders, newest first."""
        try:
            names = [e.name for e in os.scandir(self.out_dir) if e.is_dir()]
        except FileNotFoundError:
            return []
        for name in names:
            if self.seen.get(name) is None:  # new, or its run.json was not written yet
                try:
                    info = json.loads((self.out_dir / name / RUN_INFO_NAME).read_text())
                    self.seen[name] = (info.get("config_hash"), info.get("started", ""))
                except (OSError, ValueError):
                    self.seen[name] = None
        found = [(entry[1], name) for name in names if (entry := self.seen[name]) and entry[0] == config_hash]
        return [self.out_dir / name for _, name in sorted(found, reverse=True)]


_INDEXES: dict[Path, RunIndex] = {}


def find_resumable(out_dir: Path, config_hash: str) -> tuple[Path | None, dict | None]:
    """The newest run folder of this configuration that did not end, or that completed.

    Returns (folder, its completed record or None). Runs that diverged or failed are not
    resumed: running the command again starts a new run. Folders are found through the results
    folder's `RunIndex` (one per folder and process).
    """
    index = _INDEXES.setdefault(out_dir.resolve(), RunIndex(out_dir))
    for folder in index.folders(config_hash):
        record_path = folder / RECORD_NAME
        if not record_path.exists():
            return folder, None
        try:
            record = load_record(record_path)
        except (OSError, ValueError):
            return folder, None
        if record["status"] == "completed":
            return folder, record
        if record["status"] == "interrupted":
            return folder, None
    return None, None
