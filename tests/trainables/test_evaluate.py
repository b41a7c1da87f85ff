"""Fine-tuning: what the protocol promises about the new head; RankMe against hand-computed values."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sslsweep.config import EncoderConfig
from sslsweep.trainables.encoders import Encoder, build_encoder
import numpy as np

import sslsweep.trainables.evaluate as evaluate_mod
from sslsweep.trainables.evaluate import (FinetuneConfig, choose_finetune_lr, finetune, finetune_steps,
                                          holdout_split, knn_predict, knn_top1, loo_knn_top1, rankme)


class _Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def _toy(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey 8x8 uint8 images whose class (0-3) is the bright quadrant: easy to learn in a few steps."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    images = torch.randint(0, 60, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    for i, c in enumerate(labels.tolist()):
        r, q = divmod(c, 2)
        images[i, :, 4 * r:4 * r + 4, 4 * q:4 * q + 4] += 180
    return images, labels


def test_finetune_does_not_depend_on_the_scale_of_the_encoders_features() -> None:
    """The same encoder with its features multiplied by 50 fine-tunes to the same accuracy: the
    head standardises its input, so a pretrained encoder with large features (SimCLR's) is not
    penalised for their scale. A plain linear head fails this (its logits grow 50x)."""
    torch.manual_seed(0)
    enc = build_encoder(EncoderConfig("small_cnn", 4), 1)
    scaled = Encoder(nn.Sequential(enc.backbone, _Scale(50.0)), enc.out_dim)
    x, y = _toy(256, 0)
    xt, yt = _toy(256, 1)
    cfg = FinetuneConfig(steps=40, lr=0.05, batch_size=32)
    plain = finetune(enc, 4, x, y, {"test": (xt, yt)}, cfg, seed=0)["test"]
    big = finetune(scaled, 4, x, y, {"test": (xt, yt)}, cfg, seed=0)["test"]
    assert plain > 0.9, f"the toy task should be learnt: {plain}"
    assert abs(plain - big) <= 2 / 256, (plain, big)


def test_finetune_depends_on_its_seed_not_on_what_ran_before() -> None:
    """The head's initial weights come from ``seed``: the global RNG in any state gives the same
    accuracies and leaves the caller's RNG where it was; a batch-function evaluation set scores
    like the tensors it yields."""
    torch.manual_seed(0)
    enc = build_encoder(EncoderConfig("small_cnn", 4), 1)
    x, y = _toy(64, 0)
    xt, yt = _toy(100, 1)
    cfg = FinetuneConfig(steps=3, lr=0.05, batch_size=16)
    results = []
    for state in (1, 2):
        torch.manual_seed(state)
        results.append(finetune(enc, 4, x, y, {"test": (xt, yt)}, cfg, seed=0))
    assert results[0] == results[1]
    torch.manual_seed(3)
    before = torch.random.get_rng_state()
    batched = finetune(enc, 4, x, y, {"test": lambda: ((xt[i:i + 7], yt[i:i + 7]) for i in range(0, 100, 7))}, cfg, seed=0)
    assert torch.equal(torch.random.get_rng_state(), before) and batched == results[0]


def test_finetune_on_rows_of_a_set_is_finetune_on_their_copy() -> None:
    """Fine-tuning on ``rows`` of a (host) set draws the same batches as fine-tuning on the copy
    ``images[rows]``: the same accuracies to the bit, so a budget's subset can stay in host memory
    and reach the device a batch at a time; the lr choice, which fine-tunes on rows of the subset
    and scores the held-out rows a batch at a time, equals fine-tuning on explicit copies."""
    torch.manual_seed(0)
    enc = build_encoder(EncoderConfig("small_cnn", 4), 1)
    x, y = _toy(96, 0)
    xt, yt = _toy(100, 1)
    cfg = FinetuneConfig(steps=6, lr=0.05, batch_size=16)
    rows = torch.tensor([5, 9, 10, 11, 40, 41, 42, 60, 61, 62, 63, 90])
    on_rows = finetune(enc, 4, x, y, {"test": (xt, yt)}, cfg, seed=3, rows=rows, device=torch.device("cpu"))
    on_copy = finetune(enc, 4, x[rows], y[rows], {"test": (xt, yt)}, cfg, seed=3)
    assert on_rows == on_copy
    assert on_rows != finetune(enc, 4, x, y, {"test": (xt, yt)}, cfg, seed=3)  # rows were honoured

    lrs = (0.003, 0.05, 0.5)
    choice = choose_finetune_lr(enc, 4, x, y, lrs, lambda n: 4, cfg, seed=1, device=torch.device("cpu"))
    fit, held = holdout_split(y.numpy(), seed=1)
    expected = {lr: finetune(enc, 4, x[fit], y[fit], {"heldout": (x[held], y[held])}, replace(cfg, lr=lr, steps=4),
                             seed=1)["heldout"] for lr in lrs}
    assert choice.chosen and choice.heldout_acc == expected


# ----------------------------------------------------------------------------- length and lr per budget


@pytest.mark.parametrize("n,epochs,expected", [
    (500, 30, 235),      # CIFAR-10 1%: ceil(30 * 500 / 64) = ceil(234.375)
    (100, 30, 150),      # ceil(46.875) = 47 < the floor of 150
    (10_000, 30, 4688),  # ceil(4687.5)
    (50_000, 30, 5000),  # CIFAR-10 100%: 23438 > the cap of 5000
    (320, 30, 150),      # exactly 150 = the floor
    (1280, 2.5, 150),    # fractional epochs: 50 steps < the floor
])
def test_finetune_steps_is_epochs_of_the_subset_with_a_floor_and_a_cap(n: int, epochs: float, expected: int) -> None:
    assert finetune_steps(n, epochs=epochs, batch_size=64, min_steps=150, max_steps=5000) == expected


def test_holdout_split_is_stratified_seeded_and_needs_two_labels_per_class() -> None:
    """20% of each class held out (at least 1, leaving at least 1 to fit); the same seed gives the
    same split; a class with a single label only fits (it does not cancel the split of the others),
    and with one label per class there is no held-out part."""
    labels = np.array([0] * 10 + [1] * 5 + [2] * 2)
    fit, held = holdout_split(labels, seed=3)
    assert [int((labels[held] == c).sum()) for c in (0, 1, 2)] == [2, 1, 1]
    assert sorted(np.concatenate([fit, held]).tolist()) == list(range(len(labels)))
    again = holdout_split(labels, seed=3)
    assert again is not None and np.array_equal(again[1], held)
    uneven = holdout_split(np.array([0, 0, 1]), seed=0)  # a typical subset can be this uneven
    assert uneven is not None and uneven[1].tolist() in ([0], [1]) and 2 in uneven[0].tolist()
    assert holdout_split(np.array([0, 1, 2]), seed=0) is None  # 1 label per class: nothing to hold out


def _batches(e: object) -> list:
    return list(e()) if callable(e) else [e]


def _predicts_class_of_lr(lrs: tuple[float, ...], calls: list) -> object:
    """A stand-in for finetune whose model predicts class i for the i-th lr of the grid."""
    def fake(encoder, num_classes, images, labels, evals, cfg, *, seed, autocast=False, rows=None, device=None):
        fit_y = labels if rows is None else labels[rows]
        held = {k: torch.cat([y for _, y in _batches(e)]) for k, e in evals.items()}
        calls.append((fit_y.clone(), held))
        return {k: float((y == lrs.index(cfg.lr)).float().mean()) for k, y in held.items()}
    return fake


def test_lr_is_chosen_on_the_held_out_part_of_the_budgets_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Budget labels: 20 of class 0, 2 of class 1, 2 of class 2. Held out: 4, 1, 1. The model of
    lr i predicts class i, so the held-out part prefers lr 0 (4/6), not the grid's middle value.
    Validation and test labels that are all class 2 (which would pick lr 2) cannot be passed in:
    every fine-tuning in the choice sees only the budget's labels, split into fit and held-out."""
    lrs = (0.003, 0.01, 0.03)
    calls: list = []
    monkeypatch.setattr(evaluate_mod, "finetune", _predicts_class_of_lr(lrs, calls))
    labels = torch.tensor([0] * 20 + [1] * 2 + [2] * 2)
    images = torch.zeros(len(labels), 1, 8, 8, dtype=torch.uint8)
    choice = choose_finetune_lr(None, 3, images, labels, lrs, lambda n: 5, FinetuneConfig(), seed=0)
    assert choice.lr == 0.003 and choice.chosen
    assert choice.heldout_acc == pytest.approx({0.003: 4 / 6, 0.01: 1 / 6, 0.03: 1 / 6})
    assert len(calls) == 3
    for fit_y, evals in calls:
        assert set(evals) == {"heldout"}
        assert sorted(torch.cat([fit_y, evals["heldout"]]).tolist()) == sorted(labels.tolist())


def test_lr_is_the_grids_middle_value_when_no_choice_can_be_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """One label per class: nothing to hold out; a single-value grid: nothing to choose. The
    grid's middle value is used, recorded as not chosen, and no fine-tuning is spent on it."""
    calls: list = []
    monkeypatch.setattr(evaluate_mod, "finetune", _predicts_class_of_lr((0.003, 0.01, 0.03), calls))
    images = torch.zeros(3, 1, 8, 8, dtype=torch.uint8)
    one_each = choose_finetune_lr(None, 3, images, torch.tensor([0, 1, 2]), (0.003, 0.01, 0.03), lambda n: 5,
                                  FinetuneConfig(), seed=0)
    assert (one_each.lr, one_each.chosen) == (0.01, False)
    single = choose_finetune_lr(None, 3, images, torch.tensor([0, 0, 1]), (0.05,), lambda n: 5,
                                FinetuneConfig(), seed=0)
    assert (single.lr, single.chosen) == (0.05, False)
    assert calls == []


def test_a_tied_held_out_accuracy_goes_to_the_lr_nearest_the_middle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluate_mod, "finetune", lambda *a, **k: {"heldout": 0.5})
    labels = torch.tensor([0, 0, 1, 1])
    choice = choose_finetune_lr(None, 2, torch.zeros(4, 1, 8, 8, dtype=torch.uint8), labels, (0.003, 0.01, 0.03),
                                lambda n: 5, FinetuneConfig(), seed=0)
    assert (choice.lr, choice.chosen) == (0.01, True)


# ----------------------------------------------------------------------------- RankMe


def test_rankme_matches_a_hand_computed_value() -> None:
    """diag(2, 1, 1): sigma = (2, 1, 1), ||sigma||_1 = 4, p = (1/2, 1/4, 1/4) (+ eps);
    entropy = 1/2 ln 2 + 2 * 1/4 ln 4 = 3/2 ln 2, so RankMe = 2^(3/2) = 2.828..."""
    assert rankme(torch.diag(torch.tensor([2.0, 1.0, 1.0]))) == pytest.approx(2 ** 1.5, rel=1e-5)
    # a non-square one: rows (3, 0) and (0, 1) padded with a zero row: sigma = (3, 1), p = (3/4, 1/4)
    x = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    assert rankme(x) == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))), rel=1e-5)


def test_rankme_of_a_rank_one_matrix_is_one() -> None:
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(50, 1, generator=g), torch.randn(1, 16, generator=g)
    assert rankme(u @ v) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("n, d", [(40, 8), (8, 40)])
def test_rankme_of_orthonormal_columns_or_rows_is_the_full_rank(n: int, d: int) -> None:
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(max(n, d), min(n, d), generator=g))  # orthonormal columns
    x = q if n >= d else q.T
    assert rankme(x) == pytest.approx(min(n, d), rel=1e-5)


def test_rankme_ignores_the_scale_and_row_order_of_the_embeddings() -> None:
    x = torch.randn(30, 6, generator=torch.Generator().manual_seed(1))
    assert rankme(7.0 * x[torch.randperm(30)]) == pytest.approx(rankme(x), rel=1e-6)


# ----------------------------------------------------------------------------- kNN


def _knn_one_block(bank: torch.Tensor, bank_labels: torch.Tensor, query: torch.Tensor, *, k: int,
                   num_classes: int, temperature: float = 0.07) -> torch.Tensor:
    """The weighted kNN written as one (Q, M) similarity matrix: the reference for the streamed one."""
    sim = F.normalize(query, dim=1) @ F.normalize(bank, dim=1).T  # (Q, M)
    top, idx = sim.topk(min(k, len(bank)), dim=1)
    votes = torch.zeros(len(query), num_classes).scatter_add_(1, bank_labels[idx], (top / temperature).exp())
    return votes.argmax(1)


@pytest.mark.parametrize("query_chunk, bank_chunk, k", [(7, 11, 20), (1, 1, 5), (64, 1000, 20), (5, 13, 50)])
def test_streamed_knn_equals_the_one_block_computation(query_chunk: int, bank_chunk: int, k: int) -> None:
    """Queries and bank in chunks that do not divide them (and of one row; k above the bank's 40
    rows in the last case): the same class for every query as the unchunked (Q, M) computation."""
    g = torch.Generator().manual_seed(0)
    bank, query = torch.randn(40 if k == 50 else 300, 16, generator=g), torch.randn(70, 16, generator=g)
    bank_labels, query_labels = torch.randint(0, 5, (len(bank),), generator=g), torch.randint(0, 5, (70,), generator=g)
    expected = _knn_one_block(bank, bank_labels, query, k=k, num_classes=5)
    got = knn_predict(bank, bank_labels, query, k=k, num_classes=5, query_chunk=query_chunk, bank_chunk=bank_chunk)
    assert torch.equal(got, expected)
    acc = knn_top1(bank, bank_labels, query, query_labels, k=k, num_classes=5, query_chunk=query_chunk,
                   bank_chunk=bank_chunk)
    assert acc == (expected == query_labels).sum().item() / len(query)


def test_leave_one_out_knn_matches_a_hand_computed_case() -> None:
    """Four points on two lines: each one's nearest other point is its pair, so with k=1 the
    held-out accuracy is 1 under the true labels and 0 with the pairs' labels crossed; a point
    never votes for itself (with itself it would always be right)."""
    feats = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    assert loo_knn_top1(feats, torch.tensor([0, 0, 1, 1]), k=1, num_classes=2) == 1.0
    assert loo_knn_top1(feats, torch.tensor([0, 1, 0, 1]), k=1, num_classes=2) == 0.0


def test_leave_one_out_knn_scores_only_classes_with_two_labels() -> None:
    """A class with a single label is not scored (it cannot be right); no such class at all: NaN."""
    feats = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    assert loo_knn_top1(feats, torch.tensor([0, 0, 1]), k=1, num_classes=2) == 1.0  # the two of class 0
    assert math.isnan(loo_knn_top1(feats, torch.tensor([0, 1, 2]), k=1, num_classes=3))


def test_leave_one_out_knn_equals_a_brute_force_loop_across_chunks() -> None:
    """Against a loop that drops each point and runs knn_predict on the rest, with the bank in
    chunks smaller than the set (the excluded row falls in one chunk, the others in others)."""
    g = torch.Generator().manual_seed(0)
    feats, labels = torch.randn(60, 8, generator=g), torch.randint(0, 3, (60,), generator=g)
    want = []
    for i in range(60):
        rest = torch.cat([torch.arange(i), torch.arange(i + 1, 60)])
        want.append(int(knn_predict(feats[rest], labels[rest], feats[i:i + 1], k=5, num_classes=3)[0]))
    got = knn_predict(feats, labels, feats, k=5, num_classes=3, exclude=torch.arange(60), bank_chunk=7, query_chunk=11)
    assert got.tolist() == want
    assert loo_knn_top1(feats, labels, k=5, num_classes=3) == (torch.tensor(want) == labels).float().mean().item()
