"""The CPU benchmarks still run against the current code: each ``--smoke`` run exits 0 and ends
with its JSON line. (What they measure is in benchmarks/RESULTS.md; nothing here is timed.
tune_overhead starts a Ray of its own and e2e_gpu needs CIFAR-10, so neither runs here.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["throughput", "packing", "search_efficiency", "bench_augment"])
def test_benchmark_smoke_run_ends_with_its_json_line(name: str, tmp_path: Path) -> None:
    """The benchmark runs on the current code: exit code 0, and its last line is its own JSON
    result (named for it, with the hardware it ran on)."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--smoke"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "OUT": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["benchmark"] == name and last["cpu_count"] >= 1
