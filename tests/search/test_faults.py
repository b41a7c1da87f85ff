"""Faults: trial workers and the driver killed with SIGKILL; a diverging method. No work is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pandas as pd
import psutil
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from sslsweep.config import from_dictconfig
from sslsweep.pipeline import run_sweep

pytestmark = pytest.mark.slow


def compose_cfg(*overrides: str):
    with initialize_config_module(config_module="sslsweep.conf", version_base="1.3"):
        raw = compose(config_name="config", overrides=list(overrides))
    return from_dictconfig(raw), OmegaConf.to_container(raw, resolve=True)


def trial_workers() -> list[psutil.Process]:
    """Ray worker processes running a search trial under this pytest session's Ray (their parent,
    the raylet, was started with this session's directory), not those of any other Ray."""
    import ray

    session = ray._private.worker._global_node.get_session_dir_path()
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if cmd.startswith("ray::") and ("ImplicitFunc" in cmd or "search_trial" in cmd):
            try:
                if session in " ".join(p.parent().cmdline()):
                    out.append(p)
            except (psutil.NoSuchProcess, AttributeError):
                pass
    return out


def raw_reports(sweep_dir: Path, experiment: str) -> dict[str, list[dict]]:
    """The results Ray Tune logged per trial (result.json), in order. Restarts included, but rows can
    be missing: on a restart Ray copies the file back from storage over a newer one."""
    out = {}
    for f in sorted((sweep_dir / "tune" / experiment).glob("*/result.json")):
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        if rows:
            out[rows[0]["trial_id"]] = rows
    return out


def test_trials_survive_repeated_worker_kills(ray_local, tmp_path: Path) -> None:  # noqa: ANN001
    """SIGKILL trial workers repeatedly: every trial still reaches max_epochs, no attempt after the
    first checkpoint restarts from epoch 0, and trials.parquet has exactly one row per (trial, epoch)."""
    max_epochs = 12
    cfg, raw = compose_cfg("experiment=smoke", "method=[rotation]", f"storage={tmp_path}", "dataset.max_images=null",
                           "search.num_samples=2", f"search.max_epochs={max_epochs}", "search.scheduler=fifo",
                           "search.max_failures=20", "confirm.seeds=1", "confirm.epochs=1")
    kills: list[int] = []
    stop = threading.Event()

    def newest_checkpoints() -> dict[str, int]:
        """Each trial's newest checkpoint index, as written to storage (one per report)."""
        out: dict[str, int] = {}
        for c in tmp_path.glob("*/tune/search-rotation/*/checkpoint_*"):
            out[c.parent.name] = max(out.get(c.parent.name, -1), int(c.name.rsplit("_", 1)[1]))
        return out

    def killer() -> None:
        # Kill on progress, not on a clock (a loaded machine may not have checkpointed in a fixed
        # time): only once every unfinished trial has written a checkpoint since the last kill, so
        # whichever worker dies has one to resume from. And only from checkpoint_000001 on: a
        # folder on disk may not be registered with the driver yet (it is a few ms later), but a
        # trial writes checkpoint k only after the driver took k - 1 (report() waits for it).
        at_last_kill: dict[str, int] = {}
        while not stop.is_set() and len(kills) < 4:
            ckpts = newest_checkpoints()
            unfinished = {t: i for t, i in ckpts.items() if i < max_epochs - 1}
            workers = trial_workers()
            if len(ckpts) == 2 and unfinished and workers and \
                    all(i >= 1 and i > at_last_kill.get(t, -1) for t, i in unfinished.items()):
                try:
                    workers[0].send_signal(signal.SIGKILL)
                    kills.append(workers[0].pid)
                    at_last_kill = ckpts
                except psutil.NoSuchProcess:
                    pass
            time.sleep(0.3)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        sweep_dir = Path(run_sweep(cfg, raw))
    finally:
        stop.set()
        thread.join()
    assert len(kills) >= 2, "the test must actually kill workers"
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    assert trials["trial_id"].nunique() == 2
    for _, g in trials.groupby("trial_id"):
        assert sorted(g["epoch"]) == list(range(1, max_epochs + 1))  # none lost, none duplicated
        assert set(g["status"]) == {"completed"}
    # Each attempt's first report has iterations_since_restore == 1. Ray's log can lose rows: on a
    # restart it copies result.json back from storage over the driver's newer copy, so a restart's
    # first report may even be the file's first row. Attempts are told apart by their start epoch,
    # not by their position in the file.
    resumed = 0
    for trial_id, reports in raw_reports(sweep_dir, "search-rotation").items():
        firsts = [r for r in reports if r["iterations_since_restore"] == 1]
        for r in firsts:
            assert r["epoch"] == r["attempt_start_epoch"] + 1, f"{trial_id} skipped or repeated an epoch: {r}"
        # every report carried a checkpoint and no kill came before the second: only the trial's
        # first attempt starts at epoch 0 (the file's first row), every restart resumes after its
        # last checkpoint
        from_zero = [i for i, r in enumerate(reports) if r["iterations_since_restore"] == 1
                     and r["attempt_start_epoch"] == 0]
        assert from_zero in ([], [0]), f"{trial_id} restarted from epoch 0: rows {from_zero} of {reports}"
        resumed += sum(r["attempt_start_epoch"] >= 1 for r in firsts)
    assert resumed >= 1, "at least one attempt resumed from a checkpoint"
    print(f"worker kills survived: {len(kills)}; attempts resumed from a checkpoint: {resumed}; "
          f"rows checked: {len(trials)}")


def _driver(args: list[str], **kw) -> subprocess.Popen:  # noqa: ANN003
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "sslsweep.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env, **kw)


def _wait_for(pred, proc: subprocess.Popen, timeout: float = 240, poll_s: float = 0.5) -> None:  # noqa: ANN001
    t0 = time.time()
    while not pred():
        assert proc.poll() is None, f"driver ended early: {proc.stdout.read()[-3000:]}"
        assert time.time() - t0 < timeout, "timed out waiting for the driver"
        time.sleep(poll_s)


def _kill_driver(proc: subprocess.Popen) -> None:
    assert proc.poll() is None, f"the driver ended before it could be killed: {proc.stdout.read()[-3000:]}"
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started (fate-shared)
    except ProcessLookupError:  # it ended between the check and the kill
        pass
    proc.wait(timeout=30)


def _finish(args: list[str]) -> str:
    proc = _driver(args)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    return out


def test_driver_killed_during_search_and_confirm_resumes_to_the_same_result(tmp_path: Path) -> None:
    """SIGKILL the driver during the search (one method searched, the other not yet), resume,
    SIGKILL it during a confirm experiment, resume:
    the sweep completes with every trial once, the Optuna studies keep the trials from before the
    kills, and the tables match what an uninterrupted sweep of this config produces."""
    overrides = ["experiment=smoke", "method=[simclr,rotation]", f"storage={tmp_path}", "search.num_samples=3",
                 "search.max_epochs=3", "search.grace_period=1", "dataset.max_images=400"]
    proc = _driver(["sweep", *overrides])
    sweep_dir: list[Path] = []

    def one_method_searched() -> bool:  # the methods are searched at once: kill when the first is done
        found = list(tmp_path.glob("*/trials.parquet"))
        if found:
            sweep_dir.append(found[0].parent)
        return bool(found)

    _wait_for(one_method_searched, proc, poll_s=0.05)
    _kill_driver(proc)
    root = sweep_dir[0]
    before = pd.read_parquet(root / "trials.parquet")  # one method was finished and written before the kill
    assert before.method.nunique() == 1
    first = before.method.iloc[0]
    t_resume = time.time()
    proc = _driver(["resume", str(root)])
    _wait_for(lambda: any((root / "tune").glob("confirm-*/*/checkpoint_*")), proc)
    _kill_driver(proc)
    _finish(["resume", str(root)])
    resume_s = time.time() - t_resume

    trials = pd.read_parquet(root / "trials.parquet")
    assert trials.groupby("method")["trial_id"].nunique().to_dict() == {"rotation": 3, "simclr": 3}
    assert not trials.duplicated(["trial_id", "epoch"]).any()
    # the trials of the method finished before the first kill are the same trials, not re-runs
    assert set(before.trial_id) == set(trials[trials.method == first].trial_id)
    key = ["trial_id", "epoch"]  # Tune lists restored trials in another order: compare by key
    pd.testing.assert_frame_equal(before.sort_values(key).reset_index(drop=True),
                                  trials[trials.method == first].sort_values(key).reset_index(drop=True)[before.columns],
                                  check_dtype=False)
    for method in ("simclr", "rotation"):
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(root / "optuna" / f"{method}.journal")))
        finished = [t for t in optuna.load_study(study_name=method, storage=storage).trials if t.state.is_finished()]
        assert len(finished) >= 3
    budget = pd.read_parquet(root / "budget.parquet")
    assert len(budget) == 2 * 2 * 2 * 2  # methods x seeds x budgets (10%, 100%) x protocols, as uninterrupted
    assert not budget.duplicated(["method", "seed", "budget", "protocol"]).any()
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["finished"] and manifest["progress"]["confirmed"] and (root / "report.html").exists()
    print(f"resume (two kills, two resumes) took {resume_s:.0f} s")


def test_driver_killed_as_a_search_starts_resumes_with_every_trial(tmp_path: Path) -> None:
    """SIGKILL the driver the moment rotation's experiment appears: Tune's snapshot can then count
    trials its trial list does not hold, and the restored search ends short. After the resume every
    method still has num_samples trials, each once, and Optuna holds no trial left RUNNING."""
    overrides = ["experiment=smoke", "method=[simclr,rotation]", f"storage={tmp_path}", "search.num_samples=3",
                 "search.max_epochs=3", "search.grace_period=1", "dataset.max_images=400", "confirm.seeds=1"]
    proc = _driver(["sweep", *overrides])
    _wait_for(lambda: any(tmp_path.glob("*/tune/search-rotation")), proc, poll_s=0.05)
    _kill_driver(proc)
    root = next(tmp_path.glob("*/manifest.json")).parent
    out = _finish(["resume", str(root)])
    trials = pd.read_parquet(root / "trials.parquet")
    assert trials.groupby("method")["trial_id"].nunique().to_dict() == {"rotation": 3, "simclr": 3}
    assert not trials.duplicated(["trial_id", "epoch"]).any()
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(root / "optuna" / "rotation.journal")))
    study = optuna.load_study(study_name="rotation", storage=storage)
    assert all(t.state.is_finished() for t in study.trials)
    print("topped up" if "missing" in out else "the restored search was not short this time")


def test_diverging_method_is_recorded_and_the_sweep_goes_on(ray_local, tmp_path: Path) -> None:  # noqa: ANN001
    """A method whose loss becomes NaN: its trials end as diverged (FAIL in Optuna, not retried), the
    other method is searched and confirmed, and the report lists the diverged trials."""
    cfg, raw = compose_cfg("experiment=smoke", "method=[simclr,rotation]", f"storage={tmp_path}",
                           "+method.rotation.space.lr=1.0e30", "search.max_epochs=2")
    root = Path(run_sweep(cfg, raw))
    trials = pd.read_parquet(root / "trials.parquet")
    rot = trials[trials.method == "rotation"]
    assert set(rot.status) == {"diverged"} and rot.error.str.contains("pretext loss is").all()
    assert rot["metric"].isna().all()
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(root / "optuna" / "rotation.journal")))
    assert {t.state.name for t in optuna.load_study(study_name="rotation", storage=storage).trials} == {"FAIL"}
    for reports in raw_reports(root, "search-rotation").values():
        assert len(reports) == 1 and reports[0]["diverged"] == 1  # ended at its first report, never retried
    budget = pd.read_parquet(root / "budget.parquet")
    assert set(budget.method) == {"simclr"}
    assert "diverged" in (root / "report.md").read_text()


def test_a_search_that_ends_with_fewer_trials_is_topped_up_in_the_same_study(ray_local, tmp_path: Path,  # noqa: ANN001
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A method's experiment that comes back with fewer trials than num_samples (what a restored
    experiment can do after a driver crash; here its Tuner is simply given one trial) is topped up:
    the method ends with num_samples trials, all different configurations, all in its one Optuna
    study, and a resume of the finished sweep reads both experiments without running anything again."""
    from sslsweep.pipeline import resume_sweep
    from sslsweep.search import sweep as sweep_mod

    real = sweep_mod.search_tuner
    calls: list[tuple[str | None, int | None]] = []

    def short_first(*args, name=None, num_samples=None, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append((name, num_samples))
        return real(*args, name=name, num_samples=1 if name == "search-rotation" else num_samples, **kw)

    monkeypatch.setattr(sweep_mod, "search_tuner", short_first)
    # random search: a top-up sampler with the first one's seed would draw its configuration again
    cfg, raw = compose_cfg("experiment=smoke", "method=[rotation]", f"storage={tmp_path}", "search.num_samples=3",
                           "search.max_epochs=1", "dataset.max_images=200", "confirm.seeds=1",
                           "search.searcher=random")
    root = Path(run_sweep(cfg, raw))
    assert calls == [("search-rotation", None), ("search-rotation-more", 2)]
    trials = pd.read_parquet(root / "trials.parquet")
    assert trials["trial_id"].nunique() == 3
    hps = trials.groupby("trial_id")[["hp_lr", "hp_weight_decay"]].first()
    assert not hps.duplicated().any(), f"the top-up re-ran a configuration:\n{hps}"
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(root / "optuna" / "rotation.journal")))
    study = optuna.load_study(study_name="rotation", storage=storage)
    assert len(study.trials) == 3 and all(t.state.is_finished() for t in study.trials)
    # a resume of the finished sweep rebuilds the same table from both experiments, training nothing
    calls.clear()
    resume_sweep(str(root))
    assert calls == []
    again = pd.read_parquet(root / "trials.parquet")
    assert set(again["trial_id"]) == set(trials["trial_id"]) and len(again) == len(trials)
