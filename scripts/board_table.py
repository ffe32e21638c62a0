"""README.md's table of published boards, and each board README's numbers, made from each board's
`summary-<dataset>.json`.

    python scripts/board_table.py           # print README.md's table
    python scripts/board_table.py --write   # replace every block between this script's markers

A board README may hold two blocks this script writes: its numbers (the answer, every row and
each loss against ce) and, for a republished board, what held and what changed against the
earlier board (`earlier-summary.json` beside it, that board's summary, kept with the commit it
came from). Every number in them comes from a summary that `bench leaderboard` wrote from the
records, never from typing; tests/test_readme.py checks that each file holds exactly what this
script writes.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- boards:start (scripts/board_table.py writes this table) -->", "<!-- boards:end -->"
NUMBERS = ("<!-- numbers:start (scripts/board_table.py writes this from the summary) -->", "<!-- numbers:end -->")
HELD = ("<!-- held:start (scripts/board_table.py writes this from both summaries) -->", "<!-- held:end -->")
REFERENCE = ("<!-- reference:start (scripts/board_table.py writes this from the summary and reference.json) -->",
             "<!-- reference:end -->")
EARLIER = "earlier-summary.json"
REFERENCE_FILE = "reference.json"  # {"source": "...", "accuracy": {"mlp2": 43.83, ...}}: published numbers to meet


def loss_name(label: str) -> str:
    """'focal(gamma=1.39, lr 0.0358)' or 'focal (tuned per seed: ...)' -> 'focal'."""
    return label.split("(")[0].split(" ")[0]


def summary_of(board: Path) -> dict | None:
    summaries = sorted(board.glob("summary-*.json"))
    return json.loads(summaries[0].read_text()) if summaries else None


def pp(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.2f}"


def num(x: float | None, scale: float = 1.0) -> str:
    return "-" if x is None else f"{scale * x:.2f}"


def lr_spread(row: dict) -> str:
    """The lr each seed's study chose: one value, or lowest-highest and their ratio."""
    low, high = row.get("lr_min"), row.get("lr_max")
    if low is None:
        return "-"
    return f"{low:.3g}" if high == low else f"{low:.3g}-{high:.3g} (x{high / low:.1f})"


def numbers_block(summary: dict) -> str:
    """A board's answer, rows and comparisons with ce, as its summary has them."""
    vs_ce = {(c["model"], c["loss"]): c for c in summary["comparisons_vs_ce"]}
    lines = [f"The leaderboard's answer (margin ±{100 * summary['margin']:g} pp, alpha {summary['alpha']:g}, "
             "Holm-corrected over the board's tests against ce):", "", *summary["answer"]["lines"], "",
             "| model | loss | lr chosen (over seeds) | test acc % (mean ± std, seeds) | vs ce: Δ pp [95% CI] "
             "| verdict | P(beats ce) | detectable Δ pp | ECE |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(summary["rows"], key=lambda r: (r["model"], r["rank"] or 1e9)):
        acc, c = r["accuracy"], vs_ce.get((r["model"], r["loss"]))
        interval = f" [{pp(c['ci_low'])}, {pp(c['ci_high'])}]" if c and c["ci_low"] is not None else ""
        versus = (f"{pp(c['delta'])}{interval} | {c['verdict']} | "
                  f"{num(c['p_better'])} | {num(c['detectable'], 100)}") if c else "- | - | - | -"
        lines.append(f"| {r['model']} | {r['loss']} | {lr_spread(r)} | {100 * acc['mean']:.2f} ± {100 * acc['std']:.2f} ({acc['n']}) "
                     f"| {versus} | {r['ece']['mean']:.3f} |")
    compute = summary["compute"]
    lines += ["", f"Compute (the records' own wall time): {compute['eval_runs']} eval runs, "
                  f"{compute['eval_hours']:.2f} h; {compute['tuning_trials']} tuning trials, "
                  f"{compute['tuning_hours']:.2f} h."]
    return "\n".join(lines)


def held_block(earlier: dict, now: dict) -> str:
    """Every verdict of the earlier board against the republished one: held, or changed."""
    def by_cell(summary):
        return {(c["model"], loss_name(c["loss"])): c for c in summary["comparisons_vs_ce"]}

    before, after = by_cell(earlier), by_cell(now)
    lines = [f"Earlier board: {earlier['board_commit']}'s summary ({EARLIER}); margin ±{100 * now['margin']:g} pp "
             "for both.", "",
             "| model | loss vs ce | earlier: Δ pp, verdict | now: Δ pp [95% CI], verdict, P(beats ce) | |",
             "|---|---|---|---|---|"]
    for key in sorted(before.keys() | after.keys()):
        b, a = before.get(key), after.get(key)
        was = f"{pp(b['delta'])}, {b['verdict']}" if b else "not compared"
        now_text = (f"{pp(a['delta'])} [{pp(a['ci_low'])}, {pp(a['ci_high'])}], {a['verdict']}, {num(a['p_better'])}"
                    if a else "not compared")
        held = "held" if a and b and a["verdict"] == b["verdict"] else "**changed**"
        lines.append(f"| {key[0]} | {key[1]} | {was} | {now_text} | {held} |")
    best_before, best_after = earlier["answer"]["best_per_model"], now["answer"]["best_per_model"]
    lines += ["", "| model | earlier best (test acc %) | now best (test acc %) | |", "|---|---|---|---|"]
    for model in sorted(best_before.keys() | best_after.keys()):
        b, a = best_before.get(model), best_after.get(model)
        cells = [f"{x['loss']} ({100 * x['accuracy_mean']:.2f})" if x else "-" for x in (b, a)]
        same = a and b and loss_name(a["loss"]) == loss_name(b["loss"])
        lines.append(f"| {model} | {cells[0]} | {cells[1]} | {'held' if same else '**changed**'} |")
    return "\n".join(lines)


def reference_block(reference: dict, summary: dict) -> str:
    """Each model's best row (of several seeds) against a published accuracy: met, not met, or
    not separable, by the row's 95% interval."""
    best: dict[str, dict] = {}
    for r in summary["rows"]:
        if r["accuracy"]["n"] >= 2 and r["accuracy"]["mean"] > best.get(r["model"], {"accuracy": {"mean": -1}})[
                "accuracy"]["mean"]:
            best[r["model"]] = r
    lines = [f"| model | {reference['source']} | this board's best row: test acc % (mean ± std, 95% CI) | |",
             "|---|---|---|---|"]
    for model in sorted(best.keys() | reference["accuracy"].keys()):
        target, r = reference["accuracy"].get(model), best.get(model)
        goal = "-" if target is None else f"{target:.2f}%"
        if r is None:
            lines.append(f"| {model} | {goal} | no row of several seeds | |")
            continue
        acc = r["accuracy"]
        mine = (f"{r['loss']}: {100 * acc['mean']:.2f} ± {100 * acc['std']:.2f} "
                f"[{100 * acc['ci_low']:.2f}, {100 * acc['ci_high']:.2f}]")
        if target is None:
            verdict = "no goal"
        elif 100 * acc["ci_low"] > target:
            verdict = f"{100 * acc['mean'] - target:+.2f} pp, met (the interval is above it)"
        elif 100 * acc["ci_high"] < target:
            verdict = f"{100 * acc['mean'] - target:+.2f} pp, not met (the interval is below it)"
        else:
            verdict = f"{100 * acc['mean'] - target:+.2f} pp, not separable (the interval holds it)"
        lines.append(f"| {model} | {goal} | {mine} | {verdict} |")
    return "\n".join(lines)


def board_blocks(board: Path) -> dict[tuple[str, str], str]:
    """What this script writes into a board's README, by markers."""
    summary = summary_of(board)
    if summary is None:
        return {}
    blocks = {NUMBERS: numbers_block(summary)}
    if (board / EARLIER).exists():
        blocks[HELD] = held_block(json.loads((board / EARLIER).read_text()), summary)
    if (board / REFERENCE_FILE).exists():
        blocks[REFERENCE] = reference_block(json.loads((board / REFERENCE_FILE).read_text()), summary)
    return blocks


def between(text: str, markers: tuple[str, str]) -> str | None:
    if markers[0] not in text:
        return None
    return text[text.index(markers[0]) + len(markers[0]):text.index(markers[1])].strip()


def replace_between(text: str, markers: tuple[str, str], block: str) -> str:
    start, end = text.index(markers[0]) + len(markers[0]), text.index(markers[1])
    return text[:start] + "\n" + block + "\n" + text[end:]


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
    summary = summary_of(board)
    if summary is None:
        return f"| {link} | no table yet | being (re)published, or waiting for a GPU: see its README | |"
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


def boards() -> list[Path]:
    found = sorted(p.parent for p in (ROOT / "leaderboards").glob("*/experiment.toml"))
    for board in found:
        tomllib.loads((board / "experiment.toml").read_text())  # a board is a folder with a valid experiment
    return found


def table() -> str:
    lines = ["| board | best row (test accuracy, mean ± std) | each loss against ce: verdict (Δ accuracy) | compute |",
             "|---|---|---|---|", *map(row, boards())]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    text = table()
    if "--write" not in argv:
        print(text)
        return 0
    readme = ROOT / "README.md"
    readme.write_text(replace_between(readme.read_text(), (START, END), text))
    for board in boards():  # a board README holds the blocks its author placed markers for
        path = board / "README.md"
        content = path.read_text()
        for markers, block in board_blocks(board).items():
            if markers[0] in content:
                content = replace_between(content, markers, block)
        path.write_text(content)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
