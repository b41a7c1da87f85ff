"""Drawing only: each function takes a table from ``trials``, ``confirm`` or ``importance``
and returns PNG bytes.

Nothing here computes a statistic; the tables already hold means, CIs and best markers.
Figures are made with ``matplotlib.figure.Figure`` and rendered by the Agg canvas attached to
each figure: no pyplot global state, no global ``matplotlib.use``, no display needed.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sslsweep.analysis.conventions import method_order

DPI = 100
LINESTYLE = {"linear": "-", "finetune": "--"}
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f")


def _colors(methods: Sequence[str]) -> dict[str, str]:
    """One stable colour per method; ``none`` is always grey."""
    out = {}
    others = [m for m in method_order(list(methods)) if m != "none"]
    for i, m in enumerate(others):
        out[m] = PALETTE[i % len(PALETTE)]
    out["none"] = "#555555"
    return out


def _png(fig: Figure) -> bytes:
    """Render ``fig`` with the Agg canvas (set explicitly: no global backend switch) to PNG bytes."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _require_rows(table: pd.DataFrame, what: str) -> None:
    if table.empty:
        raise ValueError(f"{what} table is empty: there is nothing to draw")


def _budget_axes(fig: Figure, kinds: Sequence[str]) -> dict[str, Axes]:
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    return {k: ax for k, ax in zip(kinds, axes)}


def _xlabel(kind: str) -> str:
    return "labelled fraction of the train pool" if kind == "fraction" else "labels per class"


def _fraction_ticks(ax: Axes, xs: Sequence[float]) -> None:
    ticks = sorted(set(xs))
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{x * 100:g}%" for x in ticks])
    ax.minorticks_off()


def clipped_band(y: np.ndarray, half: np.ndarray, bounds: tuple[float, float] | None = (0.0, 100.0)
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper ends ``y ∓ half`` of a CI, clipped to ``bounds`` (accuracy in %: 0-100).

    The CI itself is computed as everywhere else (Student t, symmetric); only what is drawn is
    cut at the range the quantity can take, so no band suggests an accuracy above 100%.
    ``bounds=None`` clips nothing (differences such as gains). NaN half-widths stay NaN.
    Example: ``clipped_band([99.0], [3.0])`` is ``([96.0], [100.0])``.
    """
    y, half = np.asarray(y, dtype=float), np.asarray(half, dtype=float)
    low, high = y - half, y + half
    if bounds is not None:
        low, high = np.clip(low, *bounds), np.clip(high, *bounds)
    return low, high


def _line_with_ci(ax: Axes, x: np.ndarray, y: np.ndarray, ci: np.ndarray, color: str,
                  style: str, label: str, bounds: tuple[float, float] | None = None) -> None:
    """A line with error bars and a translucent CI band (band and bars skipped where CI is NaN),
    both clipped to ``bounds`` (:func:`clipped_band`)."""
    order = np.argsort(x)
    x, y, ci = x[order], y[order], ci[order]
    low, high = clipped_band(y, ci, bounds)
    ok = np.isfinite(ci)
    err = np.vstack([np.where(ok, y - low, 0.0), np.where(ok, high - y, 0.0)])
    ax.errorbar(x, y, yerr=err, color=color, linestyle=style, marker="o", markersize=4,
                capsize=3, label=label)
    if ok.sum() >= 2:
        ax.fill_between(x[ok], low[ok], high[ok], color=color, alpha=0.15, linewidth=0)


SEED_OFFSET = 1.06  # seed dots sit this factor to the right of their mean on the log budget axis


def seed_points(seeds: pd.DataFrame) -> pd.DataFrame:
    """Where each seed's dot goes: one row per budget row (method x protocol x budget x seed).

    Columns: ``budget_kind``, ``method``, ``protocol``, ``seed``, ``x`` (the budget times
    ``SEED_OFFSET``, beside the mean) and ``y`` (test accuracy in %).
    """
    out = seeds[["budget_kind", "method", "protocol", "seed"]].copy()
    out["x"] = seeds["budget"].astype(float) * SEED_OFFSET
    out["y"] = 100 * seeds["test_acc"].astype(float)
    return out.reset_index(drop=True)


def accuracy_vs_budget(headline: pd.DataFrame, seeds: pd.DataFrame | None = None) -> bytes:
    """Test accuracy (%) against label budget (log x), one colour per method, solid = linear probe,
    dashed = fine-tune, with 95% CI bands and error bars clipped to 0-100%. One panel per budget
    kind. ``seeds`` (the budget.parquet rows the headline was computed from, one per seed) adds
    each seed's value as a dot beside its mean."""
    _require_rows(headline, "headline")
    return _budget_plot(headline, lambda g: (g["mean"], g["ci"]), "test accuracy (%), mean ± 95% CI",
                        "Accuracy vs label budget (solid: linear probe, dashed: fine-tune; dots: seeds)",
                        zero_line=False, bounds=(0.0, 100.0),
                        points=None if seeds is None or seeds.empty else seed_points(seeds))


def gain_over_none(gain: pd.DataFrame) -> bytes:
    """Gain in test accuracy (percentage points) over the ``none`` baseline against label budget."""
    _require_rows(gain, "gain over none")
    return _budget_plot(gain, lambda g: (g["gain"], g["ci_high"] - g["gain"]), "gain over none (points), 95% CI",
                        "Gain over a random-init encoder (none)", zero_line=True)


def selection_gain(table: pd.DataFrame, selection: str) -> bytes:
    """Gain in test accuracy (points) of ``selection`` over random label selection against label
    budget (rows of :func:`sslsweep.analysis.confirm.selection_table` for that selection)."""
    _require_rows(table, "label selection")
    return _budget_plot(table, lambda g: (g["gain"], g["ci_high"] - g["gain"]),
                        f"{selection} - random (points), 95% CI", f"Label selection: {selection} vs random",
                        zero_line=True)


def _budget_plot(df: pd.DataFrame, series: Callable[[pd.DataFrame], tuple[pd.Series, pd.Series]], ylabel: str,
                 title: str, *, zero_line: bool, bounds: tuple[float, float] | None = None,
                 points: pd.DataFrame | None = None) -> bytes:
    """One panel per budget kind, one line per (method, protocol): ``series(group)`` gives the
    values and CI half-widths (fractions; drawn as percent / points), clipped to ``bounds``;
    ``points`` (:func:`seed_points`) are drawn as dots in the line's colour."""
    kinds = sorted(df["budget_kind"].astype(str).unique())
    fig = Figure(figsize=(6.5 * len(kinds), 4.2))
    colors = _colors(df["method"].astype(str).tolist())
    for kind, ax in _budget_axes(fig, kinds).items():
        sub = df[df["budget_kind"] == kind]
        for (method, protocol), g in sub.groupby(["method", "protocol"], sort=False):
            y, half = series(g)
            _line_with_ci(ax, g["budget"].to_numpy(float), 100 * y.to_numpy(float), 100 * half.to_numpy(float),
                          colors[str(method)], LINESTYLE.get(str(protocol), ":"), f"{method} ({protocol})", bounds)
            if points is not None:
                p = points[(points["budget_kind"].astype(str) == kind) & (points["method"] == method)
                           & (points["protocol"] == protocol)]
                ax.scatter(p["x"].to_numpy(float), p["y"].to_numpy(float), s=9, color=colors[str(method)],
                           alpha=0.6, linewidths=0, zorder=3)
        if zero_line:
            ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        if kind == "fraction":
            _fraction_ticks(ax, sub["budget"].astype(float).tolist())
        ax.set_xlabel(_xlabel(kind))
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(title)
    return _png(fig)


def _is_numeric(values: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values))


def _scatter_param(ax: Axes, g: pd.DataFrame, param: str, metric_name: str) -> None:
    values = g["value"]
    numeric = _is_numeric(pd.to_numeric(values, errors="coerce")) and \
        pd.to_numeric(values, errors="coerce").notna().all()
    if numeric:
        x = pd.to_numeric(values).to_numpy(float)
        if (x > 0).all() and x.max() / x.min() > 10:
            ax.set_xscale("log")
    else:
        cats = sorted({str(v) for v in values})
        pos = {c: i for i, c in enumerate(cats)}
        x = np.array([pos[str(v)] for v in values], dtype=float)
        ax.set_xticks(range(len(cats)))
        ax.set_xticklabels(cats, rotation=30, fontsize=8)
    y = g["metric"].to_numpy(float)
    done = (g["status"] == "completed").to_numpy()
    best = g["is_best"].to_numpy(bool)
    ax.scatter(x[done], y[done], s=18, color="#1f77b4", label="completed")
    ax.scatter(x[~done], y[~done], s=18, facecolors="none", edgecolors="#7f7f7f",
               label="stopped / other (partial budget)")
    ax.scatter(x[best], y[best], s=160, marker="*", color="#d62728", zorder=3, label="best")
    ax.set_xlabel(param)
    ax.set_ylabel(metric_name)
    ax.grid(True, alpha=0.3)


def metric_vs_hparams(table: pd.DataFrame, method: str, metric_name: str = "metric") -> bytes:
    """One panel per varying hyperparameter of ``method``: final metric of each trial against the
    value, completed trials filled, stopped ones hollow, the best trial a red star."""
    sub = table[table["method"] == method]
    _require_rows(sub, f"metric vs hyperparameter ({method})")
    params = list(dict.fromkeys(sub["param"].astype(str)))
    cols = min(3, len(params))
    rows = math.ceil(len(params) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, param in zip(axes, params):
        _scatter_param(ax, sub[sub["param"] == param], param, metric_name)
    for ax in axes[len(params):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{method}: {metric_name} vs each searched hyperparameter")
    return _png(fig)


def best_so_far(table: pd.DataFrame, metric_name: str = "metric") -> bytes:
    """Best validation metric so far against cumulative pretraining epochs, one line per method."""
    _require_rows(table, "best-so-far")
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    colors = _colors(table["method"].astype(str).tolist())
    for method, g in table.groupby("method", sort=False):
        ax.step(g["cum_epochs"].to_numpy(float), g["best_metric"].to_numpy(float), where="post",
                color=colors[str(method)], label=str(method))
    ax.set_xlabel("cumulative epochs trained (all trials)")
    ax.set_ylabel(f"best {metric_name} so far")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("Search progress")
    return _png(fig)


def asha_stops(table: pd.DataFrame) -> bytes:
    """Bars: how many trials ASHA stopped at each rung (epoch), grouped by method."""
    _require_rows(table, "ASHA stops")
    rungs = sorted(table["rung_epoch"].astype(int).unique())
    methods = method_order(table["method"].astype(str).tolist())
    colors = _colors(methods)
    fig = Figure(figsize=(6.5, 4.0))
    ax = fig.subplots()
    width = 0.8 / len(methods)
    base = np.arange(len(rungs), dtype=float)
    for i, method in enumerate(methods):
        g = table[table["method"] == method].set_index("rung_epoch")["n_stopped"]
        heights = [int(g.get(r, 0)) for r in rungs]
        ax.bar(base + (i - (len(methods) - 1) / 2) * width, heights, width, color=colors[method],
               label=method)
    ax.set_xticks(base)
    ax.set_xticklabels([str(r) for r in rungs])
    ax.set_xlabel("rung (epoch at which the trial was stopped)")
    ax.set_ylabel("trials stopped")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8, loc="best")
    ax.set_title("ASHA early stops per rung")
    return _png(fig)


def importances(table: pd.DataFrame, method: str) -> bytes:
    """Horizontal bars of hyperparameter importance for ``method``."""
    sub = table[table["method"] == method].sort_values("importance")
    _require_rows(sub, f"importance ({method})")
    fig = Figure(figsize=(5.0, 0.5 + 0.4 * len(sub)))
    ax = fig.subplots()
    ax.barh(sub["param"].astype(str), sub["importance"].to_numpy(float), color="#1f77b4")
    ax.set_xlabel("importance (fANOVA, normalised)")
    ax.set_title(f"{method}: hyperparameter importance")
    return _png(fig)
