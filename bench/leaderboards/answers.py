"""The board's answer in words: per model, the best loss, how sure, and each loss's verdict
against ce; no winner where the runs did not learn or the searches chose nothing."""

from __future__ import annotations

import math

from bench.config import lr_edge, tuned_lr_note
from bench.leaderboards.collect import CHANCE_MARGIN, Group
from bench.leaderboards.compare import ALPHA, Comparison, rank_rows
from bench.leaderboards.longtail import Shots, shot_accuracy
from bench.leaderboards.text import plural
from bench.stats import (
    POWER,
    summarize,
)

NO_TEST = "no test: too few paired seeds"


def separable(p_holm: float) -> str:
    return "separable" if p_holm < ALPHA else "not separable"


def sensitivity(test, p_holm: float) -> str:
    """What 'not separable' can still hide: the difference the paired test would have found."""
    if math.isnan(test.detectable) or math.isnan(p_holm) or p_holm < ALPHA:
        return ""
    return (f" (with {test.n} paired seeds this test finds a true difference of "
            f"±{test.detectable * 100:.2f} pp {POWER:.0%} of the time, before correction)")


def answers(groups: list[Group], comparisons: list[Comparison], shots: Shots | None = None) -> list[str]:
    """Per model: the best loss, whether the data separate it from plain ce after Holm, each loss's
    verdict against ce with P(loss > ce), and (on a long tail) the few-shot gain. A model whose
    runs did not learn, or whose searches all tied, names no winner."""
    tests = {id(c.group): c for c in comparisons}
    lines = []
    if not any(g.learned for g in groups):
        chance = groups[0].chance
        lines.append(f"- **No winner:** no configuration is clearly above chance ({chance * 100:.0f}% on "
                     f"{round(1 / chance)} classes: each one's 95% interval reaches within "
                     f"{CHANCE_MARGIN * 100:g} pp of it), so these runs rank nothing; train longer, on more "
                     "images, or with more seeds.")
    for model in sorted({g.model for g in groups}):
        mine = rank_rows([g for g in groups if g.model == model])
        best, acc = mine[0], mine[0].summary("accuracy")
        if not any(g.learned for g in mine):
            spread = (f", its 95% interval down to {acc.ci_low * 100:.2f}%" if acc.n >= 2 else " on one seed")
            lines.append(f"- **{model}**: no winner: no loss is clearly above chance (best "
                         f"{acc.mean * 100:.2f}%{spread}, against {best.chance * 100:.0f}% chance)")
            continue
        head = f"- **{model}**: best **{best.loss}**, {acc.mean * 100:.2f}% over {plural(acc.n, 'seed')}"
        if best.is_baseline:
            rest = [g for g in mine[1:] if id(g) in tests]
            if rest:
                c = tests[id(rest[0])]
                t, p = c.test, c.p_holm
                head += (f"; plain ce leads, the next best {rest[0].loss} is {t.mean_diff * 100:+.2f} pp "
                         f"({NO_TEST if math.isnan(p) else f'p_Holm {p:.2g}: {separable(p)} from ce'})")
                head += sensitivity(t, p)
        elif id(best) in tests:
            c = tests[id(best)]
            t, p = c.test, c.p_holm
            head += f"; vs ce {t.mean_diff * 100:+.2f} pp" + (
                f" ({NO_TEST})" if math.isnan(p) else f", p_Holm {p:.2g}: **{separable(p)} from ce** at "
                                                      f"{ALPHA:g}")
            head += sensitivity(t, p)
        else:
            head += "; no plain-ce baseline on the same seeds to test against"
        verdicts = [tests[id(g)] for g in mine if id(g) in tests]
        if verdicts:
            head += (f"; against ce (margin ±{verdicts[0].margin * 100:g} pp): " + ", ".join(
                f"{c.group.loss} **{c.verdict}**" + ("" if math.isnan(c.p_better) else " (P(beats ce) "
                                                                                       f"{c.p_better:.2f})")
                for c in verdicts))
        if shots and id(best) in tests:
            base = tests[id(best)].base
            few = shots.classes["few"]
            gain = summarize(shot_accuracy(best, few)).mean - summarize(shot_accuracy(base, few)).mean
            head += f"; few-shot accuracy {gain * 100:+.2f} pp vs ce"
        for g in mine:
            if g.search_tied:
                head += f"; for {g.loss} every tuning trial tied: its search chose nothing"
        for g in mine:  # a row whose tuned lr sat at the edge of its range may be better than it looks
            head += edge_note(g)
        lines.append(head)
    return lines


def edge_note(g: Group) -> str:
    """'; for ROW the lr ... is at the top of its tuning range ...' (one study), or how many of a
    per-seed row's studies chose an lr at an edge, and which."""
    if not g.per_seed:  # one study: one lr on every seed
        notes = {tuned_lr_note(r.get("tuning")) for r in g.records} - {""}
        return f"; for {g.loss} the " + "; ".join(sorted(notes)) if notes else ""
    edges: dict[tuple[str, tuple[float, float]], list[float]] = {}
    for r in g.records:
        lr, lr_range = r["tuning"]["params"].get("lr"), r["tuning"].get("lr_range")
        if lr is not None and (side := lr_edge(lr, lr_range)):
            edges.setdefault((side, tuple(lr_range)), []).append(lr)
    return "".join(
        f"; for {g.loss} {len(lrs)} of {len(g.records)} studies chose an lr at the {side} of the tuning "
        f"range {low:g}–{high:g} ({', '.join(f'{lr:.3g}' for lr in sorted(lrs))}): a better lr may lie "
        "beyond it"
        for (side, (low, high)), lrs in sorted(edges.items()))


def per_seed_note(groups: list[Group]) -> str:
    modes = {(g.tuning or {}).get("mode") for g in groups if g.tuning}
    if modes == {"per_seed"}:
        return ("Each seed tuned its own values in its own study (its own tuning seed and train/val "
                "partition), so these tests include the search's own luck.")
    if "single" in modes or None in modes:
        return ("One study per row chose the values every seed uses: the tests do not see that search's "
                "luck, which can move a whole row.")
    return ""
