"""Results -> tables -> statistics -> plots -> report (md + html).

Reads only what a sweep wrote (``trials.parquet``, ``budget.parquet``, ``manifest.json``,
``optuna/<method>.journal``; see docs/schema.md) and never imports torch or ray.

Modules, in the order the report uses them: ``io`` (read sweeps), ``trials`` / ``confirm`` /
``protocols`` / ``importance`` / ``cost`` (tables; ``conventions`` holds their shared rules,
``stats`` the statistics), ``plots`` (draw), ``contents`` and ``protocol_contents`` (what the
report says, as ``sections`` blocks, numbers written by ``formats``), ``render`` (Markdown and
HTML) and ``report`` (the entry point)::

    from sslsweep.analysis import build_report, open_sweep, combine
    build_report(["runs/sweep-1"])          # -> {"md": ".../report.md", "html": ".../report.html"}
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["build_report", "combine", "open_sweep", "SweepResults", "write_text"]

# Imported on first use (PEP 562): the report's modules load matplotlib, scipy and optuna (~1.4 s),
# while sslsweep.search.results only needs sslsweep.analysis.trials (pandas, ~0.4 s).
_WHERE = {"build_report": "report", "combine": "io", "open_sweep": "io", "SweepResults": "io",
          "write_text": "io"}


def __getattr__(name: str) -> Any:
    """Import the public names on first use (PEP 562)."""
    if name not in _WHERE:
        raise AttributeError(f"module 'sslsweep.analysis' has no attribute {name!r}")
    module = importlib.import_module(f"sslsweep.analysis.{_WHERE[name]}")
    return getattr(module, name)
