"""The search's selection metric under ``eval.selection``: what it may read.

* ``label_free`` (RankMe) reads no label: with every label array and the class list replaced by
  guards that refuse any access, :func:`selection_metric` still returns its value, and permuting
  the labels changes nothing;
* ``oracle`` reads labels (it is the labelled upper bound): the same guards fire, which shows they
  would catch a label-free metric that peeked.

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
from sslsweep.trainables.train import DeviceData, Runtime, selection_metric
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
