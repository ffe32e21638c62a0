"""README.md's numbers about published boards come from the boards' machine-readable summaries."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def board_table():
    spec = importlib.util.spec_from_file_location("board_table", ROOT / "scripts" / "board_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_board_table_is_what_the_summaries_say():
    module = board_table()
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index(module.START) + len(module.START):readme.index(module.END)].strip()
    assert block == module.table(), "run: python scripts/board_table.py --write"


def test_the_board_table_reads_its_numbers_from_the_summary(tmp_path, monkeypatch):
    """A changed summary changes the table: nothing in it is typed."""
    module = board_table()
    board = tmp_path / "leaderboards" / "toy"
    board.mkdir(parents=True)
    (board / "experiment.toml").write_text('dataset = "cifar10-sample"\n')
    row = {"rank": 1, "model": "cnn", "loss": "ce", "tuning_mode": "per_seed",
           "accuracy": {"mean": 0.8123, "std": 0.0045, "n": 5}}
    summary = {"rows": [row], "compute": {"eval_runs": 10, "eval_hours": 1.25, "tuning_trials": 80, "tuning_hours": 2.5},
               "comparisons_vs_ce": [{"model": "cnn", "loss": "focal (tuned per seed: lr 0.01)", "verdict": "worse",
                                      "delta": -0.0123}]}
    (board / "summary-toy.json").write_text(json.dumps(summary))
    monkeypatch.setattr(module, "ROOT", tmp_path)
    text = module.table()
    assert "| [toy](leaderboards/toy/README.md) (tuned per seed, 5 seeds) | cnn x ce 81.23% ± 0.45 | " in text
    assert "cnn focal worse (-1.23 pp)" in text and "10 eval runs, 1.2 h; 80 tuning trials, 2.5 h" in text


def test_each_board_readme_holds_the_numbers_its_summary_has():
    """A board with a summary shows its numbers block, written from it; a republished board with
    the earlier board's summary shows what held and what changed, written from both."""
    module = board_table()
    checked = 0
    for board in module.boards():
        readme = (board / "README.md").read_text()
        blocks = module.board_blocks(board)
        for markers, block in blocks.items():
            assert module.between(readme, markers) == block, f"{board.name}: run python scripts/board_table.py --write"
            checked += 1
        if module.summary_of(board) is None:
            assert module.between(readme, module.NUMBERS) is None, f"{board.name}: numbers without a summary"
    assert checked, "no board README was checked"


def test_held_or_changed_compares_each_verdict_of_the_earlier_board(tmp_path):
    module = board_table()

    def summary(verdicts, best):
        return {"margin": 0.005, "board_commit": "abc1234",
                "comparisons_vs_ce": [{"model": m, "loss": f"{loss}(lr 0.1)", "delta": d, "ci_low": d - 0.01,
                                       "ci_high": d + 0.01, "verdict": v, "p_better": 0.5} for m, loss, d, v in verdicts],
                "answer": {"best_per_model": {m: {"loss": f"{loss}(lr 0.1)", "accuracy_mean": a} for m, loss, a in best}}}

    earlier = summary([("cnn", "focal", -0.016, "worse"), ("mlp2", "focal", -0.019, "worse")],
                      [("cnn", "ce", 0.8077), ("mlp2", "ce", 0.47)])
    now = summary([("cnn", "focal", -0.012, "worse"), ("mlp2", "focal", 0.001, "equivalent")],
                  [("cnn", "ce", 0.81), ("mlp2", "focal", 0.475)])
    text = module.held_block(earlier, now)
    assert "| cnn | focal | -1.60, worse | -1.20 [-2.20, -0.20], worse, 0.50 | held |" in text
    assert "| mlp2 | focal | -1.90, worse | +0.10 [-0.90, +1.10], equivalent, 0.50 | **changed** |" in text
    assert "| cnn | ce(lr 0.1) (80.77) | ce(lr 0.1) (81.00) | held |" in text
    assert "| mlp2 | ce(lr 0.1) (47.00) | focal(lr 0.1) (47.50) | **changed** |" in text


def test_a_reference_accuracy_is_met_only_when_the_best_rows_interval_clears_it():
    module = board_table()

    def row(model, loss, mean, low, high, n=5):
        return {"model": model, "loss": loss, "accuracy": {"mean": mean, "std": 0.01, "n": n, "ci_low": low,
                                                           "ci_high": high}}

    summary = {"rows": [row("mlp2", "ce", 0.47, 0.46, 0.48), row("mlp2", "focal", 0.45, 0.44, 0.46),
                        row("cnn", "ce", 0.775, 0.76, 0.79), row("cnn", "focal", 0.80, 0.80, 0.80, n=1),
                        row("resmlp", "ce", 0.40, 0.39, 0.41)]}
    text = module.reference_block({"source": "report", "accuracy": {"mlp2": 43.83, "cnn": 77.5, "resmlp": 43.75,
                                                                     "vit": 50.0}}, summary)
    assert "| mlp2 | 43.83% | ce: 47.00 ± 1.00 [46.00, 48.00] | +3.17 pp, met (the interval is above it) |" in text
    assert "| cnn | 77.50% | ce: 77.50 ± 1.00 [76.00, 79.00] | +0.00 pp, not separable" in text  # 1 seed ignored
    assert "| resmlp | 43.75% | ce: 40.00 ± 1.00 [39.00, 41.00] | -3.75 pp, not met" in text
    assert "| vit | 50.00% | no row of several seeds | |" in text
