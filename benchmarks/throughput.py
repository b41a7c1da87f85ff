"""Benchmark 1 - throughput: the trial's own training step against a bare PyTorch loop.

Side by side in one process, on the same device, model, batch and data:

* **trial**: ``sslsweep.trainables.train.make_pretrainer`` + ``train_one_epoch`` on a
  ``DeviceData`` pool, exactly what a search trial runs (SimCLR task, per-step lr schedule, loss
  bookkeeping, bf16 autocast + channels_last + optional torch.compile as ``Runtime`` resolves them);
* **bare**: a hand-written loop with no sslsweep bookkeeping: the same encoder (``build_encoder``),
  the same projection head (``mlp_head``), the same ``BatchAugment`` and the same ``nt_xent`` loss,
  SGD (momentum 0.9, nesterov) at a constant learning rate.

Both are timed over whole epochs of the same number of steps (random uint8 images, 32x32),
interleaved round by round (trial, bare, trial, bare, ...) so drift hits both; the median epoch
rate of each is reported, with the ratio trial / bare (target >= 0.9).
Then the augmentation comparison: ``bench_augment.py`` (BatchAugment on the device against
torchvision v2 in DataLoader workers) is run in this process and its ratio reported beside it.

    python benchmarks/throughput.py                      # CPU defaults: ~1-2 min on 2 cores
    python benchmarks/throughput.py --smoke              # seconds: checks the script
    python benchmarks/throughput.py --device cuda        # GPU defaults: ResNet-18 b512/b128, small CNN b512
    python benchmarks/throughput.py --device cuda --compile --configs resnet18:512

Prints the hardware, one line per measurement, and a final JSON line.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import torch
from _common import emit, hardware, median, now, print_hardware, random_prepared, rnd, sync
from torch import nn

from sslsweep.config import EncoderConfig, TrainerConfig
from sslsweep.trainables.augment import AugmentConfig, BatchAugment
from sslsweep.trainables.encoders import build_encoder
from sslsweep.trainables.tasks.base import mlp_head
from sslsweep.trainables.tasks.simclr import nt_xent
from sslsweep.trainables.train import DeviceData, Runtime, make_pretrainer, train_one_epoch

HP = {"temperature": 0.2, "strength": 0.5, "lr": 0.1, "weight_decay": 1e-6, "proj_dim": 128, "crop_min": 0.2,
      "negatives": "standard"}


class BareSimCLR(nn.Module):
    def __init__(self, encoder: nn.Module, proj_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = mlp_head(encoder.out_dim, encoder.out_dim, proj_dim)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(v))


class BareLoop:
    """The hand-written reference loop: what a user would write without sslsweep."""

    def __init__(self, enc_cfg: EncoderConfig, channels: int, size: int, batch: int, rt: Runtime,
                 *, compile_model: bool, device_targets: bool = False) -> None:
        torch.manual_seed(0)
        self.rt, self.batch = rt, batch
        self.model = BareSimCLR(build_encoder(enc_cfg, channels), int(HP["proj_dim"])).to(rt.device)
        if rt.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.fwd = torch.compile(self.model) if compile_model else self.model
        self.aug = BatchAugment(AugmentConfig(size=size, crop_scale=(HP["crop_min"], 1.0), flip_p=0.5,
                                              strength=HP["strength"], gray_p=0.2 if channels == 3 else 0.0))
        self.opt = torch.optim.SGD(self.model.parameters(), lr=HP["lr"], momentum=0.9,
                                   weight_decay=HP["weight_decay"], nesterov=True)
        self.gen = torch.Generator(device=rt.device).manual_seed(0)
        self.device_targets = device_targets
        self.targets = torch.cat([torch.arange(batch, 2 * batch), torch.arange(0, batch)]).to(rt.device)

    def loss(self, z: torch.Tensor) -> torch.Tensor:
        if not self.device_targets:
            return nt_xent(z[: self.batch], z[self.batch:], HP["temperature"])
        # The same loss with the targets made once on the device (no host->device copy per step).
        z = nn.functional.normalize(z.float(), dim=1)
        sim = z @ z.T / HP["temperature"]
        sim.fill_diagonal_(float("-inf"))
        return nn.functional.cross_entropy(sim, self.targets)

    def epoch(self, pool: torch.Tensor) -> int:
        b, dev = self.batch, self.rt.device
        order = torch.randperm(len(pool), generator=self.gen, device=dev)
        steps = len(pool) // b
        self.model.train()
        for step in range(steps):
            x = pool[order[step * b:(step + 1) * b]]
            v = torch.cat([self.aug(x, self.gen), self.aug(x, self.gen)])
            if self.rt.channels_last:
                v = v.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.rt.autocast):
                loss = self.loss(self.fwd(v))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        last = loss.item()  # one host sync per epoch, as the trial does
        if not math.isfinite(last):
            raise RuntimeError(f"bare loop diverged (loss {last})")
        return 2 * b * steps


def measure(name: str, run_epoch, rounds_out: list[float], device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    views = run_epoch()
    sync(device)
    rate = views / (time.perf_counter() - t0)
    rounds_out.append(rate)
    return rate


def bench_config(spec: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    name, _, batch = spec.partition(":")
    batch = int(batch or 256)
    width = args.width if name == "small_cnn" else 64
    enc_cfg = EncoderConfig(name=name, width=width)
    tcfg = TrainerConfig(device=device.type, precision=args.precision, channels_last=args.channels_last,
                         compile=args.compile)
    rt = Runtime.resolve(tcfg)
    n = batch * args.steps
    data = random_prepared(n, size=args.size)
    dd = DeviceData.put(data, rt.device)
    pool = dd.pool()  # exactly `steps` full batches for both loops
    hp = dict(HP, batch_size=batch)
    pre = make_pretrainer("simclr", hp, data, enc_cfg, tcfg, rt, max_epochs=10_000, seed=0)
    bare = BareLoop(enc_cfg, data.shape[0], args.size, batch, rt, compile_model=rt.compile)
    loops: dict[str, Any] = {
        "trial": lambda: train_one_epoch(pre, pool).views,
        "bare": lambda: bare.epoch(pool),
    }
    if args.device_targets:
        bare_dt = BareLoop(enc_cfg, data.shape[0], args.size, batch, rt, compile_model=rt.compile,
                           device_targets=True)
        loops["bare_device_targets"] = lambda: bare_dt.epoch(pool)
    modes = ["off", "on"] if (args.cudnn_benchmark == "both" and device.type == "cuda") else \
        [args.cudnn_benchmark if args.cudnn_benchmark != "both" else "off"]
    out: dict[str, Any] = {"config": spec, "encoder": name, "width": width, "batch": batch, "steps_per_epoch": args.steps,
                           "views_per_epoch": 2 * n, "autocast_bf16": rt.autocast, "channels_last": rt.channels_last,
                           "compile": rt.compile}
    for mode in modes:
        torch.backends.cudnn.benchmark = mode == "on"
        t0 = time.perf_counter()
        for key, fn in loops.items():  # warm-up: kernels, allocator, cudnn plans, compilation
            for _ in range(args.warmup):
                fn()
        sync(device)
        warm_s = time.perf_counter() - t0
        rates: dict[str, list[float]] = {k: [] for k in loops}
        for _ in range(args.rounds):
            for key, fn in loops.items():
                measure(key, fn, rates[key], device)
        med = {k: median(v) for k, v in rates.items()}
        ratio = med["trial"] / med["bare"]
        sfx = "" if len(modes) == 1 and mode == "off" else f"_cudnn_benchmark_{mode}"
        print(f"  {spec:16s} cudnn.benchmark={mode:3s} trial {med['trial']:10,.0f} views/s   "
              f"bare {med['bare']:10,.0f} views/s   ratio {ratio:.3f}"
              + (f"   bare+device targets {med['bare_device_targets']:10,.0f}" if "bare_device_targets" in med else "")
              + f"   (warm-up {warm_s:.1f} s)", flush=True)
        out.update({f"trial_views_per_s{sfx}": rnd(med["trial"]), f"bare_views_per_s{sfx}": rnd(med["bare"]),
                    f"ratio{sfx}": round(ratio, 3), f"warmup_s{sfx}": rnd(warm_s, 2),
                    f"trial_rounds{sfx}": [rnd(r) for r in rates["trial"]],
                    f"bare_rounds{sfx}": [rnd(r) for r in rates["bare"]]})
        if "bare_device_targets" in med:
            out[f"bare_device_targets_views_per_s{sfx}"] = rnd(med["bare_device_targets"])
    if device.type == "cuda":
        out["peak_mem_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
    torch.backends.cudnn.benchmark = False
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--configs", nargs="+", default=None,
                   help="encoder:batch pairs (default: CPU small_cnn:64; CUDA resnet18:512 resnet18:128 small_cnn:512)")
    p.add_argument("--width", type=int, default=None, help="small_cnn width (default CPU 16, CUDA 32 = the project default)")
    p.add_argument("--size", type=int, default=32, help="image side (default 32, CIFAR)")
    p.add_argument("--steps", type=int, default=None, help="steps per timed epoch (default CPU 4, CUDA 30)")
    p.add_argument("--rounds", type=int, default=None, help="timed epochs per loop, interleaved (default CPU 3, CUDA 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed epochs per loop first (default 1)")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--channels-last", default="auto", type=lambda s: s if s == "auto" else s.lower() == "true")
    p.add_argument("--compile", action="store_true", help="trainer.compile=true (CUDA only; bare loop compiled too)")
    p.add_argument("--cudnn-benchmark", default="both", choices=["both", "on", "off"],
                   help="torch.backends.cudnn.benchmark for the rounds (default both on CUDA: off = what trials run)")
    p.add_argument("--device-targets", action="store_true",
                   help="also time the bare loop with NT-Xent targets kept on the device (no per-step copy)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads on CPU (default 1, what a sweep trial with resources.cpu=1 uses)")
    p.add_argument("--skip-augment", action="store_true", help="skip the bench_augment comparison")
    p.add_argument("--augment-n", type=int, default=None, help="images for bench_augment (default CPU 2048, CUDA 50000)")
    p.add_argument("--augment-workers", type=int, default=None, help="DataLoader workers (default cpu_count - 2)")
    p.add_argument("--json", default="throughput.json", help="file name of the JSON result under $OUT")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script in seconds")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if not cuda or args.threads:
        torch.set_num_threads(args.threads or 1)
    if args.smoke:
        args.configs = args.configs or ["small_cnn:32"]
        args.width, args.steps, args.rounds = 8, 2, 2
        args.augment_n = args.augment_n or 256
    args.configs = args.configs or (["resnet18:512", "resnet18:128", "small_cnn:512"] if cuda else ["small_cnn:64"])
    args.width = args.width or (32 if cuda else 16)
    args.steps = args.steps or (30 if cuda else 4)
    args.rounds = args.rounds or (5 if cuda else 3)

    hw = hardware(device)
    print_hardware(hw)
    print(f"throughput: trial step (make_pretrainer + train_one_epoch) vs bare loop on {device}; "
          f"{args.steps} steps/epoch, {args.rounds} interleaved rounds, median views/s", flush=True)
    results = []
    for spec in args.configs:
        results.append(bench_config(spec, args, device))
        if cuda:  # the models of the last configuration are gone with its frame
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)

    augment: dict[str, Any] | None = None
    if not args.skip_augment:
        import bench_augment

        a_argv = ["--device", str(device), "--n", str(args.augment_n or (50_000 if cuda else 2048)), "--batch", "512"]
        if args.augment_workers is not None:
            a_argv += ["--workers", str(args.augment_workers)]
        print("augmentation (bench_augment.py, in this process):", flush=True)
        augment = bench_augment.main(a_argv)

    ok = all(r.get("ratio", r.get("ratio_cudnn_benchmark_off", 0)) >= 0.9 for r in results)
    summary = {"benchmark": "throughput", "date": now(), **hw, "device": str(device), "configs": results,
               "augment": augment, "target_trial_over_bare": 0.9, "target_met": ok, "threads": torch.get_num_threads()}
    print("target trial/bare >= 0.9:", "met" if ok else "NOT met",
          "(--smoke: sizes too small for a meaningful ratio)" if args.smoke else "", flush=True)
    return emit(summary, args.json)


if __name__ == "__main__":
    main()
