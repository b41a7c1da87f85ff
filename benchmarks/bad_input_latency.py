"""How long a bad input takes to be rejected by the CLI (target: under 3 s, no Ray started).

    python benchmarks/bad_input_latency.py

Runs each bad input of tests/test_cli.py in a fresh interpreter (as a user would) and prints the
wall time of each and the worst, with the hardware.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

CASES = [
    ["method=[simclr,mae]"], ["encoder=vit"], ["method.simclr.space.temperature=0"],
    ["search.space.batch_size.choices=[4096]"], ["dataset.label_fractions=[0.1,2]"],
    ["dataset.labels_per_class=[1000]"], ["dataset=parquet", "dataset.path=/no/such.parquet"],
    ["search.num_samples=0"], ["search.grace_period=50"], ["resources.gpu=2.5"], ["storage=ftp://x/y"],
    ["resume=/tmp"], ["search.num_sample=3"], ["seed=abc"], ["+method.simclr.space.temprature=0.3"],
    ["dataset.max_images=20"],
]


def main() -> None:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    print(f"hardware: {cpu}, {os.cpu_count()} cores; python {platform.python_version()}")
    times = {}
    for case in CASES:
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "sslsweep.cli", "sweep", *case], capture_output=True, text=True)
        times[" ".join(case)] = round(time.perf_counter() - t0, 2)
        print(f"{times[' '.join(case)]:5.2f} s  exit {p.returncode}  {p.stderr.strip()}")
    print(json.dumps({"worst_s": max(times.values()), "cases": times}))


if __name__ == "__main__":
    main()
