"""Splits and label budgets: pure functions of the labels and a seed, so every method, every trial
and every node computes the same ones. A set too small to split gives empty splits, never an
error here: the rules that say so in one line live in :mod:`sslsweep.validate`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sslsweep.config import DatasetConfig


@dataclass
class Splits:
    """Indices into the full array: ``train`` is the unlabeled pretraining pool (its labels are
    used only for label-budget subsets at evaluation), ``val`` selects, ``test`` confirms."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def _sorted_union(parts: list[np.ndarray], idx: np.ndarray) -> np.ndarray:
    """The sorted concatenation of ``parts``; empty (``idx``'s dtype) when there are none."""
    return np.sort(np.concatenate(parts)) if parts else idx[:0]


def _stratified_take(labels: np.ndarray, idx: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A class-stratified random ``fraction`` of ``idx`` (at least one per class)."""
    taken = []
    for c in np.unique(labels[idx]):
        members = rng.permutation(idx[labels[idx] == c])
        taken.append(members[: max(1, int(round(fraction * len(members))))])
    return _sorted_union(taken, idx)


def make_splits(labels: np.ndarray, cfg: DatasetConfig, n_external_test: int = 0) -> Splits:
    """Seeded, class-stratified train/val/test split of ``labels``.

    With an external test set (``n_external_test`` > 0) its rows follow the main rows in the
    array and form the test split; otherwise ``test_fraction`` of the main rows does.
    ``max_images`` first keeps a class-balanced subset of the main rows. Every class keeps at
    least one image in each stratified split it reaches, so tiny classes can leave later splits
    (val, then train) empty: the result is then empty splits, not an error.
    """
    rng = np.random.default_rng(cfg.split_seed)
    n_main = len(labels) - n_external_test
    main = np.arange(n_main)
    if cfg.max_images is not None and cfg.max_images < n_main:
        main = _stratified_take(labels, main, cfg.max_images / n_main, rng)
    if n_external_test:
        test = np.arange(n_main, len(labels))
        pool = main
    else:
        test = _stratified_take(labels, main, cfg.test_fraction, rng) if cfg.test_fraction > 0 else main[:0]
        pool = np.setdiff1d(main, test)
    val_share = cfg.val_fraction / (1 - (0 if n_external_test else cfg.test_fraction))
    val = _stratified_take(labels, pool, val_share, rng)
    train = np.setdiff1d(pool, val)
    return Splits(train=train, val=val, test=test)


def label_subset(labels: np.ndarray, train: np.ndarray, *, seed: int, fraction: float | None = None,
                 per_class: int | None = None) -> np.ndarray:
    """Indices (into the full array) of a class-balanced labeled subset of the train pool.

    The same ``seed`` draws the same per-class order whatever the budget, and a budget takes a
    prefix of each class's order, so subsets are **nested** (1% inside 10% inside 100%), and every
    method sees the same subset at a given seed.

    Args:
        labels: (N,) all labels. train: indices of the train pool.
        fraction: in (0, 1]: round(fraction * n_c) of each class c, at least 1.
        per_class: k labels of every class (at most the class size).
    """
    if (fraction is None) == (per_class is None):
        raise ValueError("give exactly one of fraction or per_class")
    if fraction is not None and not 0 < fraction <= 1:
        raise ValueError(f"fraction = {fraction}: must be in (0, 1]")
    if per_class is not None and per_class < 1:
        raise ValueError(f"per_class = {per_class}: must be >= 1")
    rng = np.random.default_rng(seed)
    taken = []
    for c in np.unique(labels[train]):
        order = rng.permutation(train[labels[train] == c])  # drawn for every class, whatever the budget
        k = max(1, int(round(fraction * len(order)))) if fraction is not None else min(per_class, len(order))
        taken.append(order[:k])
    return _sorted_union(taken, train)


def budget_subset(labels: np.ndarray, train: np.ndarray, kind: str, value: float, *, seed: int) -> np.ndarray:
    """:func:`label_subset` of a label budget (``kind`` ``fraction`` or ``per_class``, as :func:`budgets` gives)."""
    if kind == "fraction":
        return label_subset(labels, train, seed=seed, fraction=value)
    return label_subset(labels, train, seed=seed, per_class=int(value))


def budgets(cfg: DatasetConfig) -> list[tuple[str, float]]:
    """All label budgets of the dataset config as (kind, value): ('fraction', f) and ('per_class', k)."""
    return [("fraction", float(f)) for f in cfg.label_fractions] + [("per_class", float(k)) for k in cfg.labels_per_class]
