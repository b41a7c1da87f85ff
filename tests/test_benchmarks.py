"""The CPU benchmarks still run against the current code: each ``--smoke`` run exits 0 and ends
with its JSON line. (What they measure is in benchmarks/RESULTS.md; nothing here is timed.
tune_overhead and ddp_launch start a Ray of their own and e2e_gpu needs CIFAR-10, so none of them runs here;
startup's smoke run starts two small local Rays, a few seconds each;
utilization's smoke run is one small sweep on a Ray of its own, kept short: it checks that the
benchmark still drives the project's sweep with its fake trials.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["throughput", "packing", "search_efficiency", "bench_augment", "data_scale",
                                  "stream_gpu", "startup", "schedule_model"])
def test_benchmark_smoke_run_ends_with_its_json_line(name: str, tmp_path: Path) -> None:
    """The benchmark runs on the current code: exit code 0, and its last line is its own JSON
    result (named for it, with the hardware it ran on)."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--smoke"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "OUT": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["benchmark"] == name and last["cpu_count"] >= 1


def test_utilization_smoke_measures_a_real_sweep_of_fake_trials(tmp_path: Path) -> None:
    """utilization.py --smoke runs the project's sweep (search, confirm, Parquet, report) with its
    sleeping fake trials: every search and confirm trial ran the fake, and the measured utilization
    is a fraction no larger than the slots allow. It runs on one emulated GPU shared by both slots
    (``--gpus``): every trial was given that GPU, whose busy share is a fraction too."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "utilization.py"), "--smoke", "--gpus", "1",
                           "--per-gpu", "2"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "OUT": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["benchmark"] == "utilization" and last["repo"] == str(ROOT)
    assert last["trials_search"] == last["num_samples"] * len(last["methods"])
    assert last["trials_confirm"] == last["confirm_seeds"] * len(last["methods"])
    a = last["analysis"]
    assert 0 < a["sweep"]["utilization"] <= 1 and a["max_busy_slots"] <= last["slots"]
    assert 0 < a["search"]["utilization"] <= 1 and 0 < a["confirm"]["utilization"] <= 1
    assert last["slots"] == 2 and a["devices"]["count"] == 1 and a["devices"]["trials_without_gpu"] == 0
    assert 0 < a["devices"]["after_startup"]["mean"] <= 1
    st = a["slot_time"]  # every slot-second of the sweep is in exactly one share
    assert st["work"] == a["sweep"]["utilization"] and abs(sum(st.values()) - 1) <= 0.002
    assert min(st.values()) >= -0.001
    ps = a["process_start_up"]  # each trial process's creation -> first work, within the slot time
    assert 0 < ps["slot_share"] <= 1 - st["work"] and 0 <= ps["outside_held_share"] <= ps["slot_share"]
    b = a["startup_bound"]
    assert b["process_cpu_s"] > 0 and b["processes"] == a["actor_processes"]["all"] and b["trials_imported_torch"]
    assert b["imports_cpu_s"]["preloaded"] == []  # the measuring workers were new processes
    assert a["sweep"]["utilization"] <= b["this_design"] <= b["any_design"] <= a["ceiling"]["utilization"]
    assert json.loads((tmp_path / "utilization.json").read_text()) == last


def test_startup_bound_charges_the_first_processes_by_turns_of_the_cores() -> None:
    """The start-up bound, against hand-computed cases. 4 slots on 2 cores, 1 CPU-s per process:
    the first 4 processes are ready at 1, 1, 2, 2 s at the earliest (6 idle slot-s), the 2 later
    ones cost 1 slot-s each; with 100 slot-s of work and a 10 s chain the work bounds it
    (100 / 106 and 100 / 108); with a 40 s chain the chain plus one start-up (any design) or two
    (this design: its confirm process is new) bounds it (100 / (4 x 41), 100 / (4 x 42)); a method
    without confirm trials pays one start-up in both."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from utilization import startup_bound
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    b = startup_bound(100.0, [(10.0, True)], slots=4, cores=2, cpu_s=1.0, processes=6)
    assert (b["idle_slot_s_first"], b["idle_slot_s_later"]) == (6.0, 2.0)
    assert (b["any_design"], b["this_design"]) == (round(100 / 106, 3), round(100 / 108, 3))
    b = startup_bound(100.0, [(40.0, True), (30.0, True)], slots=4, cores=2, cpu_s=1.0, processes=6)
    assert (b["any_design"], b["this_design"]) == (round(100 / 164, 3), round(100 / 168, 3))
    b = startup_bound(100.0, [(40.0, False)], slots=4, cores=2, cpu_s=1.0, processes=6)
    assert (b["any_design"], b["this_design"]) == (round(100 / 164, 3), round(100 / 164, 3))
    b = startup_bound(100.0, [(10.0, True)], slots=4, cores=8, cpu_s=1.0, processes=3)
    assert (b["idle_slot_s_first"], b["idle_slot_s_later"]) == (3.0, 0.0)


def _schedule_model():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import schedule_model
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return schedule_model


def test_schedule_model_follows_ashas_rungs_the_confirm_chain_and_process_reuse() -> None:
    """The schedule model against sweeps worked out by hand (1 s epochs, 2 s evaluation, 8 epochs,
    ASHA rungs at 2 and 6). One trial alone passes every rung: 8 s of search, then a 10 s confirm
    run: 18 s, all of it work on 1 slot, half of 2 slots. Two trials on 1 slot, the better one
    first: the second stops at its first rung (below the 0.9 recorded there): 8 + 2 + 10 = 20 s;
    the worse one first: both run 8 epochs: 26 s. With 5 s of start-up per new process: the first
    search trial and the confirm run wait, the second search trial reuses the first's process:
    5 + 8 + 2 + 5 + 10 = 30 s for 20 s of work."""
    sm = _schedule_model()
    w = sm.Workload(slots=1, methods=1, num_samples=2, confirm_seeds=1, epoch_s=1.0, eval_s=2.0)
    assert w.rungs() == [2, 6]
    assert sm.Workload(grace_period=2, reduction_factor=2, max_epochs=8).rungs() == [2, 4]  # max_epochs is no rung
    for policy in sm.POLICIES:
        assert sm.simulate(w, policy, [[0.5]]) == {"work_slot_s": 18.0, "makespan_s": 18.0, "utilization": 1.0}
        assert sm.simulate(sm.Workload(**{**w.__dict__, "slots": 2}), policy, [[0.5]])["utilization"] == 0.5
        assert sm.simulate(w, policy, [[0.9, 0.1]])["makespan_s"] == 20.0
        assert sm.simulate(w, policy, [[0.1, 0.9]])["makespan_s"] == 26.0
        # the third trial meets 0.9 and 0.1 at its first rung: the cutoff is their 66.7th percentile,
        # 0.1 + 0.8 x 2/3 = 0.633, so 0.5 stops there (at the median, 0.5, it would go on): 8 + 2 + 2 + 10
        assert sm.simulate(w, policy, [[0.9, 0.1, 0.5]])["makespan_s"] == 22.0
        started = sm.simulate(sm.Workload(**{**w.__dict__, "startup_s": 5.0}), policy, [[0.9, 0.1]])
        assert (started["work_slot_s"], started["makespan_s"]) == (20.0, 30.0)
        reused = sm.simulate(sm.Workload(**{**w.__dict__, "startup_s": 5.0, "confirm_reuses_search": True}), policy,
                             [[0.9, 0.1]])
        assert reused["makespan_s"] == 25.0  # the confirm run takes over the search's process
    with pytest.raises(ValueError, match="policy='fifo': must be one of sticky, priority, most_left"):
        sm.simulate(w, "fifo", [[0.5]])


def test_schedule_model_policies_differ_in_who_gets_a_freed_slot() -> None:
    """Two methods of 2 trials each on 2 slots (1 s epochs, no evaluation, equal scores: every
    trial runs 8 epochs; 1 confirm run of 8 s). ``sticky`` and ``most_left`` run one trial of each
    method, then each method's second trial, then both confirms: 24 s. ``priority`` runs method 0's
    two trials first, then method 0's confirm beside method 1's first trial, then method 1's second
    trial alone and its confirm alone: 32 s for the same 48 slot-s of work."""
    sm = _schedule_model()
    w = sm.Workload(slots=2, methods=2, num_samples=2, confirm_seeds=1, epoch_s=1.0, eval_s=0.0)
    q = [[0.5, 0.5], [0.5, 0.5]]
    got = {policy: sm.simulate(w, policy, q) for policy in sm.POLICIES}
    assert {k: v["makespan_s"] for k, v in got.items()} == {"sticky": 24.0, "priority": 32.0, "most_left": 24.0}
    assert {v["work_slot_s"] for v in got.values()} == {48.0} and got["priority"]["utilization"] == 0.75


def test_schedule_model_most_left_serves_the_method_with_more_work_first() -> None:
    """Method 0 has 1 search trial, method 1 has 3 (2 slots, 8 s trials, one 8 s confirm run each).
    ``sticky`` starts one trial of each, then method 0's confirm beside method 1's second trial;
    method 1's third trial and its confirm then run alone: 32 s. ``most_left`` starts method 1's
    two trials first, then method 0's trial beside method 1's third, then both confirms: 24 s."""
    sm = _schedule_model()
    w = sm.Workload(slots=2, methods=2, confirm_seeds=1, epoch_s=1.0, eval_s=0.0)
    q = [[0.5], [0.5, 0.5, 0.5]]
    assert sm.simulate(w, "sticky", q)["makespan_s"] == 32.0
    assert sm.simulate(w, "most_left", q) == {"work_slot_s": 48.0, "makespan_s": 24.0, "utilization": 1.0}
