"""The statistics a leaderboard states: mean, std, a t-interval, paired (or Welch) t-tests, and the
Holm adjustment of a table's p-values for multiple comparisons."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

POWER = 0.8  # the chance of detecting a difference that `detectable_difference` reports


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float  # sample standard deviation (ddof=1); 0 for a single value
    n: int
    ci_low: float  # 95% t-interval for the mean; NaN when n < 2
    ci_high: float

    def overlaps(self, other: "Summary") -> bool:
        if math.isnan(self.ci_low) or math.isnan(other.ci_low):
            return True  # one seed ranks nothing
        return self.ci_low <= other.ci_high and other.ci_low <= self.ci_high


def summarize(values, confidence: float = 0.95) -> Summary:
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    mean = float(x.mean())
    if n < 2:
        return Summary(mean, 0.0, n, math.nan, math.nan)
    std = float(x.std(ddof=1))
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return Summary(mean, std, n, mean - half, mean + half)


@dataclass(frozen=True)
class Paired:
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float  # two-sided paired t-test; NaN when n < 2 or all differences are equal
    n: int  # pairs; for an unpaired comparison, the candidate's count
    detectable: float = math.nan  # the difference this test detects with POWER (see detectable_difference)
    paired: bool = True
    n_baseline: int | None = None  # an unpaired comparison's baseline count


def detectable_difference(sd: float, n: int, alpha: float = 0.05, power: float = POWER) -> float:
    """The smallest true mean difference that a two-sided paired t-test at `alpha` detects with
    probability `power`, over n pairs whose differences have standard deviation sd (noncentral t).
    A sensitivity statement: with sd estimated from the same few seeds it is itself uncertain."""
    if n < 2 or not sd > 0:
        return math.nan
    df, crit = n - 1, stats.t.ppf(1 - alpha / 2, n - 1)

    def shortfall(noncentrality: float) -> float:  # the far tail is ~0, and scipy may give NaN there
        far = stats.nct.cdf(-crit, df, noncentrality)
        return stats.nct.sf(crit, df, noncentrality) + (0.0 if math.isnan(far) else far) - power

    return optimize.brentq(shortfall, 0.0, 40.0) * sd / math.sqrt(n)  # power is ~1 at 40 for any n >= 2


def paired_comparison(candidate, baseline, confidence: float = 0.95) -> Paired:
    """candidate - baseline on the same seeds: mean difference, its t-interval, paired t-test, and
    the difference such a test would detect with POWER at 1 - confidence."""
    a, b = np.asarray(candidate, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    diff = summarize(a - b, confidence)
    p = math.nan
    if len(a) >= 2 and np.ptp(a - b) > 0:
        p = float(stats.ttest_rel(a, b).pvalue)
    return Paired(diff.mean, diff.ci_low, diff.ci_high, p, len(a),
                  detectable_difference(diff.std, len(a), 1 - confidence))


def compare_by_seed(candidate: dict[int, float], baseline: dict[int, float]) -> Paired:
    """candidate - baseline: a paired test on the seeds both have (two or more), else Welch's
    unpaired t-test over all their values (n is then the candidate's count)."""
    common = sorted(set(candidate) & set(baseline))
    if len(common) >= 2:
        return paired_comparison([candidate[s] for s in common], [baseline[s] for s in common])
    a, b = np.asarray(list(candidate.values())), np.asarray(list(baseline.values()))
    p = math.nan
    if len(a) >= 2 and len(b) >= 2 and (np.ptp(a) > 0 or np.ptp(b) > 0):
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return Paired(float(a.mean() - b.mean()), math.nan, math.nan, p, len(a), paired=False, n_baseline=len(b))


def holm(p_values) -> list[float]:
    """Holm's step-down adjustment (family-wise error): the i-th smallest of m p-values becomes
    max over j <= i of min(1, (m - j + 1) p_(j)). NaN (no test) stays NaN and is not counted in m."""
    p = np.asarray(p_values, dtype=np.float64)
    valid = np.flatnonzero(~np.isnan(p))
    adjusted = np.full(len(p), math.nan)
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def equivalence_p(candidate, baseline, margin: float) -> float:
    """Paired TOST (two one-sided t-tests): the p-value for "the mean difference lies within
    ±margin". Small means the data show the two are equivalent to within the margin. NaN with
    fewer than 2 pairs; with identical differences, 0 inside the margin and 1 outside."""
    d = np.asarray(candidate, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    n = len(d)
    if n < 2:
        return math.nan
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0:
        return 0.0 if abs(mean) < margin else 1.0
    se = sd / math.sqrt(n)
    p_above = stats.t.sf((mean + margin) / se, n - 1)  # H0: mean <= -margin
    p_below = stats.t.cdf((mean - margin) / se, n - 1)  # H0: mean >= +margin
    return float(max(p_above, p_below))


def probability_better(candidate, baseline) -> float:
    """P(A > B) on a paired run (Bouthillier et al. 2021): the share of pairs where the candidate
    wins, a tie counting one half."""
    a, b = np.asarray(candidate, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if len(a) == 0:
        return math.nan
    return float(((a > b).sum() + 0.5 * (a == b).sum()) / len(a))
