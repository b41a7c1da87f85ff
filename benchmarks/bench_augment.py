"""Views/s of BatchAugment on the device vs torchvision v2's SimCLR pipeline in DataLoader workers.

Both sides make the same augmentation of CIFAR-sized images (32x32 uint8, RGB): random resized
crop to 32, horizontal flip, colour jitter (0.8s, 0.8s, 0.8s, 0.2s) with p = 0.8, grayscale with
p = 0.2, as float32 in [0, 1] on the device. torchvision runs per image in a DataLoader with
``--workers`` processes (the usual setup); BatchAugment runs batched on ``--device`` with the uint8
data already there (the sslsweep setup, DESIGN.md "Speed").

    python benchmarks/bench_augment.py                       # defaults: < 60 s on 2 CPU cores
    python benchmarks/bench_augment.py --device cuda --n 50000 --batch 512 --workers 14
    python benchmarks/bench_augment.py --libraries   # + torchvision v2 on device tensors, kornia
    python benchmarks/bench_augment.py --smoke       # seconds: checks that it runs

Prints the hardware, both rates and their ratio, then one JSON line with the results.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

try:
    from sslsweep.trainables.augment import AugmentConfig, BatchAugment
    from sslsweep.trainables.augment import _gaussian_blur as _blur
except ImportError:  # run as a script from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sslsweep.trainables.augment import AugmentConfig, BatchAugment
    from sslsweep.trainables.augment import _gaussian_blur as _blur

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common, also when imported
from _common import cpu_model  # noqa: E402

SIZE = 32  # CIFAR: input and output side


def hardware(device: torch.device) -> dict[str, object]:
    info: dict[str, object] = {"cpu": cpu_model(), "cpu_count": os.cpu_count()}
    try:  # other work on a shared machine skews CPU figures: record how busy it was
        info["loadavg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def simclr_v2(strength: float) -> v2.Compose:
    """The per-image reference: SimCLR's CIFAR augmentation (Chen et al. 2020, appendix A), torchvision v2."""
    s = strength
    return v2.Compose(
        [
            v2.RandomResizedCrop(SIZE, scale=(0.2, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, min(0.2 * s, 0.5))], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )


class AugmentedImages(Dataset):
    """uint8 images (N, 3, H, W), one transformed view per item."""

    def __init__(self, images: torch.Tensor, transform: v2.Compose) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(self.images[index])  # (3, H, W) uint8 -> (3, 32, 32) float32


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_torchvision(images: torch.Tensor, args: argparse.Namespace, device: torch.device) -> float:
    """Views/s of the per-image pipeline, batches delivered on ``device``; one epoch after a warm-up.

    With ``--workers 0`` the transforms run in this process with one intra-op thread, as they do in
    a DataLoader worker: on a 32x32 image, more threads only add overhead (ColorJitter measured
    2.2 ms with one thread, 12.8 ms with two, on a 2-core Xeon).
    """
    threads = torch.get_num_threads()
    if args.workers == 0:
        torch.set_num_threads(1)
    try:
        return _epoch_rate(images, args, device)
    finally:
        torch.set_num_threads(threads)


def _epoch_rate(images: torch.Tensor, args: argparse.Namespace, device: torch.device) -> float:
    loader = DataLoader(
        AugmentedImages(images, simclr_v2(args.strength)),
        batch_size=args.batch,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        pin_memory=device.type == "cuda",
    )
    for k, batch in enumerate(loader):  # warm-up: starts the workers, first batches
        batch.to(device, non_blocking=True)
        if k >= 1:
            break
    sync(device)
    start = time.perf_counter()
    count = 0
    for batch in loader:
        count += batch.to(device, non_blocking=True).shape[0]
    sync(device)
    return count / (time.perf_counter() - start)


def bench_batch_augment(images: torch.Tensor, args: argparse.Namespace, device: torch.device) -> float:
    """Views/s of BatchAugment over uint8 data already on ``device``; whole passes until >= 0.5 s."""
    aug = BatchAugment(AugmentConfig(size=SIZE, strength=args.strength))
    x = images.to(device)
    generator = torch.Generator(device=device).manual_seed(0)  # draws where the data is
    return _batched_rate(lambda b: aug(b, generator), x, args.batch, device)


def _batched_rate(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int, device: torch.device,
                  min_s: float = 0.5) -> float:
    """Views/s of ``fn`` applied batch by batch to ``x`` (already on ``device``); whole passes until >= min_s."""
    for _ in range(3):  # warm-up: kernels, allocator
        fn(x[:batch])
    sync(device)
    start = time.perf_counter()
    count = 0
    while True:
        for i in range(0, x.shape[0], batch):
            count += fn(x[i : i + batch]).shape[0]
        sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= min_s:
            return count / elapsed


def library_alternatives(images: torch.Tensor, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Views/s of BatchAugment and of the libraries the issue asks to prefer, on the same device and
    data, in ``args.rounds`` interleaved rounds (median per candidate; load on a shared machine
    drifts, so side-by-side rounds give a fairer ratio than one run after another).

    * torchvision v2 ops on device tensors, one image at a time: the v2 transforms draw one set of
      random parameters per call, so per-sample parameters (what SimCLR needs) mean one call per image.
    * torchvision v2 on the whole batch in one call: fast, but every image of the batch gets the
      *same* crop, flip and jitter - not the augmentation SimCLR needs; shown as the upper bound of
      what batching v2 could give.
    * kornia's ``AugmentationSequential`` (per-sample crop, flip, jitter factors and coins, batched),
      when kornia is installed (it is not a dependency of sslsweep). One difference: kornia's
      ``ColorJitter`` draws one order of the four jitter ops per call, BatchAugment and torchvision
      one per image.
    """
    x = images.to(device)
    ref = simclr_v2(args.strength)
    aug = BatchAugment(AugmentConfig(size=SIZE, strength=args.strength))
    generator = torch.Generator(device=device).manual_seed(0)
    n_loop = min(x.shape[0], 1024)  # one call per image is slow: fewer images are enough to time it
    candidates: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]] = {
        "BatchAugment (sslsweep)": (lambda b: aug(b, generator), x),
        "torchvision v2 on device, per image": (lambda b: torch.stack([ref(img) for img in b]), x[:n_loop]),
        "torchvision v2 on device, one draw per batch (not per-sample)": (ref, x),
    }
    try:
        import kornia.augmentation as K
    except ImportError:
        print("kornia is not installed: its figure is skipped (pip install kornia)")
    else:
        s = args.strength
        kaug = K.AugmentationSequential(
            K.RandomResizedCrop((SIZE, SIZE), scale=(0.2, 1.0), cropping_mode="resample"),  # batched; faster
            #   than the default "slice" here (7.7k vs 6.1k views/s on 2 CPU cores)
            K.RandomHorizontalFlip(),
            K.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, min(0.2 * s, 0.5), p=0.8),
            K.RandomGrayscale(p=0.2),
        ).to(device)
        candidates[f"kornia {_version('kornia')} AugmentationSequential, per-sample"] = (
            lambda b: kaug(b.float().div_(255)), x)
    rates: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(args.rounds):
        for name, (fn, data) in candidates.items():
            rates[name].append(_batched_rate(fn, data, args.batch, device))
    return {name: statistics.median(r) for name, r in rates.items()}


def _version(module: str) -> str:
    import importlib

    return getattr(importlib.import_module(module), "__version__", "?")


def time_per_call(fn: Callable[[], object], device: torch.device, repeats: int = 20) -> float:
    """Milliseconds per call of ``fn`` after a warm-up, waiting for the device at both ends."""
    for _ in range(3):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats * 1e3


def stage_times(images: torch.Tensor, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Milliseconds per batch of each stage of BatchAugment (blur switched on to time it too)."""
    aug = BatchAugment(AugmentConfig(size=SIZE, strength=args.strength, blur_p=0.5))
    x = images[: args.batch].to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    n, _, height, width = x.shape
    params = aug.make_params(n, height, width, generator=generator, device=device)
    xf = x.float().div_(255)
    stages: dict[str, Callable[[], object]] = {
        "make_params": lambda: aug.make_params(n, height, width, generator=generator, device=device),
        "crop_flip": lambda: aug._crop_flip(xf, params),
        "color_jitter": lambda: aug._color_jitter(xf, params),
        "blur": lambda: _blur(xf, params.sigma, aug.cfg.blur_kernel),
        "all (with blur)": lambda: aug(x, generator),
    }
    return {name: round(time_per_call(fn, device), 3) for name, fn in stages.items()}


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2048, help="images per pass (default 2048)")
    parser.add_argument("--batch", type=int, default=512, help="batch size (default 512)")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="where BatchAugment runs"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=max(0, (os.cpu_count() or 1) - 2),
        help="DataLoader workers for torchvision (default: cpu_count - 2, min 0)",
    )
    parser.add_argument("--strength", type=float, default=0.5, help="colour distortion strength s")
    parser.add_argument("--stages", action="store_true", help="also time each stage of BatchAugment")
    parser.add_argument("--json", default=None, help="also write the JSON line to $OUT/<name> when $OUT is set")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of --libraries (default 5)")
    parser.add_argument("--libraries", action="store_true",
                        help="also time torchvision v2 on device tensors and kornia (if installed) on --device")
    parser.add_argument("--smoke", action="store_true", help="256 images, batch 128, no workers, 1 round (seconds)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.n, args.batch, args.workers, args.rounds = 256, 128, 0, 1
    for name in ("n", "batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} = {getattr(args, name)}, but must be >= 1")
    if args.workers < 0:
        parser.error(f"--workers = {args.workers}, but must be >= 0")
    device = torch.device(args.device)

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.n, 3, SIZE, SIZE), dtype=torch.uint8, generator=g)  # CIFAR-sized
    hw = hardware(device)
    print(f"hardware: {hw}")
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}; n={args.n} batch={args.batch}")

    ours = bench_batch_augment(images, args, device)
    print(f"{'BatchAugment on ' + str(device):<45} {ours:12,.0f} views/s")
    ref = bench_torchvision(images, args, device)
    print(f"{f'torchvision v2 per image, {args.workers} workers':<45} {ref:12,.0f} views/s")
    print(f"ratio: {ours / ref:.1f}x")
    libs = library_alternatives(images, args, device) if args.libraries else None
    if libs is not None:
        mine = libs["BatchAugment (sslsweep)"]
        print(f"side by side, median of {args.rounds} interleaved rounds:")
        for name, rate in libs.items():
            print(f"  {name:<62} {rate:10,.0f} views/s  (BatchAugment / this: {mine / rate:.2f}x)")
    stages = stage_times(images, args, device) if args.stages else None
    if stages is not None:
        print(f"ms per batch of {args.batch}: {stages}")

    result: dict[str, object] = {
        "benchmark": "bench_augment",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **hw,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": str(device),
        "n": args.n,
        "batch": args.batch,
        "workers": args.workers,
        "strength": args.strength,
        "batch_augment_views_per_s": round(ours, 1),
        "torchvision_views_per_s": round(ref, 1),
        "ratio": round(ours / ref, 2),
    }
    if stages is not None:
        result["stage_ms_per_batch"] = stages
    if libs is not None:
        result["library_views_per_s"] = {k: round(v, 1) for k, v in libs.items()}
    print(json.dumps(result))
    if args.json and os.environ.get("OUT"):
        Path(os.environ["OUT"]).mkdir(parents=True, exist_ok=True)
        (Path(os.environ["OUT"]) / args.json).write_text(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main()
