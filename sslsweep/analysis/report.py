"""Build ``report.md`` and a self-contained ``report.html`` from one or more sweep directories.

Order of work: read (``io``) -> compute every table (``trials``, ``confirm``, ``protocols``,
``importance``, ``cost``) -> draw (``plots``) -> lay out (``contents``) -> render (``render``).

Example::

    paths = build_report(["s3://bucket/run"])           # writes beside the sweep
    paths = build_report(["runs/a", "runs/b"], out="runs/report")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import pandas as pd

from sslsweep.analysis import plots
from sslsweep.analysis.asha import rung_correlation, rungs_of
from sslsweep.analysis.confirm import (
    gain_over_none,
    headline_selection,
    headline_table,
    paired_comparisons,
    selection_table,
    with_selection,
)
from sslsweep.analysis.contents import ReportData, full_document, summary_document
from sslsweep.analysis.conventions import BASELINE, method_order
from sslsweep.analysis.cost import cost_table, max_epochs_of, phase_table, search_cost
from sslsweep.analysis.importance import param_importances
from sslsweep.analysis.io import SweepResults, combine, open_sweep, write_text
from sslsweep.analysis.protocols import Headline, protocol_table, ranking_table, rules_present, sweep_choices
from sslsweep.analysis.render import to_html, to_markdown
from sslsweep.analysis.sections import Figure
from sslsweep.analysis.trials import asha_stops, best_hparams, best_so_far, best_trials, failures, metric_vs_hparams
from sslsweep.schema import REPORT_HTML, REPORT_MD, SELECTION_DEFAULT


def _max_epochs(sweep: SweepResults) -> int | dict[str, int] | None:
    if not sweep.parts:
        return max_epochs_of(sweep.manifest)
    found = {str(m.get("sweep_id")): max_epochs_of(m) for m in sweep.manifests}
    return {k: v for k, v in found.items() if v is not None}


def compute(sweep: SweepResults) -> ReportData:
    """All report tables for ``sweep`` (pure computation; nothing drawn or written)."""
    mode = str(sweep.manifest.get("mode"))
    metric = str(sweep.manifest.get("metric") or "metric")
    trials, budget = sweep.trials, sweep.budget
    importance, imp_notes = param_importances(trials, mode, sweep.studies)
    headline = headline_table(budget)
    comparisons = paired_comparisons(budget, headline)
    data = ReportData(
        sweep=sweep, metric=metric, mode=mode, headline=headline, comparisons=comparisons,
        gain=gain_over_none(budget, comparisons), best=best_trials(trials, mode),
        best_hp=best_hparams(trials, mode),
        cost_search=search_cost(trials, _max_epochs(sweep)), stops=asha_stops(trials),
        curve=best_so_far(trials, mode), failed=failures(trials),
        mvh=metric_vs_hparams(trials, mode), importance=importance,
        importance_notes=imp_notes, cost=cost_table(sweep.manifests),
        phases=phase_table(sweep.manifests), selection=selection_table(budget), notes=list(sweep.notes),
        rung_corr=rung_correlation(trials, rungs_of(sweep.manifests)),
    )
    data.rules = rules_present(sweep.budget_all)
    if len(data.rules) > 1:
        rules = sweep.headline_rules
        head: Headline = next(iter(rules.values())) if len(set(rules.values())) == 1 else rules
        data.protocols = protocol_table(sweep.budget_all, head)
        data.rankings = ranking_table(sweep.budget_all, head)
    data.choices = sweep_choices(sweep.manifests)  # what each rule confirmed, also with one rule
    reference = headline_selection(budget)
    if reference not in (None, SELECTION_DEFAULT):
        data.notes.append(f"budget.parquet holds no random label subsets: the accuracy tables show the "
                          f"{reference} ones (dataset.label_selection).")
    if not budget.empty and BASELINE not in set(budget["method"].astype(str)):
        data.notes.append("The 'none' baseline (random-init encoder) is not in budget.parquet: "
                          "no gain over none is reported.")
    if _max_epochs(sweep) in (None, {}):
        data.notes.append("config.search.max_epochs is missing from the manifest: epochs saved "
                          "by ASHA cannot be computed.")
    return data


def _headline_rows(budget: pd.DataFrame) -> pd.DataFrame:
    """The budget rows the headline table summarises (its label selection's), one per seed."""
    rows = with_selection(budget)
    return rows[rows["selection"].astype(str) == headline_selection(rows)]


def figures(data: ReportData) -> dict[str, list[Figure]]:
    """Every drawing of the report by where it goes (``budget``, ``search``, ``method:<name>``);
    tables with no rows draw nothing."""
    out: dict[str, list[Figure]] = {}

    def draw(place: str, title: str, alt: str, fn: Callable[[], bytes]) -> None:
        out.setdefault(place, []).append(Figure(title=title, alt=alt, png=fn()))

    if not data.headline.empty:
        draw("budget", "Accuracy vs label budget",
             "Test accuracy against label budget per method; solid linear probe, dashed "
             "fine-tune; bands are 95% confidence intervals over seeds, clipped to 0-100%; dots are "
             "single seeds",
             lambda: plots.accuracy_vs_budget(data.headline, _headline_rows(data.sweep.budget)))
    if not data.gain.empty:
        draw("budget", "Gain over none", "Gain in test accuracy over the random-init baseline against label budget",
             lambda: plots.gain_over_none(data.gain))
    for sel in data.selection["selection"].astype(str).unique():
        draw("selection", f"{sel} vs random label selection",
             f"Gain in test accuracy of {sel} over random label selection against label budget, per method",
             partial(plots.selection_gain, data.selection[data.selection["selection"] == sel], sel))
    for method in method_order(data.mvh["method"].astype(str).tolist()):
        draw(f"method:{method}", f"{method}: {data.metric} vs hyperparameters",
             f"{method}: final {data.metric} of each trial against each searched hyperparameter, best trial starred",
             partial(plots.metric_vs_hparams, data.mvh, method, data.metric))
    for method in method_order(data.importance["method"].astype(str).tolist()):
        draw(f"method:{method}", f"{method}: importance", f"{method}: hyperparameter importance bars",
             partial(plots.importances, data.importance, method))
    if data.curve["best_metric"].notna().any():
        draw("search", "Best so far", f"Best {data.metric} so far against cumulative epochs trained, per method",
             lambda: plots.best_so_far(data.curve, data.metric))
    if not data.stops.empty:
        draw("search", "ASHA stops per rung", "Number of trials ASHA stopped at each rung, per method",
             lambda: plots.asha_stops(data.stops))
    return out


def build_report(uris: Sequence[str], out: str | None = None) -> dict[str, str]:
    """Read the sweeps at ``uris`` (local paths or URIs), combine them, and write the report.

    Writes ``report.md`` and ``report.html`` to ``out`` (default: the first uri) and returns
    ``{"md": <where>, "html": <where>}``.
    """
    if isinstance(uris, str):
        uris = [uris]
    if not uris:
        raise ValueError("uris is empty: build_report needs at least one sweep directory")
    data = compute(combine([open_sweep(u) for u in uris]))
    target = out if out is not None else uris[0]
    md_path = write_text(target, REPORT_MD, to_markdown(summary_document(data)))
    html_path = write_text(target, REPORT_HTML, to_html(full_document(data, figures(data))))
    return {"md": md_path, "html": html_path}
