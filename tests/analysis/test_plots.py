"""The drawing functions: each table becomes a PNG that shows what it should."""

from __future__ import annotations

from io import BytesIO
from types import SimpleNamespace

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from sslsweep.analysis import plots
from sslsweep.analysis.confirm import HEADLINE_COLUMNS, gain_over_none, headline_table
from sslsweep.analysis.trials import asha_stops, best_so_far, metric_vs_hparams

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_each_plot_returns_a_png(trials: pd.DataFrame, budget: pd.DataFrame) -> None:
    """Every drawing function turns its table into PNG bytes that decode to a non-empty image."""
    head = headline_table(budget)
    imp = pd.DataFrame({"method": ["m", "m"], "param": ["lr", "wd"], "importance": [0.7, 0.3], "source": "x"})
    pngs = [plots.accuracy_vs_budget(head), plots.gain_over_none(gain_over_none(budget)),
            plots.metric_vs_hparams(metric_vs_hparams(trials, "max"), "simclr"),
            plots.best_so_far(best_so_far(trials, "max")), plots.asha_stops(asha_stops(trials)),
            plots.importances(imp, "m")]
    images = []
    for png in pngs:
        assert png.startswith(PNG_MAGIC)
        image = mpimg.imread(BytesIO(png), format="png")
        assert image.shape[0] > 50 and image.shape[1] > 50
        images.append(image)
    # the per-method lines are drawn, not just the axes and legend: in both budget plots the first
    # method's colour covers ~1,200 pixels with its line, ~100 with its legend entry alone
    first = np.array([int(plots.PALETTE[0][i:i + 2], 16) / 255 for i in (1, 3, 5)])
    for image in images[:2]:
        assert (np.abs(image[..., :3] - first).max(axis=-1) < 0.02).sum() > 300


def test_plots_refuse_an_empty_table() -> None:
    """Nothing to draw is a ValueError saying so, not a blank image."""
    empty = pd.DataFrame(columns=HEADLINE_COLUMNS)
    with pytest.raises(ValueError, match="headline table is empty: there is nothing to draw"):
        plots.accuracy_vs_budget(empty)


def test_accuracy_plot_draws_fraction_and_per_class_budgets_side_by_side(build: SimpleNamespace) -> None:
    """Two budget kinds -> two panels: the image is about twice as wide as a single-kind one."""
    frac = build.budget_rows("simclr", {(0.01, "linear"): [0.5, 0.6], (0.1, "linear"): [0.7, 0.8]}, [0, 1])
    per = build.budget_rows("simclr", {(5, "linear"): [0.5, 0.6], (50, "linear"): [0.7, 0.8]}, [0, 1],
                            kind="per_class")
    one = mpimg.imread(BytesIO(plots.accuracy_vs_budget(headline_table(pd.DataFrame(frac)))), format="png")
    two = mpimg.imread(BytesIO(plots.accuracy_vs_budget(headline_table(pd.DataFrame(frac + per)))),
                       format="png")
    assert two.shape[1] > 1.6 * one.shape[1]


def test_accuracy_bands_are_clipped_to_0_100_percent() -> None:
    """A mean of 99 ± 3 is drawn from 96 to 100, 1 ± 3 from 0 to 4; a NaN half-width stays NaN;
    differences (bounds=None) are not clipped."""
    low, high = plots.clipped_band(np.array([99.0, 1.0, 50.0, 60.0]), np.array([3.0, 3.0, 5.0, np.nan]))
    assert low[:3].tolist() == [96.0, 0.0, 45.0] and high[:3].tolist() == [100.0, 4.0, 55.0]
    assert np.isnan(low[3]) and np.isnan(high[3])
    low, high = plots.clipped_band(np.array([99.0]), np.array([3.0]), bounds=None)
    assert (low.tolist(), high.tolist()) == ([96.0], [102.0])


def test_every_seed_gets_a_dot_beside_its_mean(build: SimpleNamespace) -> None:
    """Two seeds at two budgets: four dots, at the budget times SEED_OFFSET, at each seed's accuracy in %;
    the plot with them is a PNG that differs from the one without."""
    rows = pd.DataFrame(build.budget_rows("simclr", {(0.01, "linear"): [0.5, 0.6], (0.1, "linear"): [0.7, 0.8]},
                                          [0, 1]))
    pts = plots.seed_points(rows)
    assert len(pts) == 4
    assert sorted(zip(pts["x"].round(6), pts["y"].round(6))) == [
        (round(0.01 * plots.SEED_OFFSET, 6), 50.0), (round(0.01 * plots.SEED_OFFSET, 6), 60.0),
        (round(0.1 * plots.SEED_OFFSET, 6), 70.0), (round(0.1 * plots.SEED_OFFSET, 6), 80.0)]
    head = headline_table(rows)
    with_dots = plots.accuracy_vs_budget(head, rows)
    assert with_dots.startswith(PNG_MAGIC) and with_dots != plots.accuracy_vs_budget(head)
