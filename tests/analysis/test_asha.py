"""ASHA's signal: rank correlation between each rung's metric and the final metric, worked out by hand."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace

import pandas as pd
import pytest

from sslsweep.analysis.asha import rung_correlation, rung_epochs, rung_warnings, rungs_of


def _slow_starters(build: SimpleNamespace) -> pd.DataFrame:
    """Four completed ``simsiam`` trials, epochs 2, 6, 18; a stopped one and a failed one (never counted).

    Final metric (epoch 18):  a 0.9, b 0.8, c 0.7, d 0.6  -> ranks 4, 3, 2, 1
    Epoch 2:                  a 0.1, b 0.2, c 0.4, d 0.3  -> ranks 1, 2, 4, 3
        d_i = rank2 - rankF = -3, -1, 2, 2; sum d^2 = 18; rho = 1 - 6*18 / (4*15) = -0.8
    Epoch 6:                  a 0.6, b 0.5, c 0.3, d 0.4  -> ranks 4, 3, 1, 2
        d_i = 0, 0, -1, 1; sum d^2 = 2; rho = 1 - 6*2 / 60 = 0.8
    """
    epochs = [2, 6, 18]
    rows = (build.trial_rows("a", "simsiam", "completed", epochs, [0.1, 0.6, 0.9], {"lr": 0.1})
            + build.trial_rows("b", "simsiam", "completed", epochs, [0.2, 0.5, 0.8], {"lr": 0.2})
            + build.trial_rows("c", "simsiam", "completed", epochs, [0.4, 0.3, 0.7], {"lr": 0.3})
            + build.trial_rows("d", "simsiam", "completed", epochs, [0.3, 0.4, 0.6], {"lr": 0.4})
            + build.trial_rows("e", "simsiam", "stopped", [2], [0.95], {"lr": 0.5})
            + build.trial_rows("f", "simsiam", "failed", [2], [0.05], {"lr": 0.6}, error="boom"))
    return pd.DataFrame(rows)


def test_rungs_are_grace_period_times_powers_of_the_reduction_factor_below_max_epochs() -> None:
    assert rung_epochs(2, 3, 30) == [2, 6, 18]
    assert rung_epochs(1, 2, 9) == [1, 2, 4, 8]
    with pytest.raises(ValueError, match="reduction_factor is 1, but must be >= 2"):
        rung_epochs(1, 1, 9)


def test_rungs_come_from_the_manifests_search_config_or_none() -> None:
    search = {"grace_period": 2, "reduction_factor": 3, "max_epochs": 18}
    assert rungs_of([{"config": {"search": search}}]) == [2, 6]
    assert rungs_of([{"config": {"search": {"max_epochs": 18}}}]) is None
    other = {"config": {"search": {**search, "grace_period": 1}}}
    assert rungs_of([{"config": {"search": search}}, other]) is None


def test_rung_correlation_matches_the_hand_computed_spearman(build: SimpleNamespace,
                                                             one_row: Callable[..., pd.Series]) -> None:
    """rho = -0.8 at epoch 2 and 0.8 at epoch 6 over the 4 completed trials (see _slow_starters)."""
    table = rung_correlation(_slow_starters(build), [2, 6])
    assert list(table.columns) == ["method", "rung", "n_trials", "spearman"]
    first, second = one_row(table, method="simsiam", rung=2), one_row(table, method="simsiam", rung=6)
    assert first["n_trials"] == 4 and first["spearman"] == pytest.approx(-0.8)
    assert second["n_trials"] == 4 and second["spearman"] == pytest.approx(0.8)


def test_without_rungs_every_epoch_all_completed_trials_reported_before_the_end_is_used(
        build: SimpleNamespace) -> None:
    table = rung_correlation(_slow_starters(build), None)
    assert table["rung"].tolist() == [2, 6]


def test_a_low_first_rung_correlation_over_four_trials_is_warned_about(build: SimpleNamespace) -> None:
    warnings = rung_warnings(rung_correlation(_slow_starters(build), [2, 6]))
    assert len(warnings) == 1
    assert warnings[0].startswith("ASHA may be stopping simsiam's trials wrongly: ")
    assert "-0.80 over 4 completed trials" in warnings[0]


def test_three_trials_are_tabled_but_not_warned_about_and_two_are_skipped(build: SimpleNamespace) -> None:
    """Dropping d: 3 completed trials, epoch 2 ranks 1, 2, 3 vs final 3, 2, 1 -> rho = -1, no warning (n < 4);
    dropping c and d leaves 2 completed trials: the method is skipped silently."""
    df = _slow_starters(build)
    three = rung_correlation(df[df["trial_id"] != "d"], [2])
    assert three["spearman"].tolist() == [pytest.approx(-1.0)] and three["n_trials"].tolist() == [3]
    assert rung_warnings(three) == []
    assert rung_correlation(df[~df["trial_id"].isin(["c", "d"])], [2]).empty


def test_a_trial_missing_a_rung_is_left_out_of_that_rung(build: SimpleNamespace) -> None:
    """Rung 4 was never reported: n_trials 0 and no correlation."""
    table = rung_correlation(_slow_starters(build), [4])
    assert table["n_trials"].tolist() == [0] and math.isnan(table["spearman"].iloc[0])


def test_the_report_blocks_show_the_table_and_the_warning_line(build: SimpleNamespace) -> None:
    from sslsweep.analysis.contents import rung_blocks
    from sslsweep.analysis.sections import Paragraph, Table

    blocks = rung_blocks(rung_correlation(_slow_starters(build), [2, 6]))
    table = blocks[0]
    assert isinstance(table, Table) and [row[3] for row in table.rows] == ["-0.80", "+0.80"]
    assert any(isinstance(b, Paragraph) and b.text.startswith("ASHA may be stopping simsiam's") for b in blocks)
    assert rung_blocks(rung_correlation(_slow_starters(build), [2]).iloc[0:0]) == []
