"""The search's selection metric under ``eval.selection``: what it may read.

* ``label_free`` (RankMe) reads no label: with every label array and the class list replaced by
  guards that refuse any access, :func:`selection_metric` still returns its value, and permuting
  the labels changes nothing;
* ``oracle`` reads labels (it is the labelled upper bound): the same guards fire, which shows they
  would catch a label-free metric that peeked;
* ``budget`` reads, for each label budget, the labels of that budget's subset and no other: a
  label array that answers only inside the subset serves it, and permuting every label outside a
  budget's subset leaves that budget's score unchanged.

The guards are the contract suite's (:mod:`tests.trainables.test_task_contract`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from sslsweep.config import EncoderConfig, EvalConfig
from sslsweep.data import Prepared, Splits
from sslsweep.trainables.encoders import build_encoder
from sslsweep.schema import score_column
from sslsweep.trainables.scores import budget_scores, search_metrics, selection_metric, selection_scores
from sslsweep.trainables.train import DeviceData, Runtime
from tests.trainables.test_task_contract import LabelGuard, LabelRead

CPU = Runtime(torch.device("cpu"), autocast=False, channels_last=False, compile=False)
N, TRAIN, VAL = 40, 24, 10  # images; the rest is the test split


def encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_encoder(EncoderConfig("small_cnn", width=4), 3)


def device_data(labels: Any, classes: Any) -> DeviceData:
    """Tiny images whose labels (numpy, and the device copy) and class list are whatever is given."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N, 3, 16, 16), generator=g, dtype=torch.uint8)
    idx = np.arange(N)
    data = Prepared(images=images.numpy(), labels=labels, splits=Splits(train=idx[:TRAIN], val=idx[TRAIN:TRAIN + VAL],
                    test=idx[TRAIN + VAL:]), classes=classes, fingerprint="guard", hflip=True)
    # DeviceData.put copies the labels; built directly, the device copy is a guard too
    device_labels = labels if isinstance(labels, LabelGuard) else torch.as_tensor(labels)
    return DeviceData(images=images, labels=device_labels, data=data)


def guarded() -> tuple[DeviceData, list[LabelGuard]]:
    guards = [LabelGuard("labels"), LabelGuard("classes")]
    dd = device_data(guards[0], guards[1])
    dd.labels = LabelGuard("device labels")  # type: ignore[assignment]
    return dd, [*guards, dd.labels]  # type: ignore[list-item]


def test_label_free_selection_reads_no_label() -> None:
    dd, guards = guarded()
    value = selection_metric(encoder(), dd, EvalConfig(selection="label_free"), CPU)
    assert not any(g.reads for g in guards), [g.reads for g in guards]
    assert 1.0 <= value <= VAL  # RankMe of VAL feature rows: between 1 and min(N, D)


@pytest.mark.parametrize("metric", ["knn", "linear"])
def test_oracle_selection_reads_labels_so_the_guard_fires(metric: str) -> None:
    dd, guards = guarded()
    with pytest.raises(LabelRead):
        selection_metric(encoder(), dd, EvalConfig(metric=metric, knn_k=3, selection="oracle"), CPU)
    assert any(g.reads for g in guards)


def test_label_free_selection_does_not_depend_on_the_labels() -> None:
    labels = np.arange(N) % 4
    permuted = np.random.default_rng(0).permutation(labels)
    assert (permuted != labels).any()
    values = [selection_metric(encoder(), device_data(y.astype(np.int64), list("abcd")),
                               EvalConfig(selection="label_free"), CPU) for y in (labels, permuted)]
    assert values[0] == values[1]


# ----------------------------------------------------------------------------- the budget rule


class BudgetLabels:
    """A label array that answers only for the indices of ``allowed`` (one budget's subset) and
    raises on any other read; records every index it gave out."""

    def __init__(self, labels: np.ndarray, allowed: np.ndarray) -> None:
        self.labels, self.allowed, self.read = torch.as_tensor(labels), set(int(i) for i in allowed), set()

    def __getitem__(self, key: Any) -> torch.Tensor:
        idx = [int(i) for i in torch.as_tensor(key).reshape(-1)]
        outside = sorted(set(idx) - self.allowed)
        if outside:
            raise LabelRead(f"labels {outside[:5]} read outside the budget's subset")
        self.read |= set(idx)
        return self.labels[torch.as_tensor(idx, dtype=torch.long)]


LABELS = (np.arange(N) % 4).astype(np.int64)
SMALL, LARGE = np.arange(0, 8), np.arange(0, 16)  # nested label subsets of the train pool (0..23), 2 and 4 per class


def budget_score(dd: DeviceData, subsets: list[tuple[str, float, int, np.ndarray]]) -> dict[str, float]:
    return budget_scores(encoder(), dd, subsets, EvalConfig(knn_k=3), CPU)


def test_budget_scores_read_only_the_labels_of_their_subsets() -> None:
    """Every label the budget rule reads lies in a budget's subset: with the device labels
    answering only for the larger subset, both scores come back and nothing else was read; with
    them answering only for the smaller one, scoring the larger budget raises."""
    dd = device_data(LABELS, list("abcd"))
    dd.data.labels = LabelGuard("numpy labels")  # the driver drew the subsets: the trial needs no numpy label
    dd.labels = BudgetLabels(LABELS, LARGE)  # type: ignore[assignment]
    scores = budget_score(dd, [("per_class", 2, 0, SMALL), ("per_class", 4, 0, LARGE)])
    assert set(scores) == {score_column("budget", "per_class", 2, 0), score_column("budget", "per_class", 4, 0)}
    assert all(0 <= v <= 1 for v in scores.values()) and dd.labels.read == set(LARGE.tolist())
    dd.labels = BudgetLabels(LABELS, SMALL)  # type: ignore[assignment]
    with pytest.raises(LabelRead):
        budget_score(dd, [("per_class", 4, 0, LARGE)])


def test_a_budget_score_does_not_depend_on_labels_outside_its_subset() -> None:
    """Permuting every label outside the small budget's subset (including the larger budget's and
    the validation split's) leaves the small budget's score unchanged; its own labels do count (all
    one class: every held-out image is classified right)."""
    base = budget_score(device_data(LABELS, list("abcd")), [("per_class", 2, 0, SMALL)])
    outside = LABELS.copy()
    outside[8:] = np.random.default_rng(0).permutation(outside[8:])
    assert (outside != LABELS).any()
    assert budget_score(device_data(outside, list("abcd")), [("per_class", 2, 0, SMALL)]) == base
    inside = LABELS.copy()
    inside[:8] = 0
    assert budget_score(device_data(inside, list("abcd")), [("per_class", 2, 0, SMALL)]) == {"score_budget_per_class_2_s0": 1.0}
    assert base["score_budget_per_class_2_s0"] < 1.0


def test_selection_scores_report_one_signal_per_rule() -> None:
    """Under budget with compare [oracle, label_free]: RankMe (the search's metric), the oracle's
    kNN and one score per budget; with compare [] no oracle signal is computed (so no validation
    label is read)."""
    dd = device_data(LABELS, list("abcd"))
    subsets = [("per_class", 2, 0, SMALL)]
    every = selection_scores(encoder(), dd, EvalConfig(knn_k=3), CPU, subsets)
    assert set(every) == {"score_label_free", "score_oracle", "score_budget_per_class_2_s0"}
    alone = selection_scores(encoder(), dd, EvalConfig(knn_k=3, compare=()), CPU, subsets)
    assert set(alone) == {"score_label_free", "score_budget_per_class_2_s0"}
    assert alone["score_label_free"] == every["score_label_free"] >= 1  # RankMe: an effective rank
    # the validation features are extracted once for both: each signal equals its standalone value
    assert every["score_oracle"] == selection_metric(encoder(), dd, EvalConfig(knn_k=3, selection="oracle"), CPU)
    assert every["score_label_free"] == selection_metric(encoder(), dd, EvalConfig(selection="label_free"), CPU)
    metrics = search_metrics(encoder(), dd, EvalConfig(knn_k=3, compare=()), CPU, "rankme", subsets)
    assert metrics["rankme"] == metrics["score_label_free"]


def test_a_label_free_search_with_nothing_to_compare_reports_without_reading_a_label() -> None:
    """Everything a search trial reports (search_metrics) under label_free with eval.compare = []
    reads no label array: the guards stay silent."""
    dd, guards = guarded()
    metrics = search_metrics(encoder(), dd, EvalConfig(selection="label_free", compare=()), CPU, "rankme")
    assert not any(g.reads for g in guards), [g.reads for g in guards]
    assert set(metrics) == {"rankme", "score_label_free"}


def test_comparing_with_the_oracle_reads_labels_so_the_guard_fires() -> None:
    """The default eval.compare names oracle: its signal reads validation labels (which is why
    label_free with a labelled rule to compare logs a warning)."""
    dd, _ = guarded()
    with pytest.raises(LabelRead):
        search_metrics(encoder(), dd, EvalConfig(selection="label_free", knn_k=3), CPU, "rankme")


def test_a_budget_larger_than_max_members_is_scored_on_a_seeded_sample_of_itself() -> None:
    """Above max_members the score reads the labels of exactly max_members images, all inside the
    budget's subset, the same ones at every call (seeded), and equals the score of that sample."""
    dd = device_data(LABELS, list("abcd"))
    dd.labels = BudgetLabels(LABELS, LARGE)  # type: ignore[assignment]
    sampled = budget_scores(encoder(), dd, [("per_class", 4, 0, LARGE)], EvalConfig(knn_k=3), CPU, max_members=8)
    read = sorted(dd.labels.read)
    assert len(read) == 8 and set(read) <= set(LARGE.tolist())
    dd.labels = BudgetLabels(LABELS, np.asarray(read))  # type: ignore[assignment]
    again = budget_scores(encoder(), dd, [("per_class", 4, 0, np.asarray(read))], EvalConfig(knn_k=3), CPU)
    assert again == sampled
