"""Search-phase tables: every expected value below is worked out by hand from the fixtures in conftest.py."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import pandas as pd
import pytest

from sslsweep.analysis.trials import (
    asha_stops,
    best_hparams,
    best_so_far,
    best_trials,
    failures,
    metric_vs_hparams,
)
from sslsweep.search.results import best_configs as confirmed


def test_asha_stops_are_counted_at_the_largest_epoch_reached(trials: pd.DataFrame) -> None:
    """simclr: t2 and t6 stopped at epoch 1, t3 at epoch 3; rotation: r2 at epoch 3."""
    stops = asha_stops(trials)
    got = {(m, e): n for m, e, n in stops[["method", "rung_epoch", "n_stopped"]].itertuples(index=False)}
    assert got == {("simclr", 1): 2, ("simclr", 3): 1, ("rotation", 3): 1}


def test_best_trial_is_chosen_among_completed_trials(trials: pd.DataFrame,
                                                     one_row: Callable[..., pd.Series]) -> None:
    """t3 has 0.85 but at epoch 3 (stopped); t1's 0.8 at the full 9 epochs is the best simclr trial."""
    best = best_trials(trials, "max")
    row = one_row(best, method="simclr")
    assert row["trial_id"] == "t1" and row["metric"] == pytest.approx(0.8)
    assert row["pool"] == "completed trials"


def test_best_trial_follows_mode_min(build: SimpleNamespace, one_row: Callable[..., pd.Series]) -> None:
    """With mode 'min' the lowest final metric wins."""
    df = pd.DataFrame(build.trial_rows("a", "m", "completed", [9], [0.3], {"lr": 0.1})
                      + build.trial_rows("b", "m", "completed", [9], [0.2], {"lr": 0.2}))
    assert one_row(best_trials(df, "min"), method="m")["trial_id"] == "b"
    with pytest.raises(ValueError, match=r"mode is 'maximize': it must be 'max' or 'min'"):
        best_trials(df, "maximize")


def test_best_trial_falls_back_to_stopped_trials_but_never_to_failed(build: SimpleNamespace,
                                                                     one_row: Callable[..., pd.Series]) -> None:
    """No completed trial: the best stopped one is used (and said so); a diverged one never is."""
    df = pd.DataFrame(build.trial_rows("s", "m", "stopped", [1], [0.3], {"lr": 0.1})
                      + build.trial_rows("d", "m", "diverged", [1, 2], [0.9, None], {"lr": 0.9}))
    row = one_row(best_trials(df, "max"), method="m")
    assert row["trial_id"] == "s" and "none completed" in row["pool"]


def test_best_hparams_lists_only_the_methods_own_hyperparameters(trials: pd.DataFrame) -> None:
    """rotation has no temperature: only lr is listed for it; simclr lists lr, temperature, batch_size."""
    hp = best_hparams(trials, "max")
    assert hp[hp["method"] == "rotation"][["param", "value"]].values.tolist() == [["lr", 0.01]]
    simclr = dict(zip(hp[hp["method"] == "simclr"]["param"], hp[hp["method"] == "simclr"]["value"]))
    assert simclr == {"lr": 0.1, "temperature": 0.5, "batch_size": 128}


def test_best_so_far_accumulates_epoch_increments_in_row_order(trials: pd.DataFrame) -> None:
    """simclr rows: t1 at 1, 3, 9 (0.3, 0.5, 0.8), t2 at 1 (0.1), t3 at 1, 3 (0.6, 0.85), ..."""
    curve = best_so_far(trials, "max")
    s = curve[curve["method"] == "simclr"]
    assert s["cum_epochs"].tolist()[:6] == [1, 3, 9, 10, 11, 13]
    assert s["best_metric"].tolist()[:6] == pytest.approx([0.3, 0.5, 0.8, 0.8, 0.8, 0.85])
    assert s["cum_epochs"].iloc[-1] == 16  # all epochs trained


def test_failures_list_failed_and_diverged_trials_with_their_error(trials: pd.DataFrame) -> None:
    """t4 failed (CUDA out of memory), t5 diverged (loss is nan); nothing else."""
    fails = failures(trials)
    assert fails[["trial_id", "status", "error"]].values.tolist() == [
        ["t4", "failed", "CUDA out of memory"], ["t5", "diverged", "loss is nan at epoch 2"]]


def test_metric_vs_hparams_has_varying_params_and_marks_the_best(trials: pd.DataFrame) -> None:
    """simclr varies lr, temperature, batch_size; t4 (no metric) is left out; t1 is the best."""
    mvh = metric_vs_hparams(trials, "max")
    simclr = mvh[mvh["method"] == "simclr"]
    assert set(simclr["param"]) == {"lr", "temperature", "batch_size"}
    assert "t4" not in set(simclr["trial_id"])
    assert set(simclr[simclr["is_best"]]["trial_id"]) == {"t1"}
    assert len(simclr[simclr["param"] == "lr"]) == 5


def test_tied_best_trials_go_to_the_smallest_trial_id_in_report_and_sweep_alike(
        build: SimpleNamespace, one_row: Callable[..., pd.Series]) -> None:
    """Two completed trials with the same final metric (it moves in steps of 1/n_val): the report's
    best trial and the one the sweep confirms are the same, the smallest trial id, whatever the row order."""
    rows = (build.trial_rows("t9", "m", "completed", [9], [0.8], {"lr": 0.1})
            + build.trial_rows("t2", "m", "completed", [9], [0.8], {"lr": 0.2})
            + build.trial_rows("t5", "m", "completed", [9], [0.7], {"lr": 0.3}))
    for order in (rows, rows[::-1]):
        df = pd.DataFrame(order)
        assert one_row(best_trials(df, "max"), method="m")["trial_id"] == "t2"
        assert confirmed(df)["m"]["trial_id"] == "t2"
