"""Hyperparameter importance (fANOVA): from the journal study when usable, else from trials.parquet."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from sslsweep.analysis.importance import infer_distribution, param_importances


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
    imp, notes = param_importances(_importance_trials(build), "max")
    simclr = imp[imp["method"] == "simclr"].sort_values("importance", ascending=False)
    assert simclr["param"].iloc[0] == "lr"
    assert set(simclr["param"]) == {"lr", "weight_decay", "aug"}
    assert set(simclr["source"]) == {"trials table"}
    assert simclr["importance"].sum() == pytest.approx(1.0)
    assert "12 completed trials" in notes["simclr"]


def test_importance_is_skipped_with_a_note_when_too_few_trials_or_params(trials: pd.DataFrame,
                                                                           build: SimpleNamespace) -> None:
    """1 completed trial -> skipped; 2+ trials but one varying parameter -> skipped as trivial."""
    imp, notes = param_importances(trials, "max")
    assert imp.empty and "1 completed trial(s), at least 2 are needed" in notes["simclr"]
    one = pd.DataFrame(build.trial_rows("a", "m", "completed", [9], [0.3], {"lr": 0.1, "wd": 0.1})
                       + build.trial_rows("b", "m", "completed", [9], [0.4], {"lr": 0.2, "wd": 0.1}))
    imp, notes = param_importances(one, "max")
    assert imp.empty and "fewer than 2 hyperparameters vary" in notes["m"] and "lr" in notes["m"]


def test_infer_distribution_uses_log_scale_only_for_wide_positive_ranges() -> None:
    """lr over 1e-3..1 -> log; strength 0.25..1.5 -> linear; strings -> categorical."""
    lr = infer_distribution(pd.Series([1e-3, 0.1, 1.0]))
    strength = infer_distribution(pd.Series([0.25, 1.5]))
    aug = infer_distribution(pd.Series(["weak", "strong", "weak"]))
    assert isinstance(lr, FloatDistribution) and lr.log and (lr.low, lr.high) == (1e-3, 1.0)
    assert isinstance(strength, FloatDistribution) and not strength.log
    assert isinstance(aug, CategoricalDistribution) and set(aug.choices) == {"weak", "strong"}


def test_importance_prefers_the_journal_study_when_given(build: SimpleNamespace) -> None:
    """A study passed for a method is used (source 'optuna journal'), not the trials table."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for i in range(8):
        a, b = i / 8, (i * 3 % 8) / 8
        study.add_trial(optuna.trial.create_trial(
            params={"a": a, "b": b}, value=a,
            distributions={"a": FloatDistribution(0, 1), "b": FloatDistribution(0, 1)}))
    imp, notes = param_importances(_importance_trials(build), "max", {"simclr": study})
    simclr = imp[imp["method"] == "simclr"]
    assert set(simclr["param"]) == {"a", "b"} and set(simclr["source"]) == {"optuna journal"}
    assert "8 completed trials of the Optuna journal study" in notes["simclr"]
    assert "only 8 trials: a rough indication" in notes["simclr"]


def test_importance_falls_back_to_trials_when_the_journal_study_has_too_few_complete_trials(
        build: SimpleNamespace) -> None:
    """A journal study with only PRUNED trials (ASHA stops) cannot rank anything: the note says why
    and the completed trials of trials.parquet are used instead."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for i in range(3):
        study.add_trial(optuna.trial.create_trial(
            params={"a": i / 3}, distributions={"a": FloatDistribution(0, 1)},
            state=optuna.trial.TrialState.PRUNED, intermediate_values={1: 0.1 * i}))
    imp, notes = param_importances(_importance_trials(build), "max", {"simclr": study})
    assert set(imp["source"]) == {"trials table"}
    assert "journal study unusable (0 completed trial(s)" in notes["simclr"]


def test_importance_is_skipped_when_every_completed_trial_scores_the_same(build: SimpleNamespace) -> None:
    """Equal metrics leave nothing to attribute: a note, not a fANOVA error or an equal split."""
    df = pd.DataFrame(build.trial_rows("a", "m", "completed", [9], [0.63], {"lr": 0.1, "wd": 0.1})
                      + build.trial_rows("b", "m", "completed", [9], [0.63], {"lr": 0.2, "wd": 0.2}))
    imp, notes = param_importances(df, "max")
    assert imp.empty and notes["m"] == "skipped: all 2 completed trials have the same value: nothing to attribute"
