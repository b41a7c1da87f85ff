"""Label selections in the analysis: random vs typical compared per method, the method tables kept
on random rows, old budget tables read as random, the report section only when there is a choice."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from sslsweep.analysis.confirm import headline_selection, headline_table, paired_comparisons, selection_table
from sslsweep.analysis.io import combine, open_sweep
from sslsweep.analysis.report import build_report

TITLE = "Label selection: random vs typical"


def with_typical(build: SimpleNamespace, random: pd.DataFrame) -> pd.DataFrame:
    """``random`` (labelled random) plus typical rows for simclr at 1% linear: seeds 0-2 give
    [0.6, 0.65, 0.8] against random's [0.5, 0.6, 0.7]."""
    typical = pd.DataFrame(build.budget_rows("simclr", {(0.01, "linear"): [0.6, 0.65, 0.8]}, [0, 1, 2]))
    return pd.concat([random.assign(selection="random"), typical.assign(selection="typical")], ignore_index=True)


def test_gain_is_typical_minus_random_paired_over_seeds(build: SimpleNamespace, budget: pd.DataFrame,
                                                        one_row: Callable[..., pd.Series]) -> None:
    """Differences per seed 0.1, 0.05, 0.1: mean 0.25/3, sd 0.05/sqrt(3), t = 5 with 2 degrees of
    freedom, so the CI half-width is t.ppf(0.975, 2) x sd / sqrt(3) = 4.302653 x 0.016667 and
    p = 1 - 5 / sqrt(27) (the t(2) distribution has a closed form)."""
    table = selection_table(with_typical(build, budget))
    assert len(table) == 1  # typical was evaluated for one method x budget x protocol only
    row = one_row(table, method="simclr", budget=0.01, protocol="linear", selection="typical")
    assert row["reference"] == "random" and row["n_paired"] == 3 and row["testable"]
    assert row["mean"] == pytest.approx(2.05 / 3) and row["reference_mean"] == pytest.approx(0.6)
    assert row["gain"] == pytest.approx(0.25 / 3)
    half = 4.302653 * (0.05 / math.sqrt(3)) / math.sqrt(3)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.25 / 3 - half, 0.25 / 3 + half), abs=1e-6)
    assert row["p_value"] == pytest.approx(1 - 5 / math.sqrt(27), abs=1e-9)
    assert row["budget_label"] == "1% (18 labels)"


def test_method_tables_use_the_random_rows_only(build: SimpleNamespace, budget: pd.DataFrame) -> None:
    """Adding typical rows changes neither the headline nor the paired comparisons."""
    both = with_typical(build, budget)
    pd.testing.assert_frame_equal(headline_table(both), headline_table(budget))
    pd.testing.assert_frame_equal(paired_comparisons(both), paired_comparisons(budget))
    assert headline_selection(both) == "random"


def test_one_selection_compares_nothing_and_typical_alone_heads_the_tables(build: SimpleNamespace,
                                                                           budget: pd.DataFrame) -> None:
    """Without a second selection there is no table; a sweep run with typical only shows typical."""
    assert selection_table(budget).empty and selection_table(budget.assign(selection="random")).empty
    typical = budget.assign(selection="typical")
    assert selection_table(typical).empty and headline_selection(typical) == "typical"
    pd.testing.assert_frame_equal(headline_table(typical), headline_table(budget))


def test_a_budget_table_without_selection_reads_as_random(sweep_dir: str) -> None:
    """Sweeps written before label selections existed still report: every row is random."""
    assert open_sweep(sweep_dir).budget["selection"].eq("random").all()


def test_combine_keeps_the_same_budget_under_two_selections(make_sweep: Callable[..., str],
                                                            build: SimpleNamespace) -> None:
    """The same method x seed x budget x protocol is no repeat when the selections differ."""
    rows = build.budget_rows("simclr", {(0.01, "linear"): [0.61, 0.62]}, [0, 1], sweep_id="sw2")
    a = make_sweep("a", budget=build.confirm_budget("sw1"), manifest=build.manifest("sw1"))
    b = make_sweep("b", budget=pd.DataFrame(rows).assign(selection="typical"), manifest=build.manifest("sw2"))
    both = combine([open_sweep(a), open_sweep(b)])
    assert selection_table(both.budget)["n_paired"].tolist() == [2]
    c = make_sweep("c", budget=pd.DataFrame(rows).assign(sweep_id="sw3"), manifest=build.manifest("sw3"))
    with pytest.raises(ValueError, match=r"selection=random appears in sweeps \['sw1', 'sw3'\]"):
        combine([open_sweep(a), open_sweep(c)])


def test_report_has_the_selection_section_only_when_two_selections_are(
        make_sweep: Callable[..., str], build: SimpleNamespace, built_report: SimpleNamespace) -> None:
    """Both documents gain the section (table, and in HTML the gain plot) for random + typical; a
    sweep with random only has neither."""
    assert TITLE not in built_report.md and TITLE not in built_report.html
    paths = build_report([make_sweep("sel", trials=build.search_trials(),
                                     budget=with_typical(build, build.confirm_budget()), manifest=build.manifest())])
    md, page = Path(paths["md"]).read_text(encoding="utf-8"), Path(paths["html"]).read_text(encoding="utf-8")
    assert f"## {TITLE}" in md
    assert "| 1% (18 labels) | linear | simclr | 60.0 ± 24.8 | 68.3 ± 25.9 | 3 | +8.3 [+1.2, +15.5] | 0.0377 |" in md
    assert f'<section id="s3"><h2>3. {TITLE}</h2>' in page and '<table id="selection-typical">' in page
    assert 'alt="Gain in test accuracy of typical over random' in page
    assert '<section id="s8"><h2>8. Failed and diverged trials</h2>' in page
