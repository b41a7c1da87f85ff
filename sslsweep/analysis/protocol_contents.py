"""What the report says about selection protocols (section "Selection protocols: honest vs oracle"),
as :mod:`sslsweep.analysis.sections` blocks made from the tables of :mod:`sslsweep.analysis.protocols`.

Both documents show it when ``budget.parquet`` holds runs of more than one selection rule
(``chosen_by``): which rule heads the report, the gap of every other rule to it, the ranking of
methods under each rule, and the search trials chosen (``report.html`` lists them;
``report.md`` counts them).

Example::

    blocks = protocol_blocks(protocol_table(b, "budget"), ranking_table(b, "budget"), choices, full=True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pandas as pd

from sslsweep.analysis.confirm import headline_selection
from sslsweep.analysis.conventions import method_order
from sslsweep.analysis.formats import NOT_RESOLVED, diff_cell, fmt_acc, fmt_mde, fmt_p, fmt_value, is_missing
from sslsweep.analysis.protocols import rule_rank
from sslsweep.analysis.sections import Block, Cell, Heading, Paragraph, Table
from sslsweep.analysis.stats import PAIRED_TEST_NAME

TITLE = "Selection protocols: honest vs oracle"
RULE_TEXT = {
    "budget": ("budget: at each label budget, the search trial with the best leave-one-out kNN accuracy inside "
               "that budget's labelled subset, so the choice reads only the budget's own labels and can differ "
               "between budgets (the trials it chooses among come from this sweep's search, which read no "
               "label unless eval.selection is oracle)."),
    "label_free": "label_free: the search trial with the highest RankMe (effective rank of the features), no label read.",
    "oracle": ("oracle: the search trial with the best kNN (or probe) accuracy on the labelled validation split, "
               "with eval.select_fraction of the train labels (default all): more labels than a small budget has, so its accuracy is an upper bound on what "
               "selection can give, not a result a practitioner with that budget could reach."),
}
SAME_TRIAL = "0 (same trial)"
GAP_NOTE = ("gap = rule - headline rule in percentage points, mean over paired confirm seeds with its 95% CI "
            f"({PAIRED_TEST_NAME}; a seed draws the same label subset under every rule). {SAME_TRIAL}: both rules "
            f"chose the same search trial, so the runs are the same. {NOT_RESOLVED}: the CI spans zero or the "
            "comparison is not testable, so the seeds do not settle the sign. A positive oracle gap is how much "
            "choosing with the validation labels overstates what the headline rule could reach.")
RANKING_NOTE = ("Methods by mean test accuracy, best first; '=' joins equal means. A ranking is compared with the "
                "headline rule's over the methods both have; a change may lie within the seeds' noise (see the "
                "gaps' CIs).")


def _rules(table: pd.DataFrame) -> tuple[str, list[str]]:
    """The headline rule's name and the other rules of ``table``, in SELECTION_RULES order."""
    head = "/".join(sorted(set(table["headline_rule"].astype(str))))
    others = sorted(set(table.loc[~table["is_headline"].astype(bool), "rule"].astype(str)),
                    key=lambda r: (rule_rank(r), r))
    return head, others


def _shown(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of the label selection the report's method tables use (random when present)."""
    if table.empty:
        return table
    return table[table["selection"].astype(str) == headline_selection(table)]


def gap_block(protocols: pd.DataFrame) -> Table:
    """Budget x protocol x method: the headline rule's accuracy, then each other rule's and its gap."""
    shown = _shown(protocols)
    head, others = _rules(shown)
    rows = []
    for (label, protocol), g in shown.groupby(["budget_label", "protocol"], sort=False):
        for method in method_order(g["method"].astype(str).tolist()):
            gm = g[g["method"].astype(str) == method]
            hit = gm[gm["is_headline"].astype(bool)]
            row: list[str | Cell | None] = [str(label), str(protocol), method,
                                            None if hit.empty else fmt_acc(hit["mean"].iloc[0], hit["ci"].iloc[0])]
            for rule in others:
                r = gm[(gm["rule"] == rule) & ~gm["is_headline"].astype(bool)]
                if r.empty:
                    row += [None, None]
                else:
                    x = r.iloc[0]
                    same = x["same_trial"] is True and x["gap"] == x["ci_low"] == x["ci_high"] == 0
                    gap = SAME_TRIAL if same else replace(
                        diff_cell(x["gap"], x["ci_low"], x["ci_high"], x["resolved"]),
                        tooltip=f"{x['n_paired']} paired seeds; p={fmt_p(x['p_value'])}; MDE={fmt_mde(x['mde'])} points")
                    row += [fmt_acc(x["mean"], x["ci"]), gap]
            rows.append(row)
    header = ["budget", "protocol", "method", f"{head} (headline)"]
    for rule in others:
        header += [rule, f"{rule} gap (points) [95% CI]"]
    return Table(header, rows, ident="protocol-gap")


def ranking_block(rankings: pd.DataFrame) -> Table:
    """Budget x protocol: the ranking under each rule, headline first, and whether it changes."""
    shown = _shown(rankings)
    head, others = _rules(shown)
    rows = []
    for (label, protocol), g in shown.groupby(["budget_label", "protocol"], sort=False):
        by_rule = {("" if h else r): t for r, h, t in zip(g["rule"], g["is_headline"].astype(bool), g["ranking"])}
        rows.append([str(label), str(protocol), by_rule.get(""), *(by_rule.get(r) for r in others),
                     "yes" if bool(g["ranking_changes"].iloc[0]) else "no"])
    return Table(["budget", "protocol", f"{head} (headline)", *others, "ranking changes"], rows,
                 ident="protocol-ranking")


def _yes_no(value: object) -> str:
    return "n/a" if is_missing(value) else ("no" if value else "yes")


def choice_block(choices: pd.DataFrame, several: bool) -> Table:
    """Method x budget x seed x rule: the search trial chosen, its score and signal, and whether it is the headline's."""
    rows = [[*([str(r["sweep_id"])] if several else []), r["method"], r["budget_label"],
             "all" if is_missing(r["seed"]) else str(int(r["seed"])),
             f"{r['rule']} (headline)" if r["is_headline"] else r["rule"], str(r["trial_id"]), fmt_value(r["score"]),
             str(r["signal"]), "" if r["is_headline"] else _yes_no(r["differs_from_headline"])]
            for _, r in choices.iterrows()]
    return Table([*(["sweep"] if several else []), "method", "budget", "seed", "rule", "chosen trial", "score",
                  "signal", "same trial as headline"], rows, ident="protocol-choices", text_cols=(6 + int(several),))


def _agreement(protocols: pd.DataFrame, rankings: pd.DataFrame, choices: pd.DataFrame) -> list[Block]:
    """Whether the rules chose the same trials and rank the methods alike, in words."""
    out: list[Block] = []
    others = choices[~choices["is_headline"].astype(bool)] if not choices.empty else choices
    if not others.empty:
        differ = int(others["differs_from_headline"].map(lambda v: v is True).sum())  # None: unknown
        out.append(Paragraph("Every rule chose the same search trial as the headline rule, for every method and "
                             "budget." if differ == 0 else
                             f"{differ} of {len(others)} choices of the other rules differ from the headline "
                             f"rule's search trial."))
    else:
        same = protocols.loc[~protocols["is_headline"].astype(bool), "same_trial"]
        if len(same) and same.map(lambda v: v is True).all():
            out.append(Paragraph("Every rule's runs were confirmed from the headline rule's search trials "
                                 "(budget.parquet source_trial_id); the manifest records no choices."))
        else:
            out.append(Paragraph("The manifest records no choices (manifest.json choices).", note=True))
    shown = _shown(rankings)
    changed = shown[shown["ranking_changes"].astype(bool)][["budget_label", "protocol"]].drop_duplicates()
    out.append(Paragraph("The ranking of methods is the same under every rule at every budget and protocol."
                         if changed.empty else "The ranking of methods changes at: " +
                         ", ".join(f"{b} {p}" for b, p in changed.itertuples(index=False)) + "."))
    return out


def protocol_blocks(protocols: pd.DataFrame, rankings: pd.DataFrame, choices: pd.DataFrame, *,
                    full: bool) -> list[Block]:
    """The section's blocks: which rule heads the report and what each rule means, agreement in
    words, the gap table, the ranking table, and (``full``) the chosen trials or (else) their count."""
    head, others = _rules(protocols)
    present = sorted({*head.split("/"), *others}, key=lambda r: (rule_rank(r), r))
    shown = _shown(protocols)
    selections = sorted(set(protocols["selection"].astype(str)))
    blocks: list[Block] = [
        Paragraph(f"Headline rule: {head} (eval.selection). Every other table of this report shows the runs it "
                  f"chose; the runs chosen by {' and '.join(others)} were confirmed for comparison only."),
        Paragraph(" ".join(RULE_TEXT.get(r, f"{r}: no description.") for r in present)),
        *_agreement(protocols, rankings, choices),
        Heading("Test accuracy (%) under each rule and gap to the headline rule"),
        Paragraph("Mean ± 95% CI (Student t) over confirm seeds"
                  + (f"; {headline_selection(shown)} label subsets." if len(selections) > 1 else ".")),
        gap_block(protocols), Paragraph(GAP_NOTE, note=True),
        Heading("Ranking of methods under each rule"), ranking_block(rankings), Paragraph(RANKING_NOTE, note=True),
    ]
    if full and not choices.empty:
        blocks += [Heading("Chosen configurations"),
                   choice_block(choices, several=choices["sweep_id"].nunique() > 1)]
    elif not choices.empty:
        blocks.append(Paragraph(f"Chosen configurations: {len(choices)} choices (method x budget x seed x rule) with "
                                f"their trial, score and signal are listed in report.html.", note=True))
    return blocks


def show_protocols(rules: Sequence[str]) -> bool:
    """Whether the section is shown: runs of more than one rule."""
    return len(set(rules)) > 1
