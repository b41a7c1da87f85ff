"""Is ASHA's early signal trustworthy? Rank correlation between each rung's metric and the final one.

ASHA (Li et al., MLSys 2020) stops a trial at a rung when its metric there ranks in the bottom
``1 - 1/reduction_factor`` of the trials that reached the rung. That is only sound when the order
of trials at the rung predicts their order at the end. Methods that start slowly (SimSiam, say)
break this: a configuration that will end best may look poor at epoch 2. Over the trials that
ran to the end (*completed*), the Spearman rank correlation between the metric at each rung and
the final metric measures how well the rung predicted the outcome. Only completed trials can be
used: a stopped trial has no final metric. They are the survivors, so the correlation is measured
among trials ASHA already kept, and a low value is a warning, not a proof.

Every function is pure: DataFrames in, DataFrames out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from sslsweep.analysis.conventions import method_order, require_columns, trial_keys
from sslsweep.analysis.trials import TRIALS_REQUIRED, trial_summary

MIN_TRIALS = 3  # fewer completed trials than this: no correlation is reported for the method
WARN_BELOW = 0.5  # a first-rung correlation below this ...
WARN_MIN_TRIALS = 4  # ... over at least this many completed trials is warned about
RUNG_COLUMNS = ["method", "rung", "n_trials", "spearman"]


def rung_epochs(grace_period: int, reduction_factor: float, max_epochs: int) -> list[int]:
    """The epochs at which ASHA compares trials: ``grace_period * reduction_factor**i`` below ``max_epochs``.

    Example: ``rung_epochs(2, 3, 30)`` is ``[2, 6, 18]`` (54 is past the budget; a trial at 30 is done).
    """
    if grace_period < 1:
        raise ValueError(f"grace_period is {grace_period}, but must be >= 1")
    if reduction_factor < 2:
        raise ValueError(f"reduction_factor is {reduction_factor}, but must be >= 2")
    rungs, epoch = [], float(grace_period)
    while epoch < max_epochs:
        rungs.append(int(round(epoch)))
        epoch *= reduction_factor
    return rungs


def rungs_of(manifests: Sequence[Mapping[str, Any]]) -> list[int] | None:
    """The rungs from the manifests' ``config.search`` (``grace_period``, ``reduction_factor``,
    ``max_epochs``); None when any is missing or the manifests disagree."""
    found = set()
    for manifest in manifests:
        search = (manifest.get("config") or {}).get("search") or {}
        values = [search.get(k) for k in ("grace_period", "reduction_factor", "max_epochs")]
        if any(v is None for v in values):
            return None
        found.add(tuple(rung_epochs(int(values[0]), float(values[1]), int(values[2]))))
    return list(found.pop()) if len(found) == 1 else None


def rung_correlation(trials: pd.DataFrame, rungs: Sequence[int] | None) -> pd.DataFrame:
    """Per method and rung, Spearman's rho between the metric at the rung and the final metric.

    Only completed trials with a final metric count; a method with fewer than ``MIN_TRIALS`` of
    them is left out. ``rungs`` are the epochs ASHA compared at (:func:`rungs_of`); None uses every
    epoch before the end at which all the method's completed trials reported a metric. A trial
    that reported nothing at a rung is left out of that rung (``n_trials`` counts the rest), and
    ``spearman`` is NaN when fewer than 3 remain or either side has no spread.
    Columns: ``method``, ``rung``, ``n_trials``, ``spearman``.
    """
    require_columns(trials, TRIALS_REQUIRED, "trials table")
    summary = trial_summary(trials)
    done = summary[(summary["status"] == "completed") & summary["metric"].notna()]
    keys = trial_keys(trials)
    reported = trials[trials["metric"].notna()]
    rows = []
    for method in method_order(done["method"].dropna().astype(str).tolist()):
        final = done[done["method"] == method].set_index(keys)["metric"].astype(float)
        if len(final) < MIN_TRIALS:
            continue
        # metric of each completed trial at each epoch (the last one reported at that epoch)
        at = (reported[reported["method"] == method].groupby(keys + ["epoch"], sort=False)["metric"].last()
              .astype(float).unstack("epoch"))
        at = at.reindex(final.index)
        last_epoch = int(done[done["method"] == method]["metric_epoch"].min())
        epochs = [int(e) for e in rungs] if rungs is not None else \
            [int(e) for e in at.columns if at[e].notna().all()]
        for epoch in sorted(e for e in epochs if e < last_epoch):
            x = at[epoch] if epoch in at.columns else pd.Series(np.nan, index=final.index)
            ok = x.notna()
            rows.append({"method": method, "rung": epoch, "n_trials": int(ok.sum()),
                         "spearman": _spearman(x[ok].to_numpy(float), final[ok].to_numpy(float))})
    return pd.DataFrame(rows, columns=RUNG_COLUMNS).astype({"rung": "int64", "n_trials": "int64"})


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < MIN_TRIALS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(sps.spearmanr(x, y).statistic)


def rung_warnings(table: pd.DataFrame) -> list[str]:
    """One line per method whose first rung's correlation is below ``WARN_BELOW`` over at least
    ``WARN_MIN_TRIALS`` completed trials."""
    out = []
    for method in method_order(table["method"].astype(str).tolist()):
        first = table[table["method"] == method].sort_values("rung").iloc[0]
        rho, n = float(first["spearman"]), int(first["n_trials"])
        if n >= WARN_MIN_TRIALS and math.isfinite(rho) and rho < WARN_BELOW:
            out.append(f"ASHA may be stopping {method}'s trials wrongly: at its first rung (epoch "
                       f"{int(first['rung'])}) the metric's rank correlation with the final metric is "
                       f"{rho:.2f} over {n} completed trials (below {WARN_BELOW:g}), so the trials it "
                       f"stops there may include ones that would have ended best. Consider a larger "
                       f"search.grace_period.")
    return out
