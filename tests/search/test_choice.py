"""Which search trial each selection rule confirms (sslsweep.search.choice), on constructed trial
tables whose right answers are known by construction."""

from __future__ import annotations

import math

import pandas as pd

from sslsweep.search.choice import FALLBACK, choices, confirm_plan

BUDGETS = [("fraction", 0.01), ("fraction", 0.1)]


def trial(tid: str, status: str, metric: float, *, method: str = "simclr", epoch: int = 4, **scores: float) -> list[dict]:
    """Two reports of one trial (epoch 2 and its last), the scores on the last only."""
    early = dict(method=method, trial_id=tid, epoch=2, metric=0.0, status=status)
    return [early, dict(method=method, trial_id=tid, epoch=epoch, metric=metric, status=status, **scores)]


def table(*trials: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([r for t in trials for r in t])


def chosen(df: pd.DataFrame, rule: str, budget: float, method: str = "simclr", seed: int = 0) -> str:
    row = df[(df["rule"] == rule) & (df["budget"] == budget) & (df["method"] == method) & (df["seed"] == seed)]
    assert len(row) == 1, row
    return str(row["trial_id"].iloc[0])


def test_each_rule_chooses_by_its_own_signal_and_budget_per_budget() -> None:
    """a is best by RankMe, b by the oracle, c at 1% and b at 10% of labels: each rule picks its
    own, the budget rule differently per budget."""
    def at(small: float, large: float) -> dict[str, float]:  # the budget rule's scores at 1% and 10%
        return {"score_budget_fraction_0.01_s0": small, "score_budget_fraction_0.1_s0": large}

    trials = table(trial("a", "completed", 9.0, score_label_free=9.0, score_oracle=0.5, **at(0.2, 0.5)),
                   trial("b", "completed", 5.0, score_label_free=5.0, score_oracle=0.9, **at(0.3, 0.8)),
                   trial("c", "completed", 4.0, score_label_free=4.0, score_oracle=0.7, **at(0.6, 0.7)))
    df = choices(trials, ("budget", "oracle", "label_free"), BUDGETS)
    assert [chosen(df, "budget", b) for _, b in BUDGETS] == ["c", "b"]
    assert [chosen(df, "oracle", b) for _, b in BUDGETS] == ["b", "b"]
    assert [chosen(df, "label_free", b) for _, b in BUDGETS] == ["a", "a"]
    assert set(df.loc[df["rule"] == "budget", "signal"]) == {"loo_knn"}
    assert df.loc[(df["rule"] == "budget") & (df["budget"] == 0.01), "score"].item() == 0.6


def test_completed_trials_come_before_stopped_and_failed_ones_are_never_chosen() -> None:
    """A stopped trial with a higher score loses to a completed one; a failed one is never picked;
    with only stopped trials the best of them is."""
    trials = table(trial("done", "completed", 1.0, score_oracle=0.5),
                   trial("stop", "stopped", 2.0, epoch=2, score_oracle=0.9),
                   trial("fail", "failed", 3.0, score_oracle=1.0))
    assert chosen(choices(trials, ("oracle",), BUDGETS[:1]), "oracle", 0.01) == "done"
    only_stopped = trials[trials["trial_id"] != "done"]
    assert chosen(choices(only_stopped, ("oracle",), BUDGETS[:1]), "oracle", 0.01) == "stop"


def test_a_budget_with_nothing_held_out_falls_back_to_rankme() -> None:
    """NaN budget scores (no class with 2 labels) -> the label-free signal chooses, and says so."""
    trials = table(trial("a", "completed", 9.0, score_label_free=9.0, **{"score_budget_fraction_0.01_s0": math.nan}),
                   trial("b", "completed", 5.0, score_label_free=5.0, **{"score_budget_fraction_0.01_s0": math.nan}))
    df = choices(trials, ("budget",), BUDGETS[:1])
    assert chosen(df, "budget", 0.01) == "a" and df["signal"].item() == FALLBACK


def test_ties_go_to_rankme_then_the_smallest_trial_id() -> None:
    """Equal budget scores: the higher RankMe (the budget sweep's search metric) wins; equal both:
    the smaller id."""
    col = "score_budget_fraction_0.01_s0"
    trials = table(trial("b", "completed", 2.0, **{col: 0.5}), trial("a", "completed", 1.0, **{col: 0.5}))
    assert chosen(choices(trials, ("budget",), BUDGETS[:1]), "budget", 0.01) == "b"
    trials = table(trial("b", "completed", 1.0, **{col: 0.5}), trial("a", "completed", 1.0, **{col: 0.5}))
    assert chosen(choices(trials, ("budget",), BUDGETS[:1]), "budget", 0.01) == "a"


def test_in_an_oracle_sweep_a_budget_tie_goes_to_rankme_not_to_the_validation_labels() -> None:
    """Under eval.selection=oracle the search metric is the labelled validation kNN: the budget
    rule's tie-break must not read it. a has the higher RankMe, b the higher oracle metric."""
    col = "score_budget_fraction_0.01_s0"
    trials = table(trial("a", "completed", 0.70, score_oracle=0.70, score_label_free=30.0, **{col: 0.9}),
                   trial("b", "completed", 0.90, score_oracle=0.90, score_label_free=10.0, **{col: 0.9}))
    df = choices(trials, ("oracle", "budget"), BUDGETS[:1])
    assert chosen(df, "budget", 0.01) == "a" and chosen(df, "oracle", 0.01) == "b"


def test_a_resumed_old_sweep_chooses_among_trials_with_and_without_score_columns() -> None:
    """An oracle sweep started before score_* columns, resumed by today's driver: the old trial
    (metric only) and the new one (metric and score_oracle) compete on the metric, and another
    method's score column (all null for this one) takes nothing away."""
    trials = table(trial("t1", "completed", 0.95), trial("t2", "completed", 0.80, score_oracle=0.80),
                   trial("r1", "completed", 0.5, method="rotation"))
    df = choices(trials, ("oracle",), BUDGETS[:1])
    assert chosen(df, "oracle", 0.01) == "t1" and chosen(df, "oracle", 0.01, "rotation") == "r1"


def test_a_sweep_without_score_columns_chooses_its_own_rule_by_the_metric() -> None:
    """Trials written before the budget rule have only ``metric``: the sweep's rule (oracle)
    chooses by it, the best completed trial as before; other rules have no signal and no rows."""
    trials = table(trial("a", "completed", 0.4), trial("b", "completed", 0.8), trial("c", "stopped", 0.9, epoch=2))
    df = choices(trials, ("oracle", "label_free"), BUDGETS)
    assert set(df["rule"]) == {"oracle"} and set(df["trial_id"]) == {"b"}


def test_methods_are_chosen_separately() -> None:
    """One method's better scores never make another method's trial chosen."""
    trials = table(trial("s1", "completed", 0.9, method="simclr", score_oracle=0.9),
                   trial("r1", "completed", 0.2, method="rotation", score_oracle=0.2),
                   trial("r2", "completed", 0.3, method="rotation", score_oracle=0.3))
    df = choices(trials, ("oracle",), BUDGETS[:1])
    assert chosen(df, "oracle", 0.01, "simclr") == "s1" and chosen(df, "oracle", 0.01, "rotation") == "r2"


def test_the_budget_rule_chooses_per_seed_with_that_seeds_subset() -> None:
    """Each confirm seed draws its own labelled subset: at seed 0 trial a scores best inside it, at
    seed 1 trial b; the budget rule follows each seed's own score, the oracle's choice is the
    same at both seeds."""
    def at(s0: float, s1: float) -> dict[str, float]:
        return {"score_budget_fraction_0.01_s0": s0, "score_budget_fraction_0.01_s1": s1}

    trials = table(trial("a", "completed", 1.0, score_label_free=1.0, score_oracle=0.5, **at(0.9, 0.2)),
                   trial("b", "completed", 2.0, score_label_free=2.0, score_oracle=0.6, **at(0.1, 0.8)))
    df = choices(trials, ("budget", "oracle"), BUDGETS[:1], seeds=(0, 1))
    assert [chosen(df, "budget", 0.01, seed=s) for s in (0, 1)] == ["a", "b"]
    assert [chosen(df, "oracle", 0.01, seed=s) for s in (0, 1)] == ["b", "b"]


def test_the_confirm_plan_runs_each_chosen_trial_and_seed_once_with_the_rules_per_budget() -> None:
    """At seed 0 trial c chosen by budget at 1%, b by budget at 10% and by oracle at both: two runs;
    b's run evaluates both budgets and names the rules that chose it at each. At seed 1 budget chose
    b at 1% too: one run for b, both rules at 1%."""
    def row(rule: str, budget: float, trial_id: str, seed: int = 0) -> dict:
        return dict(method="m", rule=rule, budget_kind="fraction", budget=budget, seed=seed, trial_id=trial_id)

    df = pd.DataFrame([row("budget", 0.01, "c"), row("budget", 0.1, "b"), row("oracle", 0.01, "b"),
                       row("oracle", 0.1, "b"), row("budget", 0.01, "b", 1), row("oracle", 0.01, "b", 1)])
    assert confirm_plan(df) == [(("c", 0), {"fraction_0.01": ["budget"]}),
                                (("b", 0), {"fraction_0.1": ["budget", "oracle"], "fraction_0.01": ["oracle"]}),
                                (("b", 1), {"fraction_0.01": ["budget", "oracle"]})]


def test_search_trials_get_every_seeds_subset_of_every_budget_and_confirm_trials_none() -> None:
    """Under the budget rule the driver draws each budget's labelled subset at every confirm seed
    (the subsets those seeds' confirm runs are evaluated with) for the search trials; a sweep
    without the budget rule draws none."""
    import numpy as np

    from sslsweep.data import budget_subset
    from sslsweep.search.sweep import Sweep
    from tests.test_config import load
    from tests.trainables.test_train import tiny_data

    data = tiny_data()
    sweep = Sweep.create(load("storage=/tmp/unused"), {})
    subsets = sweep._settings(data, confirm=False).subsets
    assert [(k, v, s) for k, v, s, _ in subsets] == [(k, v, s) for s in range(sweep.cfg.confirm.seeds)
                                                     for k, v in (("fraction", 0.01), ("fraction", 0.1), ("fraction", 1.0))]
    for kind, value, seed, idx in subsets:
        assert np.array_equal(idx, budget_subset(data.labels, data.splits.train, kind, value, seed=seed))
    assert sweep._settings(data, confirm=True).subsets == ()
    oracle = Sweep.create(load("storage=/tmp/unused", "eval.selection=oracle", "eval.compare=[label_free]"), {})
    assert oracle._settings(data, confirm=False).subsets == ()
