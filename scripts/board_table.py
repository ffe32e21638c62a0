"""README.md's table of published boards, made from each board's `summary-<dataset>.json`.

    python scripts/board_table.py           # print the table
    python scripts/board_table.py --write   # replace the table between the README's markers

Every number in it comes from a summary that `bench leaderboard` wrote from the records, never
from typing; tests/test_readme.py checks that README.md holds exactly this table.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- boards:start (scripts/board_table.py writes this table) -->", "<!-- boards:end -->"


def verdicts(summary: dict) -> str:
    """Each loss against ce, per model: its verdict and mean difference."""
    parts = []
    for c in summary["comparisons_vs_ce"]:
        loss = c["loss"].split("(")[0].split(" ")[0]
        parts.append(f"{c['model']} {loss} {c['verdict']} ({100 * c['delta']:+.2f} pp)")
    return "; ".join(parts) or "no comparison with ce"


def row(board: Path) -> str:
    name = board.name
    link = f"[{name}](leaderboards/{name}/README.md)"
    summaries = sorted(board.glob("summary-*.json"))
    if not summaries:
        return f"| {link} | no table yet | being (re)published, or waiting for a GPU: see its README | |"
    summary = json.loads(summaries[0].read_text())
    best = next(r for r in summary["rows"] if r["rank"] == 1)
    acc = best["accuracy"]
    mode = {"per_seed": "tuned per seed", "single": "one study per cell", None: "untuned"}.get(best["tuning_mode"],
                                                                                               "tuned")
    seeds = max(r["accuracy"]["n"] for r in summary["rows"])
    compute = summary["compute"]
    cost = f"{compute['eval_runs']} eval runs, {compute['eval_hours']:.1f} h" + (
        f"; {compute['tuning_trials']} tuning trials, {compute['tuning_hours']:.1f} h" if compute["tuning_trials"] else "")
    return (f"| {link} ({mode}, {seeds} seeds) | {best['model']} x {best['loss']} {100 * acc['mean']:.2f}% ± "
            f"{100 * acc['std']:.2f} | {verdicts(summary)} | {cost} |")


def table() -> str:
    boards = sorted(p.parent for p in (ROOT / "leaderboards").glob("*/experiment.toml"))
    for board in boards:
        tomllib.loads((board / "experiment.toml").read_text())  # a board is a folder with a valid experiment
    lines = ["| board | best row (test accuracy, mean ± std) | each loss against ce: verdict (Δ accuracy) | compute |",
             "|---|---|---|---|", *map(row, boards)]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    text = table()
    if "--write" not in argv:
        print(text)
        return 0
    readme = ROOT / "README.md"
    content = readme.read_text()
    start, end = content.index(START) + len(START), content.index(END)
    readme.write_text(content[:start] + "\n" + text + "\n" + content[end:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
