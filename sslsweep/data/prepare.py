"""The data stage's entry point: load (decoding once, cached), resize and split a dataset into the
:class:`Prepared` arrays every trial shares."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from sslsweep.data.cache import load_cached
from sslsweep.data.decode import resize
from sslsweep.data.sources import LOADERS, align_test_labels, load_digits, source_files
from sslsweep.data.splits import Splits, make_splits

if TYPE_CHECKING:
    from sslsweep.config import DatasetConfig


@dataclass
class Prepared:
    """Everything a trial needs, built once on the driver and shipped through the object store."""

    images: np.ndarray  # (N, C, H, W) uint8: train pool, val and test together
    labels: np.ndarray  # (N,) int64
    splits: Splits
    classes: list[str]
    fingerprint: str
    hflip: bool

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


def fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """sha256 of the decoded pixels and labels: two sweeps compare only if their fingerprints match."""
    h = hashlib.sha256()
    h.update(repr(images.shape).encode())
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(labels).tobytes())
    return h.hexdigest()[:32]


def class_names(names: list[str], labels: np.ndarray) -> list[str]:
    """The source's class names if they cover every label, else the ids ``0..max(labels)``."""
    return names if len(names) > int(labels.max()) else [str(c) for c in range(int(labels.max()) + 1)]


def prepare(cfg: DatasetConfig) -> Prepared:
    """Load, decode (cached), resize and split the dataset named by ``cfg``."""
    if cfg.name == "digits":
        main, test = load_digits(), None
    else:
        loader = LOADERS[cfg.name]
        train_path, test_path = source_files(cfg)
        main = load_cached(cfg, train_path, loader)
        test = load_cached(cfg, test_path, loader) if test_path else None
        if test is not None and cfg.name == "imagefolder":
            test = replace(test, labels=align_test_labels(main.classes, test.classes, test.labels, test_path),
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
                    hflip=cfg.hflip)
