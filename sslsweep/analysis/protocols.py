"""Selection protocols compared: what the confirmed accuracy, the ranking of methods and the chosen
search trials become when another rule chooses the configuration (``budget.parquet chosen_by``,
``manifest.json choices``; ``eval.selection`` / ``eval.compare``).

- ``oracle`` chooses by kNN accuracy on the labelled validation split with all train labels: more
  labels than a small budget has, so its accuracy is an upper bound, not an achievable result.
- ``budget`` chooses at each label budget with that budget's labels only (leave-one-out kNN in the
  labelled subset); ``label_free`` by RankMe, without labels.

A sweep's *headline rule* (:func:`sslsweep.analysis.io.headline_rule`) is the one its other tables
report. Every function takes it either as one rule or, for combined sweeps whose headline rules
differ, as a mapping ``sweep_id -> rule``: a row is a headline row when its ``chosen_by`` is the
headline rule of its own sweep. Pure functions: DataFrames in, DataFrames out.

Conventions:

- Seeds pair across rules: the same seed draws the same label subset (``random``), so a rule is
  compared with the headline rule by a paired t-test over seeds (:func:`sslsweep.analysis.stats.paired_t`).
  A run chosen by both rules has its rows twice, with the same ``test_acc``: a difference of 0.
- Every label selection (``random``, ``typical``) is kept, in a ``selection`` column; the report
  shows the one its method tables use (:func:`sslsweep.analysis.confirm.headline_selection`).
- Methods are ranked by mean test accuracy over seeds. Means equal to within 1e-12 tie: they share
  a place (written ``a = b``). Two rankings are compared over the methods present under both, as
  sequences of tied groups, so a tie one rule breaks counts as a change.

Example::

    gaps = protocol_table(sweep.budget_all, "budget")
    gaps[gaps["rule"] == "oracle"][["method", "budget_label", "gap", "resolved"]]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from sslsweep.analysis.confirm import BUDGET_REQUIRED, seed_series, selections, with_selection
from sslsweep.analysis.conventions import budget_label, method_order, protocol_rank, require_columns
from sslsweep.analysis.io import headline_rule
from sslsweep.analysis.stats import mean_ci, paired_t
from sslsweep.schema import CHOICE_FIELDS, SELECTION_RULES

Headline = str | Mapping[str, str]  # one rule, or the rule of each sweep by sweep_id
TIE = 1e-12
GROUP = ["budget_kind", "budget", "protocol", "selection"]
PROTOCOL_COLUMNS = ["budget_kind", "budget", "protocol", "selection", "budget_label", "method", "rule",
                    "headline_rule", "is_headline", "n_seeds", "mean", "ci", "n_paired", "gap", "ci_low",
                    "ci_high", "p_value", "testable", "mde", "resolved", "same_trial"]
RANKING_COLUMNS = ["budget_kind", "budget", "protocol", "selection", "budget_label", "rule", "headline_rule",
                   "is_headline", "n_methods", "ranking", "differs", "ranking_changes"]
CHOICE_KEYS = tuple(k for k in CHOICE_FIELDS if k != "seed")  # required; seed is optional (older sweeps)
CHOICE_COLUMNS = ["sweep_id", "method", "budget_kind", "budget", "budget_label", "seed", "rule", "is_headline",
                  "trial_id", "score", "signal", "headline_trial_id", "differs_from_headline"]


def _nullable(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """``column`` as Python True / False / None (object dtype), whether or not a None is in it."""
    return table.assign(**{column: table[column].astype(object)})


def rule_rank(rule: str) -> int:
    """Sort key of a rule: SELECTION_RULES order, any other after."""
    return SELECTION_RULES.index(rule) if rule in SELECTION_RULES else len(SELECTION_RULES)


def rules_present(budget_all: pd.DataFrame) -> list[str]:
    """The ``chosen_by`` values of ``budget_all`` in SELECTION_RULES order (none without the column)."""
    if "chosen_by" not in budget_all.columns:
        return []
    return sorted(set(budget_all["chosen_by"].dropna().astype(str)), key=lambda r: (rule_rank(r), r))


def _prepared(budget_all: pd.DataFrame, headline: Headline) -> pd.DataFrame:
    """The rows with a ``selection``, each row's sweep's headline rule (``_head``) and whether it is
    a headline row (``_is_head``)."""
    require_columns(budget_all, (*BUDGET_REQUIRED, "chosen_by"), "budget table")
    rows = with_selection(budget_all)
    if isinstance(headline, str):
        head = pd.Series(headline, index=rows.index)
    else:
        require_columns(rows, ("sweep_id",), "budget table of several sweeps")
        unknown = sorted(set(rows["sweep_id"].astype(str)) - set(headline))
        if unknown:
            raise ValueError(f"budget rows of sweeps {unknown} have no headline rule in {dict(headline)}: "
                             f"every sweep_id of the table needs one")
        head = rows["sweep_id"].astype(str).map(dict(headline))
    return rows.assign(_head=head, _is_head=rows["chosen_by"].astype(str) == head)


def _groups(rows: pd.DataFrame) -> list[tuple[tuple[Any, ...], pd.DataFrame]]:
    """(budget_kind, budget, protocol, selection) groups in display order (label selections as
    :func:`sslsweep.analysis.confirm.selections` orders them)."""
    if rows.empty:
        return []
    order = selections(rows)
    keyed = [(tuple(k), g) for k, g in rows.groupby(GROUP, sort=False)]
    return sorted(keyed, key=lambda kg: (str(kg[0][0]), float(kg[0][1]), protocol_rank(str(kg[0][2])),
                                         order.index(str(kg[0][3]))))


def _label(key: tuple[Any, ...], g: pd.DataFrame) -> str:
    return budget_label(str(key[0]), float(key[1]), float(g["n_labels"].min()), float(g["n_labels"].max()))


def _by_rule(g: pd.DataFrame) -> list[tuple[str, pd.DataFrame, bool]]:
    """(rule, rows, is_headline): the headline rows first (named by their rule, or rules joined by
    "/" when combined sweeps differ), then each rule present in SELECTION_RULES order. Where the
    headline rule is one rule, its own entry is the headline entry."""
    head_rule = "/".join(sorted(set(g["_head"].astype(str))))
    head = g[g["_is_head"]]
    out = [(head_rule, head, True)] if not head.empty else []
    for rule in rules_present(g):
        if rule != head_rule or head.empty:
            out.append((rule, g[g["chosen_by"].astype(str) == rule], False))
    return out


def _same_trial(rows: pd.DataFrame, head: pd.DataFrame) -> bool | None:
    """Whether every seed in both was confirmed from the same search trial (None when unknown)."""
    if "source_trial_id" not in rows.columns or head.empty or rows.empty:
        return None
    joined = pd.merge(rows[["seed", "source_trial_id"]], head[["seed", "source_trial_id"]], on="seed")
    if joined.empty or joined[["source_trial_id_x", "source_trial_id_y"]].isna().any().any():
        return None
    return bool((joined["source_trial_id_x"].astype(str) == joined["source_trial_id_y"].astype(str)).all())


def protocol_table(budget_all: pd.DataFrame, headline: Headline) -> pd.DataFrame:
    """Test accuracy under each rule and its gap to the headline rule, per budget x protocol x
    label selection x method.

    One row per (budget_kind, budget, protocol, selection, method, rule): ``n_seeds``, ``mean`` and
    ``ci`` (95% Student-t half-width) of ``test_acc`` over seeds. On the headline row
    ``is_headline`` is True and the gap columns are empty (``gap`` NaN, ``n_paired`` 0). On every
    other row ``gap`` = this rule - headline rule, the mean over paired seeds, with its 95% CI
    (``ci_low``, ``ci_high``), two-sided paired t-test ``p_value``, ``testable``, ``mde`` and
    ``resolved`` as in :func:`sslsweep.analysis.confirm.paired_comparisons`; the *oracle gap* is
    the ``gap`` of the ``oracle`` row (positive: the oracle's choice tests better, by labels the
    budget does not have). ``same_trial``: every paired seed was confirmed from the same search
    trial under both rules (None when ``source_trial_id`` is missing). ``headline_rule`` names the
    group's headline rule. Empty when ``budget_all`` is.
    """
    rows = []
    for key, g in _groups(_prepared(budget_all, headline)):
        label = _label(key, g)
        for method in method_order(g["method"].astype(str).tolist()):
            gm = g[g["method"].astype(str) == method]
            where = f"method={method} budget={key[1]} protocol={key[2]} selection={key[3]}"
            entries = _by_rule(gm)
            head_rows = next((r for _, r, is_head in entries if is_head), gm.iloc[0:0])
            head = seed_series(head_rows, f"{where} headline")
            for rule, rule_rows, is_head in entries:
                series = seed_series(rule_rows, f"{where} chosen_by={rule}")
                ci = mean_ci(series)
                row = {"budget_kind": key[0], "budget": float(key[1]), "protocol": key[2], "selection": key[3],
                       "budget_label": label, "method": method, "rule": rule,
                       "headline_rule": "/".join(sorted(set(gm["_head"].astype(str)))), "is_headline": is_head,
                       "n_seeds": ci.n, "mean": ci.mean, "ci": ci.half_width}
                if is_head:
                    row.update(n_paired=0, gap=math.nan, ci_low=math.nan, ci_high=math.nan, p_value=math.nan,
                               testable=False, mde=math.nan, resolved=False, same_trial=None)
                else:
                    res = paired_t(series, head)
                    row.update(n_paired=res.n_paired, gap=res.mean_diff, ci_low=res.ci_low, ci_high=res.ci_high,
                               p_value=res.p_value, testable=res.testable, mde=res.mde, resolved=res.resolved,
                               same_trial=_same_trial(rule_rows, head_rows))
                rows.append(row)
    return _nullable(pd.DataFrame(rows, columns=PROTOCOL_COLUMNS), "same_trial")


def _ranking(rows: pd.DataFrame, where: str) -> list[list[str]]:
    """Methods by mean test accuracy, best first, as groups of tied methods (NaN means left out)."""
    means = {}
    for method, gm in rows.groupby("method", sort=False):
        mean = mean_ci(seed_series(gm, f"{where} method={method}")).mean
        if math.isfinite(mean):
            means[str(method)] = mean
    groups: list[list[str]] = []
    for method in sorted(method_order(list(means)), key=lambda m: -means[m]):  # stable: ties keep method order
        if groups and abs(means[groups[-1][0]] - means[method]) <= TIE:
            groups[-1].append(method)
        else:
            groups.append([method])
    return groups


def _restricted(order: list[list[str]], keep: set[str]) -> list[frozenset[str]]:
    return [frozenset(kept) for group in order if (kept := [m for m in group if m in keep])]


def ranking_differs(order: list[list[str]], reference: list[list[str]]) -> bool:
    """Whether two rankings (groups of tied methods, best first) order the methods they share differently."""
    shared = {m for g in order for m in g} & {m for g in reference for m in g}
    return _restricted(order, shared) != _restricted(reference, shared)


def ranking_text(order: list[list[str]]) -> str:
    """``"simclr > rotation = byol > none"``."""
    return " > ".join(" = ".join(group) for group in order)


def ranking_table(budget_all: pd.DataFrame, headline: Headline) -> pd.DataFrame:
    """The methods ranked by mean test accuracy under each rule, per budget x protocol x label selection.

    One row per (budget_kind, budget, protocol, selection, rule): ``ranking`` as text (best first,
    ties joined by ``=``, see the module docstring), ``n_methods`` ranked, ``differs`` (this rule orders
    the methods it shares with the headline rule otherwise; False on the headline row, None when the
    group has no headline rows) and ``ranking_changes`` (any rule of the group differs; the same on
    each of its rows). A rule's ranking uses the methods confirmed under it.
    """
    rows = []
    for key, g in _groups(_prepared(budget_all, headline)):
        label, where = _label(key, g), f"budget={key[1]} protocol={key[2]} selection={key[3]}"
        entries = _by_rule(g)
        orders = {rule: _ranking(r, f"{where} chosen_by={rule}") for rule, r, _ in entries}
        head = next((orders[rule] for rule, _, is_head in entries if is_head), None)
        out = []
        for rule, _, is_head in entries:
            differs = False if is_head else (None if head is None else ranking_differs(orders[rule], head))
            out.append({"budget_kind": key[0], "budget": float(key[1]), "protocol": key[2], "selection": key[3],
                        "budget_label": label, "rule": rule, "headline_rule": "/".join(sorted(set(g["_head"]))),
                        "is_headline": is_head, "n_methods": sum(len(x) for x in orders[rule]),
                        "ranking": ranking_text(orders[rule]), "differs": differs})
        changes = any(r["differs"] is True for r in out)
        rows += [{**r, "ranking_changes": changes} for r in out]
    return _nullable(pd.DataFrame(rows, columns=RANKING_COLUMNS), "differs")


def _same_budget(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=0.0, abs_tol=1e-12)


def choice_table(choices: Sequence[Mapping[str, Any]], headline: str, sweep_id: str | None = None) -> pd.DataFrame:
    """The search trial each rule chose, per method x label budget (``manifest.json choices``).

    One row per choice: ``trial_id``, ``score`` and ``signal`` as recorded, ``budget_label`` (``"all
    budgets"`` for a choice without a budget, which then holds at every budget), ``seed`` (the
    confirm seed a choice is for; None: every seed, e.g. in sweeps before per-seed choices), ``is_headline``
    (its rule is ``headline``), ``headline_trial_id`` (the headline rule's choice for the same method
    and budget, or its budget-less choice) and ``differs_from_headline`` (None when the headline rule
    chose nothing there). ``sweep_id`` is repeated on every row. Raises ``ValueError`` naming a
    choice that lacks one of :data:`CHOICE_KEYS`.
    """
    for i, choice in enumerate(choices):
        missing = [k for k in CHOICE_KEYS if not isinstance(choice, Mapping) or k not in choice]
        if missing:
            raise ValueError(f"manifest choices[{i}] of sweep {sweep_id!r} lacks {missing}: each choice "
                             f"holds {list(CHOICE_KEYS)}")
    heads = [c for c in choices if c["rule"] == headline]
    rows = []
    for c in choices:
        budget = None if c["budget"] is None else float(c["budget"])
        seed = c.get("seed")  # the confirm seed the choice is for (None: every seed)
        hit = next((h for h in heads if h["method"] == c["method"] and h["budget_kind"] == c["budget_kind"]
                    and _same_budget(h["budget"], budget) and h.get("seed") in (None, seed)), None)
        hit = hit or next((h for h in heads if h["method"] == c["method"] and h["budget"] is None), None)
        head_trial = None if hit is None else str(hit["trial_id"])
        rows.append({"sweep_id": sweep_id, "method": str(c["method"]), "budget_kind": c["budget_kind"],
                     "budget": math.nan if budget is None else budget,
                     "budget_label": "all budgets" if budget is None else budget_label(str(c["budget_kind"]), budget),
                     "seed": None if seed is None else int(seed),
                     "rule": str(c["rule"]), "is_headline": c["rule"] == headline, "trial_id": str(c["trial_id"]),
                     "score": math.nan if c["score"] is None else float(c["score"]), "signal": c["signal"],
                     "headline_trial_id": head_trial,
                     "differs_from_headline": None if head_trial is None else str(c["trial_id"]) != head_trial})
    methods = method_order([r["method"] for r in rows])
    rows.sort(key=lambda r: (methods.index(r["method"]), str(r["budget_kind"]),
                             r["budget"] if math.isfinite(r["budget"]) else -1.0,
                             -1 if r["seed"] is None else r["seed"], not r["is_headline"],
                             rule_rank(r["rule"]), r["rule"]))
    return _nullable(pd.DataFrame(rows, columns=CHOICE_COLUMNS), "differs_from_headline")


def sweep_choices(manifests: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """:func:`choice_table` of every manifest (its ``choices``, against its own headline rule),
    concatenated; a manifest without ``choices`` adds nothing."""
    parts = [choice_table(m.get("choices") or [], headline_rule(dict(m)), str(m.get("sweep_id"))) for m in manifests]
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=CHOICE_COLUMNS)
