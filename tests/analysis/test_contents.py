"""What the report says, as blocks: numbers formatted once, the same tables in both documents."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd

from sslsweep.analysis.confirm import headline_table
from sslsweep.analysis.contents import BEST_MARK, fmt_acc, headline_block
from sslsweep.analysis.sections import Cell


def test_fmt_acc_shows_na_for_a_single_seed() -> None:
    """n = 1 -> the CI half-width is 'n/a', not 0."""
    assert fmt_acc(0.7, float("nan")) == "70.0 ± n/a"
    assert fmt_acc(0.6, 0.2484) == "60.0 ± 24.8"


def test_headline_block_groups_protocols_under_their_budget(budget: pd.DataFrame) -> None:
    """Two budgets x two protocols: one group per budget spanning its protocols; the best cell is
    marked and carries its seed count."""
    table = headline_block(headline_table(budget))
    assert list(table.groups) == [("1% (18 labels)", 2), ("10% (180 labels)", 2)]
    assert list(table.header) == ["method", "linear", "finetune", "linear", "finetune"]
    simclr = next(r for r in table.rows if r[0] == "simclr")
    assert simclr[1] == Cell("60.0 ± 24.8", BEST_MARK, best=True, tooltip="n=3 seeds; p vs best=n/a")


def test_headline_block_leaves_a_missing_method_budget_empty(build: SimpleNamespace) -> None:
    """A method without results at a budget gets an empty cell, not a zero."""
    rows = (build.budget_rows("a", {(0.1, "linear"): [0.5, 0.6], (0.2, "linear"): [0.6, 0.7]}, [0, 1])
            + build.budget_rows("b", {(0.1, "linear"): [0.4, 0.5]}, [0, 1]))
    table = headline_block(headline_table(pd.DataFrame(rows)))
    assert [r for r in table.rows if r[0] == "b"][0][2] is None
