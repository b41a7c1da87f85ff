"""Build ``report.md`` and a self-contained ``report.html`` from one or more sweep directories.

Order of work: read (``io``) -> compute every table (``tables``) -> draw (``plots``) -> render.
Rendering only formats numbers that the tables already hold.

Example::

    paths = build_report(["s3://bucket/run"])           # writes beside the sweep
    paths = build_report(["runs/a", "runs/b"], out="runs/report")
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pandas as pd

from sslsweep.analysis import plots, tables
from sslsweep.analysis.io import Sweep, combine, fingerprint, open_sweep, write_text
from sslsweep.analysis.stats import ALPHA, PAIRED_TEST_NAME

BEST_MARK = "★"
NSW_MARK = "†"
UNTESTABLE_MARK = "°"
LEGEND = (f"{BEST_MARK} best mean in its column; {NSW_MARK} not significantly worse than the best "
          f"({PAIRED_TEST_NAME}, α = {ALPHA:g}); {UNTESTABLE_MARK} not testable against the best "
          f"(fewer than 2 paired seeds, or every seed shifted by the same amount: no spread to test): "
          f"whether it is worse cannot be claimed either way.")
# How a method is named in the headline table. ``none`` pretrains nothing: its linear columns show
# what a random-init encoder's features give, its fine-tune columns are the supervised-only baseline.
METHOD_LABELS = {"none": "none (random init; fine-tune = supervised only)"}
NONE_NOTE = ("none: no pretraining. Its linear-probe columns measure a random-init encoder; its fine-tune "
             "columns are the supervised-only baseline (the same encoder trained on the labelled subset alone).")


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


@dataclass
class Drawing:
    """One embedded drawing: its section, title, alt text and PNG bytes."""

    section: str
    title: str
    alt: str
    png: bytes


@dataclass
class ReportData:
    """Every table the report shows, computed once from a (possibly combined) sweep."""

    sweep: Sweep
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
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- compute


def _max_epochs(sweep: Sweep) -> int | dict[str, int] | None:
    if not sweep.parts:
        return tables.max_epochs_of(sweep.manifest)
    found = {str(m.get("sweep_id")): tables.max_epochs_of(m) for m in sweep.manifests}
    return {k: v for k, v in found.items() if v is not None}


def compute(sweep: Sweep) -> ReportData:
    """All report tables for ``sweep`` (pure computation; nothing drawn or written)."""
    mode = str(sweep.manifest.get("mode"))
    metric = str(sweep.manifest.get("metric") or "metric")
    trials, budget = sweep.trials, sweep.budget
    importance, imp_notes = tables.param_importances(trials, mode, sweep.studies)
    headline = tables.headline_table(budget)
    comparisons = tables.paired_comparisons(budget, headline)
    data = ReportData(
        sweep=sweep, metric=metric, mode=mode, headline=headline, comparisons=comparisons,
        gain=tables.gain_over_none(budget, comparisons), best=tables.best_trials(trials, mode),
        best_hp=tables.best_hparams(trials, mode),
        cost_search=tables.search_cost(trials, _max_epochs(sweep)), stops=tables.asha_stops(trials),
        curve=tables.best_so_far(trials, mode), failed=tables.failures(trials),
        mvh=tables.metric_vs_hparams(trials, mode), importance=importance,
        importance_notes=imp_notes, cost=tables.cost_table(sweep.manifests),
        phases=tables.phase_table(sweep.manifests), notes=list(sweep.notes),
    )
    if not budget.empty and tables.BASELINE not in set(budget["method"].astype(str)):
        data.notes.append("The 'none' baseline (random-init encoder) is not in budget.parquet: "
                          "no gain over none is reported.")
    if _max_epochs(sweep) in (None, {}):
        data.notes.append("config.search.max_epochs is missing from the manifest: epochs saved "
                          "by ASHA cannot be computed.")
    return data


def _draw(section: str, title: str, alt: str, fn: Callable[[], bytes]) -> Drawing:
    return Drawing(section=section, title=title, alt=alt, png=fn())


def figures(data: ReportData) -> list[Drawing]:
    """Every drawing of the report (tables with no rows draw nothing)."""
    out: list[Drawing] = []
    if not data.headline.empty:
        out.append(_draw("budget", "Accuracy vs label budget",
                         "Test accuracy against label budget per method; solid linear probe, dashed "
                         "fine-tune; bands are 95% confidence intervals over seeds",
                         lambda: plots.accuracy_vs_budget(data.headline)))
    if not data.gain.empty:
        out.append(_draw("budget", "Gain over none",
                         "Gain in test accuracy over the random-init baseline against label budget",
                         lambda: plots.gain_over_none(data.gain)))
    for method in tables.method_order(data.mvh["method"].astype(str).tolist()):
        out.append(_draw(f"method:{method}", f"{method}: {data.metric} vs hyperparameters",
                         f"{method}: final {data.metric} of each trial against each searched "
                         f"hyperparameter, best trial starred",
                         partial(plots.metric_vs_hparams, data.mvh, method, data.metric)))
    for method in tables.method_order(data.importance["method"].astype(str).tolist()):
        out.append(_draw(f"method:{method}", f"{method}: importance",
                         f"{method}: hyperparameter importance bars",
                         partial(plots.importances, data.importance, method)))
    if data.curve["best_metric"].notna().any():
        out.append(_draw("search", "Best so far", f"Best {data.metric} so far against cumulative "
                         f"epochs trained, per method", lambda: plots.best_so_far(data.curve, data.metric)))
    if not data.stops.empty:
        out.append(_draw("search", "ASHA stops per rung",
                         "Number of trials ASHA stopped at each rung, per method",
                         lambda: plots.asha_stops(data.stops)))
    return out


# ----------------------------------------------------------------------------- formatting


def _isnan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def fmt_acc(mean: float, ci: float) -> str:
    """Accuracy as a percentage with its CI half-width: ``"60.0 ± 24.8"``; NaN CI -> ``"n/a"``."""
    if _isnan(mean):
        return "n/a"
    half = "n/a" if _isnan(ci) else f"{100 * ci:.1f}"
    return f"{100 * mean:.1f} ± {half}"


def fmt_diff(mean: float, low: float, high: float) -> str:
    """Difference in percentage points with its CI: ``"+1.2 [-0.5, +2.9]"``."""
    if _isnan(mean):
        return "n/a"
    ci = "[n/a]" if _isnan(low) else f"[{100 * low:+.1f}, {100 * high:+.1f}]"
    return f"{100 * mean:+.1f} {ci}"


def fmt_value(value: Any) -> str:
    """A table value: floats to 4 significant digits, NaN/None as ``"n/a"``."""
    if _isnan(value):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def fmt_p(p: float) -> str:
    return "n/a" if _isnan(p) else f"{p:.3g}"


def _mark(row: Mapping[str, Any]) -> str:
    if row["is_best"]:
        return BEST_MARK
    if row["not_sig_worse"] is None or _isnan(row["not_sig_worse"]):
        return UNTESTABLE_MARK
    return NSW_MARK if row["not_sig_worse"] else ""


def _columns(headline: pd.DataFrame) -> list[tuple[str, float, str, str]]:
    """(budget_kind, budget, protocol, budget_label) in display order."""
    cols = headline[["budget_kind", "budget", "protocol", "budget_label"]].drop_duplicates()
    keyed = sorted(cols.itertuples(index=False),
                   key=lambda c: (str(c[0]), float(c[1]), tables._protocol_rank(str(c[2]))))
    return [tuple(c) for c in keyed]  # type: ignore[misc]


def _cell(headline: pd.DataFrame, method: str, col: tuple[Any, ...]) -> Mapping[str, Any] | None:
    hit = headline[(headline["method"] == method) & (headline["budget_kind"] == col[0])
                   & (headline["budget"] == col[1]) & (headline["protocol"] == col[2])]
    return None if hit.empty else hit.iloc[0].to_dict()


def _md_escape(text: Any) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (cells escaped)."""
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def headline_rows(headline: pd.DataFrame, bold: Callable[[str], str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the wide headline table (method x budget/protocol), marks included."""
    cols = _columns(headline)
    header = ["method"] + [f"{c[3]} {c[2]}" for c in cols]
    rows = []
    for method in tables.method_order(headline["method"].astype(str).tolist()):
        row = [method_label(method)]
        for col in cols:
            cell = _cell(headline, method, col)
            if cell is None:
                row.append("")
                continue
            text = fmt_acc(cell["mean"], cell["ci"])
            mark = _mark(cell)
            row.append(f"{bold(text)} {mark}" if cell["is_best"] else f"{text} {mark}".rstrip())
        rows.append(row)
    return header, rows


def _hp_text(best_hp: pd.DataFrame, method: str) -> str:
    sub = best_hp[best_hp["method"] == method]
    return ", ".join(f"{p}={fmt_value(v)}" for p, v in zip(sub["param"], sub["value"])) or "(none)"


def best_rows(data: ReportData) -> list[list[str]]:
    """Rows of the best-hyperparameters table."""
    return [[b["method"], str(b["trial_id"]), fmt_value(b["metric"]), str(b["metric_epoch"]),
             b["pool"], _hp_text(data.best_hp, b["method"])] for _, b in data.best.iterrows()]


BEST_HEADER = ["method", "trial", "metric", "at epoch", "chosen among", "hyperparameters"]
COST_HEADER = ["method", "trials", "completed", "stopped (ASHA)", "failed", "diverged",
               "epochs trained", "epochs without ASHA", "epochs saved (ASHA)"]


def cost_rows(cost: pd.DataFrame) -> list[list[str]]:
    """Rows of the search-cost table."""
    out = []
    for _, r in cost.iterrows():
        if _isnan(r["epochs_saved"]):
            saved = "n/a"
        elif r["epochs_full"] == 0:
            saved = "0 (no pretraining)"
        else:
            saved = f"{r['epochs_saved']:.0f} ({100 * r['saved_frac']:.0f}%)"
        full = "n/a" if _isnan(r["epochs_full"]) else f"{r['epochs_full']:.0f}"
        out.append([r["method"], r["trials"], r["completed"], r["stopped"], r["failed"], r["diverged"],
                    r["epochs_trained"], full, saved])
    return out


def stops_text(stops: pd.DataFrame, method: str) -> str:
    sub = stops[stops["method"] == method]
    return ", ".join(f"epoch {int(e)}: {int(n)}" for e, n in zip(sub["rung_epoch"], sub["n_stopped"])) or "no stops"


def failure_rows(failed: pd.DataFrame, limit: int | None = None) -> list[list[str]]:
    """Rows of the failures table; errors cut to ``limit`` characters when given."""
    out = []
    for _, r in failed.iterrows():
        err = "" if _isnan(r["error"]) else str(r["error"])
        if limit is not None and len(err) > limit:
            err = err[:limit] + "…"
        out.append([r["method"], str(r["trial_id"]), r["status"], str(r["max_epoch"]), err])
    return out


def comparison_rows(comp: pd.DataFrame) -> list[list[str]]:
    """Rows of the paired-comparison table."""
    return [[r["budget_label"], r["protocol"], r["method"], f"{r['reference']} ({r['reference_method']})",
             str(r["n_paired"]), fmt_diff(r["mean_diff"], r["ci_low"], r["ci_high"]), fmt_p(r["p_value"])]
            for _, r in comp.iterrows()]


COMPARISON_HEADER = ["budget", "protocol", "method", "vs", "paired seeds",
                     "difference (points) [95% CI]", "p"]


def gain_rows(gain: pd.DataFrame) -> list[list[str]]:
    return [[r["budget_label"], r["protocol"], r["method"], str(r["n_paired"]),
             fmt_diff(r["gain"], r["ci_low"], r["ci_high"]), fmt_p(r["p_value"])] for _, r in gain.iterrows()]


GAIN_HEADER = ["budget", "protocol", "method", "paired seeds", "gain over none (points) [95% CI]", "p"]


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


# ----------------------------------------------------------------------------- markdown


def render_markdown(data: ReportData) -> str:
    """``report.md``: headline, best hyperparameters, search cost, failures, provenance."""
    parts = [f"# sslsweep report: {', '.join(str(m.get('sweep_id')) for m in data.sweep.manifests)}", ""]
    parts += ["## Test accuracy (%) by label budget", ""]
    if data.headline.empty:
        parts += ["No confirm-phase results (budget.parquet is empty or missing).", ""]
    else:
        header, rows = headline_rows(data.headline, lambda t: f"**{t}**")
        parts += ["Mean ± 95% CI (Student t) over confirm seeds.", "", md_table(header, rows), "", LEGEND, ""]
        if "none" in set(data.headline["method"].astype(str)):
            parts += [NONE_NOTE, ""]
    if not data.gain.empty:
        parts += ["### Gain over none", "", md_table(GAIN_HEADER, gain_rows(data.gain)), ""]
    parts += [f"## Best hyperparameters (by final {data.metric}, {data.mode})", ""]
    parts += [md_table(BEST_HEADER, best_rows(data)) if not data.best.empty else "No search results.", ""]
    parts += ["## Search cost", ""]
    if data.cost_search.empty:
        parts += ["No search results.", ""]
    else:
        parts += [md_table(COST_HEADER, cost_rows(data.cost_search)), "",
                  "ASHA stops per rung: " + "; ".join(
                      f"{m}: {stops_text(data.stops, m)}" for m in data.cost_search["method"]), ""]
    parts += ["## Failed and diverged trials", ""]
    parts += [md_table(["method", "trial", "status", "epoch", "error"], failure_rows(data.failed, 200))
              if not data.failed.empty else "None.", ""]
    parts += ["## Provenance", ""]
    for manifest in data.sweep.manifests:
        parts += [f"- **{k}**: {_md_escape(v)}" for k, v in provenance(manifest)] + [""]
    if data.notes:
        parts += ["## Notes", ""] + [f"- {_md_escape(n)}" for n in data.notes] + [""]
    parts += ["The full report with plots, resolved config and search spaces is report.html.", ""]
    return "\n".join(parts)


# ----------------------------------------------------------------------------- html

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:0.8em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
td.best{background:#e8f5e9}td.text{text-align:left;white-space:pre-wrap;font-family:monospace}
img{max-width:100%;height:auto;display:block;margin:0.8em 0}
pre{background:#f7f7f7;padding:0.8em;overflow:auto;font-size:0.85em}
.note{color:#555;font-size:0.9em}h2{border-bottom:1px solid #ddd;padding-bottom:0.2em}
"""

IMAGE_CHECK = """
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; } }
  document.body.dataset.imagesLoaded = String(ok);
  document.body.dataset.imagesTotal = String(imgs.length);
});
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, table_id: str | None = None,
               text_cols: Sequence[int] = ()) -> str:
    """An HTML table with every cell escaped."""
    ident = f' id="{_e(table_id)}"' if table_id else ""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="text">{_e(c)}</td>' if i in text_cols else f"<td>{_e(c)}</td>"
                         for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def headline_html(headline: pd.DataFrame) -> str:
    """The headline table: budgets as column groups, protocols below, best cells bold + ★."""
    cols = _columns(headline)
    labels = list(dict.fromkeys((c[0], c[1], c[3]) for c in cols))
    top = "".join(f'<th colspan="{sum(1 for c in cols if (c[0], c[1], c[3]) == lab)}">{_e(lab[2])}</th>'
                  for lab in labels)
    sub = "".join(f"<th>{_e(c[2])}</th>" for c in cols)
    body = []
    for method in tables.method_order(headline["method"].astype(str).tolist()):
        cells = []
        for col in cols:
            cell = _cell(headline, method, col)
            if cell is None:
                cells.append("<td></td>")
                continue
            text, mark = _e(fmt_acc(cell["mean"], cell["ci"])), _e(_mark(cell))
            title = _e(f"n={cell['n_seeds']} seeds; p vs best={fmt_p(cell['p_vs_best'])}")
            if cell["is_best"]:
                cells.append(f'<td class="best" title="{title}"><strong>{text}</strong> {mark}</td>')
            else:
                cells.append(f'<td title="{title}">{text} {mark}</td>')
        body.append(f"<tr><td>{_e(method_label(method))}</td>{''.join(cells)}</tr>")
    return (f'<table id="headline"><thead><tr><th rowspan="2">method</th>{top}</tr><tr>{sub}</tr>'
            f"</thead><tbody>{''.join(body)}</tbody></table>")


def img_html(fig: Drawing) -> str:
    """An <img> with the PNG embedded as a base64 data URI."""
    data = base64.b64encode(fig.png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(fig.alt)}" title="{_e(fig.title)}">'


def _pre(obj: Any) -> str:
    return f"<pre>{_e(json.dumps(obj, indent=2, sort_keys=True, default=str))}</pre>"


def _section(ident: str, title: str, body: Sequence[str]) -> str:
    return f'<section id="{_e(ident)}"><h2>{_e(title)}</h2>{"".join(body)}</section>'


def _p(text: str, cls: str = "") -> str:
    return f'<p class="{cls}">{_e(text)}</p>' if cls else f"<p>{_e(text)}</p>"


def _headline_section(data: ReportData) -> str:
    if data.headline.empty:
        return _section("s1", "1. Test accuracy by label budget",
                        [_p("No confirm-phase results (budget.parquet is empty or missing).")])
    body = [_p("Test accuracy (%), mean ± 95% CI (Student t) over confirm seeds."),
            headline_html(data.headline), _p(LEGEND, "note")]
    if "none" in set(data.headline["method"].astype(str)):
        body.append(_p(NONE_NOTE, "note"))
    if not data.comparisons.empty:
        body += ["<details><summary>Paired comparisons against the best and against none</summary>",
                 _p(f"Test: {PAIRED_TEST_NAME} (scipy.stats.ttest_rel); differences in percentage points."),
                 html_table(COMPARISON_HEADER, comparison_rows(data.comparisons)), "</details>"]
    return _section("s1", "1. Test accuracy by label budget", body)


def _budget_section(data: ReportData, figs: Sequence[Drawing]) -> str:
    body = [img_html(f) for f in figs if f.section == "budget"]
    if not data.gain.empty:
        body.append(html_table(GAIN_HEADER, gain_rows(data.gain)))
    elif not data.headline.empty:
        body.append(_p("No gain over none: the 'none' baseline is not in budget.parquet.", "note"))
    return _section("s2", "2. Accuracy vs label budget", body or [_p("No confirm-phase results.")])


def _method_section(data: ReportData, figs: Sequence[Drawing]) -> str:
    methods = tables.method_order(data.best["method"].astype(str).tolist() + list(data.importance_notes))
    body = []
    for method in methods:
        body.append(f"<h3>{_e(method)}</h3>")
        best = data.best[data.best["method"] == method]
        if not best.empty:
            b = best.iloc[0]
            body.append(_p(f"Best trial {b['trial_id']}: {data.metric} = {fmt_value(b['metric'])} at epoch "
                           f"{b['metric_epoch']} (chosen among {b['pool']}); {_hp_text(data.best_hp, method)}"))
        body += [img_html(f) for f in figs if f.section == f"method:{method}"]
        imp = data.importance[data.importance["method"] == method]
        if not imp.empty:
            body.append(html_table(["hyperparameter", "importance"],
                                   [[r["param"], f"{r['importance']:.3f}"] for _, r in imp.iterrows()]))
        body.append(_p(f"Importance: {data.importance_notes.get(method, 'not computed')}", "note"))
    return _section("s3", "3. Per method: metric vs hyperparameters", body or [_p("No search results.")])


def _search_section(data: ReportData, figs: Sequence[Drawing]) -> str:
    body = [img_html(f) for f in figs if f.section == "search"]
    if body:
        body.insert(0, _p(f"Best-so-far curves take the best {data.metric} over every reported result, "
                          f"including those of trials ASHA later stopped (partial budget); the best "
                          f"hyperparameters above are chosen among completed trials.", "note"))
    if not data.cost_search.empty:
        body.append(html_table(COST_HEADER, cost_rows(data.cost_search)))
        body.append(html_table(["method", "ASHA stops per rung"],
                               [[m, stops_text(data.stops, m)] for m in data.cost_search["method"]]))
    return _section("s4", "4. Search behaviour", body or [_p("No search results.")])


def _cost_section(data: ReportData) -> str:
    rows = [[r["method"], r["phase"], fmt_value(r["wall_s"]), fmt_value(r["device_h"])]
            for _, r in data.cost.iterrows()]
    phases = [[r["sweep_id"], r["phase"], r["started"], r["finished"], fmt_value(r["wall_s"])]
              for _, r in data.phases.iterrows()]
    body = [html_table(["method", "phase", "seconds", "device-hours"], rows) if rows
            else _p("The manifest records no per-method cost."),
            html_table(["sweep", "phase", "started", "finished", "wall s"], phases) if phases else "",
            _p("Seconds per method: search = the wall time of that method's search (methods are searched one "
               "after another); confirm = the method's confirm trials' own seconds, summed (all methods' "
               "confirm trials run together, so the phase's wall time is in the table below). "
               "Device-hours: trial wall time x devices held (GPUs if any, else CPUs), summed.", "note")]
    return _section("s5", "5. Cost", body)


def _provenance_section(data: ReportData) -> str:
    body = []
    for manifest in data.sweep.manifests:
        body.append(f"<h3>{_e(manifest.get('sweep_id'))}</h3>")
        body.append(html_table(["item", "value"], provenance(manifest), text_cols=(1,)))
        body += ["<h4>Resolved search spaces</h4>", _pre(manifest.get("spaces")),
                 "<h4>Resolved config</h4>", _pre(manifest.get("config"))]
    return _section("s6", "6. Provenance", body)


def _failure_section(data: ReportData) -> str:
    body = [html_table(["method", "trial", "status", "epoch", "error"], failure_rows(data.failed),
                       text_cols=(4,))] if not data.failed.empty else [_p("No failed or diverged trials.")]
    return _section("s7", "7. Failed and diverged trials", body)


def render_html(data: ReportData, figs: Sequence[Drawing]) -> str:
    """``report.html``: self-contained (inline CSS, images as data URIs, no external resources)."""
    title = "sslsweep report: " + ", ".join(str(m.get("sweep_id")) for m in data.sweep.manifests)
    notes = ("<section id=\"notes\"><h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in data.notes)
             + "</ul></section>") if data.notes else ""
    sections = [_headline_section(data), _budget_section(data, figs), _method_section(data, figs),
                _search_section(data, figs), _cost_section(data), _provenance_section(data),
                _failure_section(data)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{CSS}</style><script>{IMAGE_CHECK}</script></head>"
            f"<body><h1>{_e(title)}</h1>{''.join(sections)}{notes}</body></html>\n")


# ----------------------------------------------------------------------------- entry point


def build_report(uris: Sequence[str], out: str | None = None) -> dict[str, str]:
    """Read the sweeps at ``uris`` (local paths or URIs), combine them, and write the report.

    Writes ``report.md`` and ``report.html`` to ``out`` (default: the first uri) and returns
    ``{"md": <where>, "html": <where>}``.
    """
    if isinstance(uris, str):
        uris = [uris]
    if not uris:
        raise ValueError("uris is empty: build_report needs at least one sweep directory")
    sweep = combine([open_sweep(u) for u in uris])
    data = compute(sweep)
    target = out if out is not None else uris[0]
    md_path = write_text(target, "report.md", render_markdown(data))
    html_path = write_text(target, "report.html", render_html(data, figures(data)))
    return {"md": md_path, "html": html_path}
