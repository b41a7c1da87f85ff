"""Ray Tune results -> trials rows: one row per (trial, epoch), none lost, none duplicated."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd

from sslsweep.search.results import trial_rows


def result(reports: list[dict], config: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(config=config or {"method": "rotation", "seed": 0, "lr": 0.1},
                           metrics={**reports[-1], "trial_id": "t1"}, error=None, path="/x/t1",
                           metrics_dataframe=pd.DataFrame(reports))


def r(epoch: int, score: float, **extra: object) -> dict:
    return {"epoch": epoch, "knn_top1": score, "pretext_loss": 1.0, "trial_wall_s": float(epoch), **extra}


def test_rows_are_deduplicated_keeping_the_last_report() -> None:
    """An epoch reported twice (before and after a restart) is one row, with the later value."""
    rows = trial_rows("s", "knn_top1", 3, [result([r(1, 0.1), r(2, 0.2), r(2, 0.25), r(3, 0.3)])])
    assert [(x["epoch"], x["metric"]) for x in rows] == [(1, 0.1), (2, 0.25), (3, 0.3)]
    assert {x["status"] for x in rows} == {"completed"} and rows[0]["hp_lr"] == 0.1


def test_results_resent_from_a_checkpoint_fill_a_gap_in_rays_log() -> None:
    """A result checkpointed but never logged (worker killed in between) comes back through the
    history the first report after the restore carries: no epoch is missing."""
    history = json.dumps([r(1, 0.1), r(2, 0.2), r(3, 0.3), r(4, 0.4)])
    reports = [r(1, 0.1), r(2, 0.2), r(3, 0.3), r(5, 0.5, history=history), r(6, 0.6)]
    rows = trial_rows("s", "knn_top1", 6, [result(reports)])
    assert [x["epoch"] for x in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[3]["metric"] == 0.4


def test_stopped_and_diverged_statuses() -> None:
    """A trial that ended before max_epochs is 'stopped'; one whose last report is diverged is
    'diverged' with its error and no metric on that row."""
    stopped = trial_rows("s", "knn_top1", 5, [result([r(1, 0.1), r(2, 0.2)])])
    assert {x["status"] for x in stopped} == {"stopped"}
    bad = trial_rows("s", "knn_top1", 5, [result([r(1, 0.1, diverged=1, error="pretext loss is nan")])])
    assert bad[0]["status"] == "diverged" and bad[0]["metric"] is None and bad[0]["error"] == "pretext loss is nan"


def test_best_configs_picks_what_the_confirm_phase_retrains() -> None:
    """Through the sweep's own tables: a completed trial beats a stopped one with a higher (earlier)
    score, a diverged trial is never chosen, a method with only stopped trials falls back to them,
    and the hyperparameters come back as plain Python values (JSON- and Optuna-ready)."""
    from sslsweep.search.results import best_configs, trials_table

    def res(tid: str, method: str, reports: list[dict], lr: float, batch: int) -> SimpleNamespace:
        return SimpleNamespace(config={"method": method, "seed": 3, "lr": lr, "batch_size": batch},
                               metrics={**reports[-1], "trial_id": tid}, error=None, path=f"/x/{tid}",
                               metrics_dataframe=pd.DataFrame(reports))

    results = [res("done", "simclr", [r(1, 0.5), r(3, 0.7)], 0.1, 64),
               res("cut", "simclr", [r(1, 0.9)], 0.2, 128),                      # stopped by ASHA at 1
               res("nan", "simclr", [r(1, 0.95), r(2, 0.0, diverged=True)], 0.3, 256),
               res("rot", "rotation", [r(1, 0.4)], 0.05, 64)]                    # only a stopped trial
    trials = trials_table(trial_rows("s", "knn_top1", 3, results)).to_pandas()
    best = best_configs(trials)
    assert best["simclr"]["trial_id"] == "done" and best["simclr"]["metric"] == 0.7
    assert best["simclr"]["hp"] == {"lr": 0.1, "batch_size": 64} and best["simclr"]["seed"] == 3
    assert type(best["simclr"]["hp"]["batch_size"]) is int and type(best["simclr"]["hp"]["lr"]) is float
    assert best["rotation"]["trial_id"] == "rot"
    assert best_configs(trials[trials["method"] == "none"]) == {}


def test_budget_rows_carry_the_label_selection_and_default_to_random() -> None:
    """A confirm trial's row keeps its ``selection``; a row naming none is a random one."""
    from sslsweep.search.results import budget_rows, budget_table

    rows = [{"budget_kind": "fraction", "budget": 0.1, "n_labels": 12, "protocol": "linear", "selection": "typical",
             "val_acc": 0.5, "test_acc": 0.4},
            {"budget_kind": "fraction", "budget": 0.1, "n_labels": 12, "protocol": "linear",
             "val_acc": 0.6, "test_acc": 0.5}]
    res = SimpleNamespace(config={"run": {"method": "simclr", "seed": 1, "source_trial_id": "s"}},
                          metrics={"trial_id": "c1", "budget_rows": json.dumps(rows)})
    table = budget_table(budget_rows("sw", [res], "oracle")).to_pandas()
    assert table["selection"].tolist() == ["typical", "random"]
    assert table["test_acc"].tolist() == [0.4, 0.5]
    assert table["chosen_by"].tolist() == ["oracle", "oracle"]  # a run naming no budgets: the sweep's own rule


def test_a_run_chosen_by_several_rules_has_its_rows_once_per_rule() -> None:
    """The run's ``budgets`` names the rules that chose it at each budget: its 10% row is written
    for budget and oracle, its 1% row for oracle only; the accuracies are the run's, unchanged."""
    from sslsweep.search.results import budget_rows

    rows = [{"budget_kind": "fraction", "budget": b, "n_labels": 3, "protocol": "linear", "val_acc": 0.5,
             "test_acc": acc} for b, acc in ((0.01, 0.3), (0.1, 0.4))]
    run = {"method": "simclr", "seed": 0, "source_trial_id": "s",
           "budgets": {"fraction_0.1": ["budget", "oracle"], "fraction_0.01": ["oracle"]}}
    res = SimpleNamespace(config={"run": run}, metrics={"trial_id": "c1", "budget_rows": json.dumps(rows)})
    got = [(r["budget"], r["chosen_by"], r["test_acc"]) for r in budget_rows("sw", [res], "budget")]
    assert got == [(0.01, "oracle", 0.3), (0.1, "budget", 0.4), (0.1, "oracle", 0.4)]


def test_score_columns_reach_the_trials_table_as_floats() -> None:
    """Every ``score_*`` a trial reported becomes a float column; a diverged report's are null."""
    from sslsweep.search.results import trials_table

    reports = [r(1, 0.5, diverged=0, score_oracle=0.5, score_label_free=7.0), r(2, 0.0, diverged=1, score_oracle=0.1)]
    trials = trials_table(trial_rows("s", "knn_top1", 3, [result(reports)])).to_pandas()
    assert trials["score_oracle"].tolist()[0] == 0.5 and pd.isna(trials["score_oracle"].tolist()[1])
    assert str(trials["score_label_free"].dtype) == "float64"
