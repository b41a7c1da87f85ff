"""Small statistics used by the report: mean with a Student-t 95% CI, paired t-tests over seeds.

Everything here is a pure function of numbers; nothing reads files or draws.

Conventions (stated once, used everywhere):

- The 95% CI of a mean of ``n`` values with sample standard deviation ``sd`` (ddof=1) is
  ``mean ± t.ppf(0.975, n - 1) * sd / sqrt(n)``. With ``n = 1`` there is no spread to estimate
  and the half-width is NaN (shown as "n/a").
- Methods are compared with a two-sided paired Student t-test over seeds
  (``scipy.stats.ttest_rel``): seed ``s`` of method A is paired with seed ``s`` of method B,
  because both saw the same label subsets. Seeds present in only one of the two are dropped.
  With fewer than 2 pairs the test is not possible and ``testable`` is False. Neither is it when
  every pair differs by the same non-zero amount: the t statistic divides by the spread of the
  differences, which is then zero. With the 2-3 seeds a sweep usually has and accuracies that move
  in steps of one test image, an identical shift is a coincidence, not certainty (p = 0).
- A paired comparison is *resolved* when it is testable and its 95% CI excludes zero; otherwise
  the report marks it "not resolved" rather than saying nothing.
- The minimum detectable difference (:func:`min_detectable_difference`) is the true mean difference
  the paired t-test would detect with power 0.8 at α = 0.05, given the seeds used and the observed
  spread of the differences.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.8
PAIRED_TEST_NAME = "two-sided paired Student t-test over seeds"


@dataclass(frozen=True)
class MeanCI:
    """Mean of ``n`` values with the half-width of its Student-t confidence interval.

    Args:
        mean: sample mean (NaN when ``n = 0``).
        half_width: ``t.ppf(0.975, n-1) * sd / sqrt(n)``; NaN when ``n < 2``.
        sd: sample standard deviation with ``ddof=1``; NaN when ``n < 2``.
        n: number of finite values used.
    """

    mean: float
    half_width: float
    sd: float
    n: int

    @property
    def low(self) -> float:
        """Lower end of the interval."""
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        """Upper end of the interval."""
        return self.mean + self.half_width


@dataclass(frozen=True)
class PairedResult:
    """Paired comparison ``a - b`` over seeds.

    Args:
        n_paired: number of seeds present in both ``a`` and ``b``.
        mean_diff: mean of the paired differences ``a_s - b_s``.
        ci_low, ci_high: 95% Student-t interval of ``mean_diff`` (NaN when ``n_paired < 2``).
        p_value: two-sided ``ttest_rel`` p-value (NaN when not testable).
        testable: ``n_paired >= 2`` and the differences are not one constant non-zero shift.
        sd_diff: sample standard deviation (ddof=1) of the paired differences; NaN when ``n_paired < 2``.
    """

    n_paired: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    testable: bool
    sd_diff: float = math.nan

    @property
    def resolved(self) -> bool:
        """Testable and the 95% CI excludes zero (a CI that spans zero leaves the sign open)."""
        return bool(self.testable and math.isfinite(self.ci_low) and math.isfinite(self.ci_high)
                    and (self.ci_low > 0 or self.ci_high < 0))

    @property
    def mde(self) -> float:
        """Minimum detectable difference at these seeds (:func:`min_detectable_difference`); NaN when
        the paired differences have no spread (a constant shift, or identical results): the seeds
        then give no estimate of the noise, not a perfect sensitivity."""
        if not self.sd_diff > 0:
            return math.nan
        return min_detectable_difference(self.sd_diff, self.n_paired)


def t_half_width(sd: float, n: int, confidence: float = CONFIDENCE) -> float:
    """Half-width of the Student-t interval of a mean: ``t.ppf((1+c)/2, n-1) * sd / sqrt(n)``.

    Returns NaN when ``n < 2`` (no degrees of freedom) or ``sd`` is NaN.
    """
    if n < 2 or not math.isfinite(sd):
        return math.nan
    q = float(sps.t.ppf(0.5 + confidence / 2.0, n - 1))
    return q * sd / math.sqrt(n)


def min_detectable_difference(sd_diff: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable difference (MDE) of a two-sided paired t-test over ``n`` pairs.

    ``MDE = (t_{1-alpha/2, n-1} + t_{power, n-1}) * sd_diff / sqrt(n)``, i.e. with
    ``beta = 1 - power`` the second quantile is ``t_{1-beta, n-1}``: the smallest true mean
    difference the test detects with probability ``power`` at level ``alpha``, when the paired
    differences have standard deviation ``sd_diff``. This is the usual normal-theory formula
    ``(z_{1-alpha/2} + z_{1-beta}) * sigma / sqrt(n)`` (Cohen 1988, *Statistical Power Analysis for
    the Behavioral Sciences*, ch. 2; Chow, Shao & Wang, *Sample Size Calculations in Clinical
    Research*, §3.1) with Student-t quantiles on ``n - 1`` degrees of freedom in place of the
    normal ones (the t-approximation). ``sd_diff`` is the observed spread, so the MDE is itself
    an estimate.

    Returns NaN when ``n < 2`` or ``sd_diff`` is not finite.

    Example: ``sd_diff = 0.02`` over ``n = 3`` seeds gives
    ``(t.ppf(0.975, 2) + t.ppf(0.8, 2)) * 0.02 / sqrt(3) = (4.3027 + 1.0607) * 0.011547 = 0.0619``:
    with 3 seeds only a difference of about 6 points is reliably detected.
    """
    if not (0.0 < alpha < 1.0 and 0.0 < power < 1.0):
        raise ValueError(f"alpha is {alpha} and power is {power}, but both must lie strictly between 0 and 1")
    if n < 2 or not math.isfinite(sd_diff):
        return math.nan
    q = float(sps.t.ppf(1.0 - alpha / 2.0, n - 1)) + float(sps.t.ppf(power, n - 1))
    return q * sd_diff / math.sqrt(n)


def mean_ci(values: Iterable[float], confidence: float = CONFIDENCE) -> MeanCI:
    """Mean and Student-t CI half-width of the finite ``values`` (NaN/None are ignored).

    Example: ``mean_ci([0.5, 0.6, 0.7])`` has mean 0.6, sd 0.1 and half-width
    ``t.ppf(0.975, 2) * 0.1 / sqrt(3) = 0.2484``.
    """
    arr = np.asarray(pd.to_numeric(pd.Series(list(values), dtype="object"), errors="coerce"),
                     dtype=float)
    arr = arr[np.isfinite(arr)]
    n = int(arr.size)
    if n == 0:
        return MeanCI(math.nan, math.nan, math.nan, 0)
    mean = float(arr.mean())
    sd = float(arr.std(ddof=1)) if n > 1 else math.nan
    return MeanCI(mean, t_half_width(sd, n, confidence), sd, n)


def paired_t(a: pd.Series, b: pd.Series, confidence: float = CONFIDENCE) -> PairedResult:
    """Paired t-test of ``a - b`` where both Series are indexed by seed.

    Seeds present in only one Series (or NaN in either) are dropped. When all differences are
    equal the t statistic is undefined: all 0 gives p = 1 (no evidence of a difference); one
    constant non-zero shift is not testable (p NaN), see the module docstring.
    """
    joined = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    diffs = (joined["a"] - joined["b"]).to_numpy(dtype=float)
    n = int(diffs.size)
    if n == 0:
        return PairedResult(0, math.nan, math.nan, math.nan, math.nan, False)
    ci = mean_ci(diffs, confidence)
    if n < 2:
        return PairedResult(n, ci.mean, math.nan, math.nan, math.nan, False)
    if np.allclose(diffs, diffs[0], rtol=0.0, atol=1e-12):
        if abs(diffs[0]) > 1e-12:  # no spread to test against
            return PairedResult(n, ci.mean, ci.low, ci.high, math.nan, False, ci.sd)
        p = 1.0
    else:
        p = float(sps.ttest_rel(joined["a"], joined["b"]).pvalue)
    return PairedResult(n, ci.mean, ci.low, ci.high, p, True, ci.sd)


def significantly_worse(result: PairedResult, alpha: float = ALPHA) -> bool | None:
    """Whether ``a`` is significantly worse than ``b`` (``a - b < 0`` and ``p < alpha``).

    Returns None when the comparison is not testable (fewer than 2 paired seeds, or one constant
    non-zero shift): then neither
    "worse" nor "not significantly worse" can be claimed.
    """
    if not result.testable:
        return None
    return bool(result.mean_diff < 0 and result.p_value < alpha)
