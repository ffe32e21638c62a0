"""The tuned study protocol: [tune] in an experiment file tunes each cell on val, then runs the
best values over the eval seeds; resumable after SIGINT/SIGKILL in either stage, shareable."""

import collections
import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from bench.config import lr_edge_note

STUDY = """
dataset = "cifar10-sample"
models = ["cnn-tiny"]
seeds = [0, 1]
epochs = 2
limit_train = 600
limit_test = 100

[tune]
trials = 3
epochs = 2
seed = 100
objective = "val_acc"
lr = [0.005, 0.5]
per_seed = false  # the single-study protocol of the published boards (tests of per-seed mode: test_per_seed.py)
lr_points = 0

[[losses]]
name = "ce"
label_smoothing = 0.0

[[losses]]
name = "focal"

[[losses]]
name = "focal"
gamma = 2.0
"""


def write(tmp_path, text=STUDY):
    path = tmp_path / "experiment.toml"
    path.write_text(text)
    return path


def records(folder):
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*/record.json"))]


def all_studies(journal_or_url):
    storage = journal_or_url
    if not journal_or_url.startswith(("sqlite", "postgresql")):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        storage = JournalStorage(JournalFileBackend(journal_or_url))
    return [optuna.load_study(study_name=s.study_name, storage=storage) for s in optuna.get_all_study_summaries(storage)]


def trial_counts(journal_or_url):
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return {s.study_name: len([t for t in s.trials if t.state in finished]) for s in all_studies(journal_or_url)}


def check_final_state(runs):
    evals = records(runs)
    assert len(evals) == 6 and all(r["status"] == "completed" for r in evals)
    assert collections.Counter(r["config_hash"] for r in evals) == collections.Counter(
        {h: 1 for h in {r["config_hash"] for r in evals}}) and len({r["config_hash"] for r in evals}) == 6
    return evals


def test_study_tunes_each_cell_then_runs_the_best_over_the_eval_seeds(cli, tmp_path):
    path = write(tmp_path)
    runs = tmp_path / "runs"
    code, out, err = cli("grid", str(path), "--quiet")
    assert code == 0, err
    evals = check_final_state(runs)
    for r in evals:
        t = r["tuning"]
        assert t["trials"] == 3 and t["objective"] == "val_acc" and t["seed"] == 100 and t["epochs"] == 2
        assert 0.005 <= t["params"]["lr"] <= 0.5 and r["config"]["lr"] == t["params"]["lr"]
        assert t["lr_range"] == [0.005, 0.5]  # what was searched, so a board can say when lr sat at its edge
        assert "test" in r["metrics"]
        if r["config"]["loss"] == "ce":
            assert set(t["params"]) == {"lr"} and r["config"]["loss_params"]["label_smoothing"] == 0.0
    focal = [r for r in evals if r["config"]["loss"] == "focal"]
    fixed = [r for r in focal if "gamma" not in r["tuning"]["params"]]
    tuned = [r for r in focal if "gamma" in r["tuning"]["params"]]
    assert len(fixed) == 2 and all(r["config"]["loss_params"]["gamma"] == 2.0 for r in fixed)
    assert len(tuned) == 2 and all(r["config"]["loss_params"]["gamma"] == r["tuning"]["params"]["gamma"] for r in tuned)
    assert {r["config"]["seed"] for r in evals} == {0, 1}
    assert all(r["config"]["data_root"] is None for r in evals)
    at_edge = {r["tuning"]["study"] for r in evals if lr_edge_note(r["config"]["lr"], r["tuning"]["lr_range"])}
    assert out.count("warning: lr ") == len(at_edge), out

    trials = records(runs / "tuning" / "trials")
    assert len(trials) == 9 and all("test" not in r["metrics"] and r["trial"]["study"] for r in trials)
    assert all(r["config"]["seed"] == 100 for r in trials)
    assert not list(runs.rglob("checkpoint.pt"))  # completed and pruned runs keep no weights
    journal = str(runs / "tuning" / "tuning.journal")
    assert set(trial_counts(journal).values()) == {3}

    before = {p: p.read_text() for p in [*runs.rglob("record.json"), runs / "tuning" / "tuning.journal"]}
    code, out, err = cli("grid", str(path), "--quiet")
    assert code == 0 and "6 skipped" in out, err
    assert {p: p.read_text() for p in before} == before  # a rerun changes no record, not even the journal
    assert set(trial_counts(journal).values()) == {3}

    code, out, err = cli("leaderboard", str(runs), "--out", str(tmp_path / "board"))
    assert code == 0, err
    board = (tmp_path / "board" / "leaderboard-cifar10-sample.md").read_text()
    lr = evals[0]["config"]["lr"]
    assert f"lr {lr:.3g}" in board and "Holm" in board and "3 trials of 2 epochs" in board
    assert "## Answer: which loss, and how sure" in board


def test_data_root_is_recorded_relative_to_the_experiment_file(cli, tmp_path, cifar10_archive):
    text = STUDY.replace('dataset = "cifar10-sample"', f'dataset = "cifar10"\ndata_root = "{os.path.relpath(cifar10_archive, tmp_path)}"')
    text = text.replace("[tune]\ntrials = 3", "[tune]\ntrials = 1").replace('models = ["cnn-tiny"]', 'models = ["mlp2"]')
    text = text.split("[[losses]]")[0] + '[[losses]]\nname = "ce"\n'
    path = write(tmp_path, text.replace("seeds = [0, 1]", "seeds = [0]"))
    code, _, err = cli("grid", str(path), "--quiet")
    assert code == 0, err
    for r in records(tmp_path / "runs") + records(tmp_path / "runs" / "tuning" / "trials"):
        assert r["config"]["data_root"] == os.path.relpath(cifar10_archive, tmp_path)


@pytest.mark.parametrize(
    "change, message",
    [
        (("seed = 100", "seed = 1"), "[tune] seed 1 is one of the eval seeds"),
        (("objective = \"val_acc\"", "objective = \"val_acc\"\nbudget = 3"), "[tune] has no key budget"),
        (("lr = [0.005, 0.5]", "lr = [0.5, 0.005]"), "[tune] lr must be [low, high] with 0 < low < high"),
        (("lr = [0.005, 0.5]", "lr = [0, 0.5]"), "[tune] lr must be [low, high]"),
        (("trials = 3", "trials = 0"), "[tune] trials must be at least 1"),
        (("trials = 3", "trials = 2.5"), "[tune] trials must be an integer"),
        (("objective = \"val_acc\"", "objective = \"test_acc\""), "[tune] objective must be one of val_acc, val_nll"),
        (("epochs = 2\nlimit_train", "epochs = 2\nlr = 0.1\nlimit_train"), "lr is fixed at the top level and given a range"),
    ],
)
def test_bad_tune_tables_are_one_clear_line(cli, tmp_path, change, message):
    assert change[0] in STUDY
    code, _, err = cli("grid", str(write(tmp_path, STUDY.replace(*change, 1))), "--quiet")
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "runs").exists()


def kill_when(cmd, out, pattern, sig=signal.SIGKILL, env=None):
    """Start the study, kill it once a file matching `pattern` appears under `out`, return."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 300
    while not list(out.glob(pattern)) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the study finished before it could be killed"
    proc.send_signal(sig)
    proc.wait()


@pytest.mark.parametrize("stage, pattern, sig", [
    ("tuning", "tuning/trials/*/checkpoint.pt", signal.SIGKILL),
    ("eval", "*/checkpoint.pt", signal.SIGKILL),
    ("tuning", "tuning/trials/*/checkpoint.pt", signal.SIGINT),
])
def test_a_killed_study_resumes_to_the_same_state(tmp_path, stage, pattern, sig):
    path = write(tmp_path, STUDY.replace("epochs = 2\nlimit_train = 600", "epochs = 3\nlimit_train = 600"))
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "bench", "grid", str(path), "--quiet"]
    kill_when(cmd, runs, pattern, sig)
    if stage == "eval":
        assert set(trial_counts(str(runs / "tuning" / "tuning.journal")).values()) == {3}
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    check_final_state(runs)
    assert set(trial_counts(str(runs / "tuning" / "tuning.journal")).values()) == {3}
    if stage == "tuning":  # the stopped trial ran again with its parameters, from its checkpoint
        trials = [t for s in all_studies(str(runs / "tuning" / "tuning.journal")) for t in s.trials]
        stopped = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
        assert len(stopped) <= 1  # none when the signal landed as a trial ended, between two trials
        for trial in stopped:
            assert trial.user_attrs.get("interrupted", False) == (sig == signal.SIGINT)
            [again] = [t for t in trials if t.user_attrs.get("retry_of") == trial.number and t.params == trial.params]
            assert again.state != optuna.trial.TrialState.FAIL
        trial_runs = list((runs / "tuning" / "trials").glob("*/record.json"))
        assert len(trial_runs) == len([t for t in trials if t.state != optuna.trial.TrialState.FAIL])


def run_two_workers(tmp_path, text: str) -> str:
    """Two `bench grid` processes sharing one SQLite storage (fast heartbeats, with a grace period
    of 15 s that a worker waiting on SQLite's write lock on a busy machine does not outlast);
    returns its URL."""
    path = write(tmp_path, text)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    cmd = [sys.executable, "-m", "bench", "grid", str(path), "--quiet", "--storage", url]
    env = {**os.environ, "BENCH_HEARTBEAT_SECONDS": "5"}
    workers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
               for _ in range(2)]
    for w in workers:
        assert w.wait(timeout=600) == 0, w.stderr.read()
    return url


def test_two_workers_share_a_sqlite_study(tmp_path):
    url = run_two_workers(tmp_path, STUDY)
    check_final_state(tmp_path / "runs")
    tuning = {k: v for k, v in trial_counts(url).items() if k.startswith("tune-")}
    assert len(tuning) == 3 and all(3 <= n <= 4 for n in tuning.values())  # at most workers - 1 extra
    evals = records(tmp_path / "runs")
    for study in tuning:  # every eval run of a cell used the same best trial
        assert len({json.dumps(r["tuning"]["params"]) for r in evals if r["tuning"]["study"] == study}) == 1


def test_tune_keeps_given_loss_hyperparameters_fixed(cli, tmp_path):
    out = tmp_path / "tune"
    code, _, err = cli("tune", "--model", "cnn-tiny", "--loss", "ce", "--label-smoothing", "0", "--dataset",
                       "cifar10-sample", "--epochs", "1", "--limit-train", "300", "--limit-test", "50", "--trials", "2",
                       "--quiet", "--out", str(out))
    assert code == 0, err
    study = optuna.load_study(study_name="cifar10-sample-cnn-tiny-ce", storage=f"sqlite:///{out / 'optuna.db'}")
    assert all(set(t.params) == {"lr"} for t in study.trials)
    best = json.loads((out / "cifar10-sample-cnn-tiny-ce.best.json").read_text())
    assert best["loss_params"]["label_smoothing"] == 0.0
    assert all("test" not in r["metrics"] for r in records(out / "trials"))


def test_local_workers_get_one_gpu_each_on_a_multi_gpu_machine(monkeypatch):
    import torch

    from bench.api import worker_env

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [worker_env(i)["CUDA_VISIBLE_DEVICES"] for i in range(6)] == ["0", "1", "2", "3", "0", "1"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert worker_env(3).get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")


def test_python_api_tunes_runs_a_study_and_draws_its_board(tmp_path):
    import bench

    best = bench.tune(model="cnn-tiny", loss="focal", dataset="cifar10-sample", trials=2, out=tmp_path / "tune",
                      epochs=1, limit_train=300, limit_test=50, gamma=2.0)
    assert best["loss_params"]["gamma"] == 2.0 and 1e-3 <= best["lr"] <= 0.5  # given gamma fixed, lr tuned
    tally = bench.grid(write(tmp_path, STUDY.replace("trials = 3", "trials = 1")))
    assert tally == {"completed": 6}
    assert bench.grid(tmp_path / "experiment.toml") == {"skipped": 6}
    df = bench.load_runs(tmp_path / "runs", role="all")  # default: eval runs only
    assert (df.role == "eval").sum() == 6 and (df.role == "tuning").sum() == 3
    assert df[df.role == "tuning"].test_accuracy.isna().all() and df[df.role == "eval"].tuned.notna().all()
    [board] = bench.leaderboard(tmp_path / "runs", out=tmp_path / "board")
    assert "## Answer: which loss, and how sure" in board.read_text()
    with pytest.raises(bench.UsageError, match="trials must be at least 1"):
        bench.tune(model="cnn-tiny", loss="ce", dataset="cifar10-sample", trials=0)


def test_a_trial_stopped_outside_the_training_loop_is_re_queued(monkeypatch, tmp_path):
    """SIGINT that lands outside a run's own handler (during set-up, or as the run ends) is a
    KeyboardInterrupt: the trial is still marked interrupted and its parameters re-queued."""
    import bench.studies
    import bench.tuning
    from bench.config import RunConfig
    from bench.studies import requeue_leftovers
    from bench.tuning import SearchSpace, trial_objective

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench.tuning, "run", stopped)
    config = RunConfig(model="cnn-tiny", loss="ce", dataset="cifar10-sample", loss_params={"label_smoothing": 0.0})
    study = optuna.create_study()
    with pytest.raises(KeyboardInterrupt):
        study.optimize(trial_objective(config, SearchSpace.of(config, False, None), tmp_path, "val_acc", "s", print),
                       n_trials=1)
    [trial] = study.trials
    assert trial.state == optuna.trial.TrialState.FAIL and trial.user_attrs["interrupted"]
    requeue_leftovers(study)
    again = study.trials[-1]
    assert again.state == optuna.trial.TrialState.WAITING and again.user_attrs["retry_of"] == trial.number
    assert again.system_attrs["fixed_params"] == trial.params


def test_a_shared_study_re_queues_a_trial_stopped_by_sigint(monkeypatch, tmp_path):
    """On an RDB storage a stale heartbeat re-queues a dead worker's trial; one stopped by Ctrl-C
    is failed at once, so the next worker to start re-queues it instead."""
    import bench.studies
    import bench.tuning
    from bench.experiment import load_experiment
    from bench.study import tune_cell

    experiment = load_experiment(write(tmp_path, STUDY.replace("trials = 3", "trials = 2")))
    cell, spec, url = experiment.cells[1], experiment.tune, f"sqlite:///{tmp_path / 'study.db'}"
    real_run = bench.tuning.run

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench.tuning, "run", stopped)
    with pytest.raises(KeyboardInterrupt):
        tune_cell(cell, spec, bench.studies.open_storage(url), tmp_path / "tuning", url, lambda *_: None)
    monkeypatch.setattr(bench.tuning, "run", real_run)
    info = tune_cell(cell, spec, bench.studies.open_storage(url), tmp_path / "tuning", url, lambda *_: None)
    [study] = all_studies(url)
    first, again = study.trials[:2]
    assert first.user_attrs["interrupted"] and again.user_attrs["retry_of"] == first.number
    assert again.params == first.params and again.state != optuna.trial.TrialState.FAIL
    assert info["trials"] == 2
