"""Hyperparameter importance per method: fANOVA over completed trials (Hutter et al., ICML 2014,
"An Efficient Approach for Assessing Hyperparameter Importance", as Optuna implements it).

The method's Optuna study (read from its journal) is used when it can rank anything; otherwise
an in-memory study is built from the completed trials of ``trials.parquet``.

Example::

    table, notes = param_importances(trials, "max", sweep.studies)
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

from sslsweep.analysis.conventions import check_mode, method_order, param_name, varying_hp_columns
from sslsweep.analysis.trials import trial_summary

IMPORTANCE_EVALUATOR = "fANOVA (optuna FanovaImportanceEvaluator, seed 0)"
ROUGH_BELOW = 10


def param_importances(trials: pd.DataFrame, mode: str,
                      studies: Mapping[str, Any] | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """Hyperparameter importance per method (fANOVA over completed trials).

    Uses the method's Optuna study when given (``studies[method]``, from its journal); otherwise
    builds an in-memory study from the completed trials of ``trials``: one COMPLETE trial per
    trial with its final metric; numeric hyperparameters get a ``FloatDistribution`` over the
    observed range (log scale when all values are > 0 and max/min > 10), others a
    ``CategoricalDistribution``. Trials stopped by ASHA are left out: their score is at a
    partial budget.

    Returns the table (``method``, ``param``, ``importance``, ``source``) and a note per method
    explaining where importances came from or why they were skipped.
    """
    check_mode(mode)
    studies = studies or {}
    summary = trial_summary(trials)
    methods = method_order(list(summary["method"].dropna().astype(str)) + list(studies))
    rows: list[dict[str, Any]] = []
    notes: dict[str, str] = {}
    for method in methods:
        got, note = _importance_of(method, summary[summary["method"] == method], mode, studies.get(method))
        rows.extend(got)
        notes[method] = note
    return pd.DataFrame(rows, columns=["method", "param", "importance", "source"]), notes


def _importance_of(method: str, summary: pd.DataFrame, mode: str,
                   study: Any | None) -> tuple[list[dict[str, Any]], str]:
    journal_err = ""
    if study is not None:
        got, journal_err = _importance_from_study(study)
        if got is not None:
            n_done = len([t for t in study.trials if t.state.name == "COMPLETE"])
            return _rows(method, got, "optuna journal"), (f"from {n_done} completed trials of the Optuna "
                                                          f"journal study ({IMPORTANCE_EVALUATOR}){_rough(n_done)}")
    got, n, err = _importance_from_trials(summary, mode)
    if got is not None:
        prefix = f"journal study unusable ({journal_err}); " if journal_err else ""
        return _rows(method, got, "trials table"), (f"{prefix}from {n} completed trials in trials.parquet "
                                                    f"({IMPORTANCE_EVALUATOR}){_rough(n)}")
    if journal_err and journal_err != err:
        return [], f"skipped: Optuna journal: {journal_err}; trials.parquet: {err}"
    return [], f"skipped: {err}"


def _rough(n: int) -> str:
    """A caution for importances fitted on few trials."""
    return f"; only {n} trials: a rough indication" if n < ROUGH_BELOW else ""


def _importance_from_trials(summary: pd.DataFrame, mode: str) -> tuple[dict[str, float] | None, int, str]:
    """Importances from the completed trials of a trial summary, with the count used, or None
    and the reason they cannot be computed."""
    completed = summary[(summary["status"] == "completed") & summary["metric"].notna()]
    if len(completed) < 2:
        return None, len(completed), f"{len(completed)} completed trial(s), at least 2 are needed"
    cols = varying_hp_columns(completed)
    if len(cols) < 2:
        which = ", ".join(param_name(c) for c in cols) or "none"
        return None, len(completed), (f"fewer than 2 hyperparameters vary across completed trials "
                                      f"(varying: {which}); importance would be trivial")
    got, err = _importance_from_study(in_memory_study(completed, cols, mode))
    return got, len(completed), err


def _rows(method: str, importances: Mapping[str, float], source: str) -> list[dict[str, Any]]:
    return [{"method": method, "param": param_name(p), "importance": float(v), "source": source}
            for p, v in importances.items()]


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna without its INFO logs and warnings (restored afterwards)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def _importance_from_study(study: Any) -> tuple[dict[str, float] | None, str]:
    """fANOVA importances of a study's COMPLETE trials, or None and the reason they are unusable
    (fewer than 2 complete trials, or fewer than 2 parameters: optuna would return {} or a
    meaningless equal split)."""
    with _quiet_optuna():
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if len(complete) < 2:
            return None, f"{len(complete)} completed trial(s), at least 2 are needed"
        params = set.intersection(*(set(t.params) for t in complete))
        varying = [p for p in params if len({repr(t.params[p]) for t in complete}) > 1]
        if len(varying) < 2:
            which = ", ".join(sorted(varying)) or "none"
            return None, (f"fewer than 2 hyperparameters vary across completed trials (varying: {which}); "
                          f"importance would be trivial")
        if len({t.value for t in complete}) < 2:
            return None, f"all {len(complete)} completed trials have the same value: nothing to attribute"
        try:
            # optuna.importance loads scikit-learn (~0.8 s) on first access: only here, when it is used
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
            return dict(optuna.importance.get_param_importances(study, evaluator=evaluator)), ""
        except (ValueError, RuntimeError) as err:
            return None, f"{type(err).__name__}: {err}"


def infer_distribution(values: pd.Series) -> BaseDistribution:
    """Optuna distribution for observed hyperparameter values (see :func:`param_importances`)."""
    valid = values.dropna()
    if pd.api.types.is_numeric_dtype(valid) and not pd.api.types.is_bool_dtype(valid):
        low, high = float(valid.min()), float(valid.max())
        log = bool(low > 0 and high / low > 10)
        return FloatDistribution(low, high, log=log)
    return CategoricalDistribution(sorted({_choice(v) for v in valid}, key=str))


def _choice(value: Any) -> Any:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return value.item() if hasattr(value, "item") else value
    return str(value)


def in_memory_study(completed: pd.DataFrame, columns: Sequence[str], mode: str) -> optuna.Study:
    """An Optuna study holding one COMPLETE trial per row of ``completed`` (a trial summary)."""
    dists = {param_name(c): infer_distribution(completed[c]) for c in columns}
    with _quiet_optuna():
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for _, row in completed.iterrows():
        params = {}
        for c in columns:
            if pd.isna(row[c]):
                continue
            dist = dists[param_name(c)]
            params[param_name(c)] = float(row[c]) if isinstance(dist, FloatDistribution) else _choice(row[c])
        used = {p: dists[p] for p in params}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=used, value=float(row["metric"])))
    return study
