"""Ray Tune results -> the Parquet tables of docs/schema.md (pyarrow, explicit schemas)."""

from __future__ import annotations

import json
import math
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa

from sslsweep.analysis.trials import best_trials
from sslsweep.schema import (BUDGET_COLUMNS, HP_PREFIX, SCORE_PREFIX, SELECTION_DEFAULT, TRIAL_COLUMNS, TRIAL_KEYS,
                             budget_label, hp_column)

def outcome(result: dict[str, Any] | None, error: bool, max_epochs: int) -> str:
    """How a trial ended, from its last result: completed, stopped (early, by the scheduler),
    diverged (NaN/inf loss) or failed (error, out of memory, no result)."""
    if error or not result:
        return "failed"
    if result.get("diverged"):
        return "diverged"
    if result.get("error"):
        return "failed"
    if int(result.get("epoch", 0)) >= max_epochs or result.get("epoch", 0) == 0:
        return "completed"
    return "stopped"


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _hp_type(values: list[Any]) -> pa.DataType:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.float64()
    return pa.string()


def trial_rows(sweep_id: str, metric: str, max_epochs: int, results: Iterable[Any]) -> list[dict[str, Any]]:
    """One row per reported result of every trial in Ray Tune ``Result`` objects.

    Rows are de-duplicated on (trial, epoch), keeping the last report: a trial restored from a
    checkpoint may report an epoch it had reported before it was killed."""
    rows: list[dict[str, Any]] = []
    for res in results:
        config = dict(res.config or {})
        last = res.metrics or {}
        status = outcome(last, res.error is not None, max_epochs)
        error = str(res.error).strip().splitlines()[-1] if res.error is not None else (last.get("error") or None)
        trial_id = str(last.get("trial_id") or (res.path or "").rstrip("/").rsplit("/", 1)[-1])
        hps = {hp_column(k): v for k, v in config.items() if k not in TRIAL_KEYS}
        base = dict(sweep_id=sweep_id, method=str(config.get("method")), trial_id=trial_id,
                    seed=int(config.get("seed", 0)), status=status, error=error, **hps)
        df = res.metrics_dataframe
        reports = [] if df is None or df.empty else df.to_dict("records")
        if not reports:
            rows.append(base | dict(epoch=0, metric=None, node_id=None))
            continue
        by_epoch: dict[int, dict[str, Any]] = {}
        for r in reports:  # results re-sent from a checkpoint after a restart fill gaps in Ray's log
            if isinstance(r.get("history"), str):
                for h in json.loads(r["history"]):
                    by_epoch.setdefault(int(h.get("epoch", 0)), h)
        for r in reports:
            by_epoch[int(r.get("epoch", 0))] = r
        for epoch, r in sorted(by_epoch.items()):
            diverged_row = bool(r.get("diverged")) or bool(r.get("error"))
            scores = {k: None if diverged_row else _finite(v) for k, v in r.items() if k.startswith(SCORE_PREFIX)}
            rows.append(base | scores | dict(
                epoch=epoch, metric=None if diverged_row else _finite(r.get(metric)),
                pretext_loss=_finite(r.get("pretext_loss")), pretext_acc=_finite(r.get("pretext_acc")),
                wall_time_s=_finite(r.get("trial_wall_s")), epoch_time_s=_finite(r.get("epoch_time_s")),
                throughput=_finite(r.get("throughput")), node_id=r.get("node_id")))
    return rows


def trials_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows -> a table with the fixed columns first, then one float ``score_*`` column per selection
    signal the trials reported, then one ``hp_*`` column per hyperparameter."""
    hp_cols = sorted({k for r in rows for k in r if k.startswith(HP_PREFIX)})
    score_cols = sorted({k for r in rows for k in r if k.startswith(SCORE_PREFIX)})
    fields = [pa.field(k, t) for k, t in TRIAL_COLUMNS.items()] + [pa.field(c, pa.float64()) for c in score_cols]
    for c in hp_cols:
        values = [r.get(c) for r in rows]
        t = _hp_type(values)
        fields.append(pa.field(c, t))
    schema = pa.schema(fields)
    cols = {}
    for f in schema:
        values = [r.get(f.name) for r in rows]
        if f.type == pa.string():
            values = [None if v is None else str(v) for v in values]
        elif f.type == pa.float64():
            values = [None if v is None else float(v) for v in values]
        cols[f.name] = pa.array(values, type=f.type)
    return pa.table(cols, schema=schema)


def budget_rows(sweep_id: str, results: Iterable[Any], rule: str) -> list[dict[str, Any]]:
    """The confirm trials' evaluation rows (reported as JSON in their last result); a row that
    names no label ``selection`` is a ``random`` one.

    A run's ``budgets`` key maps each budget it evaluates to the selection rules that chose its
    configuration there: the row is written once per rule (``chosen_by``). A run without the key
    (a sweep made before the budget rule) was chosen by ``rule``, the sweep's ``eval.selection``."""
    rows = []
    for res in results:
        last = res.metrics or {}
        if "budget_rows" not in last:
            continue
        run = dict((res.config or {}).get("run", res.config or {}))
        chosen = run.get("budgets")
        for r in json.loads(last["budget_rows"]):
            rules = [rule] if chosen is None else chosen.get(budget_label(r["budget_kind"], r["budget"]), [])
            for by in rules:
                rows.append(dict(sweep_id=sweep_id, method=run["method"], seed=int(run["seed"]),
                                 trial_id=str(last.get("trial_id")), source_trial_id=str(run.get("source_trial_id")),
                                 chosen_by=by, **{"selection": SELECTION_DEFAULT, **r}))  # a row naming sweep_id etc. raises
    return rows


def budget_table(rows: list[dict[str, Any]]) -> pa.Table:
    schema = pa.schema([pa.field(k, t) for k, t in BUDGET_COLUMNS.items()])
    return pa.table({k: pa.array([r.get(k) for r in rows], type=t) for k, t in BUDGET_COLUMNS.items()}, schema=schema)


def best_configs(trials: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per method, the search trial the confirm phase re-trains, with its hyperparameters.

    The choice is the report's, by the same function (:func:`sslsweep.analysis.trials.best_trials`,
    maximising the selection metric): the best final metric among completed trials, else among the
    trials ASHA stopped; never a failed or diverged one; a tie goes to the smallest trial id."""
    best: dict[str, dict[str, Any]] = {}
    for _, row in best_trials(trials, "max").iterrows():
        hp = {c[len(HP_PREFIX):]: _py(row[c]) for c in trials.columns
              if c.startswith(HP_PREFIX) and not _isnull(row[c])}
        best[str(row["method"])] = {"trial_id": row["trial_id"], "metric": float(row["metric"]), "hp": hp,
                                    "seed": int(row["seed"])}
    return best


def _isnull(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _py(v: Any) -> Any:
    """numpy scalars -> Python (so a config dict is JSON- and Optuna-friendly); whole floats of
    integer hyperparameters stay floats unless they were ints in the table."""
    return v.item() if hasattr(v, "item") else v
