"""Evaluation of a frozen or fine-tuned encoder: kNN, linear probe, fine-tuning, RankMe.

The first three read labels, RankMe reads none; pretext training calls none of them. The selection
metric (search phase) uses the validation split; test accuracy is computed only in the confirm phase.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sslsweep.trainables.augment import to_float


@torch.no_grad()
def extract_features(encoder: nn.Module, images: torch.Tensor, *, batch_size: int = 512,
                     autocast: bool = False) -> torch.Tensor:
    """Features (N, D) float32 of uint8 images (N, C, H, W) already on the encoder's device."""
    was_training = encoder.training
    encoder.eval()
    feats = []
    for i in range(0, len(images), batch_size):
        x = to_float(images[i:i + batch_size])
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            feats.append(encoder(x).float())
    encoder.train(was_training)
    return torch.cat(feats)


@torch.no_grad()
def knn_top1(bank: torch.Tensor, bank_labels: torch.Tensor, query: torch.Tensor, query_labels: torch.Tensor,
             *, k: int = 20, num_classes: int, temperature: float = 0.07) -> float:
    """Weighted kNN top-1 accuracy on cosine similarity (Wu et al. 2018, as used by SimCLR codebases).

    Each of the k nearest bank features votes for its class with weight exp(sim / temperature).

    Args:
        bank: (M, D) features with labels (M,). query: (Q, D) features with labels (Q,).
    """
    bank = F.normalize(bank, dim=1)
    query = F.normalize(query, dim=1)
    k = min(k, len(bank))
    correct = 0
    for i in range(0, len(query), 1024):
        sim = query[i:i + 1024] @ bank.T  # (q, M)
        top, idx = sim.topk(k, dim=1)  # (q, k)
        votes = torch.zeros(len(top), num_classes, device=bank.device)
        votes.scatter_add_(1, bank_labels[idx], (top / temperature).exp())
        correct += (votes.argmax(1) == query_labels[i:i + 1024]).sum().item()
    return correct / max(1, len(query))


@torch.no_grad()
def rankme(embeddings: torch.Tensor, *, eps: float = 1e-7) -> float:
    """RankMe: the effective rank of an embedding matrix, a label-free quality score.

    Garrido, Balestriero, Najman, LeCun, "RankMe: Assessing the downstream performance of
    pretrained self-supervised representations by their rank" (ICML 2023), eq. 1::

        p_k    = sigma_k / ||sigma||_1 + eps
        RankMe = exp(-sum_k p_k log p_k)

    where sigma are the singular values of the (N, D) matrix, eps = 1e-7 as in the paper. It lies
    between about 1 (every embedding on one line: collapse) and min(N, D) (equal singular values).
    No label is read: it is the search metric of ``eval.selection = label_free``.

    Args:
        embeddings: (N, D) features, one row per image.

    Example:
        >>> round(rankme(torch.eye(4)), 3)
        4.0
    """
    # float64: the (N, D) SVD of float32 features loses small singular values to rounding
    sigma = torch.linalg.svdvals(embeddings.double())  # (min(N, D),)
    p = sigma / sigma.sum().clamp_min(torch.finfo(torch.float64).tiny) + eps
    return float(torch.exp(-(p * p.log()).sum()))


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, evals: dict[str, tuple[np.ndarray, np.ndarray]],
                 *, c: float = 1.0, seed: int = 0) -> dict[str, float]:
    """Logistic regression on standardised frozen features (scikit-learn, L-BFGS).

    With a single labeled class the probe predicts that class.

    Returns:
        accuracy on each named evaluation set.
    """
    # imported here: only the linear probe needs scikit-learn, whose import takes 1.4 s (measured)
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    if len(np.unique(train_y)) < 2:
        return {name: float((y == train_y[0]).mean()) for name, (_, y) in evals.items()}
    clf = LogisticRegression(C=c, max_iter=1000, random_state=seed)
    clf.fit(scaler.transform(train_x), train_y)
    return {name: float(clf.score(scaler.transform(x), y)) for name, (x, y) in evals.items()}


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 150
    lr: float = 0.01
    batch_size: int = 64
    weight_decay: float = 5e-4


def finetune_steps(n_labels: int, *, epochs: float, batch_size: int, min_steps: int, max_steps: int) -> int:
    """Optimizer steps of fine-tuning on ``n_labels`` images: ``epochs`` passes over the labelled
    subset, ``ceil(epochs * n_labels / batch_size)``, at least ``min_steps`` (small budgets) and at
    most ``max_steps`` (100% of a large dataset stays bounded)."""
    return min(max_steps, max(min_steps, math.ceil(epochs * n_labels / batch_size)))


def holdout_split(labels: np.ndarray, *, seed: int, fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray] | None:
    """A fixed, seeded, class-stratified split of a labelled subset into (fit, held-out) positions.

    Each class c with n_c >= 2 labels holds out ``round(fraction * n_c)`` of them, at least 1 and at
    most n_c - 1 (a class keeps at least one image to fit on); a class with a single label only fits.
    Subsets chosen without labels (``typical``) are uneven, so a 1-label class must not cancel the
    choice for the rest. Returns None when no class has 2 labels (e.g. a 1-label-per-class budget)."""
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) == 0 or counts.max() < 2:
        return None
    rng = np.random.default_rng(seed)
    held = []
    for c, n in zip(classes, counts):
        if n < 2:
            continue
        order = rng.permutation(np.flatnonzero(labels == c))
        held.append(order[:min(n - 1, max(1, int(round(fraction * n))))])
    held_out = np.sort(np.concatenate(held))
    fit = np.setdiff1d(np.arange(len(labels)), held_out)
    return fit, held_out


@dataclass(frozen=True)
class LrChoice:
    """The fine-tune lr used at a budget: ``chosen`` is False when no choice was made (a
    single-value grid, or no class with 2 labels), then ``lr`` is the grid's middle value."""

    lr: float
    chosen: bool
    heldout_acc: dict[float, float]


def choose_finetune_lr(encoder: nn.Module, num_classes: int, images: torch.Tensor, labels: torch.Tensor,
                       lrs: tuple[float, ...], steps_for: Callable[[int], int], cfg: FinetuneConfig, *, seed: int,
                       autocast: bool = False, holdout: float = 0.2) -> LrChoice:
    """Choose the fine-tune lr from ``lrs`` on the labelled subset alone (no validation or test label).

    The subset is split by :func:`holdout_split`; each lr fine-tunes on the fit part
    (``steps_for(len(fit))`` steps) and is scored on the held-out part; the best held-out accuracy
    wins, ties going to the lr nearest the grid's middle value, then to the smaller. With one lr, or
    no held-out part (no class with 2 labels), the grid's middle value is taken and
    ``chosen`` is False."""
    lrs = tuple(float(v) for v in lrs)
    middle = lrs[len(lrs) // 2]
    split = holdout_split(labels.cpu().numpy(), seed=seed, fraction=holdout) if len(lrs) > 1 else None
    if split is None:
        return LrChoice(middle, False, {})
    fit, held = (torch.as_tensor(a, device=images.device) for a in split)
    steps = steps_for(len(fit))
    scores = {lr: finetune(encoder, num_classes, images[fit], labels[fit], {"heldout": (images[held], labels[held])},
                           replace(cfg, lr=lr, steps=steps), seed=seed, autocast=autocast)["heldout"] for lr in lrs}
    best = max(range(len(lrs)), key=lambda i: (scores[lrs[i]], -abs(i - len(lrs) // 2), -lrs[i]))
    return LrChoice(lrs[best], True, scores)


def finetune(encoder: nn.Module, num_classes: int, images: torch.Tensor, labels: torch.Tensor,
             evals: dict[str, tuple[torch.Tensor, torch.Tensor]], cfg: FinetuneConfig, *, seed: int,
             autocast: bool = False) -> dict[str, float]:
    """Fine-tune a copy of the encoder with a new linear head on the labeled images.

    ``cfg.steps`` SGD steps (cosine schedule; the confirm phase sets them per budget with
    :func:`finetune_steps`); batches are always drawn with replacement (a 1% subset may be smaller than a batch).
    The encoder passed in is not modified.

    The head is a parameter-free BatchNorm then a linear layer (the BN-before-the-classifier of
    MAE's linear probing, He et al. 2022, sec. A.2), so it sees standardised features whatever
    their scale, as the linear probe's StandardScaler does. Without it a pretrained encoder's
    larger features (SimCLR's: mean norm ~5 against ~0.5 at random init, on digits) made the
    same SGD steps fall well short: 87.5% vs 98.1% test accuracy at 100% of labels.

    Returns:
        accuracy on each named evaluation set.
    """
    device = images.device
    head = nn.Sequential(nn.BatchNorm1d(encoder.out_dim, affine=False), nn.Linear(encoder.out_dim, num_classes))
    net = nn.Sequential(copy.deepcopy(encoder), head).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    bs = min(cfg.batch_size, len(images))
    net.train()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        idx = torch.randint(len(images), (bs,), generator=gen).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(net(to_float(images[idx])), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    out = {}
    with torch.no_grad():
        for name, (x, y) in evals.items():
            correct = 0
            for i in range(0, len(x), 512):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    correct += (net(to_float(x[i:i + 512])).argmax(1) == y[i:i + 512]).sum().item()
            out[name] = correct / max(1, len(x))
    return out
