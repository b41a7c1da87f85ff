"""Typical label selection (TypiClust) on features with known clusters: what it must pick."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from sslsweep.data import typical_subset
from sslsweep.data.selection import typicality

CLASSES = 10
DIM = 16


def blobs(sizes: list[int], n_outliers: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features of one tight Gaussian blob per class (centre 10 x a unit axis, sd 0.5; after
    L2-normalising, blobs lie ~1.4 apart and their points ~0.3 apart), then ``n_outliers`` far
    points (norm 50, random directions) labelled -1. Returns (features, classes)."""
    rng = np.random.default_rng(seed)
    feats, classes = [], []
    for c, size in enumerate(sizes):
        centre = np.zeros(DIM)
        centre[c] = 10.0
        feats.append(centre + rng.normal(0, 0.5, (size, DIM)))
        classes += [c] * size
    far = rng.normal(0, 1, (n_outliers, DIM))
    feats.append(50 * far / np.linalg.norm(far, axis=1, keepdims=True))
    classes += [-1] * n_outliers
    order = rng.permutation(len(classes))  # the blobs are not in row order
    return np.concatenate(feats)[order], np.asarray(classes)[order]


def coverage(classes: np.ndarray, rows: np.ndarray) -> int:
    return len(set(classes[rows].tolist()) - {-1})


def test_one_label_per_class_covers_every_class_and_beats_a_uniform_draw() -> None:
    """At a budget of one label per class, typical selection takes one point of every blob and no
    outlier, at every seed; a seeded uniform draw of as many rows misses classes on average."""
    typical, uniform = [], []
    for seed in range(20):
        feats, classes = blobs([30, 45, 60, 35, 50, 40, 55, 30, 65, 40], seed=seed)
        rows = typical_subset(feats, CLASSES, seed=seed)
        assert len(rows) == CLASSES and len(set(rows.tolist())) == CLASSES
        assert -1 not in classes[rows], f"seed {seed}: an outlier was chosen"
        typical.append(coverage(classes, rows))
        uniform.append(coverage(classes, np.random.default_rng(seed).choice(len(feats), CLASSES, replace=False)))
    assert typical == [CLASSES] * 20
    assert sum(u < CLASSES for u in uniform) > 10  # it misses a class in most seeds (~6.5 of 10 covered)
    assert np.mean(typical) > np.mean(uniform)


def test_the_point_chosen_in_a_cluster_is_its_densest() -> None:
    """Typicality is 1 / mean distance to the K nearest neighbours: on a line of points packed
    at one end, the chosen point is in the packed end; the single outlier scores lowest."""
    x = np.array([[0.0], [0.1], [0.2], [0.3], [1.0], [2.0], [5.0]])
    score = typicality(x, k_nn=2)
    # point 1 (0.1): neighbours 0.0 and 0.2 at 0.1 each -> 1 / 0.1 = 10, the highest
    assert int(np.argmax(score)) == 1 and score[1] == pytest.approx(10.0)
    assert int(np.argmin(score)) == 6
    assert score[6] == pytest.approx(1 / np.mean([3.0, 4.0]))


def test_budgets_above_the_cluster_cap_take_from_the_largest_clusters_first() -> None:
    """The paper's rule for large budgets: with k capped below the budget, picks go round the
    clusters largest first; clusters of at most min_cluster_size points are left for last."""
    feats, classes = blobs([40, 30, 20, 10, 4], n_outliers=0)
    rows = typical_subset(feats, 7, seed=0, max_clusters=5)
    # 4 clusters of > 5 points: round 1 takes one from each, round 2 from the largest three
    assert np.bincount(classes[rows], minlength=5).tolist() == [2, 2, 2, 1, 0]


def test_same_seed_same_subset_and_the_whole_pool_at_full_budget() -> None:
    feats, _ = blobs([20] * CLASSES)
    assert np.array_equal(typical_subset(feats, 12, seed=3), typical_subset(feats, 12, seed=3))
    assert np.array_equal(typical_subset(feats, len(feats), seed=0), np.arange(len(feats)))


@pytest.mark.parametrize("n", [0, 205, 2.5])
def test_a_count_outside_the_pool_is_refused_with_the_value_and_the_rule(n: float) -> None:
    feats, _ = blobs([20] * CLASSES)  # 204 rows
    with pytest.raises(ValueError, match=rf"n = {n}: must be an integer in \[1, 204\]"):
        typical_subset(feats, n, seed=0)  # type: ignore[arg-type]


def test_selection_takes_features_and_a_count_never_labels() -> None:
    """The signature is the guarantee: nothing that could carry a label goes in. Its result is the
    same whatever labels the rows would have."""
    params = list(inspect.signature(typical_subset).parameters)
    assert params == ["features", "n", "seed", "k_nn", "max_clusters", "min_cluster_size"]
    feats, _ = blobs([20] * CLASSES)
    chosen = typical_subset(feats.copy(), CLASSES, seed=1)
    chosen_again = typical_subset(feats.copy(), CLASSES, seed=1)  # no hidden state between calls
    assert np.array_equal(chosen, chosen_again)
