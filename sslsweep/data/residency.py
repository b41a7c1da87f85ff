"""Where a trial keeps the images: chosen by size, before any image is decoded or Ray starts.

``dataset.residency``:

- ``device``: the decoded uint8 array is copied onto the trial's device once (the fastest path;
  on a GPU it costs ``estimate`` of the trial's GPU share, on the CPU of its host memory).
- ``host``: the decoded array stays in the trial's host memory (pinned on CUDA); each batch is
  gathered on the host and moved to the device per step.
- ``stream``: nothing is decoded on the driver; every trial reads the shards (Parquet row groups or
  image files) while it trains, with memory O(batch + shuffle buffer) (:mod:`sslsweep.data.stream`).
- ``auto``: ``device`` if the estimate fits the device limit, else ``host`` if it fits the host
  limit, else ``stream``.

The estimate is ``images x C x H x W`` bytes (uint8) from :class:`~sslsweep.data.DataFacts`:
every image of the labelled set (train source + test source) at the decoded size.

The limits, and where each is checked:

- host: ``dataset.host_memory_gb``, else :data:`HOST_SHARE` of the memory available on the driver
  when the sweep starts (``psutil``, else ``os.sysconf``). In-memory data passes through the
  driver, which peaks at ~3.4x the array while decoding (measured, issue 12), and each node's
  object store holds one more copy: the share leaves room for both.
- device: ``dataset.device_memory_gb`` if set; else on a GPU (``resources.gpu > 0``) the GPU
  memory ``nvidia-smi`` reports on the driver x ``resources.gpu``, when the driver has a GPU to
  see; else unknown on the driver. On the CPU (``resources.gpu = 0``) the device is the host, and
  the host limit applies. Where the driver cannot see the GPU, ``auto`` plans ``device`` and the
  trial decides against its real GPU share (:func:`fits_device`): ``host`` if it does not fit;
  an explicit ``device`` that does not fit fails the trial with the same one-line message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sslsweep.rules import ConfigError

try:  # optional: counts reclaimable page cache as available, where os.sysconf does not
    import psutil
except ImportError:  # pragma: no cover
    psutil = None

if TYPE_CHECKING:
    from sslsweep.config import DatasetConfig
    from sslsweep.data.facts import DataFacts

RESIDENCIES = ("auto", "device", "host", "stream")
HOST_SHARE = 0.25  # of the driver's available memory: decoding peaks at ~3.4x the array
GB = 1024 ** 3


@dataclass(frozen=True)
class ResidencyPlan:
    """The residency a sweep will use, and why.

    Args:
        residency: ``device``, ``host`` or ``stream`` (never ``auto``).
        estimate: decoded bytes of the whole labelled set (uint8).
        device_limit: bytes of a trial's device share, or None where the driver cannot tell.
        host_limit: bytes the in-memory path may use on the host.
        reason: one line naming the estimate and the limit that decided.
    """

    residency: str
    estimate: int
    device_limit: int | None
    host_limit: int
    reason: str


def decoded_bytes(facts: DataFacts) -> int:
    """Bytes of the decoded uint8 array (N, C, H, W) of every image the facts count."""
    if facts.image_shape is None:
        return 0
    c, h, w = facts.image_shape
    return facts.n_images * c * h * w


def available_memory() -> int:
    """Bytes of memory available to new processes on this machine."""
    if psutil is not None:
        return int(psutil.virtual_memory().available)
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def gpu_memory() -> int | None:
    """Total memory of the driver's first GPU as ``nvidia-smi`` reports it, or None without one
    (no torch import: the data rules run before torch is loaded)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return int(float(out.split()[0]) * 1024 ** 2)  # MiB
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def host_limit(cfg: DatasetConfig) -> int:
    if cfg.host_memory_gb is not None:
        return int(cfg.host_memory_gb * GB)
    return int(available_memory() * HOST_SHARE)


def device_limit(cfg: DatasetConfig, gpu_share: float, gpu_total: int | None) -> int | None:
    """A trial's device memory for the array: ``dataset.device_memory_gb``, else the GPU's memory x
    ``resources.gpu`` (None if unknown here), else (CPU trials) the host limit."""
    if cfg.device_memory_gb is not None:
        return int(cfg.device_memory_gb * GB)
    if gpu_share > 0:
        return None if gpu_total is None else int(gpu_total * min(gpu_share, 1.0))
    return host_limit(cfg)


def _gib(n: int | None) -> str:
    """A size for people: GiB, or MiB below one GiB."""
    if n is None:
        return "unknown"
    return f"{n / GB:.2f} GiB" if n >= GB else f"{n / 1024 ** 2:.2f} MiB"


def plan_residency(cfg: DatasetConfig, facts: DataFacts, *, gpu_share: float = 0.0,
                   gpu_total: int | None = None) -> ResidencyPlan:
    """Choose (``auto``) or check a residency; raises :class:`ConfigError` naming
    ``dataset.residency``, the estimate and the limit when the one asked for cannot fit."""
    est = decoded_bytes(facts)
    host, dev = host_limit(cfg), device_limit(cfg, gpu_share, gpu_total)
    where = "GPU share" if gpu_share > 0 else "device (CPU) memory"
    want = cfg.residency
    if want == "stream":
        return ResidencyPlan("stream", est, dev, host, f"asked for; decoded size {_gib(est)}")
    if want == "device" and dev is not None and est > dev:
        raise ConfigError("dataset.residency", want, f"the decoded images need {_gib(est)}, more than the trial's "
                          f"{where} ({_gib(dev)}): use host or stream, or auto")
    if want in ("device", "host") and est > host:
        raise ConfigError("dataset.residency", want, f"the decoded images need {_gib(est)}, more than the host "
                          f"memory cap ({_gib(host)}, dataset.host_memory_gb): use stream, or auto")
    if want in ("device", "host"):
        return ResidencyPlan(want, est, dev, host, f"asked for; decoded size {_gib(est)}")
    if est <= host and (dev is None or est <= dev):
        why = (f"{_gib(est)} decoded fits the {where} ({_gib(dev)})" if dev is not None else
               f"{_gib(est)} decoded fits the host cap ({_gib(host)}); the trial checks its GPU share")
        return ResidencyPlan("device", est, dev, host, why)
    if est <= host:
        return ResidencyPlan("host", est, dev, host, f"{_gib(est)} decoded exceeds the {where} ({_gib(dev)}) "
                             f"but fits the host cap ({_gib(host)})")
    return ResidencyPlan("stream", est, dev, host, f"{_gib(est)} decoded exceeds the host cap ({_gib(host)})")


def fits_device(estimate: int, free_bytes: int, share: float, total_bytes: int) -> bool:
    """In the trial, on CUDA: whether the array fits both the trial's share of the GPU
    (``share`` x total) and the memory free now (other trials may share the GPU)."""
    return estimate <= min(free_bytes, int(total_bytes * min(share, 1.0)))
