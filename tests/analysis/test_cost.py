"""Search cost (epochs, ASHA savings) and time per phase: values worked out by hand from conftest.py."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace

import pandas as pd
import pytest

from sslsweep.analysis.cost import cost_table, max_epochs_of, search_cost


def test_search_cost_counts_statuses_and_epochs_saved(trials: pd.DataFrame,
                                                      one_row: Callable[..., pd.Series]) -> None:
    """simclr: 6 trials (1 completed, 3 stopped, 1 failed, 1 diverged); 16 epochs trained. ASHA
    saved only what it cut from the stopped trials (8 + 6 + 8 of 9 epochs each): the failed and
    diverged trials ended on their own and count as no saving."""
    cost = search_cost(trials, 9)
    row = one_row(cost, method="simclr")
    assert (row["trials"], row["completed"], row["stopped"], row["failed"], row["diverged"]) == (6, 1, 3, 1, 1)
    assert row["epochs_trained"] == 9 + 1 + 3 + 0 + 2 + 1
    assert row["epochs_saved"] == 8 + 6 + 8 and row["epochs_full"] == 16 + 22
    assert row["saved_frac"] == pytest.approx(22 / 38)


def test_search_cost_uses_max_epochs_per_sweep_when_combined(trials: pd.DataFrame,
                                                             one_row: Callable[..., pd.Series]) -> None:
    """A mapping sweep_id -> max_epochs is honoured; an unknown sweep leaves epochs_full NaN."""
    assert one_row(search_cost(trials, {"sw1": 10}), method="simclr")["epochs_full"] == 16 + 9 + 7 + 9
    assert math.isnan(one_row(search_cost(trials, {"other": 10}), method="simclr")["epochs_saved"])


def test_cost_table_reports_wall_seconds_and_device_hours(build: SimpleNamespace,
                                                          one_row: Callable[..., pd.Series]) -> None:
    """simclr search: 7200 device-seconds = 2 device-hours; one row per method x phase."""
    cost = cost_table([build.manifest()])
    row = one_row(cost, method="simclr", phase="search")
    assert row["wall_s"] == 1200.0 and row["device_h"] == pytest.approx(2.0)
    assert len(cost) == 4


def test_max_epochs_comes_from_config_search() -> None:
    """config.search.max_epochs is read; absent -> None."""
    assert max_epochs_of({"config": {"search": {"max_epochs": 7}}}) == 7
    assert max_epochs_of({"config": {}}) is None


def test_search_cost_of_a_method_without_pretraining_saves_nothing(build: SimpleNamespace,
                                                                   one_row: Callable[..., pd.Series]) -> None:
    """`none` trains 0 epochs by design (one completed trial at epoch 0): it must not be credited
    with max_epochs saved by ASHA."""
    df = pd.DataFrame(build.trial_rows("n0", "none", "completed", [0], [0.7], {}))
    row = one_row(search_cost(df, 9), method="none")
    assert (row["epochs_trained"], row["epochs_full"], row["epochs_saved"]) == (0, 0, 0)
