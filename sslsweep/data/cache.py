"""The decoded-array cache: a source is decoded once, and later sweeps over the same file with the
same decoding options read ``$SSLSWEEP_CACHE/<dataset>-<key>.npz`` (default ``~/.cache/sslsweep``)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import pyarrow.fs as pafs

from sslsweep.data.sources import ImageSet, Source, etag, file_info, shards
from sslsweep.rules import ConfigError
from sslsweep.storage import atomic_local_file, is_remote, local_path

if TYPE_CHECKING:
    from sslsweep.config import DatasetConfig


# Bumped when decoding changes its pixels: 2 = shorter side resized + centre crop (1 squashed to a square).
DECODE_VERSION = 2


def cache_dir() -> Path:
    return Path(os.environ.get("SSLSWEEP_CACHE", Path.home() / ".cache" / "sslsweep"))


def source_key(cfg: DatasetConfig, paths: Sequence[str]) -> str:
    """Key of the decoded-array cache: the decoding options and each source file's identity
    (resolved path or URI, size, modification time), so a changed file is decoded again."""
    h = hashlib.sha256()
    h.update(repr((cfg.name, cfg.image_column, cfg.label_column, cfg.image_size, DECODE_VERSION)).encode())
    for p in paths:
        if is_remote(p):  # one object (a directory was resolved to its train/test files before)
            info = file_info(p)
            if info.type != pafs.FileType.File:
                raise ConfigError("dataset.path", p, "not a file")
            h.update(f"{p}:{info.size}:{info.mtime_ns}:{etag(p)}".encode())
            continue
        p = os.path.expanduser(local_path(p))  # as sslsweep.storage.resolve reads it
        for f in sorted(Path(p).rglob("*")) if Path(p).is_dir() else [Path(p)]:
            if f.is_file():
                st = f.stat()
                h.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def load_cached(cfg: DatasetConfig, path: Source, loader: Callable[[Source, DatasetConfig], ImageSet]) -> ImageSet:
    """Decode ``path`` (a file, a folder or a split's shards) once: later calls with the same files
    and options read the cached arrays."""
    cache = cache_dir() / f"{cfg.name}-{source_key(cfg, shards(path))}.npz"
    if cache.exists():
        try:
            with np.load(cache, allow_pickle=False) as z:
                return ImageSet(images=z["images"], labels=z["labels"], classes=[str(c) for c in z["classes"]])
        except Exception:  # a torn cache file is rebuilt, never trusted
            cache.unlink(missing_ok=True)
    data = loader(path, cfg)
    with atomic_local_file(cache) as tmp:  # concurrent sweeps may write the same key: never half a file
        np.savez(tmp, images=data.images, labels=data.labels, classes=np.asarray(data.classes))
    return data
