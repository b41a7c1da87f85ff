"""Confirm-phase statistics: every expected value below is worked out by hand from the fixtures in conftest.py."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace

import pandas as pd
import pytest

from sslsweep.analysis.confirm import BUDGET_REQUIRED, gain_over_none, headline_table, paired_comparisons


def test_headline_mean_and_ci_are_student_t_over_seeds(budget: pd.DataFrame,
                                                       one_row: Callable[..., pd.Series]) -> None:
    """simclr, 1%, linear: [0.5, 0.6, 0.7] -> 0.6 ± 0.2484, 3 seeds, 18 labels."""
    row = one_row(headline_table(budget), method="simclr", budget=0.01, protocol="linear")
    assert row["mean"] == pytest.approx(0.6)
    assert row["ci"] == pytest.approx(0.2484, abs=1e-4)
    assert row["n_seeds"] == 3
    assert row["budget_label"] == "1% (18 labels)"


def test_headline_marks_the_highest_mean_as_best_in_each_budget_and_protocol(budget: pd.DataFrame) -> None:
    """simclr has the highest mean in every column of the fixture; nothing else is best."""
    head = headline_table(budget)
    best = head[head["is_best"]]
    assert len(best) == 4  # 2 budgets x 2 protocols
    assert set(best["method"]) == {"simclr"}
    assert set(head["best_method"]) == {"simclr"}


def test_headline_marks_not_significantly_worse_with_a_paired_test(budget: pd.DataFrame,
                                                                   one_row: Callable[..., pd.Series]) -> None:
    """10% linear: rotation [0.81, 0.80, 0.84] vs best [0.80, 0.82, 0.84] -> p = 0.74, not worse (†);
    none [0.70, 0.73, 0.73] -> p = 0.003, significantly worse; the best itself is not tested (None)."""
    head = headline_table(budget)
    rot = one_row(head, method="rotation", budget=0.1, protocol="linear")
    none = one_row(head, method="none", budget=0.1, protocol="linear")
    best = one_row(head, method="simclr", budget=0.1, protocol="linear")
    assert rot["not_sig_worse"] is True and rot["p_vs_best"] == pytest.approx(0.7418, abs=1e-3)
    assert none["not_sig_worse"] is False and none["p_vs_best"] < 0.05
    assert best["not_sig_worse"] is None and best["is_best"]


def test_headline_cannot_claim_anything_with_fewer_than_two_paired_seeds(build: SimpleNamespace,
                                                                         one_row: Callable[..., pd.Series]) -> None:
    """A method whose seeds do not overlap the best's is 'not testable' (None), never † or worse."""
    rows = (build.budget_rows("simclr", {(0.1, "linear"): [0.9, 0.91, 0.92]}, [0, 1, 2])
            + build.budget_rows("rotation", {(0.1, "linear"): [0.5, 0.51]}, [2, 7]))
    head = headline_table(pd.DataFrame(rows))
    rot = one_row(head, method="rotation")
    assert rot["n_paired"] == 1
    assert rot["not_sig_worse"] is None
    assert math.isnan(rot["p_vs_best"])


def test_headline_single_seed_has_nan_ci(build: SimpleNamespace) -> None:
    """One seed: mean is the value, CI is NaN (shown as n/a)."""
    head = headline_table(pd.DataFrame(build.budget_rows("simclr", {(1.0, "linear"): [0.7]}, [0])))
    assert head["mean"].iloc[0] == pytest.approx(0.7) and math.isnan(head["ci"].iloc[0])


def test_headline_marks_every_tied_method_as_best(build: SimpleNamespace) -> None:
    """Two methods with the same mean both get the best mark."""
    rows = (build.budget_rows("a", {(0.1, "linear"): [0.5, 0.7]}, [0, 1])
            + build.budget_rows("b", {(0.1, "linear"): [0.6, 0.6]}, [0, 1]))
    head = headline_table(pd.DataFrame(rows))
    assert head["is_best"].all()


def test_headline_rejects_two_rows_for_one_method_seed_budget_protocol(build: SimpleNamespace) -> None:
    """A repeated seed would double-count it: ValueError naming the method and seed."""
    rows = build.budget_rows("simclr", {(0.1, "linear"): [0.5, 0.6]}, [3, 3])
    with pytest.raises(ValueError, match=r"method=simclr .*seed=3.*one row per method"):
        headline_table(pd.DataFrame(rows))


def test_headline_rejects_a_budget_table_without_schema_columns() -> None:
    """A table missing test_acc is not a budget table: ValueError naming the column."""
    with pytest.raises(ValueError, match=r"budget table lacks column\(s\) \['test_acc'\]"):
        headline_table(pd.DataFrame({c: [] for c in BUDGET_REQUIRED if c != "test_acc"}))


def test_paired_comparisons_cover_best_and_none_and_never_self(budget: pd.DataFrame) -> None:
    """Per column: rotation vs best, rotation vs none, simclr vs none, none vs best (4 rows)."""
    comp = paired_comparisons(budget)
    col = comp[(comp["budget"] == 0.1) & (comp["protocol"] == "linear")]
    pairs = set(zip(col["method"], col["reference_method"]))
    assert pairs == {("rotation", "simclr"), ("rotation", "none"), ("simclr", "none"), ("none", "simclr")}
    assert (comp["method"] != comp["reference_method"]).all()
    assert set(comp["test"]) == {"two-sided paired Student t-test over seeds"}


def test_paired_comparison_difference_and_ci_are_over_paired_seeds(budget: pd.DataFrame,
                                                                   one_row: Callable[..., pd.Series]) -> None:
    """10% linear none vs simclr: diffs [-0.10, -0.09, -0.11] -> mean -0.10, CI -0.10 ± t*0.01/sqrt(3)."""
    comp = paired_comparisons(budget)
    row = one_row(comp, method="none", reference="best", budget=0.1, protocol="linear")
    half = 4.302652729911275 * 0.01 / math.sqrt(3)
    assert row["mean_diff"] == pytest.approx(-0.10)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((-0.10 - half, -0.10 + half))
    assert row["n_paired"] == 3


def test_gain_over_none_is_the_paired_mean_difference(budget: pd.DataFrame,
                                                      one_row: Callable[..., pd.Series]) -> None:
    """1% linear: simclr [0.5, 0.6, 0.7] - none [0.1, 0.2, 0.15] = [0.4, 0.4, 0.55] -> 0.45."""
    gain = gain_over_none(budget)
    row = one_row(gain, method="simclr", budget=0.01, protocol="linear")
    assert row["gain"] == pytest.approx(0.45)
    assert "none" not in set(gain["method"])
    assert len(gain) == 8  # (simclr, rotation) x 2 budgets x 2 protocols


def test_gain_over_none_is_empty_without_the_baseline(budget: pd.DataFrame) -> None:
    """No 'none' rows -> no gains (and no error)."""
    assert gain_over_none(budget[budget["method"] != "none"]).empty


def test_comparisons_give_the_mde_and_mark_a_ci_spanning_zero_as_not_resolved(
        budget: pd.DataFrame, one_row: Callable[..., pd.Series]) -> None:
    """10% linear vs best: rotation's diffs [0.01, -0.02, 0.0] (sd 0.015275) span zero -> not resolved,
    MDE = 5.363313 * 0.015275 / sqrt(3) = 0.0473; none's [-0.10, -0.09, -0.11] (sd 0.01) -> resolved,
    MDE 0.0310. The gain-over-none table carries the same two columns."""
    comp = paired_comparisons(budget)
    rot = one_row(comp, method="rotation", budget=0.1, protocol="linear", reference="best")
    none = one_row(comp, method="none", budget=0.1, protocol="linear", reference="best")
    assert not rot["resolved"] and rot["mde"] == pytest.approx(5.363313 * 0.0152753 / math.sqrt(3), rel=1e-5)
    assert none["resolved"] and none["mde"] == pytest.approx(5.363313 * 0.01 / math.sqrt(3), rel=1e-5)
    simclr = one_row(gain_over_none(budget), method="simclr", budget=0.1, protocol="linear")
    assert simclr["resolved"] and simclr["mde"] == pytest.approx(none["mde"], rel=1e-9)
