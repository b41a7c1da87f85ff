"""What a trial measures about its encoder: the search's selection signals and the confirm
phase's rows at every label budget (docs/selection.md).

Search (every ``eval_every`` epochs): :func:`selection_scores`, one signal per selection rule:
``oracle`` (:func:`selection_metric`, the labeled validation split), ``label_free`` (RankMe) and
``budget`` (:func:`budget_scores`, leave-one-out kNN inside each budget's own labelled subset).
Confirm: :func:`evaluate_budgets`, linear probe and fine-tuning at every label budget.
"""

from __future__ import annotations

import functools
import itertools
import time
from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import torch

from sslsweep.config import ConfirmConfig, EvalConfig
from sslsweep.data import budget_subset, label_subset, typical_subset
from sslsweep.schema import score_column, search_rule
from sslsweep.trainables.encoders import Encoder
from sslsweep.trainables.evaluate import (FinetuneConfig, choose_finetune_lr, finetune, finetune_steps, knn_top1,
                                          linear_probe, loo_knn_top1, rankme)
from sslsweep.trainables.train import DeviceData, Runtime


def selection_metric(encoder: Encoder, dd: DeviceData, cfg: EvalConfig, runtime: Runtime, *, seed: int = 0) -> float:
    """The search phase's score, reported under :attr:`SweepConfig.metric_name`.

    ``eval.selection = oracle``: kNN top-1 or linear-probe accuracy on the validation split, with
    the labeled bank ``eval.select_fraction`` of the train pool (a fixed, seeded subset): more
    labels than a small budget has, so an upper bound. ``label_free`` and ``budget`` (whose search
    maximises RankMe too): RankMe of the validation split's features; no label array is touched."""
    val = dd.features(encoder, dd.data.splits.val, autocast=runtime.autocast)
    if search_rule(cfg.selection) == "label_free":
        return rankme(val[0])
    return _oracle_metric(encoder, dd, cfg, runtime, val, seed=seed)


def _oracle_metric(encoder: Encoder, dd: DeviceData, cfg: EvalConfig, runtime: Runtime,
                   val_features: tuple[torch.Tensor, np.ndarray], *, seed: int = 0) -> float:
    """The oracle's metric (:func:`selection_metric`) from the validation split's features."""
    data, (val, val_idx) = dd.data, val_features
    bank_idx = label_subset(data.labels, data.splits.train, seed=seed, fraction=cfg.select_fraction)
    bank, bank_idx = dd.features(encoder, bank_idx, autocast=runtime.autocast)
    if cfg.metric == "knn":
        return knn_top1(bank, dd.labels[dd.idx(bank_idx)], val, dd.labels[dd.idx(val_idx)],
                        k=cfg.knn_k, num_classes=data.num_classes)
    return linear_probe(bank.cpu().numpy(), data.labels[bank_idx],
                        {"val": (val.cpu().numpy(), data.labels[val_idx])}, seed=seed, device=runtime.device)["val"]


# A label budget's labelled subset at one confirm seed, for the budget rule: (kind, value, seed,
# indices into the full array).
BudgetSubset = tuple[str, float, int, np.ndarray]


def budget_scores(encoder: Encoder, dd: DeviceData, subsets: Sequence[BudgetSubset], cfg: EvalConfig,
                  runtime: Runtime, *, max_members: int = 10_000) -> dict[str, float]:
    """The budget rule's signals: per label budget and confirm seed, leave-one-out kNN top-1
    (:func:`loo_knn_top1`) inside that budget's labelled subset at that seed, keyed by
    :func:`score_column`.

    Each score reads the labels of its own subset and no other (the subsets were drawn by the
    driver; a guard test holds this). A subset of more than ``max_members`` images is represented
    by a seeded sample of that many of them (bank and held-out images alike), so a trial extracts
    the features of at most ``max_members`` images per budget, not of a 100% budget's whole pool.
    Features are extracted once for the union (``random`` subsets of one seed are nested). NaN
    where no class has 2 labels."""
    if not subsets:
        return {}
    subsets = [(kind, value, seed, idx if len(idx) <= max_members else
                np.sort(np.random.default_rng(seed).choice(np.asarray(idx), max_members, replace=False)))
               for kind, value, seed, idx in subsets]
    union = np.unique(np.concatenate([np.asarray(idx) for *_, idx in subsets]))
    feats, kept = dd.features(encoder, union, autocast=runtime.autocast)
    row = {int(g): i for i, g in enumerate(kept)}  # full index -> row of feats (a skipped image has none)
    out = {}
    for kind, value, seed, idx in subsets:
        members = [int(i) for i in idx if int(i) in row]
        y = dd.labels[dd.idx(np.asarray(members, dtype=np.int64))]  # this budget's labels at this seed only
        rows = torch.as_tensor([row[i] for i in members], dtype=torch.long, device=feats.device)
        out[score_column("budget", kind, value, seed)] = loo_knn_top1(feats[rows], y, k=cfg.knn_k,
                                                                      num_classes=dd.data.num_classes)
    return out


def selection_scores(encoder: Encoder, dd: DeviceData, cfg: EvalConfig, runtime: Runtime,
                     subsets: Sequence[BudgetSubset] = ()) -> dict[str, float]:
    """Every signal a search trial reports, one per rule of ``cfg.rules`` (``eval.selection`` and
    ``eval.compare``), keyed by :func:`score_column`: ``oracle`` (the labeled metric of
    :func:`selection_metric`), ``label_free`` (RankMe; also computed under ``budget``, whose search
    maximises it) and ``budget`` (:func:`budget_scores`, one per subset)."""
    rules = set(cfg.rules) | ({"label_free"} if "budget" in cfg.rules else set())
    out: dict[str, float] = {}
    if rules & {"label_free", "oracle"}:  # both read the validation split's features: extracted once
        val = dd.features(encoder, dd.data.splits.val, autocast=runtime.autocast)
        if "label_free" in rules:
            out[score_column("label_free")] = rankme(val[0])
        if "oracle" in rules:
            out[score_column("oracle")] = _oracle_metric(encoder, dd, cfg, runtime, val)
    if "budget" in rules:
        out |= budget_scores(encoder, dd, subsets, cfg, runtime)
    return out


def search_metrics(encoder: Encoder, dd: DeviceData, cfg: EvalConfig, runtime: Runtime, metric: str,
                   subsets: Sequence[BudgetSubset] = ()) -> dict[str, float]:
    """What a search trial reports about its encoder: every :func:`selection_scores` signal, and the
    search's own metric ``metric`` (:attr:`SweepConfig.metric_name`) that ASHA and Optuna maximise:
    the ``oracle`` signal under ``eval.selection = oracle``, else the ``label_free`` one (RankMe)."""
    scores = selection_scores(encoder, dd, cfg, runtime, subsets)
    return {metric: scores[score_column(search_rule(cfg.selection))], **scores}


def evaluate_budgets(encoder: Encoder, dd: DeviceData, cfg: ConfirmConfig, dataset_budgets: list[tuple[str, float]],
                     runtime: Runtime, *, seed: int, selections: Sequence[str] = ("random",)) -> list[dict[str, Any]]:
    """Confirm-phase evaluation: for every label selection, at every label budget, linear probe and
    fine-tuning, on val and test.

    ``random`` subsets come from :func:`label_subset` with this ``seed``: nested and identical for
    every method. ``typical`` subsets come from :func:`typical_subset` on this encoder's features of
    the train pool (no label read to choose them), as many images as the random subset of the same
    budget. Fine-tuning runs ``finetune_steps`` of the subset's size, with the lr of
    ``confirm.finetune_lrs`` that :func:`choose_finetune_lr` picks on a held-out part of the subset
    (the validation split plays no part in it). Returns one dict per (selection, budget, protocol)
    with the columns of ``budget.parquet``.
    """
    data = dd.data
    feats, kept = {}, {}
    for split in ("train", "val", "test"):
        f, kept[split] = dd.features(encoder, getattr(data.splits, split), autocast=runtime.autocast)
        feats[split] = f.cpu().numpy()
    val_i, test_i, train_i = kept["val"], kept["test"], kept["train"]  # all of each split but skipped images
    pos = {int(g): i for i, g in enumerate(train_i)}  # full index -> row of feats["train"]
    rows = []
    ft_cfg = FinetuneConfig(batch_size=cfg.finetune_batch_size)

    def steps_for(n: int) -> int:
        return finetune_steps(n, epochs=cfg.finetune_epochs, batch_size=cfg.finetune_batch_size,
                              min_steps=cfg.finetune_min_steps, max_steps=cfg.finetune_max_steps)
    # scored after fine-tuning a batch at a time (never whole on the device; under stream read per evaluation)
    evals = {"val": functools.partial(dd.labelled_batches, data.splits.val),
             "test": functools.partial(dd.labelled_batches, data.splits.test)}
    for selection, (kind, value) in itertools.product(selections, dataset_budgets):
        sub = budget_subset(data.labels, data.splits.train, kind, value, seed=seed)
        sub = sub[[int(i) in pos for i in sub]]  # a streamed image that did not decode has no features
        t0 = time.perf_counter()  # the linear row's time includes choosing the subset
        if selection == "typical":  # the random subset gave the count only: equal labels, equal cost
            sub = train_i[typical_subset(feats["train"], len(sub), seed=seed)]
        acc = linear_probe(feats["train"][[pos[int(i)] for i in sub]], data.labels[sub],
                           {"val": (feats["val"], data.labels[val_i]), "test": (feats["test"], data.labels[test_i])},
                           c=cfg.linear_c, seed=seed, device=runtime.device)
        rows.append(dict(budget_kind=kind, budget=value, n_labels=len(sub), protocol="linear", selection=selection,
                         val_acc=acc["val"], test_acc=acc["test"], eval_time_s=time.perf_counter() - t0))
        t0 = time.perf_counter()  # the finetune row's time includes choosing its lr
        sub_x, sub_y = dd.materialize(sub)  # under host / stream in host memory: a batch at a time on the device
        choice = choose_finetune_lr(encoder, data.num_classes, sub_x, sub_y, cfg.finetune_lrs, steps_for, ft_cfg,
                                    seed=seed, autocast=runtime.autocast, device=dd.device)  # reads only the budget's labels
        acc = finetune(encoder, data.num_classes, sub_x, sub_y, evals,
                       replace(ft_cfg, lr=choice.lr, steps=steps_for(len(sub))), seed=seed, autocast=runtime.autocast,
                       device=dd.device)
        rows.append(dict(budget_kind=kind, budget=value, n_labels=len(sub), protocol="finetune", selection=selection,
                         val_acc=acc["val"], test_acc=acc["test"], eval_time_s=time.perf_counter() - t0,
                         finetune_lr=choice.lr, finetune_lr_chosen=choice.chosen))
    return rows
