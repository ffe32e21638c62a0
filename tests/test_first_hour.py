"""What a new user trips over: fake results from data that cannot support a benchmark, a board
that crowns a winner at chance, a record path a script cannot read back."""

import json

import numpy as np
from PIL import Image

from bench.record import write_json_atomic
from bench.leaderboards import write_leaderboards
from test_leaderboard import fake_record


def image_tree(root, classes: dict[str, int], size=(16, 16)) -> None:
    for cls, n in classes.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", size, color=(7 * i % 256, 3 * i % 256, len(cls) * 20)).save(root / cls / f"{i}.png")


def run_folder(cli, tmp_path, folder, *extra):
    return cli("run", "--model", "mlp2", "--loss", "ce", "--dataset", f"folder:{folder}", "--epochs", "1",
               "--image-size", "16", "--out", str(tmp_path / "runs"), *extra)


def test_a_single_class_folder_is_refused_not_scored_100_percent(cli, tmp_path):
    image_tree(tmp_path / "one", {"cats": 20})
    code, out, err = run_folder(cli, tmp_path, tmp_path / "one", "--quiet")
    assert code == 2 and "has 1 class (cats)" in err and "at least two" in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("record.json"))


def sample_run(cli, tmp_path, *extra):
    return cli("run", "--model", "mlp2", "--loss", "ce", "--dataset", "cifar10-sample", "--epochs", "1",
               "--out", str(tmp_path / "runs"), *extra)


def test_a_class_without_training_images_is_refused(cli, tmp_path):
    code, _, err = sample_run(cli, tmp_path, "--limit-train", "8", "--val-fraction", "0.25", "--quiet")
    assert code == 2 and "has no training images" in err and err.count("\n") == 1, err


def test_a_class_missing_from_test_and_a_tiny_train_split_are_stated_warnings(cli, tmp_path):
    code, out, err = sample_run(cli, tmp_path, "--limit-train", "100", "--limit-test", "5")
    assert code == 0, err
    assert "warning: class " in out and "has no test images" in out and "fewer than one batch of 128" in out
    [path] = (tmp_path / "runs").rglob("record.json")
    warnings = json.loads(path.read_text())["warnings"]
    assert any("has no test images: its test accuracy is undefined" in w for w in warnings)
    assert any("90 images, fewer than one batch of 128" in w for w in warnings)  # a tenth carved for val
    code, _, err = cli("leaderboard", str(tmp_path / "runs"), "--out", str(tmp_path / "board"))
    assert code == 0, err
    assert "## Warnings from the data" in (tmp_path / "board" / "leaderboard-cifar10-sample.md").read_text()
    [row] = json.loads((tmp_path / "board" / "summary-cifar10-sample.json").read_text())["rows"]
    assert row["warnings"] == sorted(warnings)


def test_quiet_prints_just_the_record_path_and_paths_never_wrap(cli, tmp_path):
    deep = tmp_path / ("a-rather-long-folder-name-" * 4) / "runs"
    code, out, err = cli("run", "--model", "mlp2", "--loss", "ce", "--dataset", "cifar10-sample", "--epochs", "1",
                         "--limit-train", "300", "--limit-test", "100", "--out", str(deep), "--quiet")
    assert code == 0, err
    [path] = deep.rglob("record.json")
    assert out == f"{path}\n"
    code, out, err = cli("run", "--model", "mlp2", "--loss", "ce", "--dataset", "cifar10-sample", "--epochs", "1",
                         "--limit-train", "300", "--limit-test", "100", "--out", str(deep), "--seed", "1")
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("record: "))
    assert line.endswith("record.json") and len(line) > 100  # one line, however long


def test_a_board_at_chance_names_no_winner_and_clips_its_interval(tmp_path):
    runs = tmp_path / "runs"
    for seed, (ce, focal) in enumerate([(0.1225, 0.0100), (0.1500, 0.2000), (0.0950, 0.0150)]):
        for loss, acc in (("ce", ce), ("focal", focal)):
            r = fake_record("cnn", loss, {"gamma": 2.0} if loss == "focal" else {}, seed, acc)
            write_json_atomic(runs / f"{loss}-{seed}" / "record.json", r)
    [path] = write_leaderboards([runs], tmp_path / "out", command="bench leaderboard runs")
    text = path.read_text()
    assert "**No winner:** no configuration is clearly above chance (33% on 3 classes" in text
    assert "- **cnn**: no winner: no loss is clearly above chance (best 12.25%, its 95% interval down to" in text
    assert "best **" not in text
    summary = json.loads((tmp_path / "out" / f"summary-{path.stem.removeprefix('leaderboard-')}.json").read_text())
    assert summary["answer"]["no_winner"] is True
    for row in summary["rows"]:
        assert 0.0 <= row["accuracy"]["ci_low"] <= row["accuracy"]["ci_high"] <= 1.0
    assert min(r["accuracy"]["ci_low"] for r in summary["rows"]) == 0.0  # the t-interval passed below 0
    assert np.isclose(summary["rows"][0]["accuracy"]["mean"], np.mean([0.1225, 0.15, 0.095]))


def test_json_and_csv_boards_hold_numbers_a_program_can_read(cli, tmp_path):
    import pandas as pd

    runs = tmp_path / "runs"
    accs = {"ce": [0.66, 0.68, 0.67], "focal": [0.70, 0.71, 0.73]}
    for loss, values in accs.items():
        for seed, acc in enumerate(values):
            write_json_atomic(runs / f"{loss}-{seed}" / "record.json",
                              fake_record("cnn", loss, {"gamma": 2.0} if loss == "focal" else {}, seed, acc))
    code, out, err = cli("leaderboard", str(runs), "--out", str(tmp_path / "j"), "--format", "json")
    assert code == 0, err
    board = json.loads((tmp_path / "j" / "leaderboard-toy.json").read_text())
    rows = pd.json_normalize(board["rows"])
    focal = rows[rows.loss_name == "focal"].iloc[0]
    assert focal["accuracy.mean"] == np.mean(accs["focal"]) and focal["accuracy.n"] == 3
    [comparison] = board["comparisons_vs_ce"]
    assert comparison["delta"] == np.mean(np.subtract(accs["focal"], accs["ce"]))
    assert isinstance(comparison["p_holm"], float) and comparison["verdict"] in ("better", "undecided")
    assert board["answer"]["best_per_model"]["cnn"]["loss"].startswith("focal") and board["answer"]["lines"]

    code, out, err = cli("leaderboard", str(runs), "--out", str(tmp_path / "c"), "--format", "csv")
    assert code == 0, err
    main = pd.read_csv(tmp_path / "c" / "leaderboard-toy-main.csv")
    assert main["accuracy_mean"].dtype == float and main["n"].tolist() == [3, 3]
    assert main.loc[main.loss.str.startswith("focal"), "accuracy_mean"].item() == np.mean(accs["focal"])
    paired = pd.read_csv(tmp_path / "c" / "leaderboard-toy-paired_vs_ce.csv")
    assert paired["delta"].item() == np.mean(np.subtract(accs["focal"], accs["ce"]))
    assert {"ci_low", "ci_high", "p", "p_holm", "p_equiv_holm", "p_better", "verdict"} <= set(paired.columns)


def test_load_runs_takes_a_folder_a_record_or_a_list_and_eval_runs_by_default(tmp_path):
    import pytest

    import bench

    for folder, seed in (("a", 0), ("b", 1)):
        write_json_atomic(tmp_path / folder / "run" / "record.json", fake_record("cnn", "focal", {"gamma": 2.0}, seed, 0.7))
    trial = fake_record("cnn", "focal", {"gamma": 1.5}, 100, 0.6) | {"trial": {"study": "s", "number": 0}}
    write_json_atomic(tmp_path / "a" / "tuning" / "record.json", trial)
    assert len(bench.load_runs(tmp_path / "a")) == 1  # the eval run; the trial only on request
    assert len(bench.load_runs(tmp_path / "a", role="all")) == 2
    assert bench.load_runs(tmp_path / "a", role="tuning").seed.tolist() == [100]
    both = bench.load_runs([tmp_path / "a", tmp_path / "b" / "run" / "record.json"])
    assert sorted(both.seed) == [0, 1]
    assert both.loss_params.iloc[0] == {"gamma": 2.0}  # a dict, not a JSON string
    with pytest.raises(bench.UsageError, match="role must be one of eval, tuning, all"):
        bench.load_runs(tmp_path / "a", role="trials")


def test_help_shows_defaults_and_what_each_shared_loss_flag_means_per_loss(cli, capsys):
    import pytest

    with pytest.raises(SystemExit):
        cli("run", "--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "--epochs EPOCHS (default: 10)" in text and "--batch-size BATCH_SIZE (default: 128)" in text
    assert "focal: class weight" in text and "sce: weight of cross-entropy" in text  # --alpha, per loss
    assert "class-balanced: focusing exponent when base is focal" in text
    with pytest.raises(SystemExit):
        cli("grid", "--help")
    text = capsys.readouterr().out
    assert "[tune]" in text and "per_seed" in text and "[[losses]]" in text and "see bench/experiment.py" not in text


def test_a_misspelt_flag_gets_a_suggestion_and_an_empty_listing_is_an_error(cli, capsys):
    import pytest

    code, _, err = cli("run", "--model", "cnn", "--loss", "focal", "--dataset", "cifar10-sample", "--gama", "2")
    assert code == 2 and "did you mean --gamma (not --gama)?" in err and "see 'bench run --help'" in err
    assert "bench: error: bench:" not in err and err.count("\n") == 1
    for command in ("losses", "models", "datasets"):
        code, out, err = cli(command, "xyz*")
        assert code == 2 and "matches 'xyz*'" in err and not out, command
    with pytest.raises(SystemExit) as stop:
        cli("--version")
    assert stop.value.code == 0 and capsys.readouterr().out.startswith("bench ")


def test_bench_datasets_says_what_data_root_accepts(cli):
    code, out, _ = cli("datasets")
    text = " ".join(out.replace("│", " ").split())
    assert code == 0 and "--data-root accepts" in out and "cifar-10-batches-py/" in text and "ILSVRC" in text


def test_resume_says_what_it_resumes_or_that_there_is_nothing(cli, tmp_path, caplog):
    import logging
    import signal

    import pytest

    from bench.checkpoint import Interrupted
    from bench.config import RunConfig
    from bench.report import QuietReporter
    from bench.train import run

    args = ("run", "--model", "mlp2", "--loss", "ce", "--dataset", "cifar10-sample", "--epochs", "2",
            "--limit-train", "300", "--limit-test", "100", "--out", str(tmp_path / "runs"), "--resume")
    code, _, err = cli(*args)
    assert code == 0 and "nothing to resume for this configuration" in err, err
    code, _, err = cli(*args)
    assert code == 0 and "already completed: " in err and "nothing to resume" in err, err

    class StopAtSecondEpoch(QuietReporter):
        def epoch(self, entry):
            if entry["epoch"] == 2:
                raise Interrupted(signal.SIGINT)

    config = RunConfig(model="mlp2", loss="ce", dataset="cifar10-sample", epochs=3, limit_train=300, limit_test=100)
    with pytest.raises(Interrupted):
        run(config, tmp_path / "other", StopAtSecondEpoch())
    with caplog.at_level(logging.INFO, logger="bench"):
        record, path = run(config, tmp_path / "other", resume=True)
    assert record["status"] == "completed"
    assert f"resuming run {path.parent.name} from epoch 2, step 0" in caplog.text


def test_long_phases_report_progress(cli, tmp_path, monkeypatch, caplog):
    import logging

    from bench import imagefolder
    from test_study import STUDY, write

    monkeypatch.setattr(imagefolder, "PROGRESS_SECONDS", 0.0)
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    image_tree(tmp_path / "tree" / "train", {"a": 3, "b": 3})
    image_tree(tmp_path / "tree" / "test", {"a": 2, "b": 2})
    with caplog.at_level(logging.INFO, logger="bench"):
        imagefolder.load_image_tree(tmp_path / "tree", ("train", "test"), 16)
    assert "decoding the images of" in caplog.text and "decoded 10 images in" in caplog.text

    text = STUDY.replace("seeds = [0, 1]", "seeds = [0]").replace("trials = 3", "trials = 2")
    code, out, err = cli("grid", str(write(tmp_path, text)))
    assert code == 0, err
    assert " trial 1 of 2: val_acc " in out and " trial 2 of 2: " in out
    assert "pace " in out and "left for the 2 remaining" in out


def test_a_full_disk_while_checkpointing_ends_in_one_line_and_resume_continues(cli, tmp_path, monkeypatch):
    import errno

    import bench.train

    real_save, calls = bench.train.save_checkpoint, []

    def full_disk_at_the_second_checkpoint(path, state):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_save(path, state)

    monkeypatch.setattr(bench.train, "save_checkpoint", full_disk_at_the_second_checkpoint)
    args = ("run", "--model", "mlp2", "--loss", "ce", "--dataset", "cifar10-sample", "--epochs", "3",
            "--limit-train", "300", "--limit-test", "100", "--out", str(tmp_path / "runs"), "--quiet")
    code, out, err = cli(*args)
    assert code == 2 and err.count("\n") == 1 and "No space left on device" in err and "--resume" in err, err
    [path] = (tmp_path / "runs").rglob("record.json")
    stopped = json.loads(path.read_text())
    assert stopped["status"] == "interrupted" and len(stopped["history"]) == 2  # epoch 2 ran; its checkpoint did not
    monkeypatch.setattr(bench.train, "save_checkpoint", real_save)
    code, out, err = cli(*args, "--resume")
    assert code == 0, err
    done = json.loads(path.read_text())  # the same run folder, continued from the last good checkpoint (epoch 1)
    assert done["status"] == "completed" and done["resumed_from"]["epoch"] == 1 and len(done["history"]) == 3


def test_a_read_only_output_folder_is_one_line(cli, tmp_path, monkeypatch):
    import errno

    import bench.train

    def read_only(path, payload):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(bench.train, "write_json_atomic", read_only)
    code, _, err = cli("run", "--model", "mlp2", "--loss", "ce", "--dataset", "cifar10-sample", "--epochs", "1",
                       "--limit-train", "300", "--out", str(tmp_path / "ro"), "--quiet")
    assert code == 2 and err.count("\n") == 1 and "Read-only file system" in err and "writable --out" in err, err


def test_torn_records_and_journal_lines_lose_nothing_already_written(cli, tmp_path):
    from test_study import STUDY, trial_counts, write

    text = STUDY.replace("seeds = [0, 1]", "seeds = [0]").replace("trials = 3", "trials = 2")
    path = write(tmp_path, text)
    code, _, err = cli("grid", str(path), "--quiet")
    assert code == 0, err
    journal = tmp_path / "runs" / "tuning" / "tuning.journal"
    before = trial_counts(str(journal))
    with open(journal, "ab") as f:  # a writer killed mid-line
        f.write(b'{"op_code": 5, "worker_id": "x", "study_id": 0, "datetime_st')
    [first, *_] = sorted((tmp_path / "runs").glob("*/record.json"))
    first.write_text(first.read_text()[:200])  # a record torn by a crash (written atomically by bench itself)
    code, out, err = cli("grid", str(path), "--quiet")
    assert code == 0, err
    assert "last line of" in err and "was cut short" in err
    assert trial_counts(str(journal)) == before  # every finished trial kept, the journal readable again
    assert json.loads(first.read_text())["status"] == "completed"  # the torn run ran again into its folder
    code, out, err = cli("leaderboard", str(tmp_path / "runs"), "--out", str(tmp_path / "board"))
    assert code == 0, err
    with open(journal, "r+b") as f:  # a broken line in the middle: one line, not Optuna's traceback
        data = f.read()
        f.seek(0)
        f.write(data.replace(b'"op_code"', b'"op_code', 1))
    code, _, err = cli("grid", str(path), "--quiet")
    assert code == 2 and "line 1 is not a complete journal entry" in err and err.count("\n") == 1, err


def test_optuna_dashboard_opens_benchs_studies_over_localhost(cli, tmp_path):
    """optuna-dashboard, the client users reach for, reads a grid's journal and lists its studies
    under readable names (dataset, model, loss, seed, then a hash of the budget)."""
    import shutil
    import socket
    import subprocess
    import time
    import urllib.request

    from test_study import STUDY, write

    text = STUDY.replace("seeds = [0, 1]", "seeds = [0]").replace("trials = 3", "trials = 1")
    code, _, err = cli("grid", str(write(tmp_path, text.replace("per_seed = false", "per_seed = true"))), "--quiet")
    assert code == 0, err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    journal = tmp_path / "runs" / "tuning" / "tuning.journal"
    server = subprocess.Popen([shutil.which("optuna-dashboard"), str(journal), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, names = time.monotonic() + 60, None
        while names is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    names = [s["study_name"] for s in json.loads(response.read())["study_summaries"]]
            except OSError:
                time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert names is not None, "optuna-dashboard did not answer"
    assert sorted(n.rsplit("-", 1)[0] for n in names) == [
        "tune-cifar10-sample-cnn-tiny-ce-seed0", "tune-cifar10-sample-cnn-tiny-focal-seed0",
        "tune-cifar10-sample-cnn-tiny-focal-seed0"]


def test_a_search_where_every_trial_tied_is_named_and_the_heatmap_scale_is_absolute(tmp_path, monkeypatch):
    import pytest

    import seaborn as sns

    runs = tmp_path / "runs"
    for seed in range(3):
        for loss, acc in (("ce", 0.70 + 0.01 * seed), ("focal", 0.69 + 0.01 * seed)):
            r = fake_record("cnn", loss, {"gamma": 2.0} if loss == "focal" else {}, seed, acc)
            r["tuning"] = {"study": f"tune-{loss}-seed{seed}", "mode": "per_seed", "cell": loss, "trials": 4,
                           "objective": "val_acc", "params": {"lr": 0.01}, "seed": 100 + seed, "epochs": 2,
                           "all_tied": loss == "focal", "tied_with_best": 4 if loss == "focal" else 1}
            write_json_atomic(runs / f"{loss}-{seed}" / "record.json", r)
    seen = {}
    real_heatmap = sns.heatmap

    def heatmap(data, **kwargs):
        seen.setdefault("scale", (kwargs.get("vmin"), kwargs.get("vmax")))
        return real_heatmap(data, **kwargs)

    monkeypatch.setattr(sns, "heatmap", heatmap)
    [path] = write_leaderboards([runs], tmp_path / "out", command="bench leaderboard runs")
    text = path.read_text()
    assert "for focal(gamma=2) (tuned per seed: lr 0.01) every tuning trial tied: its search chose nothing" in text
    assert seen["scale"] == pytest.approx((100 / 3, 100))  # chance (3 classes) to 100%, not the table's own min and max


def test_the_api_continues_a_grid_that_local_workers_made_without_running_anything_again(tmp_path):
    """`bench grid --workers 2` keeps its studies in out/grid.db; bench.grid(...) on the same folder
    used to open a fresh journal beside it and tune every cell again."""
    import subprocess
    import sys

    import bench
    from test_study import STUDY, write

    text = STUDY.replace("seeds = [0, 1]", "seeds = [0]").replace("trials = 3", "trials = 2")
    path = write(tmp_path, text.split("[[losses]]\nname = \"focal\"")[0])  # the ce cell only
    out = tmp_path / "g"
    done = subprocess.run([sys.executable, "-m", "bench", "grid", str(path), "--out", str(out), "--workers", "2",
                           "--quiet"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    before = sorted(p.relative_to(out) for p in out.rglob("record.json"))
    assert bench.grid(path, out=out) == {}  # nothing left to run (a shared grid counts what it ran)
    assert sorted(p.relative_to(out) for p in out.rglob("record.json")) == before
    assert not (out / "tuning" / "tuning.journal").exists()


def test_bench_tune_on_a_journal_killed_mid_trial_requeues_that_trial_with_its_parameters(tmp_path):
    import signal
    import subprocess
    import sys

    import optuna

    from test_study import all_studies, kill_when

    journal = tmp_path / "study.journal"
    def cmd(trials: int) -> list[str]:
        return [sys.executable, "-m", "bench", "tune", "--model", "cnn-tiny", "--loss", "ce", "--dataset",
                "cifar10-sample", "--epochs", "3", "--limit-train", "600", "--limit-test", "50", "--trials", str(trials),
                "--quiet", "--out", str(tmp_path / "tune"), "--storage", f"journal:{journal}"]

    kill_when(cmd(2), tmp_path / "tune", "trials/*/checkpoint.pt", signal.SIGKILL)
    [study] = all_studies(str(journal))
    [killed] = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    again = subprocess.run(cmd(1), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    [study] = all_studies(str(journal))
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    [retry] = [t for t in study.trials if t.user_attrs.get("retry_of") == killed.number]
    assert retry.params == killed.params and retry.state in (optuna.trial.TrialState.COMPLETE,
                                                               optuna.trial.TrialState.PRUNED)


def test_a_paired_table_never_reports_an_unpaired_comparison_as_paired(tmp_path):
    runs = tmp_path / "runs"
    write_json_atomic(runs / "ce-0" / "record.json", fake_record("cnn", "ce", {}, 0, 0.79))
    for seed, acc in enumerate([0.78, 0.77, 0.76, 0.775, 0.765]):
        write_json_atomic(runs / f"focal-{seed}" / "record.json", fake_record("cnn", "focal", {"gamma": 2.0}, seed, acc))
    [path] = write_leaderboards([runs], tmp_path / "out", command="bench leaderboard runs")
    text = path.read_text()
    [row] = [line for line in text.splitlines() if line.startswith("| cnn ") and "unpaired" in line]
    assert "unpaired: 5 vs 1 (Welch)" in row
    summary = json.loads((tmp_path / "out" / "summary-toy.json").read_text())
    [c] = summary["comparisons_vs_ce"]
    assert c["paired"] is False and c["paired_seeds"] == 0 and (c["n"], c["n_baseline"]) == (5, 1)
