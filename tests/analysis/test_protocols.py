"""Selection protocols: the gap of every rule to the headline rule, paired over seeds; rankings
per rule and whether they change; the chosen trials per rule; the runs of a budget table read by
rule (old tables as their sweep's rule), and the report section only when several rules are."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from sslsweep.analysis.confirm import headline_table
from sslsweep.analysis.io import combine, headline_rule, open_sweep
from sslsweep.analysis.protocols import (
    choice_table,
    protocol_table,
    ranking_differs,
    ranking_table,
    rules_present,
    sweep_choices,
)
from sslsweep.analysis.report import build_report

TITLE = "Selection protocols: honest vs oracle"


def rows(build: SimpleNamespace, rule: str, method: str, accs: dict[tuple[float, str], list[float]],
         source: str = "t1", sweep_id: str = "sw1") -> pd.DataFrame:
    """budget.parquet rows of ``method`` chosen by ``rule``, seeds 0-2, confirmed from search trial ``source``."""
    return pd.DataFrame(build.budget_rows(method, accs, [0, 1, 2], sweep_id=sweep_id)).assign(
        chosen_by=rule, source_trial_id=source)


def ruled(build: SimpleNamespace, sweep_id: str = "sw1") -> pd.DataFrame:
    """The fixture's confirm results chosen by three rules. budget and label_free chose trial t1
    everywhere (the same runs, rows once per rule). oracle chose t3 for simclr at 1%: linear
    [0.6, 0.65, 0.8] against [0.5, 0.6, 0.7]; and r2 for rotation at 10% linear, [0.83, 0.84, 0.85]
    (mean 84.0) against [0.81, 0.80, 0.84] (81.7): above simclr's 82.0, so the ranking changes there."""
    base = build.confirm_budget(sweep_id).assign(source_trial_id="t1")
    oracle = base.copy()
    simclr = (oracle["method"] == "simclr") & (oracle["budget"] == 0.01) & (oracle["protocol"] == "linear")
    oracle.loc[simclr, "test_acc"] = [0.6, 0.65, 0.8]
    oracle.loc[simclr, "source_trial_id"] = "t3"
    rotation = (oracle["method"] == "rotation") & (oracle["budget"] == 0.1) & (oracle["protocol"] == "linear")
    oracle.loc[rotation, "test_acc"] = [0.83, 0.84, 0.85]
    oracle.loc[rotation, "source_trial_id"] = "r2"
    return pd.concat([base.assign(chosen_by="budget"), base.assign(chosen_by="label_free"),
                      oracle.assign(chosen_by="oracle")], ignore_index=True)


def ruled_manifest(build: SimpleNamespace, sweep_id: str = "sw1", selection: str | None = "budget",
                   choices: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    man = build.manifest(sweep_id)
    if selection is not None:
        man["config"]["eval"] = {"selection": selection, "compare": ["oracle", "label_free"]}
    if choices is not None:
        man["choices"] = choices
    return man


def choice(method: str, rule: str, budget: float | None, trial: str, score: float = 0.5,
           signal: str = "loo_knn") -> dict[str, Any]:
    return {"method": method, "rule": rule, "budget_kind": None if budget is None else "fraction",
            "budget": budget, "trial_id": trial, "score": score, "signal": signal}


# ----------------------------------------------------------------------------- protocol_table


def test_oracle_gap_is_oracle_minus_headline_paired_over_seeds(build: SimpleNamespace,
                                                               one_row: Callable[..., pd.Series]) -> None:
    """simclr 1% linear: oracle - budget per seed 0.1, 0.05, 0.1, so the gap is 0.25/3 with the
    paired t interval t.ppf(0.975, 2) x (0.05/sqrt(3)) / sqrt(3) and p = 1 - 5/sqrt(27); each
    rule's mean is its own seeds' mean; the headline row has no gap."""
    table = protocol_table(ruled(build), "budget")
    key = {"method": "simclr", "budget": 0.01, "protocol": "linear", "selection": "random"}
    head = one_row(table, **key, rule="budget")
    assert head["is_headline"] and head["n_paired"] == 0 and math.isnan(head["gap"])
    assert head["mean"] == pytest.approx(0.6) and head["n_seeds"] == 3 and head["headline_rule"] == "budget"
    oracle = one_row(table, **key, rule="oracle")
    assert not oracle["is_headline"] and oracle["mean"] == pytest.approx(2.05 / 3)
    assert oracle["gap"] == pytest.approx(oracle["mean"] - head["mean"]) == pytest.approx(0.25 / 3)
    half = 4.302653 * (0.05 / math.sqrt(3)) / math.sqrt(3)
    assert (oracle["ci_low"], oracle["ci_high"]) == pytest.approx((0.25 / 3 - half, 0.25 / 3 + half), abs=1e-6)
    assert oracle["p_value"] == pytest.approx(1 - 5 / math.sqrt(27), abs=1e-9)
    assert oracle["n_paired"] == 3 and oracle["resolved"] and oracle["same_trial"] is False
    assert oracle["budget_label"] == "1% (18 labels)"


def test_a_rule_that_chose_the_same_runs_has_a_zero_gap_that_settles_nothing(
        build: SimpleNamespace, one_row: Callable[..., pd.Series]) -> None:
    """label_free's rows are the budget rule's runs again: gap 0 on every seed, p = 1, not resolved,
    same_trial True; the rows appear once per rule and rule, in SELECTION_RULES order after the headline."""
    table = protocol_table(ruled(build), "budget")
    free = one_row(table, method="simclr", budget=0.01, protocol="linear", rule="label_free")
    assert free["gap"] == 0.0 and free["p_value"] == 1.0 and not free["resolved"] and free["same_trial"] is True
    assert len(table) == 3 * 3 * 4  # 3 methods x 4 budget-protocols x 3 rules
    first = table[(table["method"] == "simclr") & (table["budget"] == 0.01) & (table["protocol"] == "linear")]
    assert first["rule"].tolist() == ["budget", "label_free", "oracle"]


def test_the_headline_rule_may_be_any_rule_and_gaps_turn_sign(build: SimpleNamespace,
                                                              one_row: Callable[..., pd.Series]) -> None:
    """With oracle as the headline the budget rule's gap is budget - oracle = -0.25/3 and the oracle row has none."""
    table = protocol_table(ruled(build), "oracle")
    budget = one_row(table, method="simclr", budget=0.01, protocol="linear", rule="budget")
    assert budget["gap"] == pytest.approx(-0.25 / 3)
    assert one_row(table, method="simclr", budget=0.01, protocol="linear", rule="oracle")["is_headline"]


def test_combined_sweeps_with_different_headline_rules_pair_each_row_with_its_own_sweeps_rule(
        build: SimpleNamespace, one_row: Callable[..., pd.Series]) -> None:
    """Mapping sw1 -> budget, sw2 -> oracle: sw2's simclr rows are headed by oracle (no gap), sw1's
    rotation by budget; a sweep_id missing from the mapping is named."""
    a = rows(build, "budget", "rotation", {(0.01, "linear"): [0.3, 0.35, 0.4]})
    b = rows(build, "oracle", "rotation", {(0.01, "linear"): [0.4, 0.45, 0.5]})
    c = rows(build, "oracle", "simclr", {(0.01, "linear"): [0.5, 0.6, 0.7]}, sweep_id="sw2")
    table = protocol_table(pd.concat([a, b, c], ignore_index=True), {"sw1": "budget", "sw2": "oracle"})
    assert one_row(table, method="simclr", rule="oracle")["is_headline"]
    assert one_row(table, method="rotation", rule="oracle")["gap"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match=r"budget rows of sweeps \['sw2'\] have no headline rule"):
        protocol_table(c, {"sw1": "budget"})


def test_protocol_table_requires_chosen_by(build: SimpleNamespace) -> None:
    """A table without the rule of its rows cannot be split by rule: the missing column is named."""
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['chosen_by'\]"):
        protocol_table(build.confirm_budget(), "oracle")


# ----------------------------------------------------------------------------- ranking_table


def test_ranking_that_flips_under_a_rule_is_flagged(build: SimpleNamespace,
                                                    one_row: Callable[..., pd.Series]) -> None:
    """At 10% linear the budget rule ranks simclr (82.0) > rotation (81.7) > none, oracle puts
    rotation (84.0) first: oracle differs and the group's ranking changes; label_free, the same runs, does not."""
    table = ranking_table(ruled(build), "budget")
    key = {"budget": 0.1, "protocol": "linear"}
    assert one_row(table, **key, rule="budget")["ranking"] == "simclr > rotation > none"
    oracle = one_row(table, **key, rule="oracle")
    assert oracle["ranking"] == "rotation > simclr > none" and oracle["differs"] is True
    assert one_row(table, **key, rule="label_free")["differs"] is False
    assert table[(table["budget"] == 0.1) & (table["protocol"] == "linear")]["ranking_changes"].all()


def test_ranking_that_keeps_its_order_is_not_flagged(build: SimpleNamespace,
                                                     one_row: Callable[..., pd.Series]) -> None:
    """At 1% linear oracle raises simclr (60.0 -> 68.3) but keeps simclr > rotation > none: no change,
    though the accuracy moved; the headline row never differs from itself."""
    table = ranking_table(ruled(build), "budget")
    group = table[(table["budget"] == 0.01) & (table["protocol"] == "linear")]
    assert group["ranking"].tolist() == ["simclr > rotation > none"] * 3
    assert not group["ranking_changes"].any() and group["differs"].tolist() == [False, False, False]
    assert one_row(table, budget=0.01, protocol="linear", rule="budget")["is_headline"]
    assert one_row(table, budget=0.01, protocol="finetune", rule="oracle")["n_methods"] == 3


def test_a_tie_broken_by_another_rule_is_a_change() -> None:
    """Tied groups are compared as groups: a = b against a > b differs, a = b against b = a does not,
    and a method ranked under only one rule is left out of the comparison."""
    assert ranking_differs([["a"], ["b"]], [["a", "b"]])
    assert not ranking_differs([["b", "a"]], [["a", "b"]])
    assert not ranking_differs([["a"], ["c"], ["b"]], [["a"], ["b"]])
    assert ranking_differs([["b"], ["a"]], [["a"], ["b"]])


def test_equal_means_tie_in_the_ranking_text(build: SimpleNamespace, one_row: Callable[..., pd.Series]) -> None:
    """simclr and rotation both average 0.5 under the budget rule: written 'rotation = simclr' (by name)."""
    table = ranking_table(pd.concat([rows(build, "budget", "simclr", {(0.01, "linear"): [0.4, 0.5, 0.6]}),
                                     rows(build, "budget", "rotation", {(0.01, "linear"): [0.5, 0.5, 0.5]}),
                                     rows(build, "oracle", "simclr", {(0.01, "linear"): [0.5, 0.6, 0.7]}),
                                     rows(build, "oracle", "rotation", {(0.01, "linear"): [0.5, 0.5, 0.5]})]),
                          "budget")
    assert one_row(table, rule="budget")["ranking"] == "rotation = simclr"
    assert one_row(table, rule="oracle")["ranking"] == "simclr > rotation"
    assert table["ranking_changes"].all()


# ----------------------------------------------------------------------------- choice_table


def test_choice_table_flags_the_trials_other_rules_chose_differently(one_row: Callable[..., pd.Series]) -> None:
    """Per method x budget: the budget rule chose t1 at 1% and t3 at 10%, oracle t3 at both: it
    differs at 1% only. label_free made one choice for every budget (no budget), which the
    headline's per-budget choices do not match, and rotation has no headline choice: both unknown (None)."""
    choices = [choice("simclr", "budget", 0.01, "t1", 0.7), choice("simclr", "budget", 0.1, "t3", 0.8),
               choice("simclr", "oracle", 0.01, "t3", 0.85, "knn_top1"),
               choice("simclr", "oracle", 0.1, "t3", 0.85, "knn_top1"),
               choice("simclr", "label_free", None, "t1", 12.0, "rankme"),
               choice("rotation", "oracle", 0.01, "r1", 0.7, "knn_top1")]
    table = choice_table(choices, "budget", "sw1")
    assert one_row(table, rule="oracle", budget=0.01, method="simclr")["differs_from_headline"] is True
    assert one_row(table, rule="oracle", budget=0.1, method="simclr")["differs_from_headline"] is False
    assert one_row(table, rule="budget", budget=0.01)["is_headline"]
    free = one_row(table, rule="label_free")
    assert free["budget_label"] == "all budgets" and pd.isna(free["headline_trial_id"])
    assert free["differs_from_headline"] is None and free["signal"] == "rankme"
    assert one_row(table, method="rotation")["differs_from_headline"] is None
    assert table["method"].tolist()[0] == "rotation" and table["sweep_id"].eq("sw1").all()
    simclr_1 = table[(table["method"] == "simclr") & (table["budget"] == 0.01)]
    assert simclr_1["rule"].tolist() == ["budget", "oracle"]  # headline first


def test_choice_without_a_key_is_refused_naming_it() -> None:
    """A choice must say its method, rule, budget, trial, score and signal."""
    bad = {"method": "simclr", "rule": "oracle", "budget_kind": "fraction", "budget": 0.1, "trial_id": "t1"}
    with pytest.raises(ValueError, match=r"choices\[0\] of sweep 'sw1' lacks \['score', 'signal'\]"):
        choice_table([bad], "oracle", "sw1")


def test_sweep_choices_read_each_manifest_against_its_own_headline_rule(build: SimpleNamespace) -> None:
    """An old manifest (no choices, no eval.selection) adds nothing; a new one is read against eval.selection."""
    new = ruled_manifest(build, choices=[choice("simclr", "budget", 0.01, "t1"), choice("simclr", "oracle", 0.01, "t3")])
    table = sweep_choices([build.manifest("sw0"), new])
    assert table["differs_from_headline"].tolist() == [False, True] and table["sweep_id"].eq("sw1").all()
    assert sweep_choices([build.manifest("sw0")]).empty


# ----------------------------------------------------------------------------- reading budget.parquet by rule


def test_missing_chosen_by_is_the_sweeps_eval_selection_or_oracle(make_sweep: Callable[..., str],
                                                                  build: SimpleNamespace) -> None:
    """A budget table written before rules: every row was chosen by the manifest's eval.selection
    (label_free here), or by oracle when the config names none; null cells are filled the same way."""
    a = open_sweep(make_sweep("a", budget=build.confirm_budget(), manifest=ruled_manifest(build, selection="label_free")))
    assert a.budget_all["chosen_by"].eq("label_free").all() and len(a.budget) == len(a.budget_all) == 36
    b = open_sweep(make_sweep("b", budget=build.confirm_budget(), manifest=build.manifest()))
    assert b.budget["chosen_by"].eq("oracle").all() and b.headline_rules == {"sw1": "oracle"}
    partly = build.confirm_budget().assign(chosen_by=None)
    c = open_sweep(make_sweep("c", budget=partly, manifest=ruled_manifest(build, selection="budget")))
    assert c.budget_all["chosen_by"].eq("budget").all()
    assert headline_rule(build.manifest()) == "oracle"


def test_budget_holds_the_headline_rules_rows_once_and_budget_all_every_rule(make_sweep: Callable[..., str],
                                                                            build: SimpleNamespace) -> None:
    """Runs chosen by three rules are three rows each in budget_all; budget keeps the headline
    rule's alone, so its method tables are those of the budget rule's runs, no row twice."""
    sweep = open_sweep(make_sweep("r", budget=ruled(build), manifest=ruled_manifest(build)))
    assert len(sweep.budget_all) == 3 * len(sweep.budget) == 108
    key = ["method", "seed", "budget_kind", "budget", "protocol", "selection"]
    assert not sweep.budget.duplicated(subset=key).any() and sweep.budget_all.duplicated(subset=key).any()
    assert sweep.budget["chosen_by"].eq("budget").all()
    assert rules_present(sweep.budget_all) == ["budget", "label_free", "oracle"]
    expected = headline_table(build.confirm_budget().assign(selection="random"))
    pd.testing.assert_frame_equal(headline_table(sweep.budget), expected)


def test_unknown_rules_are_refused(make_sweep: Callable[..., str], build: SimpleNamespace) -> None:
    """eval.selection and chosen_by must name one of SELECTION_RULES."""
    with pytest.raises(ValueError, match=r"config.eval.selection is 'best' .* must be one of"):
        open_sweep(make_sweep("a", budget=build.confirm_budget(), manifest=ruled_manifest(build, selection="best")))
    with pytest.raises(ValueError, match=r"chosen_by holds \['val'\]: it must be one of"):
        open_sweep(make_sweep("b", budget=build.confirm_budget().assign(chosen_by="val"), manifest=build.manifest()))


def test_a_sweep_without_headline_rows_says_so(make_sweep: Callable[..., str], build: SimpleNamespace) -> None:
    """Rows of the compared rules only (an unfinished sweep): the method tables are empty and a note says why."""
    sweep = open_sweep(make_sweep("a", budget=build.confirm_budget().assign(chosen_by="oracle"),
                                  manifest=ruled_manifest(build)))
    assert sweep.budget.empty and len(sweep.budget_all) == 36
    assert any("no row chosen by the headline rule budget" in n for n in sweep.notes)


def test_combine_filters_each_sweep_by_its_own_rule_and_allows_repeats_across_rules(
        make_sweep: Callable[..., str], build: SimpleNamespace) -> None:
    """sw1 (headline budget, three rules) and sw2 (headline oracle, other seeds): budget keeps
    sw1's budget rows and sw2's oracle rows, a note says the rules differ; the same run under two
    rules is no repeat, the same run under one rule in two sweeps is."""
    a = make_sweep("a", budget=ruled(build), manifest=ruled_manifest(build))
    rows2 = pd.DataFrame(build.budget_rows("simclr", {(0.01, "linear"): [0.61, 0.62]}, [10, 11], sweep_id="sw2"))
    b = make_sweep("b", budget=rows2, manifest=build.manifest("sw2"))
    both = combine([open_sweep(a), open_sweep(b)])
    assert len(both.budget) == 36 + 2 and len(both.budget_all) == 108 + 2
    assert both.budget.groupby("sweep_id")["chosen_by"].unique().map(list).to_dict() == {
        "sw1": ["budget"], "sw2": ["oracle"]}
    assert both.headline_rules == {"sw1": "budget", "sw2": "oracle"}
    assert any("headline selection rules differ (sw1: budget, sw2: oracle)" in n for n in both.notes)
    again = ruled(build, "sw3").query("chosen_by == 'label_free' and seed == 0 and method == 'simclr'")
    c = make_sweep("c", budget=again, manifest=ruled_manifest(build, "sw3"))
    with pytest.raises(ValueError, match=r"seed=0 .*chosen_by=label_free appears in sweeps \['sw1', 'sw3'\]"):
        combine([open_sweep(a), open_sweep(c)])


# ----------------------------------------------------------------------------- the report


def test_report_section_only_when_several_rules_are(make_sweep: Callable[..., str], build: SimpleNamespace,
                                                    built_report: SimpleNamespace) -> None:
    """A one-rule sweep has no section; a three-rule sweep has it in both documents: the headline
    rule named, oracle called an upper bound, simclr's 1% linear gaps (label_free: the same trial,
    oracle +8.3 [+1.2, +15.5]), the 10% linear ranking change, and the chosen trials (listed in html)."""
    assert TITLE not in built_report.md and TITLE not in built_report.html
    choices = [choice("simclr", "budget", 0.01, "t1"), choice("simclr", "oracle", 0.01, "t3", 0.85, "knn_top1"),
               choice("simclr", "label_free", 0.01, "t1", 12.5, "rankme (a class has 1 label)")]
    paths = build_report([make_sweep("r", trials=build.search_trials(), budget=ruled(build),
                                     manifest=ruled_manifest(build, choices=choices))])
    md, page = Path(paths["md"]).read_text(encoding="utf-8"), Path(paths["html"]).read_text(encoding="utf-8")
    assert f"## {TITLE}" in md and "Headline rule: budget (eval.selection)" in md and "upper bound" in md
    assert ("| 1% (18 labels) | linear | simclr | 60.0 ± 24.8 | 60.0 ± 24.8 | 0 (same trial) | "
            "68.3 ± 25.9 | +8.3 [+1.2, +15.5] |") in md
    assert "| 10% (180 labels) | linear | simclr > rotation > none | simclr > rotation > none | " \
           "rotation > simclr > none | yes |" in md
    assert "The ranking of methods changes at: 10% (180 labels) linear." in md
    assert "1 of 2 choices of the other rules differ" in md and "listed in report.html" in md
    assert "| simclr | **60.0 ± 24.8** ★ |" in md.split(f"## {TITLE}")[0]  # headline table: the budget rule's runs
    assert f'<section id="s3"><h2>3. {TITLE}</h2>' in page and "3 paired seeds; p=0.0377" in page
    assert '<table id="protocol-gap">' in page and '<table id="protocol-ranking">' in page
    assert '<table id="protocol-choices">' in page and "rankme (a class has 1 label)" in page


def test_report_says_when_every_rule_agrees(make_sweep: Callable[..., str], build: SimpleNamespace) -> None:
    """budget and oracle chose the same runs and the same trials: the section says both agree."""
    same = build.confirm_budget().assign(source_trial_id="t1")
    budget = pd.concat([same.assign(chosen_by="budget"), same.assign(chosen_by="oracle")], ignore_index=True)
    choices = [choice("simclr", "budget", 0.01, "t1"), choice("simclr", "oracle", 0.01, "t1")]
    paths = build_report([make_sweep("r", trials=build.search_trials(), budget=budget,
                                     manifest=ruled_manifest(build, choices=choices))])
    md = Path(paths["md"]).read_text(encoding="utf-8")
    assert "Every rule chose the same search trial as the headline rule" in md
    assert "The ranking of methods is the same under every rule at every budget and protocol." in md


def test_a_one_rule_sweep_lists_the_trials_its_rule_confirmed_per_budget(make_sweep: Callable[..., str],
                                                                         build: SimpleNamespace) -> None:
    """With one rule (eval.compare = []) there is no comparison, but the report still says which
    trial was confirmed at each budget (the budget rule can choose differently per budget), and
    that the search's own best may differ."""
    choices = [dict(choice("simclr", "budget", 0.01, "t1", 12.5, "rankme (no class has 2 labels)"), seed=0),
               dict(choice("simclr", "budget", 0.1, "t2", 0.8), seed=0), dict(choice("simclr", "budget", 0.1, "t3", 0.9), seed=1)]
    manifest = ruled_manifest(build, choices=choices)
    manifest["config"]["eval"]["compare"] = []
    paths = build_report([make_sweep("r", trials=build.search_trials(), budget=build.confirm_budget(),
                                     manifest=manifest)])
    md = Path(paths["md"]).read_text(encoding="utf-8")
    assert TITLE not in md and "## Confirmed configurations (per label budget)" in md
    chosen = md.split("## Confirmed configurations (per label budget)")[1].split("\n## ")[0]
    assert "| simclr | 1% | 0 | budget (headline) | t1 |" in chosen and "| simclr | 10% | 0 | budget (headline) | t2 |" in chosen
    assert "| simclr | 10% | 1 | budget (headline) | t3 |" in chosen  # the budget rule chooses per confirm seed
    assert "rankme (no class has 2 labels)" in chosen
    assert "The search's best by its own metric" in md


def test_choices_per_seed_are_compared_with_the_headline_choice_of_the_same_seed() -> None:
    """The budget rule chose t1 at seed 0 and t2 at seed 1; the oracle t1 at both: the oracle's
    choice equals the headline's at seed 0 and differs at seed 1."""
    choices = [dict(choice("simclr", "budget", 0.1, "t1"), seed=0), dict(choice("simclr", "budget", 0.1, "t2"), seed=1),
               dict(choice("simclr", "oracle", 0.1, "t1", 0.9, "knn_top1"), seed=0),
               dict(choice("simclr", "oracle", 0.1, "t1", 0.9, "knn_top1"), seed=1)]
    table = choice_table(choices, "budget")
    oracle = table[table["rule"] == "oracle"].set_index("seed")
    assert oracle.loc[0, "differs_from_headline"] is False and oracle.loc[1, "differs_from_headline"] is True
    assert oracle.loc[1, "headline_trial_id"] == "t2"
