"""Leaderboards: GitHub tables with consistent columns, class-name columns, failed runs listed."""

import json
import re
from pathlib import Path

import pytest

from bench.leaderboards import write_leaderboards
from bench.record import write_json_atomic

CLASSES = ["cat", "dog", "emu"]


def fake_record(model, loss, params, seed, acc, status="completed", dataset="toy"):
    cm = [[10, 0, 0], [0, 10, 0], [0, 0, 10]]
    record = {
        "schema_version": 1, "run_id": f"{model}-{loss}-{seed}-{json.dumps(params)}", "status": status,
        "finished": f"2026-01-01T00:00:0{seed}",
        "config": {"model": model, "loss": loss, "loss_params": params, "seed": seed, "epochs": 3, "batch_size": 128,
                   "lr": 0.05, "optimizer": "sgd", "schedule": "cosine", "weight_decay": 5e-4, "limit_train": None,
                   "limit_test": None, "image_size": None, "augment": True, "precision": "fp32"},
        "dataset": {"name": dataset, "class_names": CLASSES},
        "history": [{"epoch": e, "val_acc": acc * e / 3} for e in (1, 2, 3)],
        "metrics": {},
        "env": {"device_name": "test cpu", "device": "cpu", "cpu_count": 2, "python": "3.11", "torch": "2.x",
                "torchvision": "0.x", "timm": "1.x", "git_commit": "abc"},
    }
    if status == "completed":
        record["metrics"]["test"] = {
            "accuracy": acc, "macro_f1": acc - 0.01, "nll": 1 - acc, "ece": 0.05,
            "per_class": {c: {"accuracy": acc + 0.01 * i} for i, c in enumerate(CLASSES)}, "confusion_matrix": cm,
        }
    else:
        record["reason"] = "non-finite training loss at epoch 1, step 3"
    return record


@pytest.fixture
def results(tmp_path):
    runs = tmp_path / "runs"
    accs = {("cnn", "ce", ()): [0.66, 0.68, 0.67], ("cnn", "focal", (("gamma", 2.0),)): [0.74, 0.75, 0.745],
            ("mlp2", "ce", ()): [0.40, 0.45, 0.42], ("mlp2", "l1", ()): [0.10, 0.11, 0.10]}
    for (model, loss, params), values in accs.items():
        for seed, acc in enumerate(values):
            r = fake_record(model, loss, dict(params), seed, acc)
            write_json_atomic(runs / r["run_id"] / "record.json", r)
    bad = fake_record("mlp2", "ce", {"label_smoothing": 0.0}, 7, 0.0, status="diverged")
    write_json_atomic(runs / "diverged" / "record.json", bad)
    (runs / "torn").mkdir()
    (runs / "torn" / "record.json").write_text('{"schema_version": 1, "run_id"')  # a torn write
    return runs


def markdown_tables(text):
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


def cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_markdown_tables_are_consistent_github_tables(results, tmp_path):
    [path] = write_leaderboards([results], tmp_path / "out", command="bench leaderboard runs")
    text = path.read_text()
    tables = markdown_tables(text)
    assert len(tables) == 4  # main, paired, per-class, incomplete
    for table in tables:
        width = len(cells(table[0]))
        assert re.fullmatch(r"\|(\s*-+\s*\|)+", table[1].replace(":", "-")), table[1]
        assert all(len(cells(row)) == width for row in table), table
    main, paired, per_class, incomplete = tables
    assert cells(main[2])[1:3] == ["cnn", "focal(gamma=2)"]  # ranked by mean accuracy
    assert cells(main[3])[6].startswith("below (p_Holm")  # cnn ce: separated from the leader by the test
    assert cells(per_class[0])[2:] == CLASSES
    assert any("diverged" in row and "non-finite" in row for row in incomplete)
    assert any(cells(row)[:2] == ["cnn", "focal(gamma=2)"] and cells(row)[3].startswith("+") for row in paired)
    assert "torn" in text and "Provenance" in text and "`bench leaderboard runs`" in text
    header = cells(paired[0])
    assert "p Holm" in header and "separable at 0.05" in header
    assert "- **cnn**: best **focal(gamma=2)**" in text and "from ce** at 0.05" in text
    for png in re.findall(r"\]\(([^)]+\.png)\)", text):
        assert (tmp_path / "out" / png).stat().st_size > 1000


def tuned_record(loss, params, seed, acc, lr, tuned):
    r = fake_record("cnn", loss, params, seed, acc)
    r["config"]["lr"] = lr
    r["tuning"] = {"study": f"tune-{loss}", "trials": 8, "objective": "val_acc", "best_value": 0.7,
                   "params": {"lr": lr, **{k: params[k] for k in tuned}}, "seed": 100, "epochs": 2,
                   "limit_train": None, "pruner": "hyperband"}
    return r


def test_tuned_rows_show_their_values_pair_with_tuned_ce_and_ignore_tuning_trials(tmp_path):
    runs = tmp_path / "runs"
    accs = {"ce": [0.60, 0.61, 0.62, 0.60, 0.61], "focal": [0.70, 0.72, 0.71, 0.73, 0.70]}
    for seed in range(5):
        for r in (tuned_record("ce", {"label_smoothing": 0.0}, seed, accs["ce"][seed], 0.0612, []),
                  tuned_record("focal", {"gamma": 1.4142}, seed, accs["focal"][seed], 0.0311, ["gamma"])):
            r["timing"] = {"wall_seconds": 330.0}
            write_json_atomic(runs / r["run_id"] / "record.json", r)
    trial = fake_record("cnn", "focal", {"gamma": 3.0}, 100, 0.0, status="pruned")
    trial["trial"] = {"study": "tune-focal", "number": 3}
    trial.update(timing={"setup_seconds": 60.0}, history=[{"epoch": 1, "val_acc": 0.1, "seconds": 120.0}])
    write_json_atomic(runs / "tuning" / "trials" / "t3" / "record.json", trial)
    diverged = tuned_record("focal", {"gamma": 1.4142}, 5, 0.0, 0.0311, ["gamma"])
    diverged.update(status="diverged", reason="non-finite training loss at epoch 1, step 3", metrics={},
                    timing={"wall_seconds": 300.0})
    write_json_atomic(runs / "diverged" / "record.json", diverged)
    [path] = write_leaderboards([runs], tmp_path / "out", command="bench leaderboard runs")
    text = path.read_text()
    main, paired, _per_class, incomplete = markdown_tables(text)  # the pruned trial is no incomplete run
    assert [cells(r)[2:5] for r in incomplete[2:]] == [["focal(gamma=1.41, lr 0.0311)", "5", "diverged"]]
    assert cells(main[2])[2] == "focal(gamma=1.41, lr 0.0311)" and cells(main[3])[2] == "ce(lr 0.0612)"
    assert len(main) == 4  # two rows: the tuning trial is no row
    [row] = paired[2:]
    assert cells(row)[:2] == ["cnn", "focal(gamma=1.41, lr 0.0311)"] and cells(row)[-2] == "yes"
    assert "pruned" not in text and "tune-focal" not in text
    assert "unchanged on every seed; budget per row: 8 trials of 2 epochs, objective val_acc, pruner hyperband (tuning seed 100)" in text
    # the machine time behind the table counts the diverged run and the trial too
    assert ("- compute: 11 eval runs 1.00 h, 1 tuning trial 0.05 h: each record's wall time, summed over resumes "
            "(for 1 record made before bench timed whole runs: start-up and training epochs only") in text


def test_machine_formats(results, tmp_path):
    [path] = write_leaderboards([results], tmp_path / "j", "json")
    data = json.loads(path.read_text())
    assert data["main"][0]["model"] == "cnn" and len(data["per_class"]) == 4
    paths = write_leaderboards([results], tmp_path / "c", "csv")
    assert {p.name for p in paths} >= {"leaderboard-toy-main.csv", "leaderboard-toy-per_class.csv"}


def test_leaderboard_without_records_is_a_usage_error(cli, tmp_path):
    code, _, err = cli("leaderboard", str(tmp_path), "--out", str(tmp_path / "o"))
    assert code == 2 and "no run records" in err
    code, _, err = cli("leaderboard", str(tmp_path / "missing"))
    assert code == 2 and "no such results folder" in err


def test_a_longer_tuning_replaces_the_rows_of_the_shorter_one(tmp_path):
    """Raising [tune] trials can change a cell's best values: the board shows the longer tuning's
    runs only, and says what it left out."""
    runs = tmp_path / "runs"
    for seed in range(3):
        for r in (tuned_record("ce", {"label_smoothing": 0.0}, seed, 0.60 + 0.01 * seed, 0.0612, []),
                  tuned_record("focal", {"gamma": 1.4142}, seed, 0.70 + 0.01 * seed, 0.0311, ["gamma"])):
            write_json_atomic(runs / r["run_id"] / "record.json", r)
        old = tuned_record("focal", {"gamma": 3.0}, seed, 0.65, 0.2, ["gamma"])
        old["tuning"]["trials"] = 4
        write_json_atomic(runs / ("old" + old["run_id"]) / "record.json", old)
    [path] = write_leaderboards([runs], tmp_path / "out", command="bench leaderboard runs")
    text = path.read_text()
    main = markdown_tables(text)[0]
    assert [cells(r)[2] for r in main[2:]] == ["focal(gamma=1.41, lr 0.0311)", "ce(lr 0.0612)"]
    assert "Left out: 3 eval runs of an earlier, shorter tuning of the same cell (tune-focal)" in text


PUBLISHED = sorted((Path(__file__).resolve().parents[1] / "leaderboards").glob("*/leaderboard-*.md"))


@pytest.mark.parametrize("published", PUBLISHED, ids=lambda p: p.parent.name)
def test_published_leaderboards_are_what_their_committed_records_say(published, tmp_path):
    """Every published table is well formed and is exactly what bench makes from the records
    committed beside it (only the provenance footer's dates may differ)."""
    runs = published.parent / "runs"
    class_names = json.loads(next(runs.glob("*/record.json")).read_text())["dataset"]["class_names"]
    text = published.read_text()
    tables = markdown_tables(text)
    for table in tables:
        assert all(len(cells(row)) == len(cells(table[0])) for row in table), table
    assert ["model", "loss", *class_names] in [cells(t[0]) for t in tables]  # the per-class table
    for png in re.findall(r"\]\(([^)]+\.png)\)", text):
        assert (published.parent / png).exists(), png
    [remade] = write_leaderboards([runs], tmp_path, command="bench leaderboard")
    assert markdown_tables(remade.read_text()) == tables


def test_long_tail_board_reports_many_medium_few_shot_accuracy(tmp_path):
    runs = tmp_path / "runs"
    classes = [f"c{i}" for i in range(6)]
    counts = [500, 300, 150, 80, 20, 5]
    for seed in range(3):
        for loss, few_acc in (("ce", 0.10), ("logit-adjust", 0.40)):
            r = fake_record("cnn", loss, {}, seed, 0.6 + 0.01 * seed + (0.05 if loss != "ce" else 0), dataset="toy-lt100")
            r["dataset"] = {"name": "toy-lt100", "class_names": classes, "imbalance": 100.0, "train_class_counts": counts}
            per_class = {c: {"accuracy": 0.9 if i < 2 else 0.6 if i < 4 else few_acc + 0.01 * seed} for i, c in enumerate(classes)}
            r["metrics"]["test"]["per_class"] = per_class
            r["metrics"]["test"]["confusion_matrix"] = [[1 if i == j else 0 for j in range(6)] for i in range(6)]
            write_json_atomic(runs / f"{loss}-{seed}" / "record.json", r)
    [path] = write_leaderboards([runs], tmp_path / "out", command="bench leaderboard runs")
    text = path.read_text()
    assert "many 2 classes with 300–500 training images, medium 2 classes with 80–150" in text
    assert "few 2 classes with 5–20 training images" in text
    shots = [t for t in markdown_tables(text) if "few-shot acc %" in t[0]][0]
    row = [cells(r) for r in shots[2:] if cells(r)[1] == "logit-adjust"][0]
    assert row[2].startswith("90.00") and row[3].startswith("60.00") and row[4].startswith("41.00")
    assert row[5] == "+30.00"
    assert "few-shot accuracy +30.00 pp vs ce" in text


@pytest.mark.parametrize("published", PUBLISHED, ids=lambda p: p.parent.name)
def test_published_records_agree_with_their_confusion_matrices(published):
    """Each committed eval record's test metrics are what its own confusion matrix says; a board
    made with [tune] names its data by a relative path and carries `tuning` in every eval record."""
    import numpy as np
    import tomllib

    experiment = tomllib.loads((published.parent / "experiment.toml").read_text())
    records = [json.loads(p.read_text()) for p in sorted((published.parent / "runs").glob("*/record.json"))]
    assert records
    for r in records:
        if r["status"] != "completed":
            continue
        test = r["metrics"]["test"]
        cm = np.array(test["confusion_matrix"])
        assert cm.shape == (len(r["dataset"]["class_names"]),) * 2, r["run_id"]
        assert cm.sum() == r["dataset"]["splits"]["test"], r["run_id"]
        assert test["accuracy"] == pytest.approx(np.trace(cm) / cm.sum(), abs=1e-9), r["run_id"]
        recall = np.diag(cm) / cm.sum(1)
        precision = np.diag(cm) / np.maximum(cm.sum(0), 1)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
        for i, name in enumerate(r["dataset"]["class_names"]):
            assert test["per_class"][name]["accuracy"] == pytest.approx(recall[i], abs=1e-9), (r["run_id"], name)
            assert test["per_class"][name]["support"] == cm[i].sum()
        assert test["macro_f1"] == pytest.approx(f1.mean(), abs=1e-6), r["run_id"]
        if "tune" in experiment:
            assert r["config"]["data_root"] == experiment["data_root"], r["run_id"]
            assert not Path(r["config"]["data_root"]).is_absolute()
            assert r["tuning"]["trials"] >= experiment["tune"]["trials"], r["run_id"]  # workers may add a few


def test_not_separable_says_what_difference_the_seeds_could_have_found(tmp_path):
    """'Not separable' is no proof of 'equal': the answer states the difference that the paired test
    would have detected 80% of the time, as does the paired table."""
    import numpy as np

    from bench.stats import detectable_difference

    runs = tmp_path / "runs"
    accs = {"ce": [0.60, 0.62, 0.61, 0.63, 0.60], "focal": [0.61, 0.61, 0.63, 0.62, 0.62]}
    for loss, values in accs.items():
        for seed, acc in enumerate(values):
            r = fake_record("cnn", loss, {}, seed, acc)
            write_json_atomic(runs / r["run_id"] / "record.json", r)
    [path] = write_leaderboards([runs], tmp_path / "out", command="bench leaderboard runs")
    text = path.read_text()
    expected = detectable_difference(np.std(np.subtract(accs["focal"], accs["ce"]), ddof=1), 5) * 100
    assert f"**not separable from ce** at 0.05 (with 5 paired seeds this test finds a true difference of ±{expected:.2f} pp 80% of the time" in text
    [row] = markdown_tables(text)[1][2:]
    assert cells(row)[-2:] == ["no", f"{expected:.2f}"]


def test_a_one_seed_cell_is_answered_without_a_test(tmp_path):
    runs = tmp_path / "runs"
    for loss in ("ce", "focal"):
        r = fake_record("cnn", loss, {}, 0, 0.6 if loss == "ce" else 0.62)
        write_json_atomic(runs / r["run_id"] / "record.json", r)
    [path] = write_leaderboards([runs], tmp_path / "out", command="bench leaderboard runs")
    text = path.read_text()
    assert "- **cnn**: best **focal**, 62.00% over 1 seed; vs ce +2.00 pp (no test: too few paired seeds)" in text


def test_a_single_lucky_run_does_not_lead_rows_of_several_seeds(tmp_path):
    """A one-seed row with the top mean would make every other row 'no test' against it: rows of
    several seeds rank first, and the model's answer names its best multi-seed row."""
    runs = tmp_path / "runs"
    for seed in range(3):
        r = fake_record("cnn", "focal", {"gamma": 2.0}, seed, 0.70 + 0.01 * seed)
        write_json_atomic(runs / r["run_id"] / "record.json", r)
        r = fake_record("cnn", "l1", {}, seed, (0.50, 0.53, 0.51)[seed])
        write_json_atomic(runs / r["run_id"] / "record.json", r)
    r = fake_record("cnn", "ce", {}, 0, 0.90)
    write_json_atomic(runs / r["run_id"] / "record.json", r)
    [path] = write_leaderboards([runs], tmp_path / "out", command="bench leaderboard runs")
    text = path.read_text()
    main = [cells(row) for row in markdown_tables(text)[0][2:]]
    assert [(row[0], row[2].split("(")[0], row[6].split(" (")[0]) for row in main] == [
        ("1", "focal", "leader"), ("2", "l1", "below"), ("-", "ce", "1 seed: not ranked")]
    assert "Rows of a single seed come after those of several and are not tested." in text
    assert "- **cnn**: best **focal(gamma=2)**, 71.00% over 3 seeds; vs ce -19.00 pp (no test" in text


def test_a_tuned_lr_at_the_edge_of_its_range_is_flagged(tmp_path):
    """A loss that needs an lr outside the searched range looks worse than it is: the answer says so."""
    from bench.config import lr_edge_note

    assert lr_edge_note(0.45, (0.001, 0.5)).startswith("lr 0.45 is at the top of its tuning range 0.001–0.5")
    assert "bottom" in lr_edge_note(0.0011, (0.001, 0.5))
    assert lr_edge_note(0.03, (0.001, 0.5)) == "" and lr_edge_note(0.45, None) == ""
    runs = tmp_path / "runs"
    for seed in range(3):
        for r in (tuned_record("ce", {"label_smoothing": 0.0}, seed, 0.60 + 0.01 * seed, 0.03, []),
                  tuned_record("l1", {}, seed, 0.30 + 0.01 * seed, 0.47, [])):
            r["tuning"]["lr_range"] = [0.001, 0.5]
            write_json_atomic(runs / r["run_id"] / "record.json", r)
    [path] = write_leaderboards([runs], tmp_path / "out", command="bench leaderboard runs")
    text = path.read_text()
    assert "; for l1(lr 0.47) the lr 0.47 is at the top of its tuning range 0.001–0.5: a better lr may lie beyond it" in text
    assert "for ce(lr 0.03) the" not in text

    # tuned per seed: one phrase per row, how many of its studies chose an edge lr, and which
    runs = tmp_path / "per-seed"
    for seed, l1_lr in enumerate((0.47, 0.03, 0.48)):
        for r in (tuned_record("ce", {"label_smoothing": 0.0}, seed, 0.60 + 0.01 * seed, 0.03, []),
                  tuned_record("l1", {}, seed, 0.30 + 0.01 * seed, l1_lr, [])):
            loss = r["config"]["loss"]
            r["tuning"].update(lr_range=[0.001, 0.5], mode="per_seed", cell=f"cell-{loss}",
                               study=f"tune-{loss}-seed{seed}", seed=100 + seed)
            write_json_atomic(runs / r["run_id"] / "record.json", r)
    [path] = write_leaderboards([runs], tmp_path / "out-per-seed")
    text = path.read_text()
    assert ("; for l1 (tuned per seed: lr 0.03–0.48) 2 of 3 studies chose an lr at the top of the tuning range "
            "0.001–0.5 (0.47, 0.48): a better lr may lie beyond it") in text
    assert text.count("may lie beyond") == 1


def test_tuned_values_near_one_keep_their_distance_from_one_and_one_lr_is_said_once(tmp_path):
    """class-balanced beta is tuned as 1 - beta on a log scale: 0.99984 is not '1'. A row whose
    studies all chose the same lr says so instead of showing a span of one value."""
    runs = tmp_path / "runs"
    for seed, beta in enumerate((0.999, 0.99984, 0.9)):
        for r in (tuned_record("ce", {"label_smoothing": 0.0}, seed, 0.60 + 0.01 * seed, 0.03, []),
                  tuned_record("class-balanced", {"beta": beta, "base": "focal", "gamma": 2.0}, seed,
                               0.65 + 0.01 * seed, 0.02 + 0.01 * seed, ["beta"])):
            loss = r["config"]["loss"]
            r["tuning"].update(mode="per_seed", cell=f"cell-{loss}", study=f"tune-{loss}-seed{seed}",
                               seed=100 + seed, lr_grid=[0.01, 0.1])
            write_json_atomic(runs / r["run_id"] / "record.json", r)
    [path] = write_leaderboards([runs], tmp_path / "out")
    text = path.read_text()
    assert "class-balanced(base=focal, gamma=2) (tuned per seed: lr 0.02–0.04, beta 0.9–0.99984)" in text
    search = next(t for t in markdown_tables(text) if "chosen lr" in t[0])
    assert [cells(row)[3] for row in search[2:]] == ["0.03 (every study)", "0.02–0.04 (x2.0)"]


def test_rows_split_by_the_newer_training_settings_and_show_tta_beside_plain_accuracy(tmp_path):
    """Runs that differ in flips (or translate, lookahead, momentum, tta) are two rows, not one row
    whose seeds overwrite each other; a record from before those settings is a run at their defaults."""
    runs = tmp_path / "runs"
    for seed, (old, alternate) in enumerate([(0.60, 0.70), (0.61, 0.71), (0.62, 0.72)]):
        r = fake_record("cnn", "ce", {}, seed, old)  # no flip key: written before the setting existed
        write_json_atomic(runs / f"old-{seed}" / "record.json", r)
        r = fake_record("cnn", "ce", {}, seed, alternate)
        r["run_id"] += "-alt"
        r["config"] |= {"flip": "alternate", "tta": 2}
        r["metrics"]["test_tta"] = {**r["metrics"]["test"], "accuracy": alternate + 0.01}
        write_json_atomic(runs / f"alt-{seed}" / "record.json", r)
        r = fake_record("cnn", "ce", {}, seed, old)  # the same run as the old one, flip written out
        r["run_id"] += "-new"
        r["config"] |= {"flip": "random", "translate": 4, "lookahead": False, "tta": 0}
        write_json_atomic(runs / f"new-{seed}" / "record.json", r)
    [path] = write_leaderboards([runs], tmp_path / "out", command="bench leaderboard runs")
    text = path.read_text()
    assert "ce (flip=alternate tta=2)" in text and "ce (flip=random tta=0)" in text
    row = next(line for line in text.splitlines() if "flip=alternate" in line)
    assert "| 71.00 ± 1.00 |" in row and row.rstrip(" |").endswith("72.00 ± 1.00")  # plain, then TTA
    summary = json.loads((tmp_path / "out" / "summary-toy.json").read_text())
    assert len(summary["rows"]) == 2
    first, second = (r["tta_accuracy"] for r in summary["rows"])  # ranked: the alternate-flip row first
    assert first["mean"] == pytest.approx(0.72) and first["n"] == 3 and second is None


def test_the_search_figure_colours_each_trial_by_its_loss_name_the_same_in_every_model():
    from bench.leaderboards.collect import Group
    from bench.leaderboards.figures import search_points

    def tuned(model, loss, params, seed, study):
        record = fake_record(model, loss, params, seed, 0.5)
        record["tuning"] = {"study": study, "objective": "val_acc", "params": {"lr": 0.05}}
        return record

    def trial(study, lr):
        return {"trial": {"study": study}, "config": {"lr": lr}, "status": "completed",
                "history": [{"val_acc": 0.4}]}

    groups = [Group([tuned(m, loss, p, 0, f"{m}-{loss}")]) for m in ("cnn", "mlp2")
              for loss, p in (("ce", {"label_smoothing": 0.0}), ("focal", {"gamma": 2.0}))]
    trials = [trial(f"{m}-{loss}", 0.01) for m in ("cnn", "mlp2") for loss in ("ce", "focal")]
    points = search_points(groups, trials)
    assert sorted(set(points["loss"])) == ["ce", "focal"] and len(points) == 4
    two_ce = groups + [Group([tuned("cnn", "ce", {"label_smoothing": 0.2}, 0, "cnn-ce-ls")])]
    points = search_points(two_ce, trials + [trial("cnn-ce-ls", 0.02)])
    # a model with two ce rows: every row keeps its own label, so the two stay apart
    assert sorted(set(points["loss"])) == ["ce(label_smoothing=0.2, lr 0.05)", "ce(lr 0.05)", "focal(gamma=2, lr 0.05)"]


def test_a_board_with_no_finished_eval_run_says_how_far_its_tuning_is(tmp_path):
    """Mid-grid (tuning only) the page counts the tuning so far; a failed eval run is listed."""
    runs = tmp_path / "runs"
    for study, number in (("tune-a", 0), ("tune-a", 1), ("tune-b", 0)):
        trial = fake_record("cnn", "ce", {}, 100, 0.5)
        trial.update(run_id=f"{study}-{number}", trial={"study": study, "number": number})
        write_json_atomic(runs / "tuning" / "trials" / trial["run_id"] / "record.json", trial)
    [path] = write_leaderboards([runs], tmp_path / "out")
    text = path.read_text()
    assert "No completed eval runs yet. The tuning so far: 3 trial runs in 2 studies" in text
    assert "did not complete" not in text
    bad = fake_record("cnn", "ce", {}, 0, 0.0, status="diverged")
    write_json_atomic(runs / "diverged" / "record.json", bad)
    [path] = write_leaderboards([runs], tmp_path / "out")
    failed = path.read_text().split("## Runs that did not complete")[1]
    assert "diverged" in failed and "non-finite training loss" in failed


def test_settings_a_model_shares_are_said_once_and_settings_within_a_model_label_its_rows(tmp_path):
    """bf16 for one model and fp32 for another is a line under the table, not a label on every
    row; epochs that differ between one model's rows stay in those rows' labels."""
    runs = tmp_path / "runs"
    for model, precision in (("cnn", "fp32"), ("mlp2", "bf16")):
        for loss, epochs in (("ce", 3), ("focal", 3), ("focal", 6) if model == "mlp2" else ("l1", 3)):
            for seed in (0, 1):
                r = fake_record(model, loss, {}, seed, 0.5 + 0.01 * seed + 0.01 * epochs)
                r["config"].update(precision=precision, epochs=epochs)
                r["run_id"] += f"-{epochs}"
                write_json_atomic(runs / r["run_id"] / "record.json", r)
    [path] = write_leaderboards([runs], tmp_path / "out")
    text = path.read_text()
    labels = sorted(cells(row)[2] for row in markdown_tables(text)[0][2:])
    assert labels == ["ce", "ce (epochs=3)", "focal", "focal (epochs=3)", "focal (epochs=6)", "l1"]
    assert "precision=" not in "".join(labels)
    assert ("- settings that differ between models, the same for every row of a model: cnn epochs=3 "
            "precision=fp32; mlp2 precision=bf16") in text


def test_a_precision_auto_chose_for_the_loss_is_compared_with_ce_and_said_but_a_chosen_one_is_not(tmp_path):
    """`--precision auto` keeps fp32 for exponential while ce runs in bf16: that is how bench runs
    the loss, so it is still compared with ce (the answer names the crossing); an fp32 the user set
    for one loss is another setting, with no ce baseline of its own."""
    runs = tmp_path / "runs"
    cells = (("ce", "bf16", "auto: bf16, native on this CPU", 0.60),
             ("exponential", "fp32", "auto: the loss is sensitive to bf16-rounded logits, so fp32", 0.55),
             ("focal", "fp32", "", 0.58))
    for loss, precision, reason, acc in cells:
        for seed in (0, 1, 2):
            r = fake_record("cnn", loss, {}, seed, acc + (0.0, 0.02, 0.01)[seed] * (loss != "ce") + 0.01 * seed * (
                loss == "ce"))  # exponential - ce: -0.05, -0.04, -0.06
            r["config"].update(precision=precision, precision_reason=reason)
            write_json_atomic(runs / r["run_id"] / "record.json", r)
    [path] = write_leaderboards([runs], tmp_path / "out")
    text = path.read_text()
    summary = json.loads((tmp_path / "out" / "summary-toy.json").read_text())
    [compared] = summary["comparisons_vs_ce"]
    assert compared["loss"].startswith("exponential") and compared["verdict"] == "worse"
    assert compared["delta"] == pytest.approx(-0.05)
    assert ("these comparisons include it: cnn exponential (fp32) against ce (bf16)." in text
            and "focal (fp32)" not in text)
