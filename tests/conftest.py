"""Shared fixtures: one local Ray for the whole session (a Ray start costs ~10 s), tiny data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance shared by every test that runs Tune (2 CPUs, no dashboard)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def _no_journal_paths_left(monkeypatch: pytest.MonkeyPatch) -> None:
    """The searcher's class-level map of journal paths starts empty in every test: a sweep run
    in-process by one test must not point another test's restored searcher at its journal."""
    from sslsweep.search.searcher import HonestOptunaSearch

    monkeypatch.setattr(HonestOptunaSearch, "journal_paths", {})


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """A trial run in-process sets torch's thread count for its process: give the next test the
    count it had, so no test depends on which ran before it."""
    import torch

    n = torch.get_num_threads()
    yield
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


@pytest.fixture()
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty decode cache, so tests never see each other's decoded arrays."""
    d = tmp_path / "cache"
    monkeypatch.setenv("SSLSWEEP_CACHE", str(d))
    return d


def make_images(n: int, classes: int = 3, size: int = 8, channels: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tiny class-dependent uint8 images (N, C, H, W) and balanced labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    base = np.linspace(30, 220, classes)[labels][:, None, None, None]
    images = np.clip(base + rng.normal(0, 20, (n, channels, size, size)), 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def encode_png(image_chw: np.ndarray) -> bytes:
    import io

    from PIL import Image

    arr = image_chw[0] if image_chw.shape[0] == 1 else image_chw.transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()
