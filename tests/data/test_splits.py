"""Splits and label budgets: disjoint, stratified, seeded, nested; empty (not an error) on tiny data."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sslsweep.config import DatasetConfig
from sslsweep.data import label_subset, make_splits


def test_splits_are_disjoint_stratified_and_seeded() -> None:
    """Train/val/test never overlap, cover all rows, keep class proportions, and a seed fixes them."""
    labels = np.repeat(np.arange(4), [100, 200, 300, 400])
    cfg = DatasetConfig(val_fraction=0.1, test_fraction=0.2)
    s = make_splits(labels, cfg)
    parts = [set(s.train), set(s.val), set(s.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert len(s.train) + len(s.val) + len(s.test) == len(labels)
    for idx, share in ((s.test, 0.2), (s.val, 0.1)):
        counts = np.bincount(labels[idx], minlength=4)
        assert np.allclose(counts, np.array([100, 200, 300, 400]) * share, atol=1)
    again = make_splits(labels, cfg)
    assert np.array_equal(again.val, s.val)
    other = make_splits(labels, replace(cfg, split_seed=1))
    assert not np.array_equal(other.val, s.val)


def test_external_test_rows_form_the_test_split() -> None:
    """With a separate test file its rows (appended after the train rows) are exactly the test split."""
    labels = np.concatenate([np.arange(100) % 5, np.arange(20) % 5])
    s = make_splits(labels, DatasetConfig(val_fraction=0.1), n_external_test=20)
    assert s.test.tolist() == list(range(100, 120))
    assert max(s.train.max(), s.val.max()) < 100


def test_too_few_images_give_empty_splits_not_an_error() -> None:
    """Two classes of one image each: the test split takes both (one per class), leaving val and
    train empty, as int64 index arrays; no labels at all gives three empty splits."""
    s = make_splits(np.array([0, 1]), DatasetConfig())
    assert s.test.tolist() == [0, 1] and s.val.tolist() == [] and s.train.tolist() == []
    assert s.val.dtype == s.train.dtype == np.int64
    empty = make_splits(np.zeros(0, dtype=np.int64), DatasetConfig())
    assert (len(empty.train), len(empty.val), len(empty.test)) == (0, 0, 0)


def test_label_subsets_are_nested_balanced_and_identical_across_calls() -> None:
    """1% lies inside 10% inside 100%; each class is represented in proportion; per-class budgets
    take exactly k per class and nest too; the same seed gives the same subset."""
    labels = np.repeat(np.arange(5), 200)
    train = np.arange(1000)
    small = label_subset(labels, train, seed=3, fraction=0.01)
    mid = label_subset(labels, train, seed=3, fraction=0.1)
    full = label_subset(labels, train, seed=3, fraction=1.0)
    assert set(small) <= set(mid) <= set(full) and len(full) == 1000
    assert np.bincount(labels[small]).tolist() == [2] * 5 and np.bincount(labels[mid]).tolist() == [20] * 5
    k1, k5 = (label_subset(labels, train, seed=3, per_class=k) for k in (1, 5))
    assert np.bincount(labels[k5]).tolist() == [5] * 5 and set(k1) <= set(k5)
    assert np.array_equal(label_subset(labels, train, seed=3, fraction=0.1), mid)
    assert not np.array_equal(label_subset(labels, train, seed=4, fraction=0.1), mid)


def test_tiny_fraction_keeps_one_label_per_class() -> None:
    """A budget smaller than one image per class still labels one image of every class."""
    labels = np.repeat(np.arange(3), 10)
    sub = label_subset(labels, np.arange(30), seed=0, fraction=0.01)
    assert np.bincount(labels[sub]).tolist() == [1, 1, 1]
