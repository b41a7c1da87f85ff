"""What the report says: the documents ``report.md`` and ``report.html``, built as
:mod:`sslsweep.analysis.sections` blocks from the tables of :class:`ReportData`. Every number is
formatted here, once; :mod:`sslsweep.analysis.render` only writes the blocks as Markdown or HTML.

The two files are two documents made of the same tables: :func:`summary_document` is
``report.md`` (for a pull request or a terminal: headline, best hyperparameters, search cost,
failures, provenance) and :func:`full_document` is ``report.html`` (adds the plots, paired
comparisons, per-method detail, cost and the resolved config).

Example::

    html = render.to_html(full_document(data, figures))
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from sslsweep.analysis.asha import RUNG_COLUMNS, rung_warnings
from sslsweep.analysis.confirm import SELECTION_COLUMNS
from sslsweep.analysis.conventions import BASELINE, method_order, protocol_rank
from sslsweep.analysis.formats import (
    COMPARISON_LEGEND,
    MDE_HEADER,
    diff_cell,
    fmt_acc,
    fmt_mde,
    fmt_p,
    fmt_value,
    is_missing,
)
from sslsweep.analysis.io import SweepResults, fingerprint
from sslsweep.analysis.protocol_contents import TITLE as PROTOCOLS_TITLE
from sslsweep.analysis.protocol_contents import choice_block, protocol_blocks, show_protocols
from sslsweep.analysis.protocols import CHOICE_COLUMNS, PROTOCOL_COLUMNS, RANKING_COLUMNS
from sslsweep.analysis.sections import (
    Block,
    Cell,
    Details,
    Document,
    Figure,
    Heading,
    Items,
    Paragraph,
    Preformatted,
    Section,
    Table,
)
from sslsweep.analysis.stats import ALPHA, PAIRED_TEST_NAME

# ----------------------------------------------------------------------------- what it is built from


@dataclass
class ReportData:
    """Every table the report shows, computed once from a (possibly combined) sweep
    (:func:`sslsweep.analysis.report.compute`)."""

    sweep: SweepResults
    metric: str
    mode: str
    headline: pd.DataFrame
    comparisons: pd.DataFrame
    gain: pd.DataFrame
    best: pd.DataFrame
    best_hp: pd.DataFrame
    cost_search: pd.DataFrame
    stops: pd.DataFrame
    curve: pd.DataFrame
    failed: pd.DataFrame
    mvh: pd.DataFrame
    importance: pd.DataFrame
    importance_notes: dict[str, str]
    cost: pd.DataFrame
    phases: pd.DataFrame
    selection: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SELECTION_COLUMNS))
    notes: list[str] = field(default_factory=list)
    rung_corr: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=RUNG_COLUMNS))
    rules: list[str] = field(default_factory=list)  # the selection rules (chosen_by) of budget_all
    protocols: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PROTOCOL_COLUMNS))
    rankings: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=RANKING_COLUMNS))
    choices: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=CHOICE_COLUMNS))


# ----------------------------------------------------------------------------- numbers as text

BEST_MARK = "★"
NSW_MARK = "†"
UNTESTABLE_MARK = "°"
LEGEND = (f"{BEST_MARK} best mean in its column; {NSW_MARK} not significantly worse than the best "
          f"({PAIRED_TEST_NAME}, α = {ALPHA:g}); {UNTESTABLE_MARK} not testable against the best "
          f"(fewer than 2 paired seeds, or every seed shifted by the same amount: no spread to test): "
          f"whether it is worse cannot be claimed either way.")
# How a method is named in the headline table. ``none`` pretrains nothing: its linear columns show
# what a random-init encoder's features give, its fine-tune columns are the supervised-only baseline.
METHOD_LABELS = {BASELINE: "none (random init; fine-tune = supervised only)"}
NO_CONFIRM = "No confirm-phase results (budget.parquet is empty or missing)."
NO_SEARCH = "No search results."
NONE_NOTE = ("none: no pretraining. Its linear-probe columns measure a random-init encoder; its fine-tune "
             "columns are the supervised-only baseline (the same encoder trained on the labelled subset alone).")


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


# ----------------------------------------------------------------------------- tables both documents show


def _mark(row: Mapping[str, Any]) -> str:
    if row["is_best"]:
        return BEST_MARK
    if row["not_sig_worse"] is None or is_missing(row["not_sig_worse"]):
        return UNTESTABLE_MARK
    return NSW_MARK if row["not_sig_worse"] else ""


def _columns(headline: pd.DataFrame) -> list[tuple[str, float, str, str]]:
    """(budget_kind, budget, protocol, budget_label) in display order."""
    cols = headline[["budget_kind", "budget", "protocol", "budget_label"]].drop_duplicates()
    keyed = sorted(cols.itertuples(index=False),
                   key=lambda c: (str(c[0]), float(c[1]), protocol_rank(str(c[2]))))
    return [tuple(c) for c in keyed]  # type: ignore[misc]


def _cell(headline: pd.DataFrame, method: str, col: tuple[Any, ...]) -> Cell | None:
    hit = headline[(headline["method"] == method) & (headline["budget_kind"] == col[0])
                   & (headline["budget"] == col[1]) & (headline["protocol"] == col[2])]
    if hit.empty:
        return None
    row = hit.iloc[0].to_dict()
    return Cell(fmt_acc(row["mean"], row["ci"]), _mark(row), best=bool(row["is_best"]),
                tooltip=f"n={row['n_seeds']} seeds; p vs best={fmt_p(row['p_vs_best'])}")


def headline_block(headline: pd.DataFrame) -> Table:
    """Method x (budget, protocol): the protocols of a budget grouped under its label, marks included."""
    cols = _columns(headline)
    labels = list(dict.fromkeys((c[0], c[1], c[3]) for c in cols))
    groups = [(lab[2], sum(1 for c in cols if (c[0], c[1], c[3]) == lab)) for lab in labels]
    rows = [[method_label(method), *(_cell(headline, method, col) for col in cols)]
            for method in method_order(headline["method"].astype(str).tolist())]
    return Table(["method", *(c[2] for c in cols)], rows, groups=groups, ident="headline")


GAIN_HEADER = ["budget", "protocol", "method", "paired seeds", "gain over none (points) [95% CI]", "p", MDE_HEADER]
COST_HEADER = ["method", "trials", "completed", "stopped (ASHA)", "failed", "diverged",
               "epochs trained", "epochs without ASHA", "epochs saved (ASHA)"]
FAILURE_HEADER = ["method", "trial", "status", "epoch", "error"]


def gain_block(gain: pd.DataFrame) -> Table:
    return Table(GAIN_HEADER, [[r["budget_label"], r["protocol"], r["method"], str(r["n_paired"]),
                                diff_cell(r["gain"], r["ci_low"], r["ci_high"], r["resolved"]), fmt_p(r["p_value"]),
                                fmt_mde(r["mde"])]
                               for _, r in gain.iterrows()])


SELECTION_NOTE = ("typical: the most typical image of each k-means cluster of the confirmed encoder's features of "
                  "the train pool (TypiClust, Hacohen et al., ICML 2022), chosen without reading a label; random: "
                  "class-balanced. At each budget and seed both label as many images, and both are evaluated on "
                  "the same encoder, so the gain is paired over seeds. Typical subsets are not nested across budgets; "
                  "at 100% both take the whole pool.")


def selection_title(selection: pd.DataFrame) -> str:
    return "Label selection: " + " vs ".join(["random", *selection["selection"].astype(str).unique()])


def selection_blocks(selection: pd.DataFrame) -> list[Block]:
    """Per selection other than random: budget x protocol x method, both accuracies and the paired gain."""
    blocks: list[Block] = [Paragraph(f"Test accuracy (%), mean ± 95% CI (Student t) over confirm seeds, by how the "
                                     f"labelled images were chosen; gain in percentage points ({PAIRED_TEST_NAME}).")]
    for sel, g in selection.groupby("selection", sort=False):
        rows = [[r["budget_label"], r["protocol"], r["method"], fmt_acc(r["reference_mean"], r["reference_ci"]),
                 fmt_acc(r["mean"], r["ci"]), str(r["n_paired"]),
                 diff_cell(r["gain"], r["ci_low"], r["ci_high"], r["resolved"]), fmt_p(r["p_value"]),
                 fmt_mde(r["mde"])] for _, r in g.iterrows()]
        blocks.append(Table(["budget", "protocol", "method", "random", str(sel), "paired seeds",
                             f"{sel} - random (points) [95% CI]", "p", MDE_HEADER], rows, ident=f"selection-{sel}"))
    blocks.append(Paragraph(COMPARISON_LEGEND, note=True))
    blocks.append(Paragraph(SELECTION_NOTE, note=True))
    return blocks


def search_cost_block(cost: pd.DataFrame) -> Table:
    rows = []
    for _, r in cost.iterrows():
        if is_missing(r["epochs_saved"]):
            saved = "n/a"
        elif r["epochs_full"] == 0:
            saved = "0 (no pretraining)"
        else:
            saved = f"{r['epochs_saved']:.0f} ({100 * r['saved_frac']:.0f}%)"
        full = "n/a" if is_missing(r["epochs_full"]) else f"{r['epochs_full']:.0f}"
        rows.append([str(r[c]) for c in ("method", "trials", "completed", "stopped", "failed", "diverged",
                                         "epochs_trained")] + [full, saved])
    return Table(COST_HEADER, rows)


def stops_text(stops: pd.DataFrame, method: str) -> str:
    sub = stops[stops["method"] == method]
    return ", ".join(f"epoch {int(e)}: {int(n)}" for e, n in zip(sub["rung_epoch"], sub["n_stopped"])) or "no stops"


RUNG_NOTE = ("Spearman rank correlation, over each method's completed trials, between the metric at each rung "
             "(an epoch where ASHA compared trials) and the final metric. Low values mean the rung's ranking "
             "does not predict the final one, so ASHA's stops there may be wrong; completed trials are those "
             "ASHA kept, so the check is among survivors. Methods with fewer than 3 completed trials are left out.")


def rung_blocks(rung_corr: pd.DataFrame) -> list[Block]:
    """The rung-vs-final correlation table, a note on it and one warning line per suspect method
    (nothing when no method had 3 completed trials)."""
    if rung_corr.empty:
        return []
    rows = [[r["method"], str(r["rung"]), str(r["n_trials"]), fmt_rho(r["spearman"])] for _, r in rung_corr.iterrows()]
    return [Table(["method", "rung (epoch)", "completed trials", "Spearman ρ with final metric"], rows,
                  ident="asha-signal"),
            Paragraph(RUNG_NOTE, note=True), *(Paragraph(w) for w in rung_warnings(rung_corr))]


def fmt_rho(rho: float) -> str:
    return "n/a" if is_missing(rho) else f"{rho:+.2f}"


def failure_block(failed: pd.DataFrame, limit: int | None = None) -> Table:
    """Failed and diverged trials; errors cut to ``limit`` characters when given."""
    rows = []
    for _, r in failed.iterrows():
        err = "" if is_missing(r["error"]) else str(r["error"])
        if limit is not None and len(err) > limit:
            err = err[:limit] + "…"
        rows.append([r["method"], str(r["trial_id"]), r["status"], str(r["max_epoch"]), err])
    return Table(FAILURE_HEADER, rows, text_cols=(4,))


def _hp_text(best_hp: pd.DataFrame, method: str) -> str:
    sub = best_hp[best_hp["method"] == method]
    return ", ".join(f"{p}={fmt_value(v)}" for p, v in zip(sub["param"], sub["value"])) or "(none)"


def provenance(manifest: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Key facts of one manifest as (label, text) pairs."""
    dataset = manifest.get("dataset") or {}
    return [
        ("sweep id", str(manifest.get("sweep_id"))),
        ("started / finished", f"{manifest.get('started')} / {manifest.get('finished')}"),
        ("selection metric", f"{manifest.get('metric')} ({manifest.get('mode')})"),
        ("git commit", str(manifest.get("git_commit"))),
        ("dataset", f"{dataset.get('name')} (fingerprint {fingerprint(dict(manifest))}; "
                    f"train/val/test {dataset.get('n_train')}/{dataset.get('n_val')}/{dataset.get('n_test')}; "
                    f"{dataset.get('num_classes')} classes; shape {dataset.get('shape')})"),
        ("seeds", json.dumps(manifest.get("seeds"), sort_keys=True)),
        ("versions", ", ".join(f"{k} {v}" for k, v in (manifest.get("versions") or {}).items())),
        ("hardware", json.dumps(manifest.get("hardware"), sort_keys=True)),
        ("resources per trial", json.dumps(manifest.get("resources"), sort_keys=True)),
    ]


def _title(data: ReportData) -> str:
    return "sslsweep report: " + ", ".join(str(m.get("sweep_id")) for m in data.sweep.manifests)


def _has_baseline(headline: pd.DataFrame) -> bool:
    return BASELINE in set(headline["method"].astype(str))


# ----------------------------------------------------------------------------- report.md


def summary_document(data: ReportData) -> Document:
    """``report.md``: headline, best hyperparameters, search cost, failures, provenance."""
    accuracy: list[Block] = [Paragraph(NO_CONFIRM)] if data.headline.empty else [
        Paragraph("Mean ± 95% CI (Student t) over confirm seeds."), headline_block(data.headline),
        Paragraph(LEGEND), *([Paragraph(NONE_NOTE)] if _has_baseline(data.headline) else [])]
    if not data.gain.empty:
        accuracy += [Heading("Gain over none"), gain_block(data.gain), Paragraph(COMPARISON_LEGEND, note=True)]
    best_rows = [[b["method"], str(b["trial_id"]), fmt_value(b["metric"]), str(b["metric_epoch"]), b["pool"],
                  _hp_text(data.best_hp, b["method"])] for _, b in data.best.iterrows()]
    cost: list[Block] = [Paragraph(NO_SEARCH)] if data.cost_search.empty else [
        search_cost_block(data.cost_search),
        Paragraph("ASHA stops per rung: " + "; ".join(f"{m}: {stops_text(data.stops, m)}"
                                                      for m in data.cost_search["method"])),
        *rung_blocks(data.rung_corr)]
    sections = [
        Section("accuracy", "Test accuracy (%) by label budget", accuracy),
        *([Section("selection", selection_title(data.selection), selection_blocks(data.selection))]
          if not data.selection.empty else []),
        *_protocols(data, full=False),
        Section("best", f"The search's best hyperparameters (by final {data.metric}, {data.mode})",
                [Table(["method", "trial", "metric", "at epoch", "chosen among", "hyperparameters"], best_rows)
                 if not data.best.empty else Paragraph(NO_SEARCH),
                 *([Paragraph(BEST_NOTE, note=True)] if not data.choices.empty else [])]),
        Section("search-cost", "Search cost", cost),
        Section("failures", "Failed and diverged trials",
                [failure_block(data.failed, 200) if not data.failed.empty else Paragraph("None.")]),
        Section("provenance", "Provenance", [Items(provenance(m)) for m in data.sweep.manifests]),
    ]
    if data.notes:
        sections.append(Section("notes", "Notes", [Items(data.notes)]))
    return Document(_title(data), sections, closing=[
        Paragraph("The full report with plots, resolved config and search spaces is report.html.")])


# ----------------------------------------------------------------------------- report.html


def full_document(data: ReportData, figures: Mapping[str, Sequence[Figure]]) -> Document:
    """``report.html``: every table and plot. ``figures`` maps a place (``budget``, ``selection``,
    ``search``, ``method:<name>``) to the figures shown there, in order. Sections are numbered here,
    in order (id ``s<n>``, title ``"<n>. ..."``); the label-selection section is there only when the
    sweep compared selections, the selection-protocols one only when it confirmed several rules."""
    sections = [_accuracy(data), _budget(data, figures.get("budget", ())),
                *_selection(data, figures.get("selection", ())), *_protocols(data, full=True),
                _per_method(data, figures),
                _search(data, figures.get("search", ())), _cost(data), _provenance(data), _failures(data)]
    sections = [replace(s, id=f"s{i}", title=f"{i}. {s.title}") for i, s in enumerate(sections, 1)]
    if data.notes:
        sections.append(Section("notes", "Notes", [Items(data.notes)]))
    return Document(_title(data), sections)


def _accuracy(data: ReportData) -> Section:
    title = "Test accuracy by label budget"
    if data.headline.empty:
        return Section("", title, [Paragraph(NO_CONFIRM)])
    blocks: list[Block] = [Paragraph("Test accuracy (%), mean ± 95% CI (Student t) over confirm seeds."),
                           headline_block(data.headline), Paragraph(LEGEND, note=True)]
    if _has_baseline(data.headline):
        blocks.append(Paragraph(NONE_NOTE, note=True))
    if not data.comparisons.empty:
        rows = [[r["budget_label"], r["protocol"], r["method"], f"{r['reference']} ({r['reference_method']})",
                 str(r["n_paired"]), diff_cell(r["mean_diff"], r["ci_low"], r["ci_high"], r["resolved"]),
                 fmt_p(r["p_value"]), fmt_mde(r["mde"])]
                for _, r in data.comparisons.iterrows()]
        blocks.append(Details("Paired comparisons against the best and against none", [
            Paragraph(f"Test: {PAIRED_TEST_NAME} (scipy.stats.ttest_rel); differences in percentage points."),
            Table(["budget", "protocol", "method", "vs", "paired seeds", "difference (points) [95% CI]", "p",
                   MDE_HEADER], rows),
            Paragraph(COMPARISON_LEGEND, note=True)]))
    return Section("", title, blocks)


def _budget(data: ReportData, figures: Sequence[Figure]) -> Section:
    blocks: list[Block] = list(figures)
    if not data.gain.empty:
        blocks += [gain_block(data.gain), Paragraph(COMPARISON_LEGEND, note=True)]
    elif not data.headline.empty:
        blocks.append(Paragraph("No gain over none: the 'none' baseline is not in budget.parquet.", note=True))
    return Section("", "Accuracy vs label budget", blocks or [Paragraph("No confirm-phase results.")])


def _selection(data: ReportData, figures: Sequence[Figure]) -> list[Section]:
    """The label selections compared, when the sweep evaluated more than one (else no section)."""
    if data.selection.empty:
        return []
    return [Section("", selection_title(data.selection), [*figures, *selection_blocks(data.selection)])]


CHOSEN_NOTE = ("The search trial each method's confirm runs retrained, per label budget, as the selection rule "
               "(eval.selection) chose it, with the signal it was chosen by; see docs/selection.md.")
BEST_NOTE = ("The search's best by its own metric. The confirm runs retrained the trials the selection rule chose "
             "per label budget (section Confirmed configurations or Selection protocols), which can differ.")


def _protocols(data: ReportData, full: bool) -> list[Section]:
    """The selection rules compared, when budget.parquet holds runs of more than one; with one rule,
    the trials it confirmed per budget (manifest ``choices``), when the manifest records them."""
    if not show_protocols(data.rules) or data.protocols.empty:
        if data.choices.empty:
            return []
        return [Section("chosen", "Confirmed configurations (per label budget)", [
            Paragraph(CHOSEN_NOTE), choice_block(data.choices, several=data.choices["sweep_id"].nunique() > 1)])]
    return [Section("protocols", PROTOCOLS_TITLE, protocol_blocks(data.protocols, data.rankings, data.choices,
                                                                  full=full))]


def _per_method(data: ReportData, figures: Mapping[str, Sequence[Figure]]) -> Section:
    blocks: list[Block] = []
    for method in method_order(data.best["method"].astype(str).tolist() + list(data.importance_notes)):
        blocks.append(Heading(method))
        best = data.best[data.best["method"] == method]
        if not best.empty:
            b = best.iloc[0]
            blocks.append(Paragraph(f"Best trial {b['trial_id']}: {data.metric} = {fmt_value(b['metric'])} at "
                                    f"epoch {b['metric_epoch']} (chosen among {b['pool']}); "
                                    f"{_hp_text(data.best_hp, method)}"))
        blocks += figures.get(f"method:{method}", ())
        imp = data.importance[data.importance["method"] == method]
        if not imp.empty:
            blocks.append(Table(["hyperparameter", "importance"],
                                [[r["param"], f"{r['importance']:.3f}"] for _, r in imp.iterrows()]))
        blocks.append(Paragraph(f"Importance: {data.importance_notes.get(method, 'not computed')}", note=True))
    return Section("", "Per method: metric vs hyperparameters", blocks or [Paragraph(NO_SEARCH)])


def _search(data: ReportData, figures: Sequence[Figure]) -> Section:
    blocks: list[Block] = list(figures)
    if blocks:
        blocks.insert(0, Paragraph(f"Best-so-far curves take the best {data.metric} over every reported result, "
                                   f"including those of trials ASHA later stopped (partial budget); the best "
                                   f"hyperparameters above are chosen among completed trials.", note=True))
    if not data.cost_search.empty:
        blocks.append(search_cost_block(data.cost_search))
        blocks.append(Table(["method", "ASHA stops per rung"],
                            [[m, stops_text(data.stops, m)] for m in data.cost_search["method"]]))
        blocks += rung_blocks(data.rung_corr)
    return Section("", "Search behaviour", blocks or [Paragraph(NO_SEARCH)])


def _cost(data: ReportData) -> Section:
    rows = [[r["method"], r["phase"], fmt_value(r["wall_s"]), fmt_value(r["device_h"])]
            for _, r in data.cost.iterrows()]
    phases = [[str(r["sweep_id"]), r["phase"], str(r["started"]), str(r["finished"]), fmt_value(r["wall_s"])]
              for _, r in data.phases.iterrows()]
    blocks: list[Block] = [Table(["method", "phase", "seconds", "device-hours"], rows) if rows
                           else Paragraph("The manifest records no per-method cost.")]
    if phases:
        blocks.append(Table(["sweep", "phase", "started", "finished", "wall s"], phases))
    blocks.append(Paragraph(
        "Seconds per method: search = the wall time of that method's search (every method is searched at "
        "once, so these overlap; it includes computing every confirmed rule's selection signal); confirm = "
        "the method's confirm trials' own seconds, summed, including the runs confirmed only to compare "
        "selection rules (eval.compare) (methods' confirm trials run together, so the phase's wall time "
        "is in the table below). "
        "Device-hours: trial wall time x devices held (GPUs if any, else CPUs), summed.", note=True))
    return Section("", "Cost", blocks)


def _provenance(data: ReportData) -> Section:
    blocks: list[Block] = []
    for manifest in data.sweep.manifests:
        blocks += [Heading(str(manifest.get("sweep_id"))),
                   Table(["item", "value"], provenance(manifest), text_cols=(1,)),
                   Heading("Resolved search spaces", 4), _json(manifest.get("spaces")),
                   Heading("Resolved config", 4), _json(manifest.get("config"))]
    return Section("", "Provenance", blocks)


def _json(obj: Any) -> Preformatted:
    return Preformatted(json.dumps(obj, indent=2, sort_keys=True, default=str))


def _failures(data: ReportData) -> Section:
    return Section("", "Failed and diverged trials", [failure_block(data.failed) if not data.failed.empty
                                                           else Paragraph("No failed or diverged trials.")])
