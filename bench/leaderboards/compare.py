"""The statistics of a board: rows ranked and tested against the leader, and each loss against
plain ce of the same model (paired t-test and TOST equivalence, Holm over the table, P(beats ce)),
with its verdict."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.leaderboards.collect import Group
from bench.stats import (
    Summary,
    compare_by_seed,
    equivalence_p,
    holm,
    probability_better,
)

ALPHA = 0.05  # family-wise error rate of a table's Holm-corrected tests


MARGIN = 0.005  # default practical margin: accuracy differences within ±0.5 pp can be called "equivalent"


UNRANKED = "1 seed: not ranked"


def leader_p_values(ranked: list[Group]) -> list[float]:
    """Holm-adjusted p of each row against the leader (NaN for the leader and untested rows)."""
    leader = ranked[0].by_seed("accuracy")
    tests = [compare_by_seed(g.by_seed("accuracy"), leader) for g in ranked[1:]]
    adjusted = holm([t.p_value for t in tests])
    untested = [ranked[0].several_seeds and not g.several_seeds for g in ranked[1:]]
    return [math.nan] + [math.nan if skip else p for p, skip in zip(adjusted, untested)]


def vs_leader(ranked: list[Group]) -> list[str]:
    """Each row against the leader: a t-test on test accuracy (paired on common seeds, else Welch),
    Holm-corrected over the table; '≈ leader' where the data cannot separate them at ALPHA. A
    one-seed row under a leader of several seeds is not tested (it comes last, see rank_rows)."""
    adjusted = leader_p_values(ranked)[1:]
    marks = ["leader"]
    for g, p in zip(ranked[1:], adjusted):
        if ranked[0].several_seeds and not g.several_seeds:
            marks.append(UNRANKED)
        elif math.isnan(p):
            marks.append("≈ leader (no test)")
        else:
            marks.append(f"{'≈ leader' if p >= ALPHA else 'below'} (p_Holm {p:.2g})")
    return marks


def rank_rows(groups: list[Group]) -> list[Group]:
    """By mean test accuracy, rows of several seeds first: a single run can be a lucky one, and
    the leader is what every other row is tested against."""
    return sorted(groups, key=lambda g: (g.several_seeds, g.summary("accuracy").mean), reverse=True)


def clipped(s: Summary, low: float = 0.0, high: float = 1.0) -> Summary:
    """A bounded metric's interval cut to its range (an accuracy's t-interval can pass 0 or 100%)."""
    if s.n < 2:
        return s
    return Summary(s.mean, s.std, s.n, max(low, s.ci_low), min(high, s.ci_high))


@dataclass(frozen=True)
class Comparison:
    """One loss against plain ce of the same model and settings, on their common seeds."""

    group: Group
    base: Group
    test: object  # stats.Paired
    p_holm: float  # difference test, Holm over the table
    p_equiv_holm: float  # TOST within ±margin, Holm over the table
    p_better: float  # P(loss > ce) on a paired run
    margin: float

    @property
    def verdict(self) -> str:
        """better / worse (separable), equivalent (within ±margin, shown by TOST), undecided, or no test."""
        if math.isnan(self.p_holm) and math.isnan(self.p_equiv_holm):
            return "no test"
        if self.p_equiv_holm < ALPHA:
            return f"equivalent within ±{self.margin * 100:g} pp"
        if self.p_holm < ALPHA:
            return "better" if self.test.mean_diff > 0 else "worse"
        return "undecided"


def precision_note(comparisons: list[Comparison]) -> str:
    """The comparisons that cross precisions `--precision auto` chose per loss, said once."""
    crossed = []
    for c in comparisons:
        mine, theirs = dict(c.group.settings)["precision"], dict(c.base.settings)["precision"]
        if mine != theirs:
            loss = c.group.records[0]["config"]["loss"]
            crossed.append(f"{c.group.model} {loss} ({mine}) against ce ({theirs})")
    if not crossed:
        return ""
    return ("Precision: `--precision auto` chose it per loss, keeping fp32 for losses whose values move "
            f"under bf16-rounded logits, so these comparisons include it: {'; '.join(sorted(crossed))}.")


def comparisons_vs_ce(groups: list[Group], margin: float = MARGIN) -> list[Comparison]:
    """Every non-ce entry with a plain-ce baseline of the same model and settings; both the
    difference tests and the equivalence tests are Holm-corrected over the whole table."""
    baselines = {(g.model, g.compared_settings): g for g in groups if g.is_baseline}
    pairs = []
    for g in sorted(groups, key=lambda g: (g.model, g.loss)):
        base = baselines.get((g.model, g.compared_settings))
        if base is None or g is base or not set(g.seeds) & set(base.seeds):
            continue
        mine, theirs = g.by_seed("accuracy"), base.by_seed("accuracy")
        common = sorted(set(mine) & set(theirs))
        a, b = [mine[s] for s in common], [theirs[s] for s in common]
        better = probability_better(a, b) if len(common) >= 2 else math.nan  # one pair is no probability
        pairs.append((g, base, compare_by_seed(mine, theirs), equivalence_p(a, b, margin), better))
    adjusted = holm([t.p_value for _, _, t, _, _ in pairs])
    equivalent = holm([e for _, _, _, e, _ in pairs])
    return [Comparison(g, base, t, p, e_holm, better, margin)
            for (g, base, t, _, better), p, e_holm in zip(pairs, adjusted, equivalent)]
