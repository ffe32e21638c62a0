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


def test_holm_hand_worked():
    # m = 4: sorted 0.005, 0.01, 0.03, 0.04 -> x4 0.02, x3 0.03, x2 0.06, x1 0.04 -> monotone 0.06
    from bench.stats import holm

    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_holm_leaves_missing_tests_out_of_the_family():
    from bench.stats import holm

    adjusted = holm([0.01, math.nan, 0.02])
    assert math.isnan(adjusted[1]) and adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.02)


def test_holm_matches_statsmodels_when_installed():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    from bench.stats import holm

    p = np.random.default_rng(0).uniform(0, 0.2, 12)
    assert holm(p) == pytest.approx(multitest.multipletests(p, method="holm")[1].tolist())


def test_compare_by_seed_pairs_common_seeds_else_welch():
    from bench.stats import compare_by_seed

    a, b = {0: 0.80, 1: 0.82, 2: 0.79}, {0: 0.78, 1: 0.79, 2: 0.78}
    assert compare_by_seed(a, b).p_value == pytest.approx(stats.ttest_rel([0.80, 0.82, 0.79], [0.78, 0.79, 0.78]).pvalue)
    c = {5: 0.70, 6: 0.72}
    assert compare_by_seed(c, b).p_value == pytest.approx(
        stats.ttest_ind([0.70, 0.72], [0.78, 0.79, 0.78], equal_var=False).pvalue)


@pytest.mark.parametrize("n", [2, 3, 5, 10, 30])
def test_detectable_difference_matches_statsmodels_power(n):
    """The smallest difference a paired t-test finds 80% of the time: effect size d (from
    statsmodels' one-sample t power, an independent solver) times the SD of the differences."""
    from statsmodels.stats.power import TTestPower

    from bench.stats import detectable_difference

    d = TTestPower().solve_power(effect_size=None, nobs=n, alpha=0.05, power=0.8, alternative="two-sided")
    assert detectable_difference(0.02, n) == pytest.approx(d * 0.02, rel=1e-5)
    assert math.isnan(detectable_difference(0.0, n)) and math.isnan(detectable_difference(0.02, 1))


def test_paired_comparison_states_what_it_could_detect():
    from bench.stats import detectable_difference

    a, b = [0.80, 0.82, 0.79, 0.81, 0.83], [0.78, 0.79, 0.78, 0.80, 0.80]
    p = paired_comparison(a, b)
    assert p.detectable == pytest.approx(detectable_difference(np.std(np.subtract(a, b), ddof=1), 5))
    assert 1.6 < p.detectable / np.std(np.subtract(a, b), ddof=1) < 1.8  # n = 5: about 1.68 SDs
