"""The Optuna searcher tells Optuna how each trial really ended, and spaces are define-by-run."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from sslsweep.config import MethodConfig, parse_param
from sslsweep.search.searcher import HonestOptunaSearch
from sslsweep.search.spaces import DefineByRun


def method(name: str = "simclr", **space) -> MethodConfig:  # noqa: ANN003
    return MethodConfig(name=name, space={k: parse_param(k, k, v) for k, v in space.items()})


def searcher(max_epochs: int = 4) -> HonestOptunaSearch:
    m = method(temperature={"type": "loguniform", "low": 0.05, "high": 1.0}, lr={"type": "loguniform", "low": 1e-3,
                                                                                   "high": 1.0}, proj_dim=64)
    return HonestOptunaSearch(space=DefineByRun(m, seed=7), metric="knn_top1", mode="max",
                              sampler=optuna.samplers.RandomSampler(seed=0), max_epochs=max_epochs)


def _run(s: HonestOptunaSearch, trial_id: str, scores: list[float], **last: object) -> None:
    s.suggest(trial_id)
    result = {}
    for i, v in enumerate(scores, start=1):
        result = {"knn_top1": v, "training_iteration": i, "epoch": i, **last}
        s.on_trial_result(trial_id, result)
    s.on_trial_complete(trial_id, result)


def test_define_by_run_returns_fixed_values_and_suggests_only_searched_keys() -> None:
    """A trial's config holds the method, the seed, fixed values and only the searched keys."""
    s = searcher()
    config = s.suggest("t1")
    assert config["method"] == "simclr" and config["seed"] == 7 and config["proj_dim"] == 64
    assert 0.05 <= config["temperature"] <= 1.0
    assert set(s._ot_trials["t1"].params) == {"temperature", "lr"}


def test_stopped_trial_is_pruned_with_its_intermediate_values() -> None:
    """A trial that ended before max_epochs (stopped by ASHA) is PRUNED, not COMPLETE, and keeps
    every intermediate value it reported."""
    s = searcher(max_epochs=4)
    _run(s, "stopped", [0.3, 0.4])
    t = s._ot_study.trials[0]
    assert t.state == TrialState.PRUNED and t.intermediate_values == {1: 0.3, 2: 0.4}


def test_full_budget_trial_is_complete_with_its_final_value() -> None:
    """Only a trial that reached max_epochs is COMPLETE, with its last value."""
    s = searcher(max_epochs=3)
    _run(s, "done", [0.3, 0.5, 0.6])
    t = s._ot_study.trials[0]
    assert t.state == TrialState.COMPLETE and t.value == 0.6


@pytest.mark.parametrize("last", [{"diverged": 1, "error": "loss is nan"}, {"error": "out of GPU memory at batch size 512"}])
def test_diverged_or_oom_trial_is_fail_with_its_error(last: dict) -> None:
    """A diverged (NaN) or out-of-memory trial is FAIL in Optuna, and its error is kept."""
    s = searcher(max_epochs=3)
    _run(s, "bad", [0.3], **last)
    t = s._ot_study.trials[0]
    assert t.state == TrialState.FAIL and t.user_attrs["error"] == last["error"]


def test_errored_trial_is_fail() -> None:
    """A trial that raised (after retries) is FAIL."""
    s = searcher()
    s.suggest("err")
    s.on_trial_complete("err", None, error=True)
    assert s._ot_study.trials[0].state == TrialState.FAIL


def test_stock_searcher_would_have_said_complete() -> None:
    """Why the subclass exists: Ray's OptunaSearch records a stopped trial as COMPLETE."""
    from ray.tune.search.optuna import OptunaSearch

    m = method(lr={"type": "loguniform", "low": 1e-3, "high": 1.0})
    stock = OptunaSearch(space=DefineByRun(m, 0), metric="knn_top1", mode="max",
                         sampler=optuna.samplers.RandomSampler(seed=0))
    _run(stock, "stopped", [0.3, 0.4])
    assert stock._ot_study.trials[0].state == TrialState.COMPLETE


def test_restored_searcher_older_than_the_journal_skips_trials_the_journal_finished(tmp_path) -> None:  # noqa: ANN001
    """After a driver crash, Tune restores the searcher from a snapshot that can predate the
    journal: a trial already told PRUNED there is resumed by Tune and reports again. The searcher
    must neither crash (Optuna's UpdateFinishedTrialError killed the resumed sweep) nor rewrite
    the journal's verdict."""
    from sslsweep.search.tuner import journal_storage

    def make() -> HonestOptunaSearch:
        m = method(lr={"type": "loguniform", "low": 1e-3, "high": 1.0})
        return HonestOptunaSearch(space=DefineByRun(m, seed=7), metric="knn_top1", mode="max",
                                  sampler=optuna.samplers.RandomSampler(seed=0), max_epochs=4,
                                  storage=journal_storage(tmp_path / "study.log"), study_name="simclr")

    before = make()
    before.suggest("t1")
    before.on_trial_result("t1", {"knn_top1": 0.3, "training_iteration": 1, "epoch": 1})
    before.save(str(tmp_path / "searcher.pkl"))  # Tune's snapshot, taken here
    before.on_trial_result("t1", {"knn_top1": 0.4, "training_iteration": 2, "epoch": 2})
    before.on_trial_complete("t1", {"knn_top1": 0.4, "training_iteration": 2, "epoch": 2})  # ASHA stop
    # the driver dies; a new one restores the snapshot and Tune resumes t1 from its checkpoint
    after = make()
    after.restore(str(tmp_path / "searcher.pkl"))
    for epoch, v in [(2, 0.45), (3, 0.5), (4, 0.6)]:
        after.on_trial_result("t1", {"knn_top1": v, "training_iteration": epoch, "epoch": epoch})
    after.on_trial_complete("t1", {"knn_top1": 0.6, "training_iteration": 4, "epoch": 4})
    t = optuna.load_study(study_name="simclr", storage=journal_storage(tmp_path / "study.log")).trials[0]
    assert t.state == TrialState.PRUNED and t.intermediate_values == {1: 0.3, 2: 0.4}


def test_restored_searcher_whose_journal_lost_a_trial_goes_on(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """A sweep on remote storage resumed on another machine (another $HOME): the journal there is
    the last upload, which predates a running trial t1. The restored searcher reads that copy, not
    the path in the snapshot; t1's results go unrecorded (they crashed the resume with KeyError
    'Record does not exist'), even when a new trial t2 is asked before t1 reports again and gets
    t1's old id in the study; t2 is recorded with its own values."""
    import shutil

    from sslsweep.search.tuner import journal_storage

    old_home, new_home = tmp_path / "a", tmp_path / "b"

    def make(journal) -> HonestOptunaSearch:  # noqa: ANN001
        m = method(lr={"type": "loguniform", "low": 1e-3, "high": 1.0})
        return HonestOptunaSearch(space=DefineByRun(m, seed=7), metric="knn_top1", mode="max",
                                  sampler=optuna.samplers.RandomSampler(seed=0), max_epochs=2,
                                  storage=journal_storage(journal), study_name="simclr")

    before = make(old_home / "study.log")
    uploaded = (old_home / "study.log").read_bytes()  # the last upload: the study, no trial yet
    before.suggest("t1")
    before.on_trial_result("t1", {"knn_top1": 0.3, "training_iteration": 1, "epoch": 1})
    before.save(str(tmp_path / "searcher.pkl"))  # Tune's snapshot knows t1
    shutil.rmtree(old_home)  # the old machine is gone
    new_home.mkdir()
    (new_home / "study.log").write_bytes(uploaded)
    monkeypatch.setitem(HonestOptunaSearch.journal_paths, "simclr", new_home / "study.log")
    after = make(new_home / "study.log")
    after.restore(str(tmp_path / "searcher.pkl"))
    after.suggest("t2")  # asked before t1 reports: in the study it takes the id t1 had
    after.on_trial_result("t1", {"knn_top1": 0.9, "training_iteration": 2, "epoch": 2})
    after.on_trial_complete("t1", {"knn_top1": 0.9, "training_iteration": 2, "epoch": 2})
    for i, v in enumerate([0.1, 0.2], start=1):
        after.on_trial_result("t2", {"knn_top1": v, "training_iteration": i, "epoch": i})
    after.on_trial_complete("t2", {"knn_top1": 0.2, "training_iteration": 2, "epoch": 2})
    trials = optuna.load_study(study_name="simclr", storage=journal_storage(new_home / "study.log")).trials
    assert [(t.state, t.value, t.intermediate_values) for t in trials] == [(TrialState.COMPLETE, 0.2, {1: 0.1, 2: 0.2})]
    assert not old_home.exists()


def test_trials_asked_but_never_run_are_closed_as_fail(tmp_path) -> None:  # noqa: ANN001
    """A trial Optuna handed out just before a driver crash, which the restored experiment never
    runs, must not stay RUNNING forever (TPE would treat it as pending); finished trials keep their state."""
    from sslsweep.search.searcher import fail_orphaned_trials
    from sslsweep.search.tuner import journal_storage

    storage = journal_storage(tmp_path / "study.log")
    study = optuna.create_study(study_name="rotation", storage=storage, direction="maximize")
    done = study.ask()
    study.tell(done, 0.5)
    study.ask()  # the orphan
    assert fail_orphaned_trials(journal_storage(tmp_path / "study.log"), "rotation") == 1
    trials = optuna.load_study(study_name="rotation", storage=journal_storage(tmp_path / "study.log")).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert "never run" in trials[1].user_attrs["error"]
    assert fail_orphaned_trials(journal_storage(tmp_path / "study.log"), "rotation") == 0


@pytest.mark.parametrize("with_history, action", [(True, "STOP"), (False, "CONTINUE")])
def test_asha_with_history_makes_a_later_trial_compete_with_the_earlier_ones(with_history: bool,
                                                                               action: str) -> None:
    """A top-up's ASHA starts with the earlier trials' rung values: a new trial scoring below the
    top third of them at the first rung is stopped; with empty rungs the same trial goes on
    (a lone trial's cutoff is its own score)."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from sslsweep.search.tuner import ASHAWithHistory

    history = [(t, [{"epoch": 1, "acc": v}, {"epoch": 3, "acc": v + 0.01}])
               for t, v in [("a", 0.90), ("b", 0.80), ("c", 0.85)]]
    asha = ASHAWithHistory(time_attr="epoch", max_t=9, grace_period=1, reduction_factor=3,
                           history=history if with_history else ())
    asha.set_search_properties("acc", "max")
    new = SimpleNamespace(trial_id="new")
    asha.on_trial_add(None, new)
    assert asha.on_trial_result(None, new, {"epoch": 1, "acc": 0.82}) == getattr(TrialScheduler, action)
