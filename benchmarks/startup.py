"""Benchmark - start-up: what starting Ray while the data is decoded would save (issue 13).

``Sweep.run`` prepares the data (decoding it, or reading the decode cache) and then starts Ray, so
data that does not decode fails with Ray never started (docs/concurrency.md: why it stays so).
This measures that order against the overlapped one (Ray started in the main thread while a
thread prepares the data) with the project's own steps, ``sslsweep.data.prepare`` (cold decode cache) and
``sslsweep.search.ray_init.init_ray`` (a new local Ray), each run in a fresh process, the two
orders alternating: seconds from the first step to both being ready, medians over ``--repeats``.

The data: ``--n`` generated JPEGs of 256-320 px (``data_scale.write_data``) in sharded Parquet,
decoded to ``--size`` px; or ``--path`` to a Parquet dataset of your own (``--image-column``).

    python benchmarks/startup.py                 # 20k JPEGs, 3 repeats each way: ~3 min on 2 cores
    python benchmarks/startup.py --path ../shared/data/cifar10 --image-column img --size 32
    python benchmarks/startup.py --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import emit, hardware, median, now, print_hardware, rnd


def child(order: str, path: str, image_column: str, size: int) -> dict[str, float]:
    """One cold start in this (fresh) process: prepare and Ray, in ``order``; seconds to each being ready."""
    import concurrent.futures

    import ray

    from sslsweep.config import DatasetConfig
    from sslsweep.data import prepare
    from sslsweep.search.ray_init import init_ray

    cfg = DatasetConfig(name="parquet", path=path, image_column=image_column, image_size=size, residency="host")
    t0 = time.perf_counter()
    if order == "sequential":
        prepare(cfg)
        data_s = time.perf_counter() - t0
        init_ray()
        ray_s = time.perf_counter() - t0
    else:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # the alternative
            prepared = pool.submit(prepare, cfg)
            init_ray()
            ray_s = time.perf_counter() - t0
            prepared.result()
            data_s = time.perf_counter() - t0
    ready = time.perf_counter() - t0
    ray.shutdown()
    return {"data_ready_s": data_s, "ray_ready_s": ray_s, "both_ready_s": ready}


def run_child(order: str, args: argparse.Namespace, path: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="startup-cache-") as cache:  # a cold decode cache every time
        env = {**os.environ, "SSLSWEEP_CACHE": cache, "RAY_USAGE_STATS_ENABLED": "0"}
        out = subprocess.run([sys.executable, __file__, "--child", order, "--path", path, "--image-column",
                              args.image_column, "--size", str(args.size)],
                             env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"the {order} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000, help="generated JPEGs (default 20000)")
    p.add_argument("--size", type=int, default=64, help="dataset.image_size (default 64)")
    p.add_argument("--path", default=None, help="a Parquet dataset instead of generated JPEGs")
    p.add_argument("--image-column", default="image")
    p.add_argument("--repeats", type=int, default=3, help="cold starts each way (default 3)")
    p.add_argument("--smoke", action="store_true", help="500 images, 1 repeat")
    p.add_argument("--child", choices=["sequential", "overlapped"], default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.path, args.image_column, args.size)))
        return {}
    if args.smoke:
        args.n, args.repeats = 500, 1
    hw = hardware()
    print_hardware(hw)
    with tempfile.TemporaryDirectory(prefix="startup-data-") as tmp:
        path = args.path
        if path is None:
            from data_scale import write_data

            path = str(write_data(Path(tmp), args.n, distinct=min(args.n, 2000))[0])
        runs: dict[str, list[dict[str, float]]] = {"sequential": [], "overlapped": []}
        for r in range(args.repeats):
            for order in ("sequential", "overlapped"):
                got = run_child(order, args, path)
                runs[order].append(got)
                print(f"  repeat {r}: {order:>10}: data ready {got['data_ready_s']:.2f} s, Ray ready "
                      f"{got['ray_ready_s']:.2f} s, both {got['both_ready_s']:.2f} s", flush=True)
    med = {o: {k: rnd(median([x[k] for x in v]), 2) for k in v[0]} for o, v in runs.items()}
    saved = med["sequential"]["both_ready_s"] - med["overlapped"]["both_ready_s"]
    print(f"startup: {args.path or f'{args.n} generated JPEGs'} at {args.size} px, medians of {args.repeats}: "
          f"sequential {med['sequential']['both_ready_s']:.2f} s, overlapped {med['overlapped']['both_ready_s']:.2f} s "
          f"({saved:.2f} s less, {med['overlapped']['both_ready_s'] / med['sequential']['both_ready_s']:.2f}x)",
          flush=True)
    return emit({"benchmark": "startup", "date": now(), **hw, "n": None if args.path else args.n, "path": args.path,
                 "size": args.size, "repeats": args.repeats, "medians": med, "runs": runs, "saved_s": rnd(saved, 2)})


if __name__ == "__main__":
    main()
