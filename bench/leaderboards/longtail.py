"""Long-tailed boards: classes in thirds by training count, and accuracy per third."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from bench.leaderboards.collect import Group
from bench.leaderboards.text import fmt
from bench.stats import (
    compare_by_seed,
    summarize,
)


@dataclass(frozen=True)
class Shots:
    """A long-tailed training split's classes in thirds by training count (C/3 rounded at each end)."""

    classes: dict[str, list[str]]  # many / medium / few -> class names
    ranges: dict[str, tuple[int, int]]  # -> (fewest, most) training images


def shot_classes(groups: list[Group]) -> Shots | None:
    """The many / medium / few-shot split, or None when the training split is balanced."""
    first = groups[0].records[0]["dataset"]
    counts = first.get("train_class_counts")
    if first.get("imbalance") is None or not counts:
        return None
    ranked = sorted(zip(first["class_names"], counts), key=lambda nc: -nc[1])
    k = round(len(ranked) / 3)
    parts = {"many": ranked[:k], "medium": ranked[k:len(ranked) - k], "few": ranked[len(ranked) - k:]}
    return Shots({shot: [name for name, _ in m] for shot, m in parts.items()},
                 {shot: (min(n for _, n in m), max(n for _, n in m)) for shot, m in parts.items() if m})


def shot_accuracy(group: Group, classes: list[str]) -> list[float]:
    """Per seed: mean test accuracy over `classes` (the test split is balanced)."""
    return [
        sum(r["metrics"]["test"]["per_class"][c]["accuracy"] for c in classes) / len(classes)
        for r in group.records
    ]


def shots_table(groups: list[Group], shots: Shots) -> pd.DataFrame:
    baselines = {(g.model, g.settings): g for g in groups if g.is_baseline}
    rows = []
    for g in sorted(groups, key=lambda g: (g.model, -g.summary("accuracy").mean)):
        row = {"model": g.model, "loss": g.loss}
        for shot in ("many", "medium", "few"):
            row[f"{shot}-shot acc %"] = fmt(summarize(shot_accuracy(g, shots.classes[shot])), 100)
        base = baselines.get((g.model, g.settings))
        if base is not None and base is not g:
            few = shots.classes["few"]
            test = compare_by_seed(dict(zip(g.seeds, shot_accuracy(g, few))),
                                   dict(zip(base.seeds, shot_accuracy(base, few))))
            row["few-shot Δ vs ce (pp)"] = f"{test.mean_diff * 100:+.2f}"
        else:
            row["few-shot Δ vs ce (pp)"] = ""
        row["macro-F1"] = fmt(g.summary("macro_f1"), 1, 4)
        row["ECE"] = fmt(g.summary("ece"), 1, 4)
        rows.append(row)
    return pd.DataFrame(rows)


def shots_heading(shots: Shots) -> str:
    ranges = ", ".join(f"{shot} {len(shots.classes[shot])} classes with {lo:,}–{hi:,} training images"
                       for shot, (lo, hi) in shots.ranges.items())
    return ("## Long tail: test accuracy by training-class frequency (%, mean ± std over seeds)\n\nClasses "
            f"split in thirds by training count: {ranges}. The test split is balanced.")
