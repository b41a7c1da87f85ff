"""Numbers as text, the same in every table of the report: accuracies and paired differences in
percentage points, p-values, minimum detectable differences, and the legend that explains them.

Example::

    fmt_acc(0.6, 0.248)                  # "60.0 ± 24.8"
    diff_cell(0.01, -0.005, 0.029, False)  # Cell("+1.0 [-0.5, +2.9]", "not resolved")
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from sslsweep.analysis.sections import Cell
from sslsweep.analysis.stats import ALPHA, PAIRED_TEST_NAME, POWER


def is_missing(value: Any) -> bool:
    """None, NaN or pd.NA: shown as ``"n/a"``."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def fmt_acc(mean: float, ci: float) -> str:
    """Accuracy as a percentage with its CI half-width: ``"60.0 ± 24.8"``; NaN CI -> ``"n/a"``."""
    if is_missing(mean):
        return "n/a"
    half = "n/a" if is_missing(ci) else f"{100 * ci:.1f}"
    return f"{100 * mean:.1f} ± {half}"


def fmt_diff(mean: float, low: float, high: float) -> str:
    """Difference in percentage points with its CI: ``"+1.2 [-0.5, +2.9]"``."""
    if is_missing(mean):
        return "n/a"
    ci = "[n/a]" if is_missing(low) else f"[{100 * low:+.1f}, {100 * high:+.1f}]"
    return f"{100 * mean:+.1f} {ci}"


def fmt_value(value: Any) -> str:
    """A table value: floats to 4 significant digits, NaN/None as ``"n/a"``."""
    if is_missing(value):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def fmt_p(p: float) -> str:
    return "n/a" if is_missing(p) else f"{p:.3g}"


NOT_RESOLVED = "not resolved"
MDE_HEADER = "MDE (points)"
COMPARISON_LEGEND = (f"{NOT_RESOLVED}: the 95% CI of the difference spans zero (or the comparison is not testable), "
                     f"so the seeds do not settle its sign. MDE: the minimum detectable difference, the smallest "
                     f"true difference the {PAIRED_TEST_NAME} would detect with power {POWER:g} at "
                     f"α = {ALPHA:g} with the seeds used, (t(1-α/2, n-1) + t(power, n-1)) · sd of the paired "
                     f"differences / √n; a smaller true difference may well go unseen.")


def fmt_mde(mde: float) -> str:
    """Minimum detectable difference in percentage points: ``"6.2"``; NaN -> ``"n/a"``."""
    return "n/a" if is_missing(mde) else f"{100 * mde:.1f}"


def diff_cell(mean: float, low: float, high: float, resolved: Any) -> Cell:
    """A paired difference with its CI, marked ``not resolved`` unless its CI excludes zero."""
    ok = not is_missing(resolved) and bool(resolved)
    return Cell(fmt_diff(mean, low, high), "" if ok else NOT_RESOLVED)
