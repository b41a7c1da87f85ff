"""What a sweep's manifest records about where and how it ran: times, versions, commit, hardware."""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import ray
import torch

from sslsweep import __version__


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def process_age_s() -> float | None:
    """Seconds since this process started, from Linux's ``/proc/self/stat`` (its start time in
    clock ticks since boot) and the boot-time clock; None where either is missing."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of proc(5); fields[0] is field 3
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except Exception:
        return None


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "sslsweep": __version__}
    for pkg in ("torch", "torchvision", "ray", "optuna", "pyarrow", "hydra-core", "scikit-learn", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def hardware() -> dict[str, Any]:
    try:  # a broken driver must not end a sweep whose data is prepared: the list stays empty
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - CUDA raises RuntimeError and others
        gpus = []
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cluster = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU", "memory")}
    return {"cpu": cpu, "cpus": os.cpu_count(), "gpus": gpus, "host": platform.node(),
            "ray_nodes": len(ray.nodes()), "ray_resources": cluster}
