"""Every method's search at once, each in its own Optuna study and ASHA rungs; a method's confirm
runs start when its own search ends; a driver killed mid-search resumes every method in full."""

from __future__ import annotations

import dataclasses
import json
from itertools import combinations
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from optuna.trial import TrialState
from ray.tune.schedulers import TrialScheduler

from sslsweep.config import from_dictconfig
from sslsweep.pipeline import run_sweep
from sslsweep.search.concurrency import run_concurrently, start_gate
from sslsweep.search.searcher import HonestOptunaSearch
from sslsweep.search.tuner import ASHAWithHistory, journal_storage, search_tuner
from test_faults import _driver, _finish, _kill_driver, _wait_for  # the CLI in a subprocess, killed with SIGKILL

pytestmark = pytest.mark.slow

SEARCHED = ("rotation", "simclr", "autoencoder")


def compose_cfg(*overrides: str):  # noqa: ANN201
    with initialize_config_module(config_module="sslsweep.conf", version_base="1.3"):
        raw = compose(config_name="config", overrides=list(overrides))
    return from_dictconfig(raw), OmegaConf.to_container(raw, resolve=True)


def study(root: Path, method: str) -> optuna.Study:
    return optuna.load_study(study_name=method, storage=journal_storage(root / "optuna" / f"{method}.journal"))


def reports(root: Path, experiment: str) -> list[dict]:
    """Every result Tune logged in ``experiment`` (result.json of each trial)."""
    rows = []
    for f in (root / "tune" / experiment).glob("*/result.json"):
        rows += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return rows


def span(rows: list[dict]) -> tuple[float, float]:
    """When an experiment's trials ran: the start of its earliest result's iteration (``timestamp``
    is whole seconds) to its latest result."""
    return min(r["timestamp"] - r["time_this_iter_s"] for r in rows), max(r["timestamp"] for r in rows)


@pytest.fixture(scope="module")
def sweep_dir(ray_local, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: ANN001
    """Three searched methods and ``none`` (one trial: its search is short), each searching one trial
    at a time, on four trial slots (half a CPU each on the session's 2-CPU Ray): every search can run
    at once, and ``none``'s confirm run has the slot its search leaves."""
    cfg, raw = compose_cfg("experiment=smoke", f"method=[none,{','.join(SEARCHED)}]",
                           f"storage={tmp_path_factory.mktemp('runs')}", "search.num_samples=2",
                           "search.max_epochs=4", "search.max_concurrent=1", "dataset.max_images=200",
                           "dataset.label_fractions=[1.0]", "confirm.seeds=1", "confirm.epochs=1",
                           "trainer.num_threads=1")
    cfg = dataclasses.replace(cfg, resources=dataclasses.replace(cfg.resources, cpu=0.5))  # below validation's 1
    return Path(run_sweep(cfg, raw))


def test_each_method_has_num_samples_trials_in_its_own_study(sweep_dir: Path) -> None:
    """Searched at once, each method still has exactly num_samples trials, all finished, in its own
    Optuna study (numbered from 0 there), with the same configurations as its rows in trials.parquet;
    no journal path is left in the searcher's process-wide map."""
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    assert trials.groupby("method")["trial_id"].nunique().to_dict() == {"none": 1, **{m: 2 for m in SEARCHED}}
    for method in SEARCHED:
        s = study(sweep_dir, method)
        assert [t.number for t in s.trials] == [0, 1]
        assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in s.trials)
        table_lrs = sorted(trials[trials.method == method].groupby("trial_id")["hp_lr"].first())
        assert sorted(t.params["lr"] for t in s.trials) == pytest.approx(table_lrs)
    assert HonestOptunaSearch.journal_paths == {}


def test_searches_overlap_and_a_confirm_starts_while_others_search(sweep_dir: Path) -> None:
    """Every two methods' searches ran at the same time (their spans overlap by more than the
    timestamps' 1 s resolution), and ``none``'s confirm experiment started (its Tuner written, its
    run asked for) before the other methods' searches ended; the manifest's phases say the same,
    and its start-up times are in order."""
    spans = {m: span(reports(sweep_dir, f"search-{m}")) for m in SEARCHED}
    for a, b in combinations(SEARCHED, 2):
        overlap = min(spans[a][1], spans[b][1]) - max(spans[a][0], spans[b][0])
        assert overlap > 1, f"{a} {spans[a]} and {b} {spans[b]} were not searched at the same time"
    confirm_none_start = (sweep_dir / "tune" / "confirm-none" / "tuner.pkl").stat().st_mtime
    assert confirm_none_start < max(end for _, end in spans.values()) - 1, (confirm_none_start, spans)
    m = json.loads((sweep_dir / "manifest.json").read_text())
    assert m["phases"]["confirm"]["started"] < m["phases"]["search"]["finished"]
    assert m["progress"]["confirmed_methods"] == ["none", *SEARCHED] and m["progress"]["confirmed"]
    start = m["startup"]
    assert 0 < start["to_ray_s"] <= start["to_first_trial_s"] <= start["to_first_result_s"]
    budget = pd.read_parquet(sweep_dir / "budget.parquet")
    assert budget.groupby("method").size().to_dict() == {m: 2 for m in ("none", *SEARCHED)}  # 1 budget x 2 protocols


def asha_ends(trials: list[list[dict]], max_epochs: int, history: list = ()) -> list[int]:  # noqa: B006
    """The epoch at which ASHA (the sweep's, on ``epoch``, grace 1, reduction factor 2) ends each of
    ``trials`` (their results, run one after another), its rungs filled first with ``history``."""
    asha = ASHAWithHistory(time_attr="epoch", max_t=max_epochs, grace_period=1, reduction_factor=2,
                           history=list(history))
    asha.set_search_properties("score", "max")
    ends = []
    for i, results in enumerate(trials):
        trial = SimpleNamespace(trial_id=f"t{i}")
        asha.on_trial_add(None, trial)
        for r in results:
            if asha.on_trial_result(None, trial, r) == TrialScheduler.STOP:
                break
        asha.on_trial_remove(None, trial)
        ends.append(int(r["epoch"]))
    return ends


def test_asha_judges_a_trial_only_against_its_own_methods_trials(ray_local, tmp_path: Path) -> None:  # noqa: ANN001
    """Two methods searched at once, one trial at a time each, whose scores differ a hundredfold:
    each method's trials end exactly where an ASHA that saw only that method's results ends them,
    and simclr's would all have ended at epoch 1 had rotation's results been in its rungs."""
    max_epochs = 4
    cfg, _ = compose_cfg("method=[rotation,simclr]", "search.num_samples=4", f"search.max_epochs={max_epochs}",
                         "search.grace_period=1", "search.reduction_factor=2", "search.max_concurrent=1",
                         "search.searcher=random")

    def fake_trial(config: dict) -> None:
        from ray import tune

        base = 100.0 if config["method"] == "rotation" else 0.0
        for epoch in range(1, max_epochs + 1):
            tune.report({"epoch": epoch, "score": base + config["lr"] * epoch})

    results: dict[str, list[list[dict]]] = {}

    def search(method) -> None:  # noqa: ANN001
        with start_gate():
            tuner = search_tuner(fake_trial, method, cfg.search, cfg.resources, metric="score", seed=0,
                                 storage_path=str(tmp_path / "tune"),
                                 journal=tmp_path / "optuna" / f"{method.name}.journal")
            grid = list(tuner.fit())
        asked = {t.params["lr"]: t.number for t in study(tmp_path, method.name).trials}
        grid.sort(key=lambda r: asked[r.config["lr"]])  # one at a time: the order they were asked in = run in
        results[method.name] = [r.metrics_dataframe[["epoch", "score"]].to_dict("records") for r in grid]

    run_concurrently({m.name: (lambda m=m: search(m)) for m in cfg.methods})
    for name, trials in results.items():
        observed = [int(t[-1]["epoch"]) for t in trials]
        assert len(observed) == 4 and observed == asha_ends(trials, max_epochs), name
    assert max_epochs in [int(t[-1]["epoch"]) for t in results["simclr"]]
    pooled = asha_ends(results["simclr"], max_epochs,
                       history=[(f"rotation{i}", t) for i, t in enumerate(results["rotation"])])
    assert pooled == [1, 1, 1, 1]


def test_driver_killed_while_two_methods_search_resumes_both_in_full(tmp_path: Path) -> None:
    """SIGKILL the driver while rotation and simclr are both mid-search (both experiments started, a
    trial of one has a checkpoint, neither has finished: no trials.parquet yet); the resume gives
    each method num_samples trials, each once, each told to its own study exactly once (COMPLETE or
    PRUNED), and confirms both; the restored experiments still carry the sweep's Tune callback."""
    overrides = ["experiment=smoke", "method=[rotation,simclr]", f"storage={tmp_path}", "search.num_samples=2",
                 "search.max_epochs=3", "search.scheduler=fifo", "search.max_concurrent=1", "dataset.max_images=200",
                 "confirm.seeds=1", "confirm.epochs=1", "dataset.label_fractions=[1.0]"]
    proc = _driver(["sweep", *overrides])

    def both_searching() -> bool:
        # Kill at the first checkpoint of either method: a search is 2 trials x 3 epochs long, so
        # neither can have ended, whatever the delay between the two methods' first trials.
        started = all(any(tmp_path.glob(f"*/tune/search-{m}/tuner.pkl")) for m in ("rotation", "simclr"))
        return started and any(tmp_path.glob("*/tune/search-*/*/checkpoint_*"))

    _wait_for(both_searching, proc, poll_s=0.05)
    _kill_driver(proc)
    root = next(tmp_path.glob("*/manifest.json")).parent
    assert not (root / "trials.parquet").exists(), "a search had finished: the kill came too late"
    assert json.loads((root / "manifest.json").read_text())["progress"]["searched"] == []
    _finish(["resume", str(root)])

    trials = pd.read_parquet(root / "trials.parquet")
    assert trials.groupby("method")["trial_id"].nunique().to_dict() == {"rotation": 2, "simclr": 2}
    assert not trials.duplicated(["trial_id", "epoch"]).any()
    for method in ("rotation", "simclr"):
        states = [t.state for t in study(root, method).trials]
        assert all(s.is_finished() for s in states)
        assert sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states) == 2, states
    budget = pd.read_parquet(root / "budget.parquet")
    assert budget.groupby("method").size().to_dict() == {"rotation": 2, "simclr": 2}  # 1 budget x 2 protocols
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["progress"]["confirmed_methods"] == ["rotation", "simclr"] and manifest["finished"]
    # the restored experiments kept their DriverEvents callback (it timed the resumed trials)
    assert manifest["startup_resume"]["to_first_result_s"] > 0


def test_a_sweep_confirmed_in_one_experiment_resumes_as_confirmed(tmp_path: Path) -> None:
    """A manifest written before methods were confirmed one by one (``progress.confirmed`` only):
    confirmed, every method counts as confirmed and keeps its budget.parquet rows; not confirmed,
    none does (each method's confirm runs start afresh)."""
    from sslsweep.search.results import budget_table
    from sslsweep.search.sweep import Sweep

    cfg, raw = compose_cfg("experiment=smoke", "method=[none,rotation]", f"storage={tmp_path}")
    sweep = Sweep.create(cfg, raw)
    rows = [{"sweep_id": "s", "method": m, "seed": 0, "budget": 1.0, "protocol": p}
            for m in ("none", "rotation") for p in ("linear", "finetune")]
    sweep.st.write_table("budget.parquet", budget_table(rows))
    for confirmed, expected in ((True, ["none", "rotation"]), (False, [])):
        old = Sweep(cfg, raw, sweep.st, {**sweep.manifest, "progress": {"searched": ["none", "rotation"],
                                                                         "confirmed": confirmed, "reported": False}})
        old._upgrade_progress()
        assert old.manifest["progress"]["confirmed_methods"] == expected
        assert {m: len(r) for m, r in old.budget.items()} == {m: 2 for m in expected}


def test_a_resumed_auto_sweep_reads_its_data_as_it_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``dataset.residency=auto`` the driver's plan (stream or in memory) depends on the memory
    free at that moment: a resumed sweep reads its data the way it started (the residency its manifest
    records; before that was recorded, the kind its fingerprint names), so it never fails as 'the
    dataset changed' because the machine had more or less memory free. A new sweep lets auto plan."""
    from sslsweep.search import sweep as sweep_mod

    cfg, raw = compose_cfg("experiment=smoke", "method=[none]", f"storage={tmp_path}")
    asked: list[bool | None] = []

    class Stop(Exception):
        pass

    def fake_prepare(dataset_cfg, *, stream=None):  # noqa: ANN001, ANN202
        asked.append(stream)
        raise Stop

    monkeypatch.setattr(sweep_mod, "prepare", fake_prepare)
    cases = [(None, None, None), ("stream-0123abcd", None, True), ("0123abcd", None, False),  # before residency was recorded
             ("src-0123abcd", "stream", True), ("src-0123abcd", "auto", False), ("src-0123abcd", "host", False)]
    for recorded, residency, expected in cases:
        s = sweep_mod.Sweep.create(cfg, raw)
        if recorded is not None:
            s.manifest["dataset"] = {"fingerprint": recorded, **({"residency": residency} if residency else {})}
        with pytest.raises(Stop):
            s._prepare()
        assert asked[-1] is expected
