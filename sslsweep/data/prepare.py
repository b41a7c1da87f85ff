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

if TYPE_CHECKING:
    from sslsweep.config import DatasetConfig

__all__ = ["Prepared", "class_names", "fingerprint", "prepare", "stream_fingerprint"]
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


def stream_fingerprint(cfg: DatasetConfig, index: StreamIndex, labels: np.ndarray) -> str:
    """The fingerprint of streamed data, computed without decoding it: ``stream-`` + sha256 of the
    source files' identities (path or URI, size, modification time, S3 ETag: the decode cache's
    key), the stored shape and mode, and the labels. It differs from the in-memory fingerprint of
    the same data (that one hashes the pixels): a sweep resumed under another residency class
    is refused as 'the dataset changed'."""
    h = hashlib.sha256()
    h.update(source_key(cfg, index.files if index.kind == "parquet" else [str(cfg.path)]
                        + ([str(cfg.test_path)] if cfg.test_path else [])).encode())
    h.update(repr((index.shape, index.mode)).encode())
    h.update(np.ascontiguousarray(labels).tobytes())
    return "stream-" + h.hexdigest()[:25]


def _prepare_stream(cfg: DatasetConfig) -> Prepared:
    index, labels, names, n_test = build_index(cfg)
    splits = make_splits(labels, cfg, n_external_test=n_test)
    return Prepared(images=None, labels=labels, splits=splits, classes=class_names(names, labels),
                    fingerprint=stream_fingerprint(cfg, index, labels), hflip=cfg.hflip, residency="stream",
                    stream=index, stream_buffer=cfg.stream_buffer, stream_workers=cfg.stream_workers)


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
    plan (a resumed sweep keeps the class its fingerprint was made with: :func:`stream_fingerprint`)."""
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
    return Prepared(images=np.ascontiguousarray(images), labels=labels, splits=splits,
                    classes=class_names(main.classes, labels), fingerprint=fingerprint(images, labels),
                    hflip=cfg.hflip, residency=residency)
