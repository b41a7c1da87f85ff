"""Statistics of the confirm phase, from ``budget.parquet``: test accuracy per label budget x
protocol x method, paired comparisons between methods, and between label selections.

Test accuracy is summarised over confirm seeds as mean ± 95% Student-t CI
(:func:`sslsweep.analysis.stats.mean_ci`); methods are compared with a paired t-test over seeds
(:func:`sslsweep.analysis.stats.paired_t`). Every function is pure: DataFrames in, DataFrames out.

The method tables (headline, comparisons, gain over none) use the rows of one label selection:
``random`` when the table has it (:func:`headline_selection`); :func:`selection_table` compares
the selections of one method with each other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from sslsweep.analysis.conventions import BASELINE, budget_label, method_order, protocol_rank, require_columns
from sslsweep.analysis.stats import ALPHA, PAIRED_TEST_NAME, MeanCI, mean_ci, paired_t, significantly_worse
from sslsweep.schema import SELECTION_DEFAULT

GROUP = ["budget_kind", "budget", "protocol"]
BUDGET_REQUIRED = ("method", "seed", "budget_kind", "budget", "n_labels", "protocol", "test_acc")
HEADLINE_COLUMNS = ["budget_kind", "budget", "protocol", "budget_label", "method", "n_seeds", "mean",
                    "sd", "ci", "n_labels_min", "n_labels_max", "is_best", "best_method", "n_paired",
                    "p_vs_best", "not_sig_worse"]
COMPARISON_COLUMNS = ["budget_kind", "budget", "protocol", "budget_label", "method", "reference",
                      "reference_method", "n_paired", "mean_diff", "ci_low", "ci_high", "p_value",
                      "testable", "test", "mde", "resolved"]
GAIN_COLUMNS = ["budget_kind", "budget", "protocol", "budget_label", "method", "gain", "ci_low",
                "ci_high", "n_paired", "p_value", "mde", "resolved"]
SELECTION_COLUMNS = ["budget_kind", "budget", "protocol", "budget_label", "method", "selection", "reference",
                     "n_seeds", "mean", "ci", "reference_n_seeds", "reference_mean", "reference_ci", "n_paired",
                     "gain", "ci_low", "ci_high", "p_value", "testable", "mde", "resolved"]


def seed_series(g: pd.DataFrame, where: str) -> pd.Series:
    """Test accuracy of one method in one budget group, indexed by seed (one row per seed)."""
    dup = g["seed"][g["seed"].duplicated()]
    if len(dup):
        raise ValueError(f"budget table has several rows for {where} seed={dup.iloc[0]}: "
                         f"one row per method x seed x budget x protocol")
    return pd.Series(g["test_acc"].astype(float).to_numpy(), index=g["seed"].to_numpy())


def with_selection(budget: pd.DataFrame) -> pd.DataFrame:
    """``budget`` with a ``selection`` on every row: a table (or row) without one is random (docs/schema.md)."""
    if "selection" not in budget.columns:
        return budget.assign(selection=SELECTION_DEFAULT)
    if budget["selection"].isna().any():
        return budget.assign(selection=budget["selection"].fillna(SELECTION_DEFAULT))
    return budget


def selections(budget: pd.DataFrame) -> list[str]:
    """The label selections in ``budget``: ``random`` first, then the others by name."""
    present = set(with_selection(budget)["selection"].astype(str))
    return sorted(present, key=lambda s: (s != SELECTION_DEFAULT, s))


def headline_selection(budget: pd.DataFrame) -> str | None:
    """The selection whose rows the method tables use: ``random`` when present, else the first by
    name (None when there are no rows)."""
    present = selections(budget)
    return present[0] if present else None


def _groups(budget: pd.DataFrame) -> list[tuple[tuple[str, float, str], pd.DataFrame]]:
    """(budget_kind, budget, protocol) groups of the headline selection's rows, in display order."""
    require_columns(budget, BUDGET_REQUIRED, "budget table")
    budget = with_selection(budget)
    return _sorted_groups(budget[budget["selection"].astype(str) == headline_selection(budget)])


def _sorted_groups(budget: pd.DataFrame) -> list[tuple[tuple[str, float, str], pd.DataFrame]]:
    if budget.empty:
        return []
    groups = list(budget.groupby(GROUP, sort=False))
    return sorted(((tuple(k), g) for k, g in groups),  # type: ignore[misc]
                  key=lambda kg: (str(kg[0][0]), float(kg[0][1]), protocol_rank(str(kg[0][2]))))


def _per_method(key: tuple[Any, ...], g: pd.DataFrame) -> dict[str, pd.Series]:
    return {m: seed_series(gm, f"method={m} budget={key[1]} protocol={key[2]}")
            for m, gm in g.groupby("method", sort=False)}


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


def _headline_row(key: tuple[Any, ...], label: str, method: str, ci: MeanCI, n_labels: pd.Series,
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


def paired_comparisons(budget: pd.DataFrame, headline: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each method against the best method and against ``none``, at every budget x protocol.

    One row per (budget, protocol, method, reference) with ``reference`` in ``{"best", "none"}``;
    a method is not compared with itself. ``mean_diff`` = method - reference, averaged over paired
    seeds, with its 95% CI and the two-sided paired t-test p-value (``test`` names the test);
    ``mde`` is the minimum detectable difference at the seeds used (power 0.8, α = 0.05,
    :func:`sslsweep.analysis.stats.min_detectable_difference`) and ``resolved`` is False when the
    CI spans zero or the comparison is not testable.
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
                             "p_value": res.p_value, "testable": res.testable, "test": PAIRED_TEST_NAME,
                             "mde": res.mde, "resolved": res.resolved})
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def gain_over_none(budget: pd.DataFrame, comparisons: pd.DataFrame | None = None) -> pd.DataFrame:
    """Test-accuracy gain of each method over the ``none`` baseline (random-init encoder).

    ``gain`` is the mean over paired seeds of ``test_acc(method) - test_acc(none)``, with its 95%
    CI, p-value, ``mde`` and ``resolved`` (as in :func:`paired_comparisons`). Empty when ``none`` is not in the table. ``comparisons`` is
    ``paired_comparisons(budget)`` when already computed.
    """
    comp = paired_comparisons(budget) if comparisons is None else comparisons
    vs_none = comp[comp["reference"] == "none"].rename(columns={"mean_diff": "gain"})
    return vs_none[GAIN_COLUMNS].reset_index(drop=True)


def selection_table(budget: pd.DataFrame) -> pd.DataFrame:
    """Each label selection against ``random``, per budget x protocol x method.

    One row per (budget, protocol, method, selection) with ``selection`` != ``reference`` =
    ``random``: test accuracy of both (mean ± 95% CI over seeds, ``n_seeds``) and the ``gain``
    selection - random, the mean over paired seeds with its 95% CI and two-sided paired t-test
    p-value (both selections of a seed come from the same encoder, with as many labels), ``mde`` and
    ``resolved`` (as in :func:`paired_comparisons`). Empty
    unless the table holds ``random`` and at least one other selection.
    """
    require_columns(budget, BUDGET_REQUIRED, "budget table")
    budget = with_selection(budget)
    present = selections(budget)
    if len(present) < 2 or present[0] != SELECTION_DEFAULT:
        return pd.DataFrame(columns=SELECTION_COLUMNS)
    rows = []
    for key, g in _sorted_groups(budget):
        label = budget_label(key[0], key[1], float(g["n_labels"].min()), float(g["n_labels"].max()))
        for m in method_order(g["method"].astype(str).tolist()):
            gm = g[g["method"].astype(str) == m]
            where = f"method={m} budget={key[1]} protocol={key[2]}"
            per_sel = {s: seed_series(gs, f"{where} selection={s}") for s, gs in gm.groupby("selection")}
            ref = per_sel.get(SELECTION_DEFAULT, pd.Series(dtype=float))
            ref_ci = mean_ci(ref)
            for sel in present[1:]:
                if sel not in per_sel:
                    continue
                ci, res = mean_ci(per_sel[sel]), paired_t(per_sel[sel], ref)
                rows.append({"budget_kind": key[0], "budget": float(key[1]), "protocol": key[2],
                             "budget_label": label, "method": m, "selection": sel, "reference": SELECTION_DEFAULT,
                             "n_seeds": ci.n, "mean": ci.mean, "ci": ci.half_width, "reference_n_seeds": ref_ci.n,
                             "reference_mean": ref_ci.mean, "reference_ci": ref_ci.half_width,
                             "n_paired": res.n_paired, "gain": res.mean_diff, "ci_low": res.ci_low,
                             "ci_high": res.ci_high, "p_value": res.p_value, "testable": res.testable,
                             "mde": res.mde, "resolved": res.resolved})
    return pd.DataFrame(rows, columns=SELECTION_COLUMNS)
