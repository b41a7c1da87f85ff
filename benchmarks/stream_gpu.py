"""Benchmark - the streaming path feeding a trial (issue 12's GPU half): is the data path ever
the bottleneck of ResNet-50 SimCLR at 224 px?

One process, one device, one model and batch. The data is written first: ``--n`` non-square
photo-like JPEGs (256-320 px, from ``data_scale.py``) in sharded Hugging Face-layout Parquet.
Three rates, in views per second (2 views per image), interleaved round by round so drift hits all:

* **stream**: the trial's own step (``make_pretrainer`` + ``train_one_epoch``) on the streamed
  train pool (``dataset.residency=stream``: row groups read and decoded while training; on CUDA
  the JPEGs are decoded in batches by nvJPEG, ``torchvision.io.decode_jpeg(device="cuda")``);
* **device**: the same step on the same images pre-decoded into a uint8 tensor on the device (the
  in-memory ``device`` residency; throughput.py measures it against a hand-written loop: 1.03x);
* **data only**: reading, decoding and augmenting two views per image from the stream, without the
  model: what the data path alone delivers.

Targets (issue 12): stream / device >= 0.8; data only / device >= 1.5. It also prints the
GPU-hours of one pretraining epoch of 1M images at the stream rate (the seed's scenario).

    python benchmarks/stream_gpu.py --device cuda                 # ResNet-50, 224 px, batch 256
    python benchmarks/stream_gpu.py --smoke                       # seconds, CPU: checks the script

Prints the hardware, one line per measurement, and a final JSON line (``$OUT/stream_gpu.json``
when $OUT is set).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import emit, hardware, median, now, print_hardware, rnd, sync
from data_scale import write_data

HP = {"temperature": 0.2, "strength": 0.5, "lr": 0.3, "weight_decay": 1e-6, "proj_dim": 128, "crop_min": 0.2,
      "negatives": "standard"}


def data_only_epoch(pool: Any, pre: Any, batch: int) -> int:
    """Views per epoch of reading, decoding and augmenting two views per image, no model."""
    views = 0
    for x in pool.batches(pre, batch):
        views += len(pre.task.augment(torch.cat([x, x]), pre.gen))  # as the SimCLR step makes its views
    return views


def timed(fn: Any, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    views = fn()
    sync(device)
    return views / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--n", type=int, default=8192, help="images written (default 8192)")
    p.add_argument("--distinct", type=int, default=512, help="distinct JPEGs, repeated to n")
    p.add_argument("--encoder", default="resnet50")
    p.add_argument("--size", type=int, default=224, help="stored and trained side (px)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--workers", type=int, default=8, help="dataset.stream_workers (CPU decoding threads)")
    p.add_argument("--buffer", type=int, default=4096, help="dataset.stream_buffer (images)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="CPU, small CNN, 96 images at 32 px: seconds")
    args = p.parse_args(argv)
    if args.smoke:
        args.device, args.n, args.distinct, args.encoder, args.size, args.batch = "cpu", 96, 16, "small_cnn", 32, 16
        args.workers, args.buffer, args.rounds = 2, 64, 1

    from sslsweep.config import DatasetConfig, EncoderConfig, TrainerConfig
    from sslsweep.data import prepare
    from sslsweep.trainables.train import DeviceData, Runtime, make_pretrainer, train_one_epoch

    device = torch.device(args.device)
    print_hardware(hardware(device))
    root = Path(tempfile.mkdtemp(prefix="stream-gpu-"))
    t0 = time.perf_counter()
    pq_dir, _ = write_data(root, args.n, args.distinct)
    print(f"wrote {args.n} JPEGs in {time.perf_counter() - t0:.1f} s", flush=True)
    cfg = DatasetConfig(name="parquet", path=str(pq_dir), image_size=args.size, val_fraction=0.02,
                        test_fraction=0.02, residency="stream", stream_workers=args.workers,
                        stream_buffer=args.buffer)
    data = prepare(cfg)
    tcfg = TrainerConfig(device=device.type)
    rt = Runtime.resolve(tcfg)
    streamed = DeviceData.put(data, rt.device, "stream")
    images, _ = streamed.materialize(data.splits.train)  # the same pixels (centre crops), decoded once
    enc = EncoderConfig(name=args.encoder, width=8 if args.encoder == "small_cnn" else 64)
    pre = make_pretrainer("simclr", dict(HP, batch_size=args.batch), data, enc, tcfg, rt, max_epochs=10_000, seed=0)
    loops = {"stream": lambda: train_one_epoch(pre, streamed.pool()).views,
             "device": lambda: train_one_epoch(pre, images).views,
             "data_only": lambda: data_only_epoch(streamed.pool(), pre, args.batch)}
    for fn in loops.values():  # warm-up: kernels, allocator, cudnn plans, reader threads
        fn()
    rates: dict[str, list[float]] = {k: [] for k in loops}
    for _ in range(args.rounds):
        for key, fn in loops.items():
            rates[key].append(timed(fn, device))
            print(f"  {key:9s} {rates[key][-1]:10,.0f} views/s", flush=True)
    med = {k: median(v) for k, v in rates.items()}
    stream_ratio, data_ratio = med["stream"] / med["device"], med["data_only"] / med["device"]
    gpu_h_per_1m_epoch = 2e6 / med["stream"] / 3600
    print(f"stream / device {stream_ratio:.3f} (target >= 0.8); data only / device {data_ratio:.3f} "
          f"(target >= 1.5); one epoch of 1M images at the stream rate: {gpu_h_per_1m_epoch:.2f} device-hours",
          flush=True)
    streamed.close()
    out = {"benchmark": "stream_gpu", "date": now(), **hardware(device), "args": vars(args),
           "decode_on_device": streamed.reader.decode_device is not None if streamed.reader else False,
           "views_per_s": {k: rnd(v) for k, v in med.items()}, "rounds": {k: [rnd(r) for r in v] for k, v in rates.items()},
           "stream_over_device": round(stream_ratio, 3), "data_only_over_device": round(data_ratio, 3),
           "device_hours_per_1m_image_epoch": round(gpu_h_per_1m_epoch, 3),
           "peak_mem_gb": round(torch.cuda.max_memory_allocated(device) / 1e9, 2) if device.type == "cuda" else None}
    emit(out, "stream_gpu.json")
    return out


if __name__ == "__main__":
    main()
