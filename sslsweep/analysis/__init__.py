"""Results -> tables -> statistics -> plots -> report (md + html).

Reads only what a sweep wrote (``trials.parquet``, ``budget.parquet``, ``manifest.json``,
``optuna/<method>.journal``; see docs/schema.md) and never imports torch or ray.

Public entry points (imported lazily so that ``import sslsweep.analysis.tables`` stays light)::

    from sslsweep.analysis import build_report, open_sweep, combine
    build_report(["runs/sweep-1"])          # -> {"md": ".../report.md", "html": ".../report.html"}
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_report", "combine", "open_sweep", "Sweep", "write_text"]

_WHERE = {"build_report": "report", "combine": "io", "open_sweep": "io", "Sweep": "io",
          "write_text": "io"}


def __getattr__(name: str) -> Any:
    """Import the public names on first use (PEP 562)."""
    if name not in _WHERE:
        raise AttributeError(f"module 'sslsweep.analysis' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(f"sslsweep.analysis.{_WHERE[name]}")
    return getattr(module, name)
