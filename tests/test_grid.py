"""Experiment files are validated line by line; a grid skips what is done and survives failures."""

import re

import pytest

from bench.experiment import load_experiment

GOOD = """
dataset = "cifar10-sample"
models = ["cnn-tiny", "mlp2"]
seeds = [0, 1]
epochs = 1
limit_train = 300
limit_test = 100

[[losses]]
name = "ce"

[[losses]]
name = "focal"
gamma = 0.5
"""


def write(tmp_path, text):
    path = tmp_path / "experiment.toml"
    path.write_text(text)
    return path


def test_experiment_file_expands_to_the_cross_product(tmp_path):
    configs = load_experiment(write(tmp_path, GOOD)).configs
    assert len(configs) == 8
    assert {(c.model, c.loss, c.seed) for c in configs} == {
        (m, l, s) for m in ("cnn-tiny", "mlp2") for l in ("ce", "focal") for s in (0, 1)}
    assert all(c.epochs == 1 and c.limit_train == 300 for c in configs)
    assert [c.loss_params for c in configs if c.loss == "focal"][0] == {"gamma": 0.5}


@pytest.mark.parametrize(
    "change, message",
    [
        (("epochs = 1", "epocs = 1"), "unknown key epocs"),
        (("epochs = 1", 'epochs = "one"'), "epochs must be int"),
        (("epochs = 1", "epochs = 0"), "--epochs must be at least 1"),
        (("gamma = 0.5", "gamma = -2.0"), "gamma must lie in [0, inf)"),
        (("gamma = 0.5", "gama = 0.5"), "has no hyperparameter gama"),
        (('models = ["cnn-tiny", "mlp2"]', 'models = ["cnn-tiny", "resnet"]'), "unknown model 'resnet'"),
        (("seeds = [0, 1]", 'seeds = ["a"]'), "seeds must be a non-empty list of integers"),
        (('name = "ce"', 'name = "cee"'), "unknown loss 'cee'"),
        (("[[losses]]\nname = \"ce\"", "[[losses]]\nlabel = \"ce\""), "each with a name"),
        (("epochs = 1", "epochs = 1\n["), "is not valid TOML"),
    ],
)
def test_bad_experiment_files_are_one_clear_line(cli, tmp_path, change, message):
    path = write(tmp_path, GOOD.replace(*change))
    code, _, err = cli("grid", str(path), "--quiet")
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_grid_skips_completed_runs_and_goes_on_after_divergence(cli, tmp_path):
    path = write(tmp_path, GOOD + '\n[[losses]]\nname = "ce"\nlabel_smoothing = 0.1\n')
    code, out, err = cli("grid", str(path), "--quiet", "--out", str(tmp_path / "runs"))
    assert code == 0, err
    assert len(list((tmp_path / "runs").glob("*/record.json"))) == 12
    assert re.search(r"\[12/12\] mlp2 x ce label_smoothing=0.1 seed 1: completed test acc [\d.]+% \(\d+ s\)", out), out
    code, out, _ = cli("grid", str(path), "--quiet", "--out", str(tmp_path / "runs"))
    assert code == 0 and "12 skipped" in out
    assert len(list((tmp_path / "runs").glob("*/record.json"))) == 12
    diverging = write(tmp_path, GOOD.replace("epochs = 1", "epochs = 1\nlr = 1e30"))
    code, out, _ = cli("grid", str(diverging), "--quiet", "--out", str(tmp_path / "div"))
    assert code == 1 and "diverged" in out
    assert len(list((tmp_path / "div").glob("*/record.json"))) == 8  # every run was tried


GRID = ["grid", "--models", "cnn-tiny", "--losses", "ce,focal,l1", "--seeds", "0,1", "--dataset", "cifar10-sample",
        "--epochs", "2", "--limit-train", "1500", "--limit-test", "100", "--quiet"]


def completed_per_point(out):
    import collections
    import json

    records = [json.loads(p.read_text()) for p in out.glob("*/record.json")]
    assert all(r["status"] == "completed" for r in records)
    return collections.Counter(r["config_hash"] for r in records)


def test_local_workers_split_a_sqlite_grid(cli, tmp_path):
    code, out, err = cli(*GRID, "--workers", "2", "--out", str(tmp_path / "runs"))
    assert code == 0, err
    counts = completed_per_point(tmp_path / "runs")
    assert len(counts) == 6 and set(counts.values()) == {1}
    # run again by one process, the grid keeps its storage (out/grid.db), not a fresh default one
    code, out, err = cli(*GRID, "--out", str(tmp_path / "runs"))
    assert code == 0, err
    assert "nothing left to run" in out, out
    assert not list((tmp_path / "runs").rglob("*.journal"))


def test_killed_shared_worker_is_requeued_after_its_heartbeat_stops(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "BENCH_HEARTBEAT_SECONDS": "1"}
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "bench", *GRID, "--storage", f"sqlite:///{tmp_path / 'grid.db'}", "--out", str(out)]
    victim = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(out.glob("*/checkpoint.pt")) and time.monotonic() < deadline:  # killed inside a run
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    rescuer = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rescuer.returncode == 0, rescuer.stderr
    counts = completed_per_point(out)
    assert len(counts) == 6 and set(counts.values()) == {1}
    import optuna

    study = optuna.load_study(study_name=None, storage=f"sqlite:///{tmp_path / 'grid.db'}")
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,)), "a dead worker's point stayed RUNNING"
    assert study.get_trials(states=(optuna.trial.TrialState.FAIL,)), "the killed point was not failed and retried"
    assert not study.get_trials(states=(optuna.trial.TrialState.PRUNED,)), "a lone worker made a placeholder trial"


def test_a_shared_grid_started_again_resumes_the_point_a_signal_stopped(tmp_path):
    """SIGINT fails the point's trial (its run is recorded `interrupted`, checkpoint kept); the next
    start must enqueue that point again and resume it, not call the grid done without it."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "runs"
    # 4 epochs: the signal must land in a training step of the first point (after its first
    # checkpoint), so that the point has something to resume; a later one is in the next test
    grid = [{"2": "4", "1500": "3000"}.get(a, a) for a in GRID]
    cmd = [sys.executable, "-m", "bench", *grid, "--storage", f"sqlite:///{tmp_path / 'grid.db'}", "--out", str(out)]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(out.glob("*/checkpoint.pt")) and time.monotonic() < deadline:  # stopped inside a run
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=120) == 130
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    counts = completed_per_point(out)
    assert len(counts) == 6 and set(counts.values()) == {1}
    import json

    resumed = [json.loads(p.read_text()) for p in out.glob("*/record.json")]
    assert any(r.get("resumed_from") for r in resumed), "the stopped point started over instead of resuming"


def test_a_signal_after_the_last_step_completes_the_run_and_still_stops_the_grid(tmp_path):
    """SIGINT during the last validation or the test pass has no step left to stop: the run completes
    and is recorded, and then the caller stops (it used to run the rest of the grid, ignoring it)."""
    import json
    import os
    import signal

    from bench.checkpoint import Interrupted
    from bench.config import RunConfig
    from bench.grids import run_grid
    from bench.report import QuietReporter

    class SignalAtLastEpoch(QuietReporter):
        def epoch(self, entry):
            if entry["epoch"] == 2:
                os.kill(os.getpid(), signal.SIGINT)  # caught by the run's handler: a flag, no exception

    configs = [RunConfig(model="cnn-tiny", loss=loss, dataset="cifar10-sample", epochs=2, limit_train=300,
                         limit_test=100) for loss in ("ce", "focal")]
    out = tmp_path / "runs"
    with pytest.raises(Interrupted) as stopped:
        run_grid(configs, out, SignalAtLastEpoch, log=lambda line: None)
    assert stopped.value.completed and stopped.value.signum == signal.SIGINT
    [record] = [json.loads(p.read_text()) for p in out.glob("*/record.json")]  # the second point never ran
    assert record["status"] == "completed" and record["config"]["loss"] == "ce" and "test" in record["metrics"]
    assert not list(out.glob("*/checkpoint.pt"))
    tally = run_grid(configs, out, QuietReporter, log=lambda line: None)  # the next start: the rest
    assert tally == {"skipped": 1, "completed": 1}


def test_a_grid_refuses_a_journal_storage_before_running_anything(cli, tmp_path):
    code, _, err = cli(*GRID, "--storage", f"journal:{tmp_path / 'grid.journal'}", "--out", str(tmp_path / "runs"))
    assert code == 2 and err.count("\n") == 1 and "no heartbeat" in err and "sqlite:///FILE" in err, err
    assert not (tmp_path / "runs").exists()


POP = """
import sys, time
from pathlib import Path
import optuna
from bench.studies import open_storage

url, barrier, me, n = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
study = optuna.load_study(study_name="queue", storage=open_storage(url))
(barrier / me).touch()
while len(list(barrier.iterdir())) < n:  # every worker pops at the same moment
    time.sleep(0.001)
print(" ".join(str(study.ask()._trial_id) for _ in range(10)))
"""


def test_concurrent_workers_never_pop_the_same_sqlite_trial(tmp_path):
    """Without serialized SQLite transactions, 4 workers popping 40 enqueued trials at once got
    the same trial twice in every attempt (and a grid point ran twice)."""
    import collections
    import subprocess
    import sys

    import optuna

    from bench.studies import open_storage

    url, barrier, n = f"sqlite:///{tmp_path / 'queue.db'}", tmp_path / "barrier", 4
    barrier.mkdir()
    study = optuna.create_study(study_name="queue", storage=open_storage(url))
    for i in range(10 * n):
        study.enqueue_trial({"point": i})
    workers = [subprocess.Popen([sys.executable, "-W", "ignore", "-c", POP, url, str(barrier), str(w), str(n)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in range(n)]
    outputs = [w.communicate(timeout=300) for w in workers]
    assert all(w.returncode == 0 for w in workers), [err for _, err in outputs]
    popped = collections.Counter(int(t) for out, _ in outputs for t in out.split())
    assert len(popped) == 10 * n and set(popped.values()) == {1}, popped


TUNED = GOOD.replace("limit_test = 100\n", "limit_test = 100\n\n[tune]\ntrials = 4\nepochs = 2\nlimit_train = 200\n")


def test_estimate_multiplies_measured_speed_by_the_grids_work(tmp_path):
    from bench.estimate import estimate

    measured = []

    def measure(config, steps, warmup):
        measured.append(config.model)
        return {"train_images_per_sec": 100.0 if config.model == "mlp2" else 50.0, "eval_images_per_sec": 1000.0}

    def sizes_of(config):  # train after limit_train, a tenth carved for val
        n = config.limit_train
        return {"train": n - n // 10, "val": n // 10, "test": 100}

    rows = estimate(load_experiment(write(tmp_path, TUNED)), measure=measure, sizes_of=sizes_of)
    assert measured == ["cnn-tiny", "mlp2"]  # once per model
    by_cell = {(r["model"], r["loss"]): r for r in rows}
    mlp2_ce, tiny_focal = by_cell["mlp2", "ce"], by_cell["cnn-tiny", "focal"]
    assert mlp2_ce["eval_runs"] == 2
    assert mlp2_ce["eval_run_seconds"] == pytest.approx(1 * (270 / 100 + 30 / 1000) + 100 / 1000)
    # focal 0.5 is given, lr is not: tuned per eval seed (2 studies), 4 trials of 2 epochs on 200 images
    # (180 train, 20 val), no test
    assert tiny_focal["tuning_trials"] == 2 * 4
    assert tiny_focal["tuning_seconds_at_most"] == pytest.approx(2 * 4 * 2 * (180 / 50 + 20 / 1000))


def test_grid_estimate_prints_the_cost_and_runs_nothing(cli, tmp_path):
    path = write(tmp_path, TUNED)
    code, out, err = cli("grid", str(path), "--estimate")
    assert code == 0, err
    assert "cnn-tiny" in out and "mlp2" in out and "tuning at most" in out
    assert not (tmp_path / "runs").exists()
