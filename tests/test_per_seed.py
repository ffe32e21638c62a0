"""Per-seed tuning (the default [tune] mode): every eval seed runs its own study on its own
tuning seed and train/val partition, every study starts with the same lr grid, and the board
states the margin, the verdicts, P(A > B) and the lr search figure."""

import json
import math
import re
import signal
import subprocess
import sys

import numpy as np
import optuna
import pytest

from bench.experiment import load_experiment
from bench.leaderboards.collect import chosen_on_grid
from bench.stats import equivalence_p, probability_better
from bench.tuning import lr_grid
from test_study import STUDY, all_studies, kill_when, records, run_two_workers, trial_counts, write

# the single-study test experiment in per-seed mode (the default) with a 2-point lr grid, ce and free focal
PER_SEED = (STUDY.split('\n[[losses]]\nname = "focal"\ngamma = 2.0')[0]
            .replace("per_seed = false  # the single-study protocol of the published boards (tests of per-seed mode: "
                     "test_per_seed.py)\nlr_points = 0", "lr_points = 2"))


def check_per_seed_state(runs):
    evals = records(runs)
    assert len(evals) == 4 and all(r["status"] == "completed" for r in evals)
    assert len({r["config_hash"] for r in evals}) == 4
    for r in evals:
        t = r["tuning"]
        assert t["mode"] == "per_seed" and t["seed"] == 100 + r["config"]["seed"]  # tuning seed from the eval seed
        assert f"-seed{r['config']['seed']}-" in t["study"] and t["trials"] == 3
        assert t["lr_grid"] == pytest.approx([0.005, 0.5]) and lr_grid((0.005, 0.5), 3)[1] == pytest.approx(0.05)
        assert r["config"]["lr"] == t["params"]["lr"]
    assert len({r["tuning"]["study"] for r in evals}) == 4  # one study per cell and eval seed
    assert len({r["tuning"]["cell"] for r in evals}) == 2  # two cells
    return evals


def test_each_eval_seed_tunes_itself_with_the_same_lr_grid_for_every_loss(cli, tmp_path):
    path = write(tmp_path, PER_SEED)
    runs = tmp_path / "runs"
    code, out, err = cli("grid", str(path), "--quiet")
    assert code == 0, err
    evals = check_per_seed_state(runs)
    journal = str(runs / "tuning" / "tuning.journal")
    studies = all_studies(journal)
    assert len(studies) == 4 and set(trial_counts(journal).values()) == {3}
    for study in studies:  # the first two trials of every study: the shared grid, run to the end
        grid = [t for t in study.trials if t.user_attrs.get("lr_grid")]
        assert [t.params["lr"] for t in grid] == pytest.approx([0.005, 0.5])
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in grid)
        focal = "focal" in study.study_name
        assert all(t.params.get("gamma") == (2.0 if focal else None) for t in grid)  # the default, on the grid
    by_name = {study.study_name: study for study in studies}
    for r in evals:  # "best on the shared lr grid" agrees with the journal: the chosen trial was a grid trial
        chosen = [t for t in by_name[r["tuning"]["study"]].trials if t.params == r["tuning"]["params"]]
        assert chosen and chosen_on_grid(r["tuning"]) == bool(chosen[0].user_attrs.get("lr_grid"))
    trials = records(runs / "tuning" / "trials")
    assert {r["config"]["seed"] for r in trials} == {100, 101}  # tuning seeds, never an eval seed
    # each trial's own train/val partition: the tuning seed carves validation from train
    assert {r["config"]["seed"] for r in evals} == {0, 1}

    before = {p: p.read_text() for p in [*runs.rglob("record.json"), runs / "tuning" / "tuning.journal"]}
    code, out, err = cli("grid", str(path), "--quiet")
    assert code == 0 and "4 skipped" in out, err
    assert {p: p.read_text() for p in before} == before  # a rerun adds nothing

    code, out, err = cli("leaderboard", str(runs), "--out", str(tmp_path / "board"), "--margin", "0.7")
    assert code == 0, err
    board = (tmp_path / "board" / "leaderboard-cifar10-sample.md").read_text()
    assert "(tuned per seed: lr " in board and "equivalent within ±0.7 pp" in board
    assert "P(beats ce)" in board and "P(loss > ce)" in board and "verdict" in board
    assert any(word in board for word in ("**better**", "**worse**", "**undecided**", "**equivalent within ±0.7 pp**"))
    assert "Each seed tuned its own values in its own study" in board and "## The search: what each row" in board
    wins = {loss: sum(chosen_on_grid(r["tuning"]) for r in evals if r["config"]["loss"] == loss)
            for loss in ("ce", "focal")}
    assert "best on the shared lr grid" in board
    assert all(re.search(rf"\| {loss} .*\| {n} of 2 ", board) for loss, n in wins.items()), board
    assert ("- tuned per seed: each eval seed ran its own study on its own validation split" in board
            and "(tuning seeds 100, 101)" in board and "unchanged on every seed" not in board)
    assert "![the lr search: every tuning trial](cifar10-sample-search.png)" in board
    assert (tmp_path / "board" / "cifar10-sample-search.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "board" / "summary-cifar10-sample.json").read_text())
    assert summary["margin"] == pytest.approx(0.007) and len(summary["rows"]) == 2
    assert sorted(t["on_lr_grid"] for row in summary["rows"] for t in row["tuned"]) == sorted(
        chosen_on_grid(r["tuning"]) for r in evals)
    [comparison] = summary["comparisons_vs_ce"]
    focal = {r["config"]["seed"]: r["metrics"]["test"]["accuracy"] for r in evals if r["config"]["loss"] == "focal"}
    ce = {r["config"]["seed"]: r["metrics"]["test"]["accuracy"] for r in evals if r["config"]["loss"] == "ce"}
    diffs = [focal[s] - ce[s] for s in (0, 1)]
    assert comparison["delta"] == pytest.approx(np.mean(diffs))
    assert comparison["p_better"] == pytest.approx(probability_better([focal[0], focal[1]], [ce[0], ce[1]]))
    assert comparison["verdict"] in ("better", "worse", "undecided", "equivalent within ±0.7 pp", "no test")


def test_two_workers_run_each_per_seed_eval_point_once(tmp_path):
    url = run_two_workers(tmp_path, PER_SEED)
    check_per_seed_state(tmp_path / "runs")
    tuning = {k: v for k, v in trial_counts(url).items() if k.startswith("tune-")}
    assert len(tuning) == 4 and all(3 <= n <= 4 for n in tuning.values())  # at most workers - 1 extra


def test_a_per_seed_study_killed_mid_trial_resumes(tmp_path):
    path = write(tmp_path, PER_SEED.replace("epochs = 2\nlimit_train = 600", "epochs = 3\nlimit_train = 600"))
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "bench", "grid", str(path), "--quiet"]
    kill_when(cmd, runs, "tuning/trials/*/checkpoint.pt", signal.SIGKILL)
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    check_per_seed_state(runs)
    assert set(trial_counts(str(runs / "tuning" / "tuning.journal")).values()) == {3}


def test_split_per_seed_draws_the_protocol_split_from_each_seed(tmp_path):
    text = PER_SEED.replace('models = ["cnn-tiny"]', 'models = ["cnn-tiny"]\nsplit_per_seed = true')
    experiment = load_experiment(write(tmp_path, text))
    configs = experiment.configs
    assert [(c.seed, c.split_seed) for c in configs] == [(0, 0), (1, 1), (0, 0), (1, 1)]
    spec = experiment.tune
    trial = spec.trial_config(experiment.config_for(experiment.cells[0], 1), 1)
    assert (trial.seed, trial.split_seed) == (101, 1)  # tuned on seed 1's split: its test images stay unseen


@pytest.mark.parametrize("change, message", [
    (("seed = 100", "seed = 1"), "[tune] seed 1 + eval seed (per-seed tuning) gives tuning seeds 1"),
    (("lr_points = 2", "lr_points = -1"), "[tune] lr_points must be at least 0"),
    (("lr_points = 2", "per_seed = 3"), "[tune] per_seed must be true or false"),
    (('models = ["cnn-tiny"]', 'models = ["cnn-tiny"]\nsplit_per_seed = true\nsplit_seed = 3'),
     "split_seed is fixed and split_per_seed draws it from each seed"),
    (("lr_points = 2", "per_seed = false\n[x]"), "unknown key x"),
])
def test_bad_per_seed_settings_are_one_clear_line(cli, tmp_path, change, message):
    path = write(tmp_path, PER_SEED.replace(*change))
    code, _, err = cli("grid", str(path))
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_split_per_seed_refuses_a_single_study(cli, tmp_path):
    text = PER_SEED.replace('models = ["cnn-tiny"]', 'models = ["cnn-tiny"]\nsplit_per_seed = true')
    path = write(tmp_path, text.replace("lr_points = 2", "lr_points = 2\nper_seed = false"))
    code, _, err = cli("grid", str(path))
    assert code == 2 and "split_per_seed needs [tune] per_seed = true" in err


def test_equivalence_and_p_better():
    ce = [0.80, 0.81, 0.79, 0.80, 0.82]
    close = [c + d for c, d in zip(ce, (0.001, -0.001, 0.002, 0.0, -0.002))]
    assert equivalence_p(close, ce, 0.005) < 0.01  # within ±0.5 pp, shown
    far = [c + 0.02 + d for c, d in zip(ce, (0.001, -0.001, 0.002, 0.0, -0.002))]
    assert equivalence_p(far, ce, 0.005) > 0.5
    assert math.isnan(equivalence_p([0.5], [0.4], 0.005))
    assert probability_better([1, 2, 3, 4], [0, 2, 4, 0]) == pytest.approx((2 + 0.5) / 4)
