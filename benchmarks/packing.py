"""Benchmark 3 - packing: aggregate throughput of 1, 2, 4 trials sharing one device.

What ``resources.gpu=0.5`` / ``0.25`` does in a sweep: several trial processes on the same GPU,
each training its own model. Here N worker processes (multiprocessing, spawn: each has its own
CUDA context, as Ray workers do) each run the trial's own training loop
(``make_pretrainer`` + ``train_one_epoch``, SimCLR, on random uint8 images already on the device)
for the same wall-clock window, started together. The aggregate views/s is the sum of the
workers' rates; the speed-up is against one process alone.

The workers are started once and reused for every (model, N) cell, so interpreter and CUDA
start-up are not in the figures (Ray's ``reuse_actors`` does the same for trials).
On a CPU-only machine N processes share the cores (each gets cores/N threads, at least 1):
no gain is expected there; the figures are printed all the same.

    python benchmarks/packing.py                          # CPU defaults: ~2 min on 2 cores
    python benchmarks/packing.py --smoke                  # seconds
    python benchmarks/packing.py --device cuda            # small CNN b256, ResNet-18 b128 and b512

Prints the hardware, a table and a final JSON line.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import time
import traceback
from typing import Any

from _common import emit, hardware, now, print_hardware, rnd


def _worker(rank: int, cmd_q: "mp.Queue", res_q: "mp.Queue") -> None:
    """A long-lived process: for each job, build a trial, warm up, wait for 'go', train for a window."""
    import torch

    from _common import random_prepared, sync
    from sslsweep.config import EncoderConfig, TrainerConfig
    from sslsweep.trainables.train import DeviceData, Runtime, make_pretrainer, train_one_epoch

    res_q.put(("up", rank, None))
    while True:
        job = cmd_q.get()
        if job is None:
            return
        try:
            torch.set_num_threads(job["threads"])
            device = torch.device(job["device"])
            enc = EncoderConfig(name=job["encoder"], width=job["width"])
            tcfg = TrainerConfig(device=device.type)
            rt = Runtime.resolve(tcfg)
            data = random_prepared(job["batch"] * job["steps"], size=job["size"], seed=rank)
            dd = DeviceData.put(data, rt.device)
            pool = dd.pool()
            hp = {"temperature": 0.2, "strength": 0.5, "lr": 0.1, "weight_decay": 1e-6, "batch_size": job["batch"],
                  "proj_dim": 128, "crop_min": 0.2, "negatives": "standard"}
            pre = make_pretrainer("simclr", hp, data, enc, tcfg, rt, max_epochs=100_000, seed=rank)
            t0 = time.perf_counter()
            while True:  # warm-up: at least one epoch and job["warmup_s"] seconds
                train_one_epoch(pre, pool)
                if time.perf_counter() - t0 >= job["warmup_s"]:
                    break
            sync(device)
            res_q.put(("ready", rank, None))
            if cmd_q.get() != "go":
                raise RuntimeError("expected go")
            views = 0
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < job["seconds"]:
                views += train_one_epoch(pre, pool).views  # each epoch ends with a host sync
            elapsed = time.perf_counter() - t0
            mem = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
            res_q.put(("done", rank, {"views": views, "seconds": elapsed, "views_per_s": views / elapsed,
                                      "peak_mem_gb": mem}))
            del pre, dd, pool
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
        except Exception:
            res_q.put(("error", rank, traceback.format_exc()))


def _collect(res_q: "mp.Queue", kind: str, n: int, timeout: float) -> list[Any]:
    out: list[Any] = []
    deadline = time.time() + timeout
    while len(out) < n:
        try:
            msg, rank, payload = res_q.get(timeout=max(0.1, deadline - time.time()))
        except queue.Empty:
            raise TimeoutError(f"waiting for {n} '{kind}' messages, got {len(out)}") from None
        if msg == "error":
            raise RuntimeError(f"worker {rank} failed:\n{payload}")
        if msg == kind:
            out.append((rank, payload))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--configs", nargs="+", default=None,
                   help="encoder:batch (default CPU small_cnn:64; CUDA small_cnn:256 resnet18:128 resnet18:512)")
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2, 4], help="processes per device (default 1 2 4)")
    p.add_argument("--width", type=int, default=32, help="small_cnn width (default 32)")
    p.add_argument("--size", type=int, default=32, help="image side (default 32)")
    p.add_argument("--steps", type=int, default=None, help="steps per epoch (default CPU 2, CUDA 10)")
    p.add_argument("--seconds", type=float, default=None, help="measured window per cell (default CPU 6, CUDA 4)")
    p.add_argument("--warmup-s", type=float, default=None, help="warm-up per cell (default CPU 1, CUDA 1.5)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script in seconds")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.smoke:
        args.configs = args.configs or ["small_cnn:16"]
        args.width, args.steps, args.seconds, args.warmup_s = 8, 1, 1.0, 0.1
        args.procs = [1, 2]
    args.configs = args.configs or (["small_cnn:256", "resnet18:128", "resnet18:512"] if cuda else ["small_cnn:64"])
    args.steps = args.steps or (10 if cuda else 2)
    args.seconds = args.seconds or (4.0 if cuda else 6.0)
    args.warmup_s = args.warmup_s if args.warmup_s is not None else (1.5 if cuda else 1.0)

    hw = hardware(device)
    print_hardware(hw)
    cores = os.cpu_count() or 1
    print(f"packing: N trial processes on {device}, each make_pretrainer + train_one_epoch (SimCLR) on random "
          f"uint8 {args.size}x{args.size}; {args.seconds:g} s window; aggregate views/s", flush=True)
    ctx = mp.get_context("spawn")
    res_q: mp.Queue = ctx.Queue()
    n_max = max(args.procs)
    cmd_qs = [ctx.Queue() for _ in range(n_max)]
    t_start = time.perf_counter()
    workers = [ctx.Process(target=_worker, args=(r, cmd_qs[r], res_q), daemon=True) for r in range(n_max)]
    for w in workers:
        w.start()
    rows: list[dict[str, Any]] = []
    try:
        _collect(res_q, "up", n_max, timeout=300)
        print(f"  {n_max} worker processes up in {time.perf_counter() - t_start:.1f} s", flush=True)
        for spec in args.configs:
            name, _, batch = spec.partition(":")
            base = None
            for n in args.procs:
                job = {"device": str(device), "encoder": name, "width": args.width if name == "small_cnn" else 64,
                       "batch": int(batch or 128), "steps": args.steps, "size": args.size, "seconds": args.seconds,
                       "warmup_s": args.warmup_s, "threads": max(1, cores // n) if not cuda else 1}
                for r in range(n):
                    cmd_qs[r].put(job)
                _collect(res_q, "ready", n, timeout=600)
                for r in range(n):
                    cmd_qs[r].put("go")
                done = _collect(res_q, "done", n, timeout=600 + 10 * args.seconds)
                rates = [d["views_per_s"] for _, d in sorted(done, key=lambda t: t[0])]
                agg = sum(rates)
                base = base or agg
                mem = [d["peak_mem_gb"] for _, d in done if d["peak_mem_gb"] is not None]
                row = {"config": spec, "procs": n, "aggregate_views_per_s": rnd(agg), "speedup": round(agg / base, 3),
                       "per_process_views_per_s": [rnd(r) for r in rates],
                       "threads_per_process": job["threads"], "peak_mem_gb_per_process": max(mem) if mem else None}
                rows.append(row)
                print(f"  {spec:14s} N={n}: aggregate {agg:10,.0f} views/s  ({agg / base:.2f}x of N=1)  "
                      f"per process {', '.join(f'{r:,.0f}' for r in rates)}", flush=True)
    finally:
        for q in cmd_qs:
            q.put(None)
        for w in workers:
            w.join(timeout=10)
            if w.is_alive():
                w.terminate()
    best: dict[str, Any] = {}
    for r in rows:
        b = best.get(r["config"])
        if b is None or r["speedup"] > b["speedup"]:
            best[r["config"]] = {"procs": r["procs"], "speedup": r["speedup"]}
    small = [v["speedup"] for k, v in best.items() if k.startswith("small_cnn")]
    met = bool(small) and max(small) >= 1.3
    print("best packing per config:", {k: f"N={v['procs']} ({v['speedup']:.2f}x)" for k, v in best.items()})
    print("target >= 1.3x at the best packing for the small model:", "met" if met else "NOT met",
          "(a CPU-only machine shares its cores: no gain expected)" if not cuda else "", flush=True)
    return emit({"benchmark": "packing", "date": now(), **hw, "device": str(device), "seconds": args.seconds,
                 "steps_per_epoch": args.steps, "rows": rows, "best": best, "target_small_model": 1.3,
                 "target_met": met}, "packing.json")


if __name__ == "__main__":
    main()
