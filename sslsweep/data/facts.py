"""What the data-dependent rules need to know about a dataset, read without decoding it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sslsweep.data.sources import class_names, first_image, read_labelled
from sslsweep.data.splits import make_splits

if TYPE_CHECKING:
    from sslsweep.config import DatasetConfig


@dataclass(frozen=True)
class DataFacts:
    """Facts about a dataset as :func:`sslsweep.data.prepare` would split it, for the rules that
    need the data (:func:`sslsweep.validate.validate_against_data`). Counts, never rules: any
    dataset that reads gives facts, however small (0 images in a split, 1 class).

    The labelled set is the train source's rows followed by the external test set's rows, as in
    :class:`~sslsweep.data.Prepared`. Per-class counts are dicts keyed by class name, in class-id
    order, holding every class *present* in the labelled set (at least one image): a class folder
    without images, or a Parquet class id no row uses, is in ``classes`` but not in the counts.
    The split dicts have the same keys as ``class_counts``, with 0 where a split lacks a class.

    Args:
        classes: class names by id, as ``Prepared.classes`` (folder names, or ``'0'``..``'k'`` for
            integer labels 0..k). Its length is the classifier's output size.
        class_counts: images per class in the whole labelled set (train source + external test
            set), before ``dataset.max_images``.
        train_counts: images per class in the train split: the pretraining pool, from which
            the label budgets are drawn.
        val_counts: images per class in the validation split.
        test_counts: images per class in the test split: the external test set if there is one,
            else ``test_fraction`` of the main rows kept.
        has_test_set: the dataset has a test set of its own (``dataset.test_path``, or
            ``test.parquet`` beside ``train.parquet``); without one the test split is
            ``test_fraction`` of the main rows, and empty if that is 0.
        image_shape: (C, H, W) of the first image, decoded alone as ``prepare`` decodes it: C is 1
            (grey) or 3 (RGB), H x W is ``dataset.image_size`` squared if set, else the file's own
            size (digits: (1, 8, 8)). None if the source holds no image. Without ``image_size``
            other images may have other sizes: ``prepare`` then fails naming the first odd one.

    Properties (derived from the counts):
        n_images: rows of the labelled set, before ``max_images``: the ``n`` of the empty-split
            message "leaves the train split empty (n images, ...)", or of "m of n images".
        n_train, n_val, n_test: split sizes (after ``max_images``); any may be 0 on tiny data.
        num_classes: classes present in the labelled set (``len(class_counts)``).
        min_class_count: images of the smallest class present in the train split; 0 if the
            train split is empty.

    Example:
        >>> facts = read_facts(DatasetConfig())  # digits  # doctest: +SKIP
        >>> facts.n_images, facts.num_classes, facts.image_shape  # doctest: +SKIP
        (1797, 10, (1, 8, 8))
    """

    classes: tuple[str, ...]
    class_counts: dict[str, int]
    train_counts: dict[str, int]
    val_counts: dict[str, int]
    test_counts: dict[str, int]
    has_test_set: bool
    image_shape: tuple[int, int, int] | None

    @property
    def n_images(self) -> int:
        return sum(self.class_counts.values())

    @property
    def n_train(self) -> int:
        return sum(self.train_counts.values())

    @property
    def n_val(self) -> int:
        return sum(self.val_counts.values())

    @property
    def n_test(self) -> int:
        return sum(self.test_counts.values())

    @property
    def num_classes(self) -> int:
        return len(self.class_counts)

    @property
    def min_class_count(self) -> int:
        return min((n for n in self.train_counts.values() if n > 0), default=0)


def _counts(labels: np.ndarray, classes: list[str], present: np.ndarray) -> dict[str, int]:
    """Images per class name of ``labels``, for the class ids in ``present``."""
    counts = np.bincount(labels, minlength=len(classes))
    return {classes[c]: int(counts[c]) for c in present}


def read_facts(cfg: DatasetConfig) -> DataFacts:
    """The :class:`DataFacts` of the dataset ``cfg`` names, from its labels, its file listing or
    Parquet metadata and its first image: one image is decoded, not the dataset.

    Raises :class:`~sslsweep.rules.ConfigError` only for data that cannot be read (a path that
    does not exist, a missing column, labels that are not class ids >= 0, an undecodable first
    image), never for data too small for a sweep."""
    labels, test_labels, names = read_labelled(cfg)
    all_labels = labels if test_labels is None else np.concatenate([labels, test_labels])
    splits = make_splits(all_labels, cfg, n_external_test=0 if test_labels is None else len(test_labels))
    classes = class_names(names, all_labels) if len(all_labels) else names
    present = np.unique(all_labels)
    first = first_image(cfg)
    return DataFacts(
        classes=tuple(classes),
        class_counts=_counts(all_labels, classes, present),
        train_counts=_counts(all_labels[splits.train], classes, present),
        val_counts=_counts(all_labels[splits.val], classes, present),
        test_counts=_counts(all_labels[splits.test], classes, present),
        has_test_set=test_labels is not None,
        image_shape=None if first is None else (int(first.shape[0]), int(first.shape[1]), int(first.shape[2])),
    )
