"""Rules every analysis table follows: required columns, method order, budget labels, ``hp_`` names.

- A trial is identified by ``(sweep_id, trial_id)`` (:func:`trial_keys`).
- Methods are listed by name with the ``none`` baseline last (:func:`method_order`); protocols
  in :data:`PROTOCOLS` order.
- ``mode`` (from the manifest) is ``max`` or ``min`` (:func:`check_mode`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from sslsweep.schema import HP_PREFIX

BASELINE = "none"
PROTOCOLS = ("linear", "finetune")
FAILED_STATUSES = ("failed", "diverged")


def require_columns(df: pd.DataFrame, columns: Sequence[str], table: str) -> None:
    """Raise ``ValueError`` naming the missing columns when ``df`` lacks any of ``columns``."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{table} lacks column(s) {missing}: docs/schema.md requires them")


def check_mode(mode: str) -> str:
    """``mode`` itself when it is ``max`` or ``min``; a ``ValueError`` naming it otherwise."""
    if mode not in ("max", "min"):
        raise ValueError(f"manifest mode is {mode!r}: it must be 'max' or 'min'")
    return mode


def method_order(methods: Sequence[str]) -> list[str]:
    """Methods sorted by name, with the ``none`` baseline last."""
    return sorted(set(methods), key=lambda m: (m == BASELINE, m))


def protocol_rank(protocol: str) -> int:
    """Sort key of a protocol: linear, then finetune, then any other."""
    return PROTOCOLS.index(protocol) if protocol in PROTOCOLS else len(PROTOCOLS)


def trial_keys(df: pd.DataFrame) -> list[str]:
    """The columns that identify a trial (``trial_id`` alone when there is no ``sweep_id``)."""
    return ["sweep_id", "trial_id"] if "sweep_id" in df.columns else ["trial_id"]


def hp_columns(df: pd.DataFrame) -> list[str]:
    """The ``hp_*`` columns of ``df`` that hold at least one value."""
    return [c for c in df.columns if c.startswith(HP_PREFIX) and df[c].notna().any()]


def varying_hp_columns(df: pd.DataFrame) -> list[str]:
    """The ``hp_*`` columns of ``df`` that take more than one distinct value."""
    return [c for c in hp_columns(df) if df[c].dropna().nunique() > 1]


def param_name(column: str) -> str:
    """``hp_lr`` -> ``lr``."""
    return column[len(HP_PREFIX):] if column.startswith(HP_PREFIX) else column


def budget_label(kind: str, budget: float, n_min: float | None = None,
                 n_max: float | None = None) -> str:
    """Human label of a label budget: ``"1% (18 labels)"`` or ``"5/class (50 labels)"``.

    ``n_min``/``n_max`` are the fewest/most labels used over seeds (shown as a range if they differ).
    """
    if kind == "fraction":
        head = f"{float(budget) * 100:g}%"
    elif kind == "per_class":
        head = f"{float(budget):g}/class"
    else:
        head = f"{kind} {float(budget):g}"
    if n_min is None or n_max is None or not (math.isfinite(n_min) and math.isfinite(n_max)):
        return head
    count = f"{int(n_min)}" if n_min == n_max else f"{int(n_min)}-{int(n_max)}"
    return f"{head} ({count} labels)"
