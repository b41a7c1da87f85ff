"""Which search trial each selection rule confirms, per method and label budget (docs/selection.md).

The rules (``eval.selection``, then ``eval.compare``) read the signals the search trials reported
(``score_*`` columns of trials.parquet, :func:`sslsweep.schema.score_column`):

- ``oracle``: the labeled metric on the validation split (kNN or probe, with ``select_fraction``
  of the train labels): one choice for every budget; an upper bound.
- ``label_free``: RankMe of the validation features: one choice for every budget; no label.
- ``budget``: at each budget and confirm seed, leave-one-out kNN inside that budget's labelled
  subset at that seed (the subset that seed's confirm run is evaluated with): the choice for a
  seed reads that seed's labels only. Where no class of the subset has 2 labels (e.g. 1 label per
  class) nothing can be held out, and the choice falls back to RankMe, which reads no label
  (``signal`` says so).

Among a method's trials, as for the report's best trial (:func:`sslsweep.analysis.trials.best_trials`):
completed trials first (their signals are at the full epoch budget), else those ASHA stopped;
never a failed or diverged one. The signal is the trial's value on its last row with a metric.
Ties go to the higher RankMe (never to a labelled signal), then the smallest trial id. Pure:
tables in, tables out.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from sslsweep.analysis.conventions import method_order
from sslsweep.schema import CHOICE_FIELDS, budget_label, score_column, search_rule

CHOICE_COLUMNS = list(CHOICE_FIELDS)
SIGNALS = {"oracle": "oracle metric (validation split)", "label_free": "rankme", "budget": "loo_knn"}
FALLBACK = "rankme (no class has 2 labels)"


def final_signals(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per trial that can be chosen: ``method``, ``trial_id``, ``status``, ``pool`` (0 for
    completed, 1 for stopped), ``metric`` and every ``score_*`` column, each as on the trial's last
    row with a metric (rows ordered by epoch)."""
    scores = [c for c in trials.columns if c.startswith("score_")]
    cols = ["method", "trial_id", "status", "pool", "metric", *scores]
    if trials.empty:
        return pd.DataFrame(columns=cols)
    df = trials.reset_index(drop=True).assign(_row=np.arange(len(trials)))
    df = df.sort_values(["trial_id", "epoch", "_row"], kind="stable")
    status = df.groupby("trial_id", sort=False)["status"].last()
    last = df[df["metric"].notna()].groupby("trial_id", sort=False).tail(1).set_index("trial_id")
    last = last.assign(status=status.reindex(last.index))
    last = last[last["status"].isin(("completed", "stopped"))]  # never a failed or diverged one
    last = last.assign(pool=(last["status"] != "completed").astype(int))
    return last.reset_index()[cols]


def _pick(cands: pd.DataFrame, column: str, tie: str | None) -> pd.Series | None:
    """The best of ``cands`` by ``column`` (NaN never chosen), from the first pool that has one;
    ties go to the higher ``tie`` (the label-free signal), then the smaller trial id."""
    keys = [column, *([tie] if tie and tie != column else []), "trial_id"]
    for _, pool in cands.groupby("pool", sort=True):
        scored = pool[pool[column].notna()]
        if len(scored):
            return scored.sort_values(keys, ascending=[False] * (len(keys) - 1) + [True], kind="stable").iloc[0]
    return None


def _column(cands: pd.DataFrame, rule: str, headline: str, kind: str | None = None,
            value: float | None = None, seed: int | None = None) -> str | None:
    """The column a rule reads: ``metric`` for the rule the search maximised (also in trials made
    before ``score_*`` columns existed, e.g. by an older driver of a resumed sweep), else its
    ``score_*`` column; None when no trial of ``cands`` reported that signal."""
    if rule == search_rule(headline):
        return "metric"
    col = score_column(rule, kind, value, seed)
    return col if col in cands.columns and cands[col].notna().any() else None


def choices(trials: pd.DataFrame, rules: Sequence[str], budgets: Sequence[tuple[str, float]],
            seeds: Sequence[int] = (0,)) -> pd.DataFrame:
    """Per method, rule, label budget and confirm seed, the trial the rule confirms (columns
    :data:`CHOICE_COLUMNS`; the oracle and label_free choices are the same at every seed).

    ``rules[0]`` is the sweep's own rule (``eval.selection``). A method with no trial that can be
    chosen has no rows; a rule without its signal in the table (not computed by this sweep) none.
    Ties go to the label-free signal (RankMe), never to a labelled one, then to the smaller trial id."""
    cands = final_signals(trials)
    rows: list[dict[str, Any]] = []
    for method in method_order(cands["method"].dropna().astype(str).unique().tolist()):
        mine = cands[cands["method"] == method]
        tie = _column(mine, "label_free", rules[0])
        picked: dict[str, pd.Series | None] = {}  # column -> its best trial (oracle, label_free: one for every seed)
        for rule in rules:
            for kind, value in budgets:
                for seed in seeds:
                    col, signal = _column(mine, rule, rules[0], kind, value, seed), SIGNALS[rule]
                    if col is None and rule == "budget":  # nothing held out at this budget: the label-free signal
                        col, signal = tie, FALLBACK
                    if col is not None and col not in picked:
                        picked[col] = _pick(mine, col, tie)
                    best = None if col is None else picked[col]
                    if best is not None:
                        rows.append(dict(method=method, rule=rule, budget_kind=kind, budget=float(value), seed=int(seed),
                                         trial_id=str(best["trial_id"]), score=float(best[col]), signal=signal))
    return pd.DataFrame(rows, columns=CHOICE_COLUMNS)


def confirm_plan(chosen: pd.DataFrame) -> list[tuple[tuple[str, int], dict[str, list[str]]]]:
    """The confirm runs of one method's choices: each (chosen trial, seed) once, with the budgets it
    is evaluated at and, per budget, the rules that chose it there (``budgets`` of the run config;
    budget.parquet ``chosen_by``). In order of first choice (the sweep's own rule first)."""
    plan: dict[tuple[str, int], dict[str, list[str]]] = {}
    for r in chosen.itertuples(index=False):
        at = plan.setdefault((str(r.trial_id), int(r.seed)), {})
        at.setdefault(budget_label(r.budget_kind, r.budget), []).append(str(r.rule))
    return list(plan.items())
