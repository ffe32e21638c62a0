"""Many workers on one PostgreSQL storage: a study and a grid split between them, nothing twice."""

import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest

from postgres import postgres_server, server_binaries


@pytest.fixture(scope="module")
def postgres_url():
    if server_binaries() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the PostgreSQL tests: install Debian's postgresql as the README says")
        pytest.skip("PostgreSQL server not installed")
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # the server may run as the postgres user
        with postgres_server(Path(tmp) / "pg") as url:
            yield url


def start_workers(args, n=2):
    cmd = [sys.executable, "-m", "bench", *args]
    return [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]


def wait_all(workers):
    for w in workers:
        assert w.wait(timeout=600) == 0, w.stderr.read()


def test_two_tune_workers_share_a_postgres_study(postgres_url, tmp_path):
    wait_all(start_workers(["tune", "--model", "cnn-tiny", "--loss", "gce", "--dataset", "cifar10-sample",
                            "--epochs", "2", "--limit-train", "600", "--limit-test", "50", "--quiet",
                            "--trials", "4", "--storage", postgres_url, "--study-name", "pg-study",
                            "--out", str(tmp_path)]))
    trials = optuna.load_study(study_name="pg-study", storage=postgres_url).trials
    assert len(trials) == 8 and len({t.number for t in trials}) == 8
    assert all(t.state.is_finished() for t in trials)


def test_two_grid_workers_split_a_postgres_grid(postgres_url, tmp_path):
    out = tmp_path / "runs"
    wait_all(start_workers(["grid", "--models", "cnn-tiny,mlp2", "--losses", "ce,focal,sce", "--seeds", "0,1",
                            "--dataset", "cifar10-sample", "--epochs", "1", "--limit-train", "400",
                            "--limit-test", "50", "--quiet", "--storage", postgres_url, "--out", str(out)]))
    hashes = collections.Counter(json.loads(p.read_text())["config_hash"] for p in out.glob("*/record.json"))
    assert len(hashes) == 12 and set(hashes.values()) == {1}
