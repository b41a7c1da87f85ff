"""Tidy tables computed from ``trials.parquet`` / ``budget.parquet`` / ``manifest.json``.

Every function here is pure: DataFrames (and plain dicts) in, DataFrames out, nothing drawn
or written. ``plots.py`` draws these tables and ``report.py`` renders them; tests check them
directly. Column meanings follow docs/schema.md.

Conventions:

- A trial is identified by ``(sweep_id, trial_id)``; its rows are ordered by ``epoch`` and then
  by row order. Its *final metric* is its last non-null ``metric``; its *status* is the status
  on its last row.
- Test accuracy is summarised over confirm seeds as mean ± 95% Student-t CI
  (:func:`sslsweep.analysis.stats.mean_ci`); methods are compared with a paired t-test over
  seeds (:func:`sslsweep.analysis.stats.paired_t`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd

from sslsweep.analysis.stats import (
    ALPHA,
    PAIRED_TEST_NAME,
    mean_ci,
    paired_t,
    significantly_worse,
)

BASELINE = "none"
PROTOCOLS = ("linear", "finetune")
FAILED_STATUSES = ("failed", "diverged")
GROUP = ["budget_kind", "budget", "protocol"]
BUDGET_REQUIRED = ("method", "seed", "budget_kind", "budget", "n_labels", "protocol", "test_acc")
TRIALS_REQUIRED = ("method", "trial_id", "epoch", "metric", "status")
IMPORTANCE_EVALUATOR = "fANOVA (optuna FanovaImportanceEvaluator, seed 0)"


# ----------------------------------------------------------------------------- helpers


def require_columns(df: pd.DataFrame, columns: Sequence[str], table: str) -> None:
    """Raise ``ValueError`` naming the missing columns when ``df`` lacks any of ``columns``."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{table} lacks column(s) {missing}: docs/schema.md requires them")


def method_order(methods: Sequence[str]) -> list[str]:
    """Methods sorted by name, with the ``none`` baseline last."""
    return sorted(set(methods), key=lambda m: (m == BASELINE, m))


def _protocol_rank(protocol: str) -> int:
    return PROTOCOLS.index(protocol) if protocol in PROTOCOLS else len(PROTOCOLS)


def hp_columns(df: pd.DataFrame) -> list[str]:
    """The ``hp_*`` columns of ``df`` that hold at least one value."""
    return [c for c in df.columns if c.startswith("hp_") and df[c].notna().any()]


def varying_hp_columns(df: pd.DataFrame) -> list[str]:
    """The ``hp_*`` columns of ``df`` that take more than one distinct value."""
    return [c for c in hp_columns(df) if df[c].dropna().nunique() > 1]


def param_name(column: str) -> str:
    """``hp_lr`` -> ``lr``."""
    return column[3:] if column.startswith("hp_") else column


def budget_label(kind: str, budget: float, n_min: float | None = None,
                 n_max: float | None = None) -> str:
    """Human label of a label budget: ``"1% (18 labels)"`` or ``"5/class (50 labels)"``.

    ``n_min``/``n_max`` are the fewest/most labels used over seeds (shown as a range if they differ).
    """
    if kind == "fraction":
        head = f"{float(budget) * 100:g}%"
    elif kind == "per_class":
        head = f"{float(budget):g}/class"
    else:
        head = f"{kind} {float(budget):g}"
    if n_min is None or n_max is None or not (math.isfinite(n_min) and math.isfinite(n_max)):
        return head
    count = f"{int(n_min)}" if n_min == n_max else f"{int(n_min)}-{int(n_max)}"
    return f"{head} ({count} labels)"


def _trial_keys(df: pd.DataFrame) -> list[str]:
    return ["sweep_id", "trial_id"] if "sweep_id" in df.columns else ["trial_id"]


def _better(mode: str) -> str:
    if mode not in ("max", "min"):
        raise ValueError(f"manifest mode is {mode!r}: it must be 'max' or 'min'")
    return mode


def max_epochs_of(manifest: Mapping[str, Any]) -> int | None:
    """``config.search.max_epochs`` from a manifest, or None when absent."""
    value = ((manifest.get("config") or {}).get("search") or {}).get("max_epochs")
    return None if value is None else int(value)


# ----------------------------------------------------------------------------- trials


def trial_summary(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per trial, in order of first appearance.

    Columns: the trial key (``sweep_id``, ``trial_id``), ``method``, ``seed``, ``order``,
    ``status`` (last row), ``error`` (last non-null), ``max_epoch``, ``metric`` (final, last
    non-null), ``metric_epoch`` (epoch of that metric) and every ``hp_*`` column (first non-null).
    """
    require_columns(trials, TRIALS_REQUIRED, "trials table")
    keys = _trial_keys(trials)
    hps = [c for c in trials.columns if c.startswith("hp_")]
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
    """
    _better(mode)
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


def search_cost(trials: pd.DataFrame, max_epochs: int | Mapping[str, int] | None) -> pd.DataFrame:
    """Search cost and ASHA savings per method.

    ``max_epochs`` is ``config.search.max_epochs`` (an int, or a mapping sweep_id -> int for
    combined sweeps). Columns: ``method``, ``trials``, ``completed``, ``stopped`` (by ASHA),
    ``failed``, ``diverged``, ``epochs_trained`` (sum over trials of the largest epoch reached),
    ``epochs_saved`` (what ASHA saved: over the stopped trials, max_epochs minus the epoch each
    was stopped at; failed and diverged trials ended on their own and save nothing),
    ``epochs_full`` (``epochs_trained + epochs_saved``: the cost without early stopping; 0 for a
    method that does not pretrain, i.e. whose trials all end at epoch 0) and ``saved_frac``
    (``epochs_saved / epochs_full``).
    """
    summary = trial_summary(trials)
    summary["full"] = [_max_epochs_for(r, max_epochs) for _, r in summary.iterrows()]
    rows = []
    for method in method_order(summary["method"].dropna().astype(str).tolist()):
        g = summary[summary["method"] == method]
        counts = g["status"].value_counts()
        trained = int(g["max_epoch"].sum())
        stopped = g[g["status"] == "stopped"]
        saved = float((stopped["full"] - stopped["max_epoch"]).sum()) if stopped["full"].notna().all() else math.nan
        full = trained + saved
        if _no_pretraining(g):
            full = saved = 0.0  # e.g. `none`: its completed trials end at epoch 0; there is nothing to save
        rows.append({
            "method": method, "trials": len(g),
            **{s: int(counts.get(s, 0)) for s in ("completed", "stopped", "failed", "diverged")},
            "epochs_trained": trained, "epochs_full": full, "epochs_saved": saved,
            "saved_frac": saved / full if math.isfinite(full) and full > 0 else math.nan,
        })
    cols = ["method", "trials", "completed", "stopped", "failed", "diverged", "epochs_trained",
            "epochs_full", "epochs_saved", "saved_frac"]
    return pd.DataFrame(rows, columns=cols)


def _no_pretraining(summary: pd.DataFrame) -> bool:
    """A method whose completed trials all end at epoch 0 does not pretrain (``none``, transfer)."""
    done = summary[summary["status"] == "completed"]
    return bool(len(done)) and bool((done["max_epoch"] == 0).all()) and bool((summary["max_epoch"] == 0).all())


def _max_epochs_for(row: pd.Series, max_epochs: int | Mapping[str, int] | None) -> float:
    if max_epochs is None:
        return math.nan
    if isinstance(max_epochs, Mapping):
        value = max_epochs.get(str(row.get("sweep_id")))
        return math.nan if value is None else float(value)
    return float(max_epochs)


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
    _better(mode)
    require_columns(trials, TRIALS_REQUIRED, "trials table")
    keys = _trial_keys(trials)
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
    keys = _trial_keys(summary)
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


# ----------------------------------------------------------------------------- importance


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
    _better(mode)
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


ROUGH_BELOW = 10


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
def _quiet_optuna() -> Iterator[Any]:
    """Optuna without its INFO logs and warnings (restored afterwards); yields the module."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield optuna
    finally:
        optuna.logging.set_verbosity(verbosity)


def _importance_from_study(study: Any) -> tuple[dict[str, float] | None, str]:
    """fANOVA importances of a study's COMPLETE trials, or None and the reason they are unusable
    (fewer than 2 complete trials, or fewer than 2 parameters: optuna would return {} or a
    meaningless equal split)."""
    with _quiet_optuna() as optuna:
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
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
            return dict(optuna.importance.get_param_importances(study, evaluator=evaluator)), ""
        except (ValueError, RuntimeError) as err:
            return None, f"{type(err).__name__}: {err}"


def infer_distribution(values: pd.Series) -> Any:
    """Optuna distribution for observed hyperparameter values (see :func:`param_importances`)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

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


def in_memory_study(completed: pd.DataFrame, columns: Sequence[str], mode: str) -> Any:
    """An Optuna study holding one COMPLETE trial per row of ``completed`` (a trial summary)."""
    dists = {param_name(c): infer_distribution(completed[c]) for c in columns}
    with _quiet_optuna() as optuna:
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for _, row in completed.iterrows():
        params = {}
        for c in columns:
            if pd.isna(row[c]):
                continue
            dist = dists[param_name(c)]
            params[param_name(c)] = float(row[c]) if isinstance(dist, optuna.distributions.FloatDistribution) \
                else _choice(row[c])
        used = {p: dists[p] for p in params}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=used, value=float(row["metric"])))
    return study


# ----------------------------------------------------------------------------- confirm phase


def _seed_series(g: pd.DataFrame, where: str) -> pd.Series:
    """Test accuracy of one method in one budget group, indexed by seed (one row per seed)."""
    dup = g["seed"][g["seed"].duplicated()]
    if len(dup):
        raise ValueError(f"budget table has several rows for {where} seed={dup.iloc[0]}: "
                         f"one row per method x seed x budget x protocol")
    return pd.Series(g["test_acc"].astype(float).to_numpy(), index=g["seed"].to_numpy())


def _groups(budget: pd.DataFrame) -> list[tuple[tuple[str, float, str], pd.DataFrame]]:
    require_columns(budget, BUDGET_REQUIRED, "budget table")
    if budget.empty:
        return []
    groups = list(budget.groupby(GROUP, sort=False))
    return sorted(((tuple(k), g) for k, g in groups),  # type: ignore[misc]
                  key=lambda kg: (str(kg[0][0]), float(kg[0][1]), _protocol_rank(str(kg[0][2]))))


def _per_method(key: tuple[Any, ...], g: pd.DataFrame) -> dict[str, pd.Series]:
    return {m: _seed_series(gm, f"method={m} budget={key[1]} protocol={key[2]}")
            for m, gm in g.groupby("method", sort=False)}


HEADLINE_COLUMNS = ["budget_kind", "budget", "protocol", "budget_label", "method", "n_seeds", "mean",
                    "sd", "ci", "n_labels_min", "n_labels_max", "is_best", "best_method", "n_paired",
                    "p_vs_best", "not_sig_worse"]


def headline_table(budget: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Test accuracy per label budget x protocol x method: mean ± 95% CI over seeds.

    ``is_best`` marks the highest mean in each (budget, protocol) (ties: all of them).
    ``not_sig_worse`` is True for a non-best method whose paired t-test against the best over
    shared seeds gives p >= ``alpha`` (or a higher mean), False when p < ``alpha``, and None when
    fewer than 2 seeds pair up or the seeds differ by one constant shift (not testable: nothing can
    be claimed). It is None for the best.
    """
    rows = []
    for key, g in _groups(budget):
        per_method = _per_method(key, g)
        cis = {m: mean_ci(s) for m, s in per_method.items()}
        top = max((ci.mean for ci in cis.values() if math.isfinite(ci.mean)), default=math.nan)
        bests = [m for m in method_order(list(cis)) if cis[m].mean == top]
        best = bests[0] if bests else None
        n_labels = g.groupby("method")["n_labels"].agg(["min", "max"])
        label = budget_label(key[0], key[1], float(g["n_labels"].min()), float(g["n_labels"].max()))
        for m in method_order(list(cis)):
            rows.append(_headline_row(key, label, m, cis[m], n_labels.loc[m], m in bests, best,
                                      per_method, alpha))
    return pd.DataFrame(rows, columns=HEADLINE_COLUMNS)


def _headline_row(key: tuple[Any, ...], label: str, method: str, ci: Any, n_labels: pd.Series,
                  is_best: bool, best: str | None, per_method: Mapping[str, pd.Series],
                  alpha: float) -> dict[str, Any]:
    n_paired, p, nsw = 0, math.nan, None
    if not is_best and best is not None:
        res = paired_t(per_method[method], per_method[best])
        n_paired, p = res.n_paired, res.p_value
        worse = significantly_worse(res, alpha)
        nsw = None if worse is None else not worse
    return {"budget_kind": key[0], "budget": float(key[1]), "protocol": key[2], "budget_label": label,
            "method": method, "n_seeds": ci.n, "mean": ci.mean, "sd": ci.sd, "ci": ci.half_width,
            "n_labels_min": float(n_labels["min"]), "n_labels_max": float(n_labels["max"]),
            "is_best": is_best, "best_method": best, "n_paired": n_paired, "p_vs_best": p,
            "not_sig_worse": nsw}


COMPARISON_COLUMNS = ["budget_kind", "budget", "protocol", "budget_label", "method", "reference",
                      "reference_method", "n_paired", "mean_diff", "ci_low", "ci_high", "p_value",
                      "testable", "test"]


def paired_comparisons(budget: pd.DataFrame, headline: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each method against the best method and against ``none``, at every budget x protocol.

    One row per (budget, protocol, method, reference) with ``reference`` in ``{"best", "none"}``;
    a method is not compared with itself. ``mean_diff`` = method - reference, averaged over paired
    seeds, with its 95% CI and the two-sided paired t-test p-value (``test`` names the test).
    ``headline`` is ``headline_table(budget)`` when already computed.
    """
    headline = headline_table(budget) if headline is None else headline
    rows = []
    for key, g in _groups(budget):
        per_method = _per_method(key, g)
        h = headline[(headline["budget_kind"] == key[0]) & (headline["budget"] == float(key[1]))
                     & (headline["protocol"] == key[2])]
        best, label = h["best_method"].iloc[0], h["budget_label"].iloc[0]
        refs = [("best", best)] + ([("none", BASELINE)] if BASELINE in per_method else [])
        for m in method_order(list(per_method)):
            for ref, ref_method in refs:
                if ref_method is None or ref_method == m:
                    continue
                res = paired_t(per_method[m], per_method[ref_method])
                rows.append({"budget_kind": key[0], "budget": float(key[1]), "protocol": key[2],
                             "budget_label": label, "method": m, "reference": ref,
                             "reference_method": ref_method, "n_paired": res.n_paired,
                             "mean_diff": res.mean_diff, "ci_low": res.ci_low, "ci_high": res.ci_high,
                             "p_value": res.p_value, "testable": res.testable, "test": PAIRED_TEST_NAME})
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


GAIN_COLUMNS = ["budget_kind", "budget", "protocol", "budget_label", "method", "gain", "ci_low",
                "ci_high", "n_paired", "p_value"]


def gain_over_none(budget: pd.DataFrame, comparisons: pd.DataFrame | None = None) -> pd.DataFrame:
    """Test-accuracy gain of each method over the ``none`` baseline (random-init encoder).

    ``gain`` is the mean over paired seeds of ``test_acc(method) - test_acc(none)``, with its 95%
    CI and p-value. Empty when ``none`` is not in the table. ``comparisons`` is
    ``paired_comparisons(budget)`` when already computed.
    """
    comp = paired_comparisons(budget) if comparisons is None else comparisons
    vs_none = comp[comp["reference"] == "none"].rename(columns={"mean_diff": "gain"})
    return vs_none[GAIN_COLUMNS].reset_index(drop=True)


# ----------------------------------------------------------------------------- manifest


def cost_table(manifests: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Time and device time per method and phase, from each manifest's ``cost``.

    Columns: ``sweep_id``, ``method``, ``phase`` (search/confirm), ``wall_s``, ``device_s``,
    ``device_h`` (device-seconds / 3600; devices are GPUs if any, else CPUs). ``wall_s`` is the
    wall time of the method's search for ``search`` (methods are searched one after another) and
    the sum of its confirm trials' own seconds for ``confirm`` (all methods' confirm trials share
    one Tune run, so per method only trial-seconds exist; the phase's wall time is ``phase_table``'s).
    """
    rows = []
    for manifest in manifests:
        for method, cost in sorted((manifest.get("cost") or {}).items()):
            for phase in ("search", "confirm"):
                wall, dev = cost.get(f"{phase}_wall_s"), cost.get(f"{phase}_device_s")
                if wall is None and dev is None:
                    continue
                dev_s = math.nan if dev is None else float(dev)
                rows.append({"sweep_id": manifest.get("sweep_id"), "method": method, "phase": phase,
                             "wall_s": math.nan if wall is None else float(wall), "device_s": dev_s,
                             "device_h": dev_s / 3600.0})
    return pd.DataFrame(rows, columns=["sweep_id", "method", "phase", "wall_s", "device_s", "device_h"])


def phase_table(manifests: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Start, end and wall seconds of each phase of each sweep (``manifest.phases``)."""
    rows = []
    for manifest in manifests:
        for phase, info in (manifest.get("phases") or {}).items():
            info = info or {}
            rows.append({"sweep_id": manifest.get("sweep_id"), "phase": phase,
                         "started": info.get("started"), "finished": info.get("finished"),
                         "wall_s": info.get("wall_s")})
    return pd.DataFrame(rows, columns=["sweep_id", "phase", "started", "finished", "wall_s"])
