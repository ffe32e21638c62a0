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
