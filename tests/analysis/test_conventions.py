"""Rules shared by the analysis tables."""

from __future__ import annotations

import pytest

from sslsweep.analysis.conventions import budget_label


@pytest.mark.parametrize(("kind", "budget", "n", "expected"), [
    ("fraction", 0.01, (18, 18), "1% (18 labels)"),
    ("fraction", 0.005, (9, 10), "0.5% (9-10 labels)"),
    ("fraction", 1.0, (None, None), "100%"),
    ("per_class", 5.0, (50, 50), "5/class (50 labels)"),
])
def test_budget_label_shows_fraction_or_per_class_with_label_count(
        kind: str, budget: float, n: tuple[int | None, int | None], expected: str) -> None:
    """Budgets read as a person would say them."""
    assert budget_label(kind, budget, *n) == expected
