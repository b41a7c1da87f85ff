"""Tables of the search phase, from ``trials.parquet``: one row per trial, the best trial of each
method, ASHA's stops, the best-so-far curve, failures and metric against hyperparameters.

Every function is pure: DataFrames in, DataFrames out, nothing drawn or written. A trial's rows
are ordered by ``epoch`` and then by row order; its *final metric* is its last non-null
``metric`` and its *status* the status on its last row. Column meanings follow docs/schema.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sslsweep.analysis.conventions import (
    FAILED_STATUSES,
    check_mode,
    hp_columns,
    method_order,
    param_name,
    require_columns,
    trial_keys,
    varying_hp_columns,
)
from sslsweep.schema import HP_PREFIX

TRIALS_REQUIRED = ("method", "trial_id", "epoch", "metric", "status")


def trial_summary(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per trial, in order of first appearance.

    Columns: the trial key (``sweep_id``, ``trial_id``), ``method``, ``seed``, ``order``,
    ``status`` (last row), ``error`` (last non-null), ``max_epoch``, ``metric`` (final, last
    non-null), ``metric_epoch`` (epoch of that metric) and every ``hp_*`` column (first non-null).
    """
    require_columns(trials, TRIALS_REQUIRED, "trials table")
    keys = trial_keys(trials)
    hps = [c for c in trials.columns if c.startswith(HP_PREFIX)]
    out_cols = keys + ["method", "seed", "order", "status", "error", "max_epoch", "metric",
                       "metric_epoch"] + hps
    if trials.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in out_cols})
    df = trials.reset_index(drop=True).assign(_row=np.arange(len(trials)))
    # _g numbers trials in order of first appearance; rows sorted by epoch within each trial.
    df["_g"] = df.groupby(keys, sort=False, dropna=False).ngroup()
    df = df.sort_values(["_g", "epoch", "_row"], kind="stable")
    by = df.groupby("_g", sort=True)
    last = by.tail(1).set_index("_g")
    out = last[keys + ["method"]].copy()
    out["seed"] = last["seed"] if "seed" in df.columns else None
    out["order"] = by["_row"].min()
    out["status"] = last["status"].fillna("unknown").astype(str)
    out["error"] = df.dropna(subset=["error"]).groupby("_g")["error"].last() if "error" in df.columns else None
    out["max_epoch"] = by["epoch"].max().fillna(0).astype("int64")
    reported = df[df["metric"].notna()].groupby("_g")
    out["metric"] = reported["metric"].last().astype(float)
    out["metric_epoch"] = reported["epoch"].last().astype("Int64")
    for c in hps:
        out[c] = by[c].first()  # first non-null value of the trial
    out["error"] = out["error"].astype(object).where(out["error"].notna(), None)
    return out.reset_index(drop=True)[out_cols]


def best_trials(trials: pd.DataFrame, mode: str) -> pd.DataFrame:
    """The best trial of each method by final ``metric`` (``mode`` from the manifest).

    The best is chosen among *completed* trials (their metric is at the full epoch budget); a
    method with no completed trial falls back to all trials with a metric (``pool`` says which).
    Failed and diverged trials are never chosen. Columns: the trial summary's, plus ``pool``.
    The sweep confirms the trials this picks (:func:`sslsweep.search.results.best_configs`).
    """
    check_mode(mode)
    summary = trial_summary(trials)
    rows = []
    for method in method_order(summary["method"].dropna().astype(str).tolist()):
        row = _best_of_method(summary[summary["method"] == method], mode)
        if row is not None:
            rows.append(row)
    cols = list(summary.columns) + ["pool"]
    return pd.DataFrame(rows, columns=cols).reset_index(drop=True)


def _best_of_method(summary: pd.DataFrame, mode: str) -> dict[str, Any] | None:
    usable = summary[summary["metric"].notna() & ~summary["status"].isin(FAILED_STATUSES)]
    completed = usable[usable["status"] == "completed"]
    pool, name = (completed, "completed trials") if len(completed) else (usable, "all trials (none completed)")
    if pool.empty:
        return None
    # a tie goes to the smallest trial id, as in the sweep's choice of what to confirm
    row = pool.sort_values(["metric", "trial_id"], ascending=[mode == "min", True], kind="stable").iloc[0].to_dict()
    row["pool"] = name
    return row


def best_hparams(trials: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Best trial per method with its hyperparameters as a long table.

    Columns: ``method``, ``trial_id``, ``metric``, ``status``, ``pool``, ``param`` (without the
    ``hp_`` prefix) and ``value``; one row per hyperparameter that has a value for that trial.
    """
    best = best_trials(trials, mode)
    rows = []
    for _, b in best.iterrows():
        for col in hp_columns(best[best["method"] == b["method"]]):
            if not pd.isna(b[col]):
                rows.append({"method": b["method"], "trial_id": b["trial_id"], "metric": b["metric"],
                             "status": b["status"], "pool": b["pool"], "param": param_name(col),
                             "value": b[col]})
    return pd.DataFrame(rows, columns=["method", "trial_id", "metric", "status", "pool", "param", "value"])


def asha_stops(trials: pd.DataFrame) -> pd.DataFrame:
    """How many trials ASHA stopped at each rung, per method.

    The rung of a stopped trial is the largest epoch it reached. Columns: ``method``,
    ``rung_epoch``, ``n_stopped``; sorted by method then rung.
    """
    summary = trial_summary(trials)
    stopped = summary[summary["status"] == "stopped"]
    if stopped.empty:
        return pd.DataFrame({"method": pd.Series(dtype="object"), "rung_epoch": pd.Series(dtype="int64"),
                             "n_stopped": pd.Series(dtype="int64")})
    counts = stopped.groupby(["method", "max_epoch"]).size().reset_index(name="n_stopped")
    counts = counts.rename(columns={"max_epoch": "rung_epoch"})
    counts["rung_epoch"] = counts["rung_epoch"].astype("int64")
    order = {m: i for i, m in enumerate(method_order(counts["method"].astype(str).tolist()))}
    counts = counts.assign(_o=counts["method"].map(order)).sort_values(["_o", "rung_epoch"])
    return counts.drop(columns="_o").reset_index(drop=True)


def best_so_far(trials: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Best metric seen so far against cumulative epochs spent, per method.

    Rows are taken in table order (the order results were written); each row adds the epochs
    its trial trained since its previous report (``epoch - previous epoch``, never negative).
    Columns: ``method``, ``cum_epochs``, ``best_metric``, ``trial_id``; rows before the first
    metric have ``best_metric`` NaN.
    """
    check_mode(mode)
    require_columns(trials, TRIALS_REQUIRED, "trials table")
    keys = trial_keys(trials)
    df = trials.reset_index(drop=True)
    prev = df.groupby(keys, sort=False, dropna=False)["epoch"].shift(1).fillna(0)
    df = df.assign(_inc=(df["epoch"].astype(float) - prev.astype(float)).clip(lower=0))
    parts = []
    for method in method_order(df["method"].dropna().astype(str).tolist()):
        g = df[df["method"] == method]
        metric = g["metric"].astype(float)
        best = metric.cummax() if mode == "max" else metric.cummin()
        parts.append(pd.DataFrame({"method": method, "cum_epochs": g["_inc"].cumsum().to_numpy(),
                                   "best_metric": best.ffill().to_numpy(),
                                   "trial_id": g["trial_id"].to_numpy()}))
    if not parts:
        return pd.DataFrame(columns=["method", "cum_epochs", "best_metric", "trial_id"])
    return pd.concat(parts, ignore_index=True)


def failures(trials: pd.DataFrame) -> pd.DataFrame:
    """Failed and diverged trials with their error: ``method``, ``trial_id``, ``seed``,
    ``status``, ``max_epoch``, ``error`` (plus ``sweep_id`` when present)."""
    summary = trial_summary(trials)
    bad = summary[summary["status"].isin(FAILED_STATUSES)]
    cols = [c for c in ("sweep_id", "method", "trial_id", "seed", "status", "max_epoch", "error")
            if c in bad.columns]
    return bad[cols].reset_index(drop=True)


def metric_vs_hparams(trials: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Final metric of every trial against each hyperparameter that varies within its method.

    Long format for scatter plots. Columns: ``method``, ``trial_id``, ``param`` (without
    ``hp_``), ``value``, ``metric``, ``status``, ``is_best`` (the trial :func:`best_trials` picks).
    Trials without a metric are left out.
    """
    summary = trial_summary(trials)
    best = best_trials(trials, mode)
    keys = trial_keys(summary)
    best_keys = {tuple(r[k] for k in keys) for _, r in best.iterrows()}
    rows = []
    for method in method_order(summary["method"].dropna().astype(str).tolist()):
        g = summary[(summary["method"] == method) & summary["metric"].notna()]
        for col in varying_hp_columns(g):
            for _, r in g[g[col].notna()].iterrows():
                rows.append({"method": method, "trial_id": r["trial_id"], "param": param_name(col),
                             "value": r[col], "metric": r["metric"], "status": r["status"],
                             "is_best": tuple(r[k] for k in keys) in best_keys})
    return pd.DataFrame(rows, columns=["method", "trial_id", "param", "value", "metric", "status", "is_best"])
