"""The data stage's entry point: load (decoding once, cached), resize and split a dataset into the
:class:`Prepared` data every trial shares -- the decoded arrays, or (``dataset.residency =
stream``) the index a trial streams the images by."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from sslsweep.data.cache import load_cached, source_key
from sslsweep.data.decode import resize
from sslsweep.data.facts import read_facts
from sslsweep.data.residency import plan_residency
from sslsweep.data.sources import LOADERS, align_test_labels, class_names, load_digits, source_files
from sslsweep.data.splits import Splits, make_splits
from sslsweep.data.stream import StreamIndex, build_index
from sslsweep.rules import ConfigError

if TYPE_CHECKING:
    from sslsweep.config import DatasetConfig

__all__ = ["Prepared", "class_names", "fingerprint", "prepare", "source_fingerprint"]
log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """Everything a trial needs, built once on the driver and shipped through the object store.

    In memory (``images`` set, ``stream`` None) the decoded arrays travel; under ``stream`` only
    the labels, splits and the :class:`~sslsweep.data.stream.StreamIndex` do, and each trial reads
    the images itself. ``residency`` is ``dataset.residency`` as planned on the driver: ``device``,
    ``host``, ``stream``, or ``auto`` for in-memory data whose place the trial chooses against its
    own GPU share (:mod:`sslsweep.data.residency`)."""

    images: np.ndarray | None  # (N, C, H, W) uint8: train pool, val and test together; None when streamed
    labels: np.ndarray  # (N,) int64
    splits: Splits
    classes: list[str]
    fingerprint: str
    hflip: bool
    residency: str = "device"
    stream: StreamIndex | None = None
    stream_buffer: int = 4096
    stream_workers: int = 4
    fingerprint_aliases: tuple[str, ...] = ()  # what older sslsweeps called the same data (a resume accepts them)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        if self.stream is not None:
            return self.stream.shape
        return tuple(self.images.shape[1:])  # type: ignore[union-attr,return-value]

    @property
    def nbytes(self) -> int:
        """Bytes of the decoded array (the in-memory size, whether or not it is in memory)."""
        c, h, w = self.shape
        return len(self.labels) * c * h * w


def fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """sha256 of the decoded pixels and labels: two sweeps compare only if their fingerprints match."""
    h = hashlib.sha256()
    h.update(repr(images.shape).encode())
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(labels).tobytes())
    return h.hexdigest()[:32]


def _source_digest(cfg: DatasetConfig, index: StreamIndex, labels: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(source_key(cfg, index.files if index.kind == "parquet" else [str(cfg.path)]
                        + ([str(cfg.test_path)] if cfg.test_path else [])).encode())
    h.update(repr((index.shape, index.mode)).encode())
    h.update(np.ascontiguousarray(labels).tobytes())
    return h.hexdigest()[:25]


def source_fingerprint(cfg: DatasetConfig, index: StreamIndex, labels: np.ndarray) -> tuple[str, str]:
    """The fingerprint of file-based data (parquet, imagefolder), computed without decoding it, and
    the name older sslsweeps gave it under ``stream``: (``src-`` + d, ``stream-`` + d), d = sha256 of
    the source files' identities (path or URI, size, modification time, S3 ETag: the decode cache's
    key), the stored shape and mode, and the labels. The same data has the same fingerprint
    whether it is streamed or decoded into memory, so a sweep resumes, and sweeps combine, across
    residencies."""
    d = _source_digest(cfg, index, labels)
    return "src-" + d, "stream-" + d


def _memory_fingerprint(cfg: DatasetConfig, images: np.ndarray, labels: np.ndarray) -> tuple[str, tuple[str, ...]]:
    """(fingerprint, aliases) of data decoded into memory: for a file source the streamed path's
    :func:`source_fingerprint` (the pixel hash, what in-memory sweeps were called before, as an
    alias); for digits, or a source the stream index cannot read, the pixel hash alone."""
    pixels = fingerprint(images, labels)
    if cfg.name == "digits":
        return pixels, ()
    try:
        index, index_labels, _, _ = build_index(cfg)
    except (ConfigError, ValueError, OSError) as exc:
        log.info("dataset fingerprint: the pixels' (the source cannot be indexed for streaming: %s)", exc)
        return pixels, ()
    if not np.array_equal(index_labels, labels):  # not the same images in the same order: do not pretend
        return pixels, ()
    return source_fingerprint(cfg, index, labels)[0], (pixels,)


def _prepare_stream(cfg: DatasetConfig) -> Prepared:
    index, labels, names, n_test = build_index(cfg)
    splits = make_splits(labels, cfg, n_external_test=n_test)
    fp, old = source_fingerprint(cfg, index, labels)
    return Prepared(images=None, labels=labels, splits=splits, classes=class_names(names, labels),
                    fingerprint=fp, hflip=cfg.hflip, residency="stream", stream=index,
                    stream_buffer=cfg.stream_buffer, stream_workers=cfg.stream_workers, fingerprint_aliases=(old,))


def planned_residency(cfg: DatasetConfig) -> str:
    """``dataset.residency`` as the driver can plan it without knowing the trial's GPU: ``stream``
    if asked for or if ``auto`` finds the data larger than the host cap, ``host`` if ``auto`` finds
    it larger than ``dataset.device_memory_gb``, else what was asked (``auto``: the trial decides)."""
    if cfg.residency != "auto" or cfg.name == "digits":  # digits (1,797 images of 8x8) always fit
        return cfg.residency
    try:
        facts = read_facts(cfg)
    except (OSError, ValueError):  # unreadable data: the in-memory loader names the file and row, as always
        return "auto"
    # host is planned here only against dataset.device_memory_gb (the GPU is unknown to this
    # call): that cap stands; a device plan is checked again by the trial against its real GPU
    planned = plan_residency(cfg, facts).residency
    return planned if planned in ("stream", "host") else "auto"


def prepare(cfg: DatasetConfig, *, stream: bool | None = None) -> Prepared:
    """Load, decode (cached), resize and split the dataset named by ``cfg``; under ``stream``
    residency, index it instead (nothing decoded). ``stream`` True / False overrides ``auto``'s
    plan (a resumed sweep reads its data the way it started)."""
    residency = planned_residency(cfg) if stream is None else ("stream" if stream else "auto")
    if residency == "stream":
        return _prepare_stream(cfg)
    if cfg.name == "digits":
        main, test = load_digits(), None
    else:
        loader = LOADERS[cfg.name]
        train_path, test_path = source_files(cfg)
        main = load_cached(cfg, train_path, loader)
        test = load_cached(cfg, test_path, loader) if test_path else None
        if test is not None and cfg.name == "imagefolder":
            test = replace(test, labels=align_test_labels(main.classes, test.classes, test.labels, str(test_path)),
                           classes=list(main.classes))
    images, labels = main.images, main.labels
    if test is not None:
        if test.images.shape[1:] != images.shape[1:]:
            raise ValueError(f"dataset.test_path: test images are {test.images.shape[1:]}, train images "
                             f"{images.shape[1:]}; set dataset.image_size to resize both")
        images = np.concatenate([images, test.images])
        labels = np.concatenate([labels, test.labels])
    if cfg.image_size is not None:
        images = resize(images, cfg.image_size)
    splits = make_splits(labels, cfg, n_external_test=0 if test is None else len(test.labels))
    images = np.ascontiguousarray(images)
    fp, aliases = _memory_fingerprint(cfg, images, labels)
    return Prepared(images=images, labels=labels, splits=splits, classes=class_names(main.classes, labels),
                    fingerprint=fp, hflip=cfg.hflip, residency=residency, fingerprint_aliases=aliases)
