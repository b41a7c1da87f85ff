"""Helpers shared by the benchmarks: hardware description, timing, result lines.

Nothing here imports Ray, Optuna or Hydra, so the GPU-side benchmarks (throughput, packing,
e2e_gpu) run on a machine that has only torch, torchvision, numpy, pyarrow, scikit-learn and
omegaconf (the last one because ``sslsweep.config`` imports it).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout that is not installed
    sys.path.insert(0, str(ROOT))
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: Any = None) -> dict[str, Any]:
    """CPU model and count, GPU name (when ``device`` is CUDA, or any visible GPU), torch versions."""
    info: dict[str, Any] = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "python": platform.python_version()}
    try:  # other work on a shared machine skews CPU figures: record how busy it was
        info["loadavg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    try:
        import torch
        import torchvision

        info["torch"] = torch.__version__
        info["torchvision"] = torchvision.__version__
        if torch.cuda.is_available():
            idx = device.index if device is not None and getattr(device, "type", "") == "cuda" and device.index else 0
            info["gpu"] = torch.cuda.get_device_name(idx)
            info["gpu_count"] = torch.cuda.device_count()
        else:
            info["gpu"] = None
    except ImportError:
        pass
    return info


def print_hardware(hw: dict[str, Any]) -> None:
    gpu = hw.get("gpu") or "none"
    print(f"hardware: CPU {hw.get('cpu')} x{hw.get('cpu_count')}; GPU {gpu}; "
          f"torch {hw.get('torch')}, torchvision {hw.get('torchvision')}, python {hw.get('python')}; "
          f"load average {hw.get('loadavg_1m')}", flush=True)


def sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize(device)


def median(xs: Iterable[float]) -> float:
    xs = list(xs)
    return float(statistics.median(xs)) if xs else float("nan")


def emit(result: dict[str, Any], out_name: str | None = None) -> dict[str, Any]:
    """Print the final JSON line; with $OUT set (the GPU machine), also write ``$OUT/<out_name>``."""
    line = json.dumps(result, default=_jsonable)
    print(line, flush=True)
    out = os.environ.get("OUT")
    if out and out_name:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / out_name).write_text(line + "\n")
    return result


def _jsonable(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def rnd(x: float, nd: int = 1) -> float:
    return round(float(x), nd)


class Timer:
    """``with Timer() as t: ...`` then ``t.s``."""

    def __enter__(self) -> "Timer":
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.s = time.perf_counter() - self.t0


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def random_prepared(n_train: int, channels: int = 3, size: int = 32, seed: int = 0, num_classes: int = 10):
    """A :class:`~sslsweep.data.Prepared` of random uint8 images with exactly
    ``n_train`` images in the train pool (val and test get a token 2% each), for throughput."""
    import numpy as np

    from sslsweep.data import Prepared, Splits

    k = max(1, n_train // 50)
    n = n_train + 2 * k
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, channels, size, size), dtype=np.uint8)
    labels = rng.integers(0, num_classes, size=n).astype(np.int64)
    idx = np.arange(n)
    splits = Splits(train=idx[:n_train], val=idx[n_train:n_train + k], test=idx[n_train + k:])
    return Prepared(images=images, labels=labels, splits=splits, classes=[str(c) for c in range(num_classes)],
                    fingerprint="random", hflip=True)
