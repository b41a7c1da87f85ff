"""Hand-made sweep tables with known answers, shared by the analysis tests.

Nothing here trains anything: the numbers are chosen so that every expected value in the tests
can be worked out by hand (see each builder's docstring).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sslsweep.analysis.report import build_report

MAX_EPOCHS = 9
FINGERPRINT = "sha256:aaaa"


def trial_rows(trial_id: str, method: str, status: str, epochs: list[int], metrics: list[float | None],
               hp: dict[str, Any], error: str | None = None, sweep_id: str = "sw1",
               seed: int = 0) -> list[dict[str, Any]]:
    """Rows of one trial in the trials.parquet schema (status/error repeated on every row)."""
    rows = []
    for epoch, metric in zip(epochs, metrics):
        rows.append({"sweep_id": sweep_id, "method": method, "trial_id": trial_id, "seed": seed,
                     **{f"hp_{k}": v for k, v in hp.items()}, "epoch": epoch, "metric": metric,
                     "pretext_loss": None if epoch == 0 else 1.0 / (epoch + 1), "pretext_acc": None,
                     "wall_time_s": float(epoch), "epoch_time_s": 1.0, "throughput": 100.0,
                     "status": status, "error": error, "node_id": "node0"})
    return rows


def search_trials(sweep_id: str = "sw1") -> pd.DataFrame:
    """simclr search with max_epochs = 9 and known costs.

    t1 completed (epochs 1, 3, 9; metric 0.3, 0.5, 0.8)     -> 9 epochs
    t2 stopped at rung 1 (metric 0.1)                       -> 1
    t3 stopped at rung 3 (metric 0.6, 0.85: higher than t1!) -> 3
    t4 failed before its first report (epoch 0, no metric)  -> 0
    t5 diverged after epoch 1 (0.2, then NaN loss at 2)      -> 2
    t6 stopped at rung 1 (metric 0.15)                      -> 1
    Trained 16 epochs; ASHA saved 8 + 6 + 8 = 22 (38 without it). ASHA stops: rung 1: 2, rung 3: 1.
    rotation: r1 completed (0.7 at epoch 9), r2 stopped at rung 3 (0.4).
    """
    s = sweep_id
    rows = (
        trial_rows("t1", "simclr", "completed", [1, 3, 9], [0.3, 0.5, 0.8],
                   {"lr": 0.1, "temperature": 0.5, "batch_size": 128}, sweep_id=s)
        + trial_rows("t2", "simclr", "stopped", [1], [0.1],
                     {"lr": 0.001, "temperature": 0.1, "batch_size": 256}, sweep_id=s)
        + trial_rows("t3", "simclr", "stopped", [1, 3], [0.6, 0.85],
                     {"lr": 0.05, "temperature": 0.2, "batch_size": 128}, sweep_id=s)
        + trial_rows("t4", "simclr", "failed", [0], [None],
                     {"lr": 0.3, "temperature": 0.9, "batch_size": 512}, error="CUDA out of memory", sweep_id=s)
        + trial_rows("t5", "simclr", "diverged", [1, 2], [0.2, None],
                     {"lr": 0.9, "temperature": 0.05, "batch_size": 128}, error="loss is nan at epoch 2",
                     sweep_id=s)
        + trial_rows("t6", "simclr", "stopped", [1], [0.15],
                     {"lr": 0.002, "temperature": 0.3, "batch_size": 256}, sweep_id=s)
        + trial_rows("r1", "rotation", "completed", [1, 3, 9], [0.3, 0.5, 0.7], {"lr": 0.01}, sweep_id=s)
        + trial_rows("r2", "rotation", "stopped", [1, 3], [0.2, 0.4], {"lr": 0.5}, sweep_id=s)
    )
    df = pd.DataFrame(rows)
    df["hp_temperature"] = df["hp_temperature"].astype("float64")
    df["hp_batch_size"] = df["hp_batch_size"].astype("Int64")
    return df


def budget_rows(method: str, accs: dict[tuple[float, str], list[float]], seeds: list[int],
                sweep_id: str = "sw1", kind: str = "fraction") -> list[dict[str, Any]]:
    """budget.parquet rows: ``accs[(budget, protocol)]`` holds test_acc per seed."""
    rows = []
    for (budget, protocol), values in accs.items():
        for seed, acc in zip(seeds, values):
            n = int(round(budget * 1800)) if kind == "fraction" else int(budget * 10)
            rows.append({"sweep_id": sweep_id, "method": method, "seed": seed, "trial_id": f"c-{method}-{seed}",
                         "source_trial_id": "t1", "budget_kind": kind, "budget": float(budget),
                         "n_labels": n, "protocol": protocol, "val_acc": acc, "test_acc": acc,
                         "pretrain_epochs": MAX_EPOCHS, "pretrain_time_s": 10.0, "eval_time_s": 1.0})
    return rows


def confirm_budget(sweep_id: str = "sw1") -> pd.DataFrame:
    """Confirm results, seeds 0-2, fraction budgets 0.01 (18 labels) and 0.1 (180 labels).

    At 1% linear: simclr [0.5, 0.6, 0.7] (mean 60.0, CI ±24.8), rotation [0.3, 0.35, 0.4],
    none [0.1, 0.2, 0.15]. At 10% linear simclr is best with [0.80, 0.82, 0.84]; rotation
    [0.81, 0.80, 0.84] is not significantly worse; none [0.70, 0.73, 0.73] is.
    """
    s, seeds = sweep_id, [0, 1, 2]
    return pd.DataFrame(
        budget_rows("simclr", {(0.01, "linear"): [0.5, 0.6, 0.7], (0.01, "finetune"): [0.55, 0.6, 0.65],
                               (0.1, "linear"): [0.80, 0.82, 0.84], (0.1, "finetune"): [0.85, 0.86, 0.87]},
                    seeds, s)
        + budget_rows("rotation", {(0.01, "linear"): [0.3, 0.35, 0.4], (0.01, "finetune"): [0.4, 0.45, 0.5],
                                   (0.1, "linear"): [0.81, 0.80, 0.84], (0.1, "finetune"): [0.8, 0.8, 0.81]},
                      seeds, s)
        + budget_rows("none", {(0.01, "linear"): [0.1, 0.2, 0.15], (0.01, "finetune"): [0.2, 0.3, 0.25],
                               (0.1, "linear"): [0.70, 0.73, 0.73], (0.1, "finetune"): [0.75, 0.76, 0.78]},
                      seeds, s)
    )


def manifest(sweep_id: str = "sw1", fingerprint: str = FINGERPRINT) -> dict[str, Any]:
    """A manifest in the docs/schema.md layout."""
    return {
        "sweep_id": sweep_id, "metric": "knn_top1", "mode": "max",
        "started": "2026-01-01T00:00:00Z", "finished": "2026-01-01T01:00:00Z",
        "config": {"search": {"max_epochs": MAX_EPOCHS, "num_samples": 6}, "methods": ["simclr", "rotation"],
                   "note": "<script>alert('x')</script>"},
        "spaces": {"simclr": {"lr": {"type": "loguniform", "low": 0.001, "high": 1.0}}},
        "versions": {"python": "3.11", "sslsweep": "0.1.0", "optuna": "5.0.0"},
        "git_commit": "abc1234", "hardware": {"cpu": "test-cpu", "cpus": 2, "gpus": []},
        "dataset": {"name": "digits", "fingerprint": fingerprint, "n_train": 1000, "n_val": 200,
                    "n_test": 597, "num_classes": 10, "shape": [1, 8, 8]},
        "seeds": {"search": 0, "confirm": [0, 1, 2]},
        "phases": {"search": {"started": "2026-01-01T00:00:00Z", "finished": "2026-01-01T00:40:00Z",
                              "wall_s": 2400.0},
                   "confirm": {"started": "2026-01-01T00:40:00Z", "finished": "2026-01-01T01:00:00Z",
                               "wall_s": 1200.0}},
        "cost": {"simclr": {"search_wall_s": 1200.0, "search_device_s": 7200.0,
                            "confirm_wall_s": 600.0, "confirm_device_s": 1800.0},
                 "rotation": {"search_wall_s": 1000.0, "search_device_s": 3600.0,
                              "confirm_wall_s": 500.0, "confirm_device_s": 900.0}},
        "resources": {"cpu": 1, "gpu": 0},
    }


def write_sweep(directory: str, trials: pd.DataFrame | None, budget: pd.DataFrame | None,
                man: dict[str, Any] | None) -> str:
    """Write a sweep directory the way the sweep writes it (pyarrow Parquet + manifest.json)."""
    os.makedirs(directory, exist_ok=True)
    if trials is not None:
        pq.write_table(pa.Table.from_pandas(trials, preserve_index=False), os.path.join(directory, "trials.parquet"))
    if budget is not None:
        pq.write_table(pa.Table.from_pandas(budget, preserve_index=False), os.path.join(directory, "budget.parquet"))
    if man is not None:
        with open(os.path.join(directory, "manifest.json"), "w", encoding="utf-8") as handle:
            json.dump(man, handle)
    return directory


@pytest.fixture
def trials() -> pd.DataFrame:
    return search_trials()


@pytest.fixture
def budget() -> pd.DataFrame:
    return confirm_budget()


@pytest.fixture
def sweep_dir(tmp_path: Any) -> str:
    """A complete local sweep directory (trials, budget, manifest)."""
    return write_sweep(str(tmp_path / "sweep1"), search_trials(), confirm_budget(), manifest())


@pytest.fixture
def make_sweep(tmp_path: Any) -> Callable[..., str]:
    """Factory: ``make_sweep(name, trials=..., budget=..., manifest=...)`` -> directory."""
    def make(name: str, **parts: Any) -> str:
        return write_sweep(str(tmp_path / name), parts.get("trials"), parts.get("budget"), parts.get("manifest"))
    return make


@pytest.fixture(scope="session")
def build() -> SimpleNamespace:
    """The builders above, for tests that make their own tables (no `import conftest` needed)."""
    return SimpleNamespace(trial_rows=trial_rows, search_trials=search_trials, budget_rows=budget_rows,
                           confirm_budget=confirm_budget, manifest=manifest, write_sweep=write_sweep,
                           max_epochs=MAX_EPOCHS, fingerprint=FINGERPRINT)


def _one_row(df: pd.DataFrame, **where: object) -> pd.Series:
    mask = np.ones(len(df), dtype=bool)
    for key, value in where.items():
        mask &= (df[key] == value).to_numpy()
    hit = df[mask]
    assert len(hit) == 1, f"expected one row for {where}, got {len(hit)}"
    return hit.iloc[0]


@pytest.fixture(scope="session")
def one_row() -> Callable[..., pd.Series]:
    """``one_row(table, method="simclr", budget=0.01)``: the one row of a table with those column
    values (the test fails, naming them, when there are none or several)."""
    return _one_row


@pytest.fixture(scope="session")
def built_report(build: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One report built from the full fixture sweep, shared by the tests that only read it
    (drawing a report takes seconds): ``dir``, ``paths``, ``md`` and ``html`` text."""
    directory = write_sweep(str(tmp_path_factory.mktemp("report") / "sweep1"), search_trials(),
                            confirm_budget(), manifest())
    paths = build_report([directory])
    with open(paths["md"], encoding="utf-8") as md, open(paths["html"], encoding="utf-8") as page:
        return SimpleNamespace(dir=directory, paths=paths, md=md.read(), html=page.read())
