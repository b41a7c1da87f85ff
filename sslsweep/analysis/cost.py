"""What a sweep cost: epochs trained and saved by ASHA (from ``trials.parquet``), and wall and
device time per method and phase (from each ``manifest.json``).

Every function is pure: DataFrames and manifests in, DataFrames out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from sslsweep.analysis.conventions import method_order
from sslsweep.analysis.trials import trial_summary
from sslsweep.schema import STATUSES


def max_epochs_of(manifest: Mapping[str, Any]) -> int | None:
    """``config.search.max_epochs`` from a manifest, or None when absent."""
    value = ((manifest.get("config") or {}).get("search") or {}).get("max_epochs")
    return None if value is None else int(value)


def search_cost(trials: pd.DataFrame, max_epochs: int | Mapping[str, int] | None) -> pd.DataFrame:
    """Search cost and ASHA savings per method.

    ``max_epochs`` is ``config.search.max_epochs`` (an int, or a mapping sweep_id -> int for
    combined sweeps). Columns: ``method``, ``trials``, ``completed``, ``stopped`` (by ASHA),
    ``failed``, ``diverged``, ``epochs_trained`` (sum over trials of the largest epoch reached),
    ``epochs_saved`` (what ASHA saved: over the stopped trials, max_epochs minus the epoch each
    was stopped at; failed and diverged trials ended on their own and save nothing),
    ``epochs_full`` (``epochs_trained + epochs_saved``: the cost without early stopping; 0 for a
    method that does not pretrain, i.e. whose trials all end at epoch 0) and ``saved_frac``
    (``epochs_saved / epochs_full``).
    """
    summary = trial_summary(trials)
    summary["full"] = [_max_epochs_for(r, max_epochs) for _, r in summary.iterrows()]
    rows = []
    for method in method_order(summary["method"].dropna().astype(str).tolist()):
        g = summary[summary["method"] == method]
        counts = g["status"].value_counts()
        trained = int(g["max_epoch"].sum())
        stopped = g[g["status"] == "stopped"]
        saved = float((stopped["full"] - stopped["max_epoch"]).sum()) if stopped["full"].notna().all() else math.nan
        full = trained + saved
        if _no_pretraining(g):
            full = saved = 0.0  # e.g. `none`: its completed trials end at epoch 0; there is nothing to save
        rows.append({
            "method": method, "trials": len(g),
            **{s: int(counts.get(s, 0)) for s in STATUSES},
            "epochs_trained": trained, "epochs_full": full, "epochs_saved": saved,
            "saved_frac": saved / full if math.isfinite(full) and full > 0 else math.nan,
        })
    cols = ["method", "trials", *STATUSES, "epochs_trained", "epochs_full", "epochs_saved", "saved_frac"]
    return pd.DataFrame(rows, columns=cols)


def _no_pretraining(summary: pd.DataFrame) -> bool:
    """A method whose completed trials all end at epoch 0 does not pretrain (``none``, transfer)."""
    done = summary[summary["status"] == "completed"]
    return bool(len(done)) and bool((done["max_epoch"] == 0).all()) and bool((summary["max_epoch"] == 0).all())


def _max_epochs_for(row: pd.Series, max_epochs: int | Mapping[str, int] | None) -> float:
    if max_epochs is None:
        return math.nan
    if isinstance(max_epochs, Mapping):
        value = max_epochs.get(str(row.get("sweep_id")))
        return math.nan if value is None else float(value)
    return float(max_epochs)


def cost_table(manifests: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Time and device time per method and phase, from each manifest's ``cost``.

    Columns: ``sweep_id``, ``method``, ``phase`` (search/confirm), ``wall_s``, ``device_s``,
    ``device_h`` (device-seconds / 3600; devices are GPUs if any, else CPUs). ``wall_s`` is the
    wall time of the method's own search experiment for ``search`` (every method searches at once,
    so these overlap and do not add up to the phase's wall time, which is ``phase_table``'s) and
    the sum of its confirm trials' own seconds for ``confirm``.
    """
    rows = []
    for manifest in manifests:
        for method, cost in sorted((manifest.get("cost") or {}).items()):
            for phase in ("search", "confirm"):
                wall, dev = cost.get(f"{phase}_wall_s"), cost.get(f"{phase}_device_s")
                if wall is None and dev is None:
                    continue
                dev_s = math.nan if dev is None else float(dev)
                rows.append({"sweep_id": manifest.get("sweep_id"), "method": method, "phase": phase,
                             "wall_s": math.nan if wall is None else float(wall), "device_s": dev_s,
                             "device_h": dev_s / 3600.0})
    return pd.DataFrame(rows, columns=["sweep_id", "method", "phase", "wall_s", "device_s", "device_h"])


def phase_table(manifests: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Start, end and wall seconds of each phase of each sweep (``manifest.phases``)."""
    rows = []
    for manifest in manifests:
        for phase, info in (manifest.get("phases") or {}).items():
            info = info or {}
            rows.append({"sweep_id": manifest.get("sweep_id"), "phase": phase,
                         "started": info.get("started"), "finished": info.get("finished"),
                         "wall_s": info.get("wall_s")})
    return pd.DataFrame(rows, columns=["sweep_id", "phase", "started", "finished", "wall_s"])
