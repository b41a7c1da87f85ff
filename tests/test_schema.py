"""docs/schema.md documents exactly the columns sslsweep.schema defines, with their types."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from sslsweep.schema import BUDGET, BUDGET_COLUMNS, HP_PREFIX, SCORE_PREFIX, TRIAL_COLUMNS, TRIALS

DOC = Path(__file__).resolve().parents[1] / "docs" / "schema.md"
TYPE_NAMES = {pa.string(): "string", pa.int64(): "int64", pa.float64(): "float64", pa.bool_(): "bool"}


def documented(section: str) -> dict[str, str]:
    """``column -> type`` from the table under the heading that names ``section``."""
    text = DOC.read_text()
    start = text.index(f"## `{section}`")
    end = text.find("\n## ", start + 1)
    rows = re.findall(r"^\| `([^`]+)` \| ([^|]+) \|", text[start:end if end > 0 else None], flags=re.M)
    return {name: kind.strip() for name, kind in rows}


def test_trials_columns_match_the_doc() -> None:
    doc = documented(TRIALS)
    hp = {k: v for k, v in doc.items() if k.startswith(HP_PREFIX)}
    assert hp == {f"{HP_PREFIX}<name>": "float64 / int64 / string"}
    scores = {k: v for k, v in doc.items() if k.startswith(SCORE_PREFIX)}
    assert scores == {f"{SCORE_PREFIX}<rule>": "float64"}  # the type trials_table gives them
    fixed = {k: v for k, v in doc.items() if k not in hp and k not in scores}
    assert fixed == {k: TYPE_NAMES[t] for k, t in TRIAL_COLUMNS.items()}


def test_budget_columns_match_the_doc() -> None:
    assert documented(BUDGET) == {k: TYPE_NAMES[t] for k, t in BUDGET_COLUMNS.items()}
