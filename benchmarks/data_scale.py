"""Benchmark - data at scale: peak memory and images/s of the in-memory and the streaming paths
as the dataset grows (issue 12's target: stream's peak RSS at 80k images <= 1.3x at 5k).

The benchmark writes its own data: ``--distinct`` non-square photos-like JPEGs (smooth colour
fields with noise, 256-320 px per side) repeated to N images, in sharded Parquet in the Hugging
Face layout (``data/train-0000k-of-0000n.parquet``, columns image {bytes, path} and label, 1,000
rows per shard, row groups of 256) and in an image folder (``<class>/<i>.jpg``), 10 classes.
Repeating the encoded bytes keeps writing 80k images quick; every row is still read and decoded.

Per N, each configuration runs in a subprocess of its own, which reports its peak RSS
(``VmHWM`` of /proc/self/status) and its rate:

* **memory driver**: ``prepare()`` with ``dataset.residency=device``: decode every image once at
  ``--storage`` px (the decode cache is emptied first), split; images/s of decoding.
* **memory trial**: what a trial holds in memory: the decoded array (loaded from the decode
  cache, as a trial maps it from the object store) and ``DeviceData.put`` onto the CPU, then one
  epoch of batches of the train pool; images/s of handing out batches.
* **stream driver**: ``prepare()`` with ``dataset.residency=stream``: the index from Parquet
  metadata and label columns (one image decoded).
* **stream trial (parquet / folder)**: a :class:`~sslsweep.data.StreamReader` reading one
  seeded epoch of the train pool in batches of ``--batch`` (shuffle buffer ``--buffer``,
  ``--workers`` decoding threads), as a trial's ``StreamPool`` does; images/s.

``--ray-data`` adds, per N, Ray Data's ``read_parquet(...).map_batches(decode)
.iter_torch_batches()`` over the same shards (same decode function) for the plain-pyarrow
reader's comparison: its driver's peak RSS and images/s (Ray's own workers are not counted).

    python benchmarks/data_scale.py                       # N = 5k, 20k, 80k (tens of minutes on 2 cores)
    python benchmarks/data_scale.py --sizes 2000,8000     # smaller
    python benchmarks/data_scale.py --smoke               # seconds: checks the script

Prints the hardware, one line per measurement, and a final JSON line.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from _common import emit, hardware, now, print_hardware, rnd
from PIL import Image

CLASSES = 10
SHARD_ROWS = 1000
ROW_GROUP = 256


# ----------------------------------------------------------------------------- data


def photo(rng: np.random.Generator, label: int) -> bytes:
    """A JPEG of 256-320 px per side, never square: a smooth colour field (class-dependent hue)
    with noise, so it compresses like a photo (26-38 kB), not like white noise."""
    h, w = int(rng.integers(256, 321)), int(rng.integers(256, 321))
    while w == h:
        w = int(rng.integers(256, 321))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([np.sin(xx / (20 + 7 * c) + label) * 60 + 40 * c + 60 for c in range(3)], axis=-1)
    img = base + np.cos(yy / 30.0)[..., None] * 40 + rng.normal(0, 12, (h, w, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_data(root: Path, n: int, distinct: int, seed: int = 0) -> tuple[Path, Path]:
    """(Parquet directory, image folder) of ``n`` images made of ``distinct`` encoded ones."""
    rng = np.random.default_rng(seed)
    pool = [photo(rng, i % CLASSES) for i in range(min(distinct, n))]
    labels = np.arange(n) % CLASSES
    pq_dir, folder = root / "parquet", root / "folder"
    (pq_dir / "data").mkdir(parents=True)
    n_shards = (n + SHARD_ROWS - 1) // SHARD_ROWS
    for k in range(n_shards):
        rows = range(k * SHARD_ROWS, min(n, (k + 1) * SHARD_ROWS))
        col = pa.array([{"bytes": pool[i % len(pool)], "path": f"{i}.jpg"} for i in rows])
        table = pa.table({"image": col, "label": pa.array(labels[list(rows)], pa.int64())})
        pq.write_table(table, pq_dir / "data" / f"train-{k:05d}-of-{n_shards:05d}.parquet", row_group_size=ROW_GROUP)
    for c in range(CLASSES):
        (folder / f"class{c}").mkdir(parents=True)
    for i in range(n):
        (folder / f"class{labels[i]}" / f"{i:06d}.jpg").write_bytes(pool[i % len(pool)])
    return pq_dir, folder


# ----------------------------------------------------------------------------- one measurement (child)


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One configuration, in this (fresh) process."""
    from dataclasses import replace

    import torch

    from sslsweep.config import DatasetConfig
    from sslsweep.data import StreamReader, prepare
    from sslsweep.trainables.train import DeviceData

    torch.set_num_threads(1)
    name = "imagefolder" if args.child.endswith("folder") else "parquet"
    cfg = DatasetConfig(name=name, path=args.path, image_size=args.storage, val_fraction=0.1, test_fraction=0.1,
                        stream_buffer=args.buffer, stream_workers=args.workers)
    t0 = time.perf_counter()
    n = 0
    if args.child == "memory-driver":
        data = prepare(replace(cfg, residency="device"))
        n = len(data.labels)
    elif args.child == "memory-trial":
        data = prepare(replace(cfg, residency="device"))  # from the decode cache the driver wrote
        t0 = time.perf_counter()
        dd = DeviceData.put(data, torch.device("cpu"))
        pool = dd.pool()
        order = torch.randperm(len(pool))
        for i in range(0, len(pool) - args.batch + 1, args.batch):
            n += len(pool[order[i:i + args.batch]])
    elif args.child == "stream-driver":
        data = prepare(replace(cfg, residency="stream"))
        n = len(data.labels)
    elif args.child.startswith("stream-trial"):
        data = prepare(replace(cfg, residency="stream"))
        t0 = time.perf_counter()
        reader = StreamReader(data.stream, buffer=args.buffer, workers=args.workers)
        for images, _ in reader.batches(data.splits.train, args.batch, seed=1, drop_last=True):
            n += len(torch.from_numpy(images))
        reader.close()
    seconds = time.perf_counter() - t0
    if args.child == "ray-data":
        n, seconds = ray_data_epoch(args)
    return {"role": args.child, "images": n, "seconds": rnd(seconds, 2), "images_per_s": rnd(n / seconds),
            "peak_rss_mb": rnd(peak_rss_mb())}


def ray_data_epoch(args: argparse.Namespace) -> tuple[int, float]:
    """(images, seconds) of one epoch of Ray Data over the shards with the same decoding (PIL,
    shorter side, centre crop), Ray's start not counted."""
    import ray

    from sslsweep.data.decode import decode_one

    ray.init(num_cpus=args.workers, include_dashboard=False, configure_logging=False, log_to_driver=False)
    size = args.storage

    def decode(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"image": np.stack([decode_one(b["bytes"], size, "RGB") for b in batch["image"]]),
                "label": batch["label"]}

    t0 = time.perf_counter()
    ds = ray.data.read_parquet(str(Path(args.path) / "data")).map_batches(decode, batch_size=args.batch)
    n = 0
    for batch in ds.iter_torch_batches(batch_size=args.batch, local_shuffle_buffer_size=args.buffer):
        n += len(batch["image"])
    seconds = time.perf_counter() - t0
    ray.shutdown()
    return n, seconds


# ----------------------------------------------------------------------------- driver


def run_child(role: str, path: Path, args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", role, "--path", str(path), "--storage", str(args.storage),
           "--batch", str(args.batch), "--buffer", str(args.buffer), "--workers", str(args.workers)]
    env = {**os.environ, "SSLSWEEP_CACHE": str(cache)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{role} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="5000,20000,80000", help="comma-separated image counts N")
    p.add_argument("--storage", type=int, default=64, help="stored side (px): shorter side resized, centre crop")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--buffer", type=int, default=4096, help="stream: shuffle buffer (images)")
    p.add_argument("--workers", type=int, default=2, help="stream: decoding threads")
    p.add_argument("--distinct", type=int, default=500, help="distinct JPEGs, repeated to N")
    p.add_argument("--ray-data", action="store_true", help="also measure Ray Data over the same shards")
    p.add_argument("--timeout", type=int, default=3600)
    p.add_argument("--smoke", action="store_true", help="N = 300, 600: seconds")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    sizes = [300, 600] if args.smoke else [int(s) for s in args.sizes.split(",")]
    if args.smoke:
        args.distinct, args.buffer = 50, 256
    hw = hardware()
    print_hardware(hw)
    print(f"started {now()}; storage {args.storage} px, batch {args.batch}, buffer {args.buffer}, "
          f"{args.workers} decoding threads, {args.distinct} distinct JPEGs", flush=True)
    rows: list[dict[str, Any]] = []
    roles = ["memory-driver", "memory-trial", "stream-driver", "stream-trial-parquet", "stream-trial-folder"]
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="data_scale_") as tmp:
            t0 = time.perf_counter()
            pq_dir, folder = write_data(Path(tmp), n, args.distinct)
            print(f"N={n}: data written in {time.perf_counter() - t0:.0f} s", flush=True)
            cache = Path(tmp) / "cache"
            for role in roles + (["ray-data"] if args.ray_data else []):
                try:
                    r = run_child(role, folder if role.endswith("folder") else pq_dir, args, cache)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    if role != "ray-data":
                        raise
                    print(f"N={n:>6} ray-data failed: {str(exc)[-800:]}", flush=True)
                    continue
                r["n"] = n
                rows.append(r)
                print(f"N={n:>6} {role:<22} peak RSS {r['peak_rss_mb']:>8.0f} MB   {r['images_per_s']:>9.0f} images/s "
                      f"({r['images']} images in {r['seconds']} s)", flush=True)
            shutil.rmtree(cache, ignore_errors=True)
    ratio = {}
    for role in roles:
        rss = {r["n"]: r["peak_rss_mb"] for r in rows if r["role"] == role}
        ratio[role] = rnd(rss[max(rss)] / rss[min(rss)], 2)
    print("peak RSS at the largest N / at the smallest N: "
          + ", ".join(f"{k} {v}x" for k, v in ratio.items()), flush=True)
    emit({"benchmark": "data_scale", "date": now(), **hw, "sizes": sizes, "storage": args.storage,
          "batch": args.batch, "buffer": args.buffer, "workers": args.workers, "rows": rows, "rss_ratio": ratio},
         "data_scale.json")


if __name__ == "__main__":
    main()
