"""The confirm evaluation under each label selection: equal label counts, and typical subsets that
depend on the encoder's features, never on the labels."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from sslsweep.config import ConfirmConfig, EncoderConfig
from sslsweep.trainables import scores as scores_mod
from sslsweep.trainables.encoders import build_encoder
from sslsweep.trainables.scores import evaluate_budgets
from sslsweep.trainables.train import DeviceData
from tests.trainables.test_train import CPU, tiny_data

CONFIRM = ConfirmConfig(finetune_min_steps=3, finetune_max_steps=3)
BUDGETS = [("fraction", 0.3), ("per_class", 2.0)]


def run(data: Any, selections: tuple[str, ...]) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    encoder = build_encoder(EncoderConfig(width=4), data.shape[0])
    return evaluate_budgets(encoder, DeviceData.put(data, CPU.device), CONFIRM, BUDGETS, CPU, seed=1,
                            selections=selections)


def test_both_selections_give_rows_at_every_budget_with_equal_label_counts() -> None:
    """random and typical: a row per selection x budget x protocol, the same number of labels
    for both at each budget; the random rows are those of a random-only run."""
    rows = run(tiny_data(), ("random", "typical"))
    keys = {(r["selection"], r["budget_kind"], r["budget"], r["protocol"]) for r in rows}
    assert keys == {(s, k, v, p) for s in ("random", "typical") for k, v in BUDGETS for p in ("linear", "finetune")}
    assert len(rows) == len(keys)
    n = {(r["selection"], r["budget_kind"]): r["n_labels"] for r in rows}
    assert n[("random", "fraction")] == n[("typical", "fraction")] == 12  # round(0.3 x 10) x 4 classes (40 train)
    assert n[("random", "per_class")] == n[("typical", "per_class")] == 8
    alone = run(tiny_data(), ("random",))
    assert [r["test_acc"] for r in rows if r["selection"] == "random"] == [r["test_acc"] for r in alone]


def test_finetune_lr_is_chosen_from_the_grid_on_the_budgets_labels_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each finetune row records an lr of confirm.finetune_lrs; the fine-tunings that choose it see
    only the budget's labelled images (fit + held-out = n_labels) and no validation or test set."""
    import sslsweep.trainables.evaluate as evaluate_mod

    seen: list[tuple[int, set[str], int]] = []
    real = evaluate_mod.finetune

    def spy(encoder, num_classes, images, labels, evals, cfg, **kw):  # type: ignore[no-untyped-def]
        fit = labels if kw.get("rows") is None else labels[kw["rows"]]
        held = sum(len(y) for e in evals.values() for _, y in (e() if callable(e) else [e]))
        seen.append((len(fit), set(evals), held))
        return real(encoder, num_classes, images, labels, evals, cfg, **kw)

    monkeypatch.setattr(evaluate_mod, "finetune", spy)
    rows = run(tiny_data(), ("random",))
    ft = [r for r in rows if r["protocol"] == "finetune"]
    assert all(r["finetune_lr"] in CONFIRM.finetune_lrs and r["finetune_lr_chosen"] for r in ft)
    assert all("finetune_lr" not in r for r in rows if r["protocol"] == "linear")
    # 3 lrs per budget, each on the fit part, scored on the held-out part of the same budget
    assert [(keys, fit + held) for fit, keys, held in seen] == \
        [({"heldout"}, r["n_labels"]) for r in ft for _ in CONFIRM.finetune_lrs]


def test_typical_subsets_come_from_features_and_not_from_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    """typical_subset gets the train pool's features and a count; relabelling the train pool
    (same class sizes, labels moved between images) changes none of the subsets it picks."""
    calls: list[tuple[tuple[int, ...], int, np.ndarray]] = []
    real = scores_mod.typical_subset

    def spy(features: np.ndarray, n: int, *, seed: int) -> np.ndarray:
        rows = real(features, n, seed=seed)
        calls.append((features.shape, n, rows))
        return rows

    monkeypatch.setattr(scores_mod, "typical_subset", spy)
    data = tiny_data()
    run(data, ("typical",))
    labels = data.labels.copy()
    train = data.splits.train
    labels[train] = labels[np.random.default_rng(0).permutation(train)]
    run(replace(data, labels=labels), ("typical",))
    assert len(calls) == 2 * len(BUDGETS)
    assert all(shape == (len(train), shape[1]) for shape, _, _ in calls)
    first, second = calls[:len(BUDGETS)], calls[len(BUDGETS):]
    assert all(a[1] == b[1] and np.array_equal(a[2], b[2]) for a, b in zip(first, second))
