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
                                  "stream_gpu", "startup"])
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
    assert json.loads((tmp_path / "utilization.json").read_text()) == last
