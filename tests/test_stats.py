import math

import numpy as np
import pytest
from scipy import stats

from bench.stats import paired_comparison, summarize


def test_t_interval_matches_scipy():
    values = [0.71, 0.74, 0.69, 0.73]
    s = summarize(values)
    low, high = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert s.ci_low == pytest.approx(low) and s.ci_high == pytest.approx(high)
    assert s.std == pytest.approx(np.std(values, ddof=1)) and s.n == 4


def test_hand_worked_interval():
    # mean 2, sample std 1, n = 3: half-width = t(0.975, 2) / sqrt(3) = 4.302653 / 1.732051
    s = summarize([1.0, 2.0, 3.0])
    assert s.ci_high - 2.0 == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)


def test_single_seed_has_no_interval_and_ranks_nothing():
    s = summarize([0.5])
    assert math.isnan(s.ci_low) and s.std == 0.0
    assert s.overlaps(summarize([0.9, 0.91]))


def test_paired_test_matches_scipy():
    a, b = [0.80, 0.82, 0.79, 0.81], [0.78, 0.79, 0.78, 0.80]
    p = paired_comparison(a, b)
    assert p.p_value == pytest.approx(stats.ttest_rel(a, b).pvalue)
    diffs = np.subtract(a, b)
    low, high = stats.t.interval(0.95, 3, loc=diffs.mean(), scale=stats.sem(diffs))
    assert (p.ci_low, p.ci_high) == (pytest.approx(low), pytest.approx(high))
    assert p.mean_diff == pytest.approx(0.0175)


def test_overlap():
    assert not summarize([0.90, 0.91, 0.90]).overlaps(summarize([0.50, 0.52, 0.51]))
    assert summarize([0.90, 0.91, 0.90]).overlaps(summarize([0.89, 0.92, 0.905]))
