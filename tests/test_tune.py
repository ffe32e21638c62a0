"""bench tune: Optuna over lr and the loss's registry ranges, on val, resumable, shareable."""

import json
import subprocess
import sys

import optuna
import pytest

TUNE = ["tune", "--model", "cnn-tiny", "--loss", "focal", "--dataset", "cifar10-sample", "--epochs", "3",
        "--limit-train", "800", "--limit-test", "50", "--quiet"]


def trials_of(storage: str, name: str) -> list:
    return optuna.load_study(study_name=name, storage=storage).trials


def test_tune_prunes_resumes_and_its_best_params_reproduce(cli, tmp_path):
    out = tmp_path / "tune"
    code, stdout, err = cli(*TUNE, "--trials", "8", "--out", str(out))
    assert code == 0, err
    storage = f"sqlite:///{(out / 'optuna.db').resolve()}"
    trials = trials_of(storage, "cifar10-sample-cnn-tiny-focal")
    assert len(trials) == 8
    assert sum(t.state == optuna.trial.TrialState.PRUNED for t in trials) >= 1
    assert {"lr", "gamma"} <= set(trials[0].params)
    assert all(1e-3 <= t.params["lr"] <= 0.5 and 0 <= t.params["gamma"] <= 5 for t in trials)
    code, _, err = cli(*TUNE, "--trials", "8", "--out", str(out))
    assert code == 0, err
    assert len(trials_of(storage, "cifar10-sample-cnn-tiny-focal")) == 16  # same study, 8 more

    best = out / "cifar10-sample-cnn-tiny-focal.best.json"
    tuned = json.loads(best.read_text())
    runs = tmp_path / "runs"
    code, _, err = cli("run", "--model", "cnn-tiny", "--loss", "focal", "--dataset", "cifar10-sample", "--epochs", "3",
                       "--limit-train", "800", "--limit-test", "50", "--quiet", "--out", str(runs), "--params", str(best))
    assert code == 0, err
    [record] = [json.loads(p.read_text()) for p in runs.glob("*/record.json")]
    assert record["config"]["lr"] == tuned["lr"] and record["config"]["loss_params"]["gamma"] == tuned["loss_params"]["gamma"]
    # the tuned run reproduces the best trial's validation accuracy
    assert record["history"][-1]["val_acc"] == pytest.approx(tuned["value"], abs=1e-9)
    code, _, err = cli("run", "--model", "cnn-tiny", "--loss", "focal", "--dataset", "cifar10-sample",
                       "--params", str(best), "--gamma", "1")
    assert code == 2 and "--gamma and --params both set" in err


@pytest.mark.parametrize(
    "content, message",
    [("{not json", "is not valid JSON"), ('{"lr": 0.1, "momentum2": 3}', "unknown key momentum2"),
     ('{"lr": "fast"}', "lr must be a number"), ('{"loss": "ce", "lr": 0.1}', "tuned for loss 'ce'")],
)
def test_bad_params_files(cli, tmp_path, content, message):
    path = tmp_path / "p.json"
    path.write_text(content)
    code, _, err = cli("run", "--model", "cnn-tiny", "--loss", "focal", "--dataset", "cifar10-sample",
                       "--params", str(path))
    assert code == 2 and message in err and err.count("\n") == 1


def test_two_workers_share_one_journal_study_without_duplicates(tmp_path):
    storage = f"journal:{tmp_path / 'study.journal'}"
    cmd = [sys.executable, "-m", "bench", *TUNE, "--trials", "3", "--out", str(tmp_path / "out"),
           "--storage", storage, "--study-name", "shared", "--pruner", "median"]
    workers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for w in workers:
        assert w.wait(timeout=600) == 0, w.stderr.read()
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="shared", storage=JournalStorage(JournalFileBackend(str(tmp_path / "study.journal"))))
    numbers = [t.number for t in study.trials]
    assert len(numbers) == 6 and len(set(numbers)) == 6
    assert all(t.state.is_finished() for t in study.trials)


@pytest.mark.parametrize("trials,startup", [(4, 3), (8, 3), (12, 4), (60, 10)])
def test_small_studies_still_get_model_guided_trials(trials, startup):
    """Optuna's default 10 random start-up trials would make a study of 8 a plain random search."""
    from bench.tuning import make_sampler

    study = optuna.create_study(sampler=make_sampler(0, trials))
    assert study.sampler._n_startup_trials == startup


def test_a_stopped_tune_trial_runs_again_with_its_parameters(monkeypatch, tmp_path):
    """Ctrl-C during `bench tune`, then the same command: the stopped trial's parameters run first,
    once, and its run resumes; before, they were lost with the failed trial."""
    import bench.tuning
    from bench.config import RunConfig

    config = RunConfig(model="cnn-tiny", loss="focal", dataset="cifar10-sample", epochs=1, limit_train=300, limit_test=50)
    real_run = bench.tuning.run

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench.tuning, "run", stopped)
    with pytest.raises(KeyboardInterrupt):
        bench.tuning.tune(config, 2, tmp_path, log=lambda *_: None)
    monkeypatch.setattr(bench.tuning, "run", real_run)
    for _ in range(2):  # the second call must not re-queue it again
        bench.tuning.tune(config, 1, tmp_path, log=lambda *_: None)
    first, again, new = trials_of(f"sqlite:///{(tmp_path / 'optuna.db').resolve()}", "cifar10-sample-cnn-tiny-focal")
    assert first.state == optuna.trial.TrialState.FAIL and first.user_attrs["interrupted"]
    assert again.user_attrs["retry_of"] == first.number and again.params == first.params
    assert again.state != optuna.trial.TrialState.FAIL and "retry_of" not in new.user_attrs


def test_class_balanced_beta_is_tuned_on_a_log_scale_of_one_minus_beta():
    """beta 0.9, 0.99, 0.999, 0.9999 re-weight in kind, not degree: a linear draw from 0.9-0.9999
    lands above 0.999 one time in a hundred, a log draw of 1 - beta one time in three."""
    from bench.config import RunConfig
    from bench.tuning import SearchSpace

    config = RunConfig(model="cnn-tiny", loss="class-balanced", dataset="cifar10-sample", loss_params={"base": "focal"})
    space = SearchSpace.of(config, lr_fixed=True)
    assert space.loss_params == ("beta", "gamma")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    betas = []

    def objective(trial):
        tuned = space.suggest(trial, config)
        assert set(trial.params) == {"1-beta", "gamma"} and tuned.lr == config.lr
        assert tuned.loss_params["beta"] == pytest.approx(1 - trial.params["1-beta"])
        betas.append(tuned.loss_params["beta"])
        return 0.0

    study.optimize(objective, n_trials=300)
    assert 0.9 - 1e-12 <= min(betas) and max(betas) <= 0.9999 + 1e-12
    assert 0.25 < sum(b >= 0.999 for b in betas) / len(betas) < 0.42
    best = space.values(study.best_trial.params)  # what records and the eval runs get: the loss's own names
    assert set(best) == {"beta", "gamma"} and best["beta"] == pytest.approx(1 - study.best_trial.params["1-beta"])
    assert space.values({"beta": 0.99, "gamma": 1.0}) == {"beta": 0.99, "gamma": 1.0}  # studies from before
