"""Nothing finished is lost: SIGKILL / SIGTERM mid-epoch then --resume gives the same result as
an uninterrupted run; divergence is recorded, not hidden."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.record import load_record

RUN = [sys.executable, "-m", "bench", "run", "--model", "cnn", "--loss", "focal", "--dataset", "cifar10-sample",
       "--epochs", "3", "--limit-train", "2500", "--limit-test", "300", "--quiet"]


def start(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*RUN, "--out", str(out), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout=300.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.02)


def final_metrics(out: Path) -> dict:
    [path] = out.glob("*/record.json")
    record = load_record(path)
    assert record["status"] == "completed", record.get("reason")
    return record


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("uninterrupted")
    proc = start(out)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    return final_metrics(out)


def assert_same_result(a: dict, b: dict) -> None:
    for key in ("loss", "accuracy", "nll", "ece", "macro_f1"):
        assert abs(a["metrics"]["test"][key] - b["metrics"]["test"][key]) <= 1e-6, key
    for ea, eb in zip(a["history"], b["history"]):
        assert abs(ea["train_loss"] - eb["train_loss"]) <= 1e-6 and abs(ea["val_loss"] - eb["val_loss"]) <= 1e-6
    assert len(a["history"]) == len(b["history"])


def killed_mid_epoch(out: Path, sig: int) -> subprocess.Popen:
    """Start a run, wait for the first end-of-epoch checkpoint, then signal it inside epoch 2."""
    proc = start(out)
    wait_for(lambda: list(out.glob("*/checkpoint.pt")) or proc.poll() is not None)
    assert proc.poll() is None, "the run ended before it could be killed"
    time.sleep(0.4)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    return proc


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path, uninterrupted):
    proc = killed_mid_epoch(tmp_path, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert not list(tmp_path.glob("*/record.json")), "a killed run must not leave a record that reads as complete"
    resumed = start(tmp_path, "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    record = final_metrics(tmp_path)  # exactly one record
    assert record["resumed_from"]["epoch"] >= 1
    assert not list(tmp_path.glob("*/checkpoint.pt")) and not list(tmp_path.glob("*/.*.tmp"))
    assert_same_result(record, uninterrupted)


def test_sigterm_checkpoints_mid_epoch_and_exits_143(tmp_path, uninterrupted):
    proc = killed_mid_epoch(tmp_path, signal.SIGTERM)
    assert proc.returncode == 143, proc.stderr.read()
    [path] = tmp_path.glob("*/record.json")
    record = json.loads(path.read_text())
    assert record["status"] == "interrupted" and "--resume" in record["reason"]
    first_part = record["timing"]["wall_seconds"]
    resumed = start(tmp_path, "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    record = final_metrics(tmp_path)
    assert record["resumed_from"]["step"] > 0, "SIGTERM should checkpoint inside the epoch"
    # wall time adds up over the resume: the stopped part and the resumed part
    assert record["timing"]["wall_seconds"] > first_part + record["timing"]["setup_seconds"] > first_part > 0
    assert_same_result(record, uninterrupted)
    # resuming a completed run returns it without training again
    again = start(tmp_path, "--resume")
    assert again.wait(timeout=600) == 0
    assert len(list(tmp_path.glob("*/record.json"))) == 1


def test_absurd_learning_rate_is_recorded_as_diverged(cli, tmp_path):
    code, _, _ = cli("run", "--model", "mlp2", "--loss", "ce", "--dataset", "cifar10-sample", "--epochs", "2",
                     "--limit-train", "500", "--lr", "1e30", "--quiet", "--out", str(tmp_path))
    assert code == 1
    [path] = tmp_path.glob("*/record.json")
    record = load_record(path)
    assert record["status"] == "diverged"
    assert record["diverged_at"]["epoch"] == 1 and record["diverged_at"]["step"] >= 1
    assert "non-finite training loss" in record["reason"] and "test" not in record["metrics"]
