"""Statistics: Student-t CI of a mean and the paired t-test over seeds, checked against hand values."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats as sps

from sslsweep.analysis.stats import (
    mean_ci,
    min_detectable_difference,
    paired_t,
    significantly_worse,
    t_half_width,
)


def test_mean_ci_of_three_values_matches_hand_computed_student_t_interval() -> None:
    """[0.5, 0.6, 0.7]: mean 0.6, sd 0.1, half-width t(0.975, 2) * 0.1 / sqrt(3) = 0.2484."""
    ci = mean_ci([0.5, 0.6, 0.7])
    assert ci.n == 3
    assert ci.mean == pytest.approx(0.6)
    assert ci.sd == pytest.approx(0.1)
    assert ci.half_width == pytest.approx(4.302652729911275 * 0.1 / math.sqrt(3))
    assert ci.half_width == pytest.approx(0.2484, abs=1e-4)
    assert (ci.low, ci.high) == pytest.approx((0.6 - 0.2484, 0.6 + 0.2484), abs=1e-4)


def test_mean_ci_of_one_value_has_no_interval() -> None:
    """n = 1 has no degrees of freedom: the half-width must be NaN, not 0."""
    ci = mean_ci([0.42])
    assert ci.mean == pytest.approx(0.42)
    assert math.isnan(ci.half_width)
    assert math.isnan(t_half_width(0.1, 1))


def test_mean_ci_ignores_missing_values() -> None:
    """NaN / None are not accuracies: they are dropped before n is counted."""
    ci = mean_ci([0.5, None, float("nan"), 0.7])
    assert ci.n == 2 and ci.mean == pytest.approx(0.6)


def test_paired_t_pairs_by_seed_not_by_position() -> None:
    """Seeds are matched by index label: b is given in another order and has an extra seed."""
    a = pd.Series([0.60, 0.80, 0.90], index=[0, 1, 2])
    b = pd.Series([0.88, 0.585, 0.78, 0.5], index=[2, 0, 1, 99])  # seed 99 has no partner
    res = paired_t(a, b)
    assert res.n_paired == 3
    assert res.mean_diff == pytest.approx((0.015 + 0.02 + 0.02) / 3)
    assert res.p_value == pytest.approx(sps.ttest_rel([0.6, 0.8, 0.9], [0.585, 0.78, 0.88]).pvalue)


def test_paired_t_finds_a_difference_an_unpaired_test_would_miss() -> None:
    """Large seed-to-seed spread, small consistent gap: paired p < 0.05 although Welch's p > 0.5."""
    a = pd.Series([0.60, 0.80, 0.90], index=[0, 1, 2])
    b = pd.Series([0.585, 0.78, 0.88], index=[0, 1, 2])
    assert sps.ttest_ind(a, b, equal_var=False).pvalue > 0.5
    res = paired_t(b, a)
    assert res.testable and res.p_value < 0.05 and res.mean_diff < 0
    assert significantly_worse(res) is True


def test_paired_t_with_fewer_than_two_pairs_is_not_testable() -> None:
    """One shared seed: no test, and 'worse' / 'not worse' both unclaimable (None)."""
    res = paired_t(pd.Series([0.5, 0.6], index=[0, 1]), pd.Series([0.7, 0.8], index=[1, 2]))
    assert res.n_paired == 1 and not res.testable
    assert math.isnan(res.p_value)
    assert significantly_worse(res) is None


def test_paired_t_with_constant_differences() -> None:
    """A constant non-zero shift has no spread to test against: not testable (p NaN, neither
    'worse' nor 'not worse' claimed) - with 2 seeds and accuracies in steps of one test image such
    a shift is a coincidence, not p = 0. Identical results show no difference (p = 1)."""
    a = pd.Series([0.5, 0.6, 0.7], index=[0, 1, 2])
    shifted = paired_t(a - 0.1, a)
    assert not shifted.testable and math.isnan(shifted.p_value) and significantly_worse(shifted) is None
    assert shifted.mean_diff == pytest.approx(-0.1)
    same = paired_t(a, a)
    assert same.p_value == 1.0 and significantly_worse(same) is False
    assert math.isnan(shifted.mde) and math.isnan(same.mde)  # no spread: no noise estimate, not an MDE of 0


def test_min_detectable_difference_matches_the_hand_computed_t_formula() -> None:
    """sd_diff 0.02 over 3 pairs: (t(0.975, 2) + t(0.8, 2)) * 0.02 / sqrt(3)
    = (4.302653 + 1.060660) * 0.0115470 = 0.061930 (6.2 points)."""
    assert min_detectable_difference(0.02, 3) == pytest.approx((4.302653 + 1.060660) * 0.02 / math.sqrt(3), rel=1e-6)
    assert min_detectable_difference(0.02, 3) == pytest.approx(0.061930, abs=1e-6)
    # more seeds detect smaller differences; one pair detects nothing
    assert min_detectable_difference(0.02, 5) < min_detectable_difference(0.02, 3)
    assert math.isnan(min_detectable_difference(0.02, 1)) and math.isnan(min_detectable_difference(math.nan, 3))


def test_min_detectable_difference_rejects_alpha_or_power_outside_zero_one() -> None:
    with pytest.raises(ValueError, match="power is 1.5, but both must lie strictly between 0 and 1"):
        min_detectable_difference(0.02, 3, power=1.5)


def test_paired_result_is_resolved_only_when_its_ci_excludes_zero() -> None:
    """Diffs [0.01, -0.02, 0.0]: CI spans zero -> not resolved, MDE from sd 0.015275;
    diffs [-0.10, -0.09, -0.11]: CI below zero -> resolved; a constant shift is not testable -> not resolved."""
    seeds = [0, 1, 2]
    spans = paired_t(pd.Series([0.81, 0.80, 0.84], index=seeds), pd.Series([0.80, 0.82, 0.84], index=seeds))
    assert spans.ci_low < 0 < spans.ci_high and not spans.resolved
    assert spans.sd_diff == pytest.approx(0.0152753, abs=1e-6)
    assert spans.mde == pytest.approx((4.302653 + 1.060660) * 0.0152753 / math.sqrt(3), rel=1e-5)
    below = paired_t(pd.Series([0.70, 0.73, 0.73], index=seeds), pd.Series([0.80, 0.82, 0.84], index=seeds))
    assert below.ci_high < 0 and below.resolved
    shifted = paired_t(pd.Series([0.6, 0.7], index=[0, 1]), pd.Series([0.5, 0.6], index=[0, 1]))
    assert not shifted.resolved
