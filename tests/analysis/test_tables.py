"""Tables: every expected value below is worked out by hand from the fixtures in conftest.py."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from sslsweep.analysis import tables


def _cell(df: pd.DataFrame, **where: object) -> pd.Series:
    mask = np.ones(len(df), dtype=bool)
    for key, value in where.items():
        mask &= (df[key] == value).to_numpy()
    hit = df[mask]
    assert len(hit) == 1, f"expected one row for {where}, got {len(hit)}"
    return hit.iloc[0]


# ----------------------------------------------------------------------------- headline


def test_headline_mean_and_ci_are_student_t_over_seeds(budget: pd.DataFrame) -> None:
    """simclr, 1%, linear: [0.5, 0.6, 0.7] -> 0.6 ± 0.2484, 3 seeds, 18 labels."""
    row = _cell(tables.headline_table(budget), method="simclr", budget=0.01, protocol="linear")
    assert row["mean"] == pytest.approx(0.6)
    assert row["ci"] == pytest.approx(0.2484, abs=1e-4)
    assert row["n_seeds"] == 3
    assert row["budget_label"] == "1% (18 labels)"


def test_headline_marks_the_highest_mean_as_best_in_each_budget_and_protocol(budget: pd.DataFrame) -> None:
    """simclr has the highest mean in every column of the fixture; nothing else is best."""
    head = tables.headline_table(budget)
    best = head[head["is_best"]]
    assert len(best) == 4  # 2 budgets x 2 protocols
    assert set(best["method"]) == {"simclr"}
    assert set(head["best_method"]) == {"simclr"}


def test_headline_marks_not_significantly_worse_with_a_paired_test(budget: pd.DataFrame) -> None:
    """10% linear: rotation [0.81, 0.80, 0.84] vs best [0.80, 0.82, 0.84] -> p = 0.74, not worse (†);
    none [0.70, 0.73, 0.73] -> p = 0.003, significantly worse; the best itself is not tested (None)."""
    head = tables.headline_table(budget)
    rot = _cell(head, method="rotation", budget=0.1, protocol="linear")
    none = _cell(head, method="none", budget=0.1, protocol="linear")
    best = _cell(head, method="simclr", budget=0.1, protocol="linear")
    assert rot["not_sig_worse"] is True and rot["p_vs_best"] == pytest.approx(0.7418, abs=1e-3)
    assert none["not_sig_worse"] is False and none["p_vs_best"] < 0.05
    assert best["not_sig_worse"] is None and best["is_best"]


def test_headline_cannot_claim_anything_with_fewer_than_two_paired_seeds(build: SimpleNamespace) -> None:
    """A method whose seeds do not overlap the best's is 'not testable' (None), never † or worse."""
    rows = (build.budget_rows("simclr", {(0.1, "linear"): [0.9, 0.91, 0.92]}, [0, 1, 2])
            + build.budget_rows("rotation", {(0.1, "linear"): [0.5, 0.51]}, [2, 7]))
    head = tables.headline_table(pd.DataFrame(rows))
    rot = _cell(head, method="rotation")
    assert rot["n_paired"] == 1
    assert rot["not_sig_worse"] is None
    assert math.isnan(rot["p_vs_best"])


def test_headline_single_seed_has_nan_ci(build: SimpleNamespace) -> None:
    """One seed: mean is the value, CI is NaN (shown as n/a)."""
    head = tables.headline_table(pd.DataFrame(build.budget_rows("simclr", {(1.0, "linear"): [0.7]}, [0])))
    assert head["mean"].iloc[0] == pytest.approx(0.7) and math.isnan(head["ci"].iloc[0])


def test_headline_marks_every_tied_method_as_best(build: SimpleNamespace) -> None:
    """Two methods with the same mean both get the best mark."""
    rows = (build.budget_rows("a", {(0.1, "linear"): [0.5, 0.7]}, [0, 1])
            + build.budget_rows("b", {(0.1, "linear"): [0.6, 0.6]}, [0, 1]))
    head = tables.headline_table(pd.DataFrame(rows))
    assert head["is_best"].all()


def test_headline_rejects_two_rows_for_one_method_seed_budget_protocol(build: SimpleNamespace) -> None:
    """A repeated seed would double-count it: ValueError naming the method and seed."""
    rows = build.budget_rows("simclr", {(0.1, "linear"): [0.5, 0.6]}, [3, 3])
    with pytest.raises(ValueError, match=r"method=simclr .*seed=3.*one row per method"):
        tables.headline_table(pd.DataFrame(rows))


def test_headline_rejects_a_budget_table_without_schema_columns() -> None:
    """A table missing test_acc is not a budget table: ValueError naming the column."""
    with pytest.raises(ValueError, match=r"budget table lacks column\(s\) \['test_acc'\]"):
        tables.headline_table(pd.DataFrame({c: [] for c in tables.BUDGET_REQUIRED if c != "test_acc"}))


@pytest.mark.parametrize(("kind", "budget", "n", "expected"), [
    ("fraction", 0.01, (18, 18), "1% (18 labels)"),
    ("fraction", 0.005, (9, 10), "0.5% (9-10 labels)"),
    ("fraction", 1.0, (None, None), "100%"),
    ("per_class", 5.0, (50, 50), "5/class (50 labels)"),
])
def test_budget_label_shows_fraction_or_per_class_with_label_count(
        kind: str, budget: float, n: tuple[int | None, int | None], expected: str) -> None:
    """Budgets read as a person would say them."""
    assert tables.budget_label(kind, budget, *n) == expected


# ----------------------------------------------------------------------------- comparisons


def test_paired_comparisons_cover_best_and_none_and_never_self(budget: pd.DataFrame) -> None:
    """Per column: rotation vs best, rotation vs none, simclr vs none, none vs best (4 rows)."""
    comp = tables.paired_comparisons(budget)
    col = comp[(comp["budget"] == 0.1) & (comp["protocol"] == "linear")]
    pairs = set(zip(col["method"], col["reference_method"]))
    assert pairs == {("rotation", "simclr"), ("rotation", "none"), ("simclr", "none"), ("none", "simclr")}
    assert (comp["method"] != comp["reference_method"]).all()
    assert set(comp["test"]) == {"two-sided paired Student t-test over seeds"}


def test_paired_comparison_difference_and_ci_are_over_paired_seeds(budget: pd.DataFrame) -> None:
    """10% linear none vs simclr: diffs [-0.10, -0.09, -0.11] -> mean -0.10, CI -0.10 ± t*0.01/sqrt(3)."""
    comp = tables.paired_comparisons(budget)
    row = _cell(comp, method="none", reference="best", budget=0.1, protocol="linear")
    half = 4.302652729911275 * 0.01 / math.sqrt(3)
    assert row["mean_diff"] == pytest.approx(-0.10)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((-0.10 - half, -0.10 + half))
    assert row["n_paired"] == 3


def test_gain_over_none_is_the_paired_mean_difference(budget: pd.DataFrame) -> None:
    """1% linear: simclr [0.5, 0.6, 0.7] - none [0.1, 0.2, 0.15] = [0.4, 0.4, 0.55] -> 0.45."""
    gain = tables.gain_over_none(budget)
    row = _cell(gain, method="simclr", budget=0.01, protocol="linear")
    assert row["gain"] == pytest.approx(0.45)
    assert "none" not in set(gain["method"])
    assert len(gain) == 8  # (simclr, rotation) x 2 budgets x 2 protocols


def test_gain_over_none_is_empty_without_the_baseline(budget: pd.DataFrame) -> None:
    """No 'none' rows -> no gains (and no error)."""
    assert tables.gain_over_none(budget[budget["method"] != "none"]).empty


# ----------------------------------------------------------------------------- search


def test_search_cost_counts_statuses_and_epochs_saved(trials: pd.DataFrame) -> None:
    """simclr: 6 trials (1 completed, 3 stopped, 1 failed, 1 diverged); 16 epochs trained. ASHA
    saved only what it cut from the stopped trials (8 + 6 + 8 of 9 epochs each): the failed and
    diverged trials ended on their own and count as no saving."""
    cost = tables.search_cost(trials, 9)
    row = _cell(cost, method="simclr")
    assert (row["trials"], row["completed"], row["stopped"], row["failed"], row["diverged"]) == (6, 1, 3, 1, 1)
    assert row["epochs_trained"] == 9 + 1 + 3 + 0 + 2 + 1
    assert row["epochs_saved"] == 8 + 6 + 8 and row["epochs_full"] == 16 + 22
    assert row["saved_frac"] == pytest.approx(22 / 38)


def test_search_cost_uses_max_epochs_per_sweep_when_combined(trials: pd.DataFrame) -> None:
    """A mapping sweep_id -> max_epochs is honoured; an unknown sweep leaves epochs_full NaN."""
    assert _cell(tables.search_cost(trials, {"sw1": 10}), method="simclr")["epochs_full"] == 16 + 9 + 7 + 9
    assert math.isnan(_cell(tables.search_cost(trials, {"other": 10}), method="simclr")["epochs_saved"])


def test_asha_stops_are_counted_at_the_largest_epoch_reached(trials: pd.DataFrame) -> None:
    """simclr: t2 and t6 stopped at epoch 1, t3 at epoch 3; rotation: r2 at epoch 3."""
    stops = tables.asha_stops(trials)
    got = {(m, e): n for m, e, n in stops[["method", "rung_epoch", "n_stopped"]].itertuples(index=False)}
    assert got == {("simclr", 1): 2, ("simclr", 3): 1, ("rotation", 3): 1}


def test_best_trial_is_chosen_among_completed_trials(trials: pd.DataFrame) -> None:
    """t3 has 0.85 but at epoch 3 (stopped); t1's 0.8 at the full 9 epochs is the best simclr trial."""
    best = tables.best_trials(trials, "max")
    row = _cell(best, method="simclr")
    assert row["trial_id"] == "t1" and row["metric"] == pytest.approx(0.8)
    assert row["pool"] == "completed trials"


def test_best_trial_follows_mode_min(build: SimpleNamespace) -> None:
    """With mode 'min' the lowest final metric wins."""
    df = pd.DataFrame(build.trial_rows("a", "m", "completed", [9], [0.3], {"lr": 0.1})
                      + build.trial_rows("b", "m", "completed", [9], [0.2], {"lr": 0.2}))
    assert _cell(tables.best_trials(df, "min"), method="m")["trial_id"] == "b"
    with pytest.raises(ValueError, match=r"mode is 'maximize': it must be 'max' or 'min'"):
        tables.best_trials(df, "maximize")


def test_best_trial_falls_back_to_stopped_trials_but_never_to_failed(build: SimpleNamespace) -> None:
    """No completed trial: the best stopped one is used (and said so); a diverged one never is."""
    df = pd.DataFrame(build.trial_rows("s", "m", "stopped", [1], [0.3], {"lr": 0.1})
                      + build.trial_rows("d", "m", "diverged", [1, 2], [0.9, None], {"lr": 0.9}))
    row = _cell(tables.best_trials(df, "max"), method="m")
    assert row["trial_id"] == "s" and "none completed" in row["pool"]


def test_best_hparams_lists_only_the_methods_own_hyperparameters(trials: pd.DataFrame) -> None:
    """rotation has no temperature: only lr is listed for it; simclr lists lr, temperature, batch_size."""
    hp = tables.best_hparams(trials, "max")
    assert hp[hp["method"] == "rotation"][["param", "value"]].values.tolist() == [["lr", 0.01]]
    simclr = dict(zip(hp[hp["method"] == "simclr"]["param"], hp[hp["method"] == "simclr"]["value"]))
    assert simclr == {"lr": 0.1, "temperature": 0.5, "batch_size": 128}


def test_best_so_far_accumulates_epoch_increments_in_row_order(trials: pd.DataFrame) -> None:
    """simclr rows: t1 at 1, 3, 9 (0.3, 0.5, 0.8), t2 at 1 (0.1), t3 at 1, 3 (0.6, 0.85), ..."""
    curve = tables.best_so_far(trials, "max")
    s = curve[curve["method"] == "simclr"]
    assert s["cum_epochs"].tolist()[:6] == [1, 3, 9, 10, 11, 13]
    assert s["best_metric"].tolist()[:6] == pytest.approx([0.3, 0.5, 0.8, 0.8, 0.8, 0.85])
    assert s["cum_epochs"].iloc[-1] == 16  # all epochs trained


def test_failures_list_failed_and_diverged_trials_with_their_error(trials: pd.DataFrame) -> None:
    """t4 failed (CUDA out of memory), t5 diverged (loss is nan); nothing else."""
    fails = tables.failures(trials)
    assert fails[["trial_id", "status", "error"]].values.tolist() == [
        ["t4", "failed", "CUDA out of memory"], ["t5", "diverged", "loss is nan at epoch 2"]]


def test_metric_vs_hparams_has_varying_params_and_marks_the_best(trials: pd.DataFrame) -> None:
    """simclr varies lr, temperature, batch_size; t4 (no metric) is left out; t1 is the best."""
    mvh = tables.metric_vs_hparams(trials, "max")
    simclr = mvh[mvh["method"] == "simclr"]
    assert set(simclr["param"]) == {"lr", "temperature", "batch_size"}
    assert "t4" not in set(simclr["trial_id"])
    assert set(simclr[simclr["is_best"]]["trial_id"]) == {"t1"}
    assert len(simclr[simclr["param"] == "lr"]) == 5


# ----------------------------------------------------------------------------- importance


def _importance_trials(build: SimpleNamespace, n: int = 12) -> pd.DataFrame:
    """n completed trials where the metric depends on lr only (wd is noise)."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        lr, wd = 10 ** rng.uniform(-3, 0), 10 ** rng.uniform(-6, -2)
        metric = 1.0 - abs(math.log10(lr) + 1.5) / 2
        rows += build.trial_rows(f"x{i}", "simclr", "completed", [9], [metric],
                                 {"lr": lr, "weight_decay": wd, "aug": "strong" if i % 2 else "weak"})
    return pd.DataFrame(rows)


def test_importance_from_trials_table_ranks_the_parameter_that_drives_the_metric(build: SimpleNamespace) -> None:
    """Metric = f(lr): lr must come out as the most important of lr, weight_decay, aug."""
    imp, notes = tables.param_importances(_importance_trials(build), "max")
    simclr = imp[imp["method"] == "simclr"].sort_values("importance", ascending=False)
    assert simclr["param"].iloc[0] == "lr"
    assert set(simclr["param"]) == {"lr", "weight_decay", "aug"}
    assert set(simclr["source"]) == {"trials table"}
    assert simclr["importance"].sum() == pytest.approx(1.0)
    assert "12 completed trials" in notes["simclr"]


def test_importance_is_skipped_with_a_note_when_too_few_trials_or_params(trials: pd.DataFrame,
                                                                           build: SimpleNamespace) -> None:
    """1 completed trial -> skipped; 2+ trials but one varying parameter -> skipped as trivial."""
    imp, notes = tables.param_importances(trials, "max")
    assert imp.empty and "1 completed trial(s), at least 2 are needed" in notes["simclr"]
    one = pd.DataFrame(build.trial_rows("a", "m", "completed", [9], [0.3], {"lr": 0.1, "wd": 0.1})
                       + build.trial_rows("b", "m", "completed", [9], [0.4], {"lr": 0.2, "wd": 0.1}))
    imp, notes = tables.param_importances(one, "max")
    assert imp.empty and "fewer than 2 hyperparameters vary" in notes["m"] and "lr" in notes["m"]


def test_infer_distribution_uses_log_scale_only_for_wide_positive_ranges() -> None:
    """lr over 1e-3..1 -> log; strength 0.25..1.5 -> linear; strings -> categorical."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    lr = tables.infer_distribution(pd.Series([1e-3, 0.1, 1.0]))
    strength = tables.infer_distribution(pd.Series([0.25, 1.5]))
    aug = tables.infer_distribution(pd.Series(["weak", "strong", "weak"]))
    assert isinstance(lr, FloatDistribution) and lr.log and (lr.low, lr.high) == (1e-3, 1.0)
    assert isinstance(strength, FloatDistribution) and not strength.log
    assert isinstance(aug, CategoricalDistribution) and set(aug.choices) == {"weak", "strong"}


def test_importance_prefers_the_journal_study_when_given(build: SimpleNamespace) -> None:
    """A study passed for a method is used (source 'optuna journal'), not the trials table."""
    import optuna
    from optuna.distributions import FloatDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for i in range(8):
        a, b = i / 8, (i * 3 % 8) / 8
        study.add_trial(optuna.trial.create_trial(
            params={"a": a, "b": b}, value=a,
            distributions={"a": FloatDistribution(0, 1), "b": FloatDistribution(0, 1)}))
    imp, notes = tables.param_importances(_importance_trials(build), "max", {"simclr": study})
    simclr = imp[imp["method"] == "simclr"]
    assert set(simclr["param"]) == {"a", "b"} and set(simclr["source"]) == {"optuna journal"}
    assert "8 completed trials of the Optuna journal study" in notes["simclr"]
    assert "only 8 trials: a rough indication" in notes["simclr"]


# ----------------------------------------------------------------------------- manifest


def test_cost_table_reports_wall_seconds_and_device_hours(build: SimpleNamespace) -> None:
    """simclr search: 7200 device-seconds = 2 device-hours; one row per method x phase."""
    cost = tables.cost_table([build.manifest()])
    row = _cell(cost, method="simclr", phase="search")
    assert row["wall_s"] == 1200.0 and row["device_h"] == pytest.approx(2.0)
    assert len(cost) == 4


def test_max_epochs_comes_from_config_search() -> None:
    """config.search.max_epochs is read; absent -> None."""
    assert tables.max_epochs_of({"config": {"search": {"max_epochs": 7}}}) == 7
    assert tables.max_epochs_of({"config": {}}) is None


def test_importance_falls_back_to_trials_when_the_journal_study_has_too_few_complete_trials(
        build: SimpleNamespace) -> None:
    """A journal study with only PRUNED trials (ASHA stops) cannot rank anything: the note says why
    and the completed trials of trials.parquet are used instead."""
    import optuna
    from optuna.distributions import FloatDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for i in range(3):
        study.add_trial(optuna.trial.create_trial(
            params={"a": i / 3}, distributions={"a": FloatDistribution(0, 1)},
            state=optuna.trial.TrialState.PRUNED, intermediate_values={1: 0.1 * i}))
    imp, notes = tables.param_importances(_importance_trials(build), "max", {"simclr": study})
    assert set(imp["source"]) == {"trials table"}
    assert "journal study unusable (0 completed trial(s)" in notes["simclr"]


def test_search_cost_of_a_method_without_pretraining_saves_nothing(build: SimpleNamespace) -> None:
    """`none` trains 0 epochs by design (one completed trial at epoch 0): it must not be credited
    with max_epochs saved by ASHA."""
    df = pd.DataFrame(build.trial_rows("n0", "none", "completed", [0], [0.7], {}))
    row = _cell(tables.search_cost(df, 9), method="none")
    assert (row["epochs_trained"], row["epochs_full"], row["epochs_saved"]) == (0, 0, 0)


def test_importance_is_skipped_when_every_completed_trial_scores_the_same(build: SimpleNamespace) -> None:
    """Equal metrics leave nothing to attribute: a note, not a fANOVA error or an equal split."""
    df = pd.DataFrame(build.trial_rows("a", "m", "completed", [9], [0.63], {"lr": 0.1, "wd": 0.1})
                      + build.trial_rows("b", "m", "completed", [9], [0.63], {"lr": 0.2, "wd": 0.2}))
    imp, notes = tables.param_importances(df, "max")
    assert imp.empty and notes["m"] == "skipped: all 2 completed trials have the same value: nothing to attribute"


def test_tied_best_trials_go_to_the_smallest_trial_id_in_report_and_sweep_alike(build: SimpleNamespace) -> None:
    """Two completed trials with the same final metric (it moves in steps of 1/n_val): the report's
    best trial and the one the sweep confirms are the same, the smallest trial id, whatever the row order."""
    from sslsweep.search.results import best_configs as confirmed

    rows = (build.trial_rows("t9", "m", "completed", [9], [0.8], {"lr": 0.1})
            + build.trial_rows("t2", "m", "completed", [9], [0.8], {"lr": 0.2})
            + build.trial_rows("t5", "m", "completed", [9], [0.7], {"lr": 0.3}))
    for order in (rows, rows[::-1]):
        df = pd.DataFrame(order)
        assert _cell(tables.best_trials(df, "max"), method="m")["trial_id"] == "t2"
        assert confirmed(df)["m"]["trial_id"] == "t2"
