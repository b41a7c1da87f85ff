"""Evaluation of a frozen or fine-tuned encoder: kNN, linear probe, fine-tuning, RankMe.

The first three read labels, RankMe reads none; pretext training calls none of them. The selection
metric (search phase) uses the validation split; test accuracy is computed only in the confirm phase.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator

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
             *, k: int = 20, num_classes: int, temperature: float = 0.07, query_chunk: int = 1024,
             bank_chunk: int = 65536) -> float:
    """Weighted kNN top-1 accuracy on cosine similarity (Wu et al. 2018, as used by SimCLR codebases):
    the share of queries whose :func:`knn_predict` class is their label.

    Args:
        bank: (M, D) features with labels (M,). query: (Q, D) features with labels (Q,).
    """
    pred = knn_predict(bank, bank_labels, query, k=k, num_classes=num_classes, temperature=temperature,
                       query_chunk=query_chunk, bank_chunk=bank_chunk)
    return (pred == query_labels.to(pred.device)).sum().item() / max(1, len(query))


@torch.no_grad()
def loo_knn_top1(feats: torch.Tensor, labels: torch.Tensor, *, k: int = 20, num_classes: int,
                 max_queries: int = 10_000, seed: int = 0, temperature: float = 0.07) -> float:
    """Leave-one-out weighted kNN top-1 accuracy inside one labelled set: each member is classified
    by the k nearest *other* members (:func:`knn_predict` with its own row excluded).

    The selection signal of ``eval.selection = budget``: it reads the labels of this set and no
    other. Members of a class with a single label cannot be classified by their own class and are
    not scored (they still vote); more than ``max_queries`` scored members are subsampled (seeded),
    the bank stays whole. NaN when no class has 2 labels (nothing can be held out).

    Args:
        feats: (n, D) features of the labelled set; labels: (n,) their classes.
    """
    labels = labels.to(feats.device, torch.long)
    counts = torch.bincount(labels, minlength=num_classes)
    scored = torch.nonzero(counts[labels] >= 2).squeeze(1)
    if len(scored) == 0:
        return float("nan")
    if len(scored) > max_queries:
        g = torch.Generator().manual_seed(seed)
        scored = scored[torch.randperm(len(scored), generator=g)[:max_queries].to(scored.device)]
    pred = knn_predict(feats, labels, feats[scored], k=k, num_classes=num_classes, temperature=temperature,
                       exclude=scored)
    return (pred == labels[scored]).float().mean().item()


@torch.no_grad()
def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, query: torch.Tensor, *, k: int = 20,
                num_classes: int, temperature: float = 0.07, query_chunk: int = 1024,
                bank_chunk: int = 65536, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted kNN classes of ``query`` (Wu et al., "Unsupervised Feature Learning via
    Non-Parametric Instance Discrimination", CVPR 2018): each of the k bank features most
    cosine-similar to a query votes for its class with weight exp(sim / temperature).

    The bank streams: chunk by chunk (normalised and moved to the query's device one chunk at a
    time, so it may stay on the CPU), each query keeping a running top k. Memory is
    O(query_chunk x bank_chunk + Q x k), not O(Q x M); the result equals the one-block computation
    (the k largest similarities of the chunks' top-k lists are the k largest overall).

    Args:
        bank: (M, D) features, any device; bank_labels: (M,) class ids in [0, num_classes).
        query: (Q, D) features, on the device that computes.
        exclude: (Q,) the bank row each query may not use (itself, for leave-one-out), or none.
    Returns:
        (Q,) predicted class ids, on ``query``'s device.
    """
    device = query.device
    k = min(k, len(bank) - (exclude is not None))
    query = F.normalize(query.float(), dim=1)
    top_sim = torch.full((len(query), k), -math.inf, device=device)  # (Q, k) running top k
    top_lab = torch.zeros((len(query), k), dtype=torch.long, device=device)
    for j in range(0, len(bank), bank_chunk):
        chunk = F.normalize(bank[j:j + bank_chunk].to(device, torch.float32), dim=1)  # (m, D)
        labels = bank_labels[j:j + bank_chunk].to(device, torch.long)
        for i in range(0, len(query), query_chunk):
            sims = query[i:i + query_chunk] @ chunk.T  # (q, m)
            if exclude is not None:  # a query's own row, where it lies in this chunk, cannot vote
                own = exclude[i:i + query_chunk].to(device) - j
                rows = torch.nonzero((own >= 0) & (own < len(chunk))).squeeze(1)
                sims[rows, own[rows]] = -math.inf
            sim, idx = sims.topk(min(k, len(chunk)), dim=1)  # (q, <= k)
            cand_sim = torch.cat([top_sim[i:i + query_chunk], sim], dim=1)  # (q, <= 2k): old top k + the chunk's
            cand_lab = torch.cat([top_lab[i:i + query_chunk], labels[idx]], dim=1)
            best, pos = cand_sim.topk(k, dim=1)
            top_sim[i:i + query_chunk], top_lab[i:i + query_chunk] = best, cand_lab.gather(1, pos)
    pred = torch.empty(len(query), dtype=torch.long, device=device)
    for i in range(0, len(query), query_chunk):  # (q, num_classes) votes at a time
        votes = torch.zeros(len(top_sim[i:i + query_chunk]), num_classes, device=device)
        votes.scatter_add_(1, top_lab[i:i + query_chunk], (top_sim[i:i + query_chunk] / temperature).exp())
        pred[i:i + query_chunk] = votes.argmax(1)
    return pred


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


# n_train x dim from which linear_probe fits in torch on an accelerator rather than scikit-learn.
# 2^22: CIFAR-10's 10% (5000 labels) of 512-d ResNet-18 features stays in scikit-learn (its numbers
# unchanged), its 100% (25.6M) and a 10%-of-ImageNet probe of ResNet-50 features (~262M) go to torch.
TORCH_PROBE_MIN_ENTRIES = 2 ** 22


def linear_probe(train_x: np.ndarray | torch.Tensor, train_y: np.ndarray | torch.Tensor,
                 evals: dict[str, tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]],
                 *, c: float = 1.0, seed: int = 0, device: torch.device | str | None = None) -> dict[str, float]:
    """Multinomial logistic regression (L2, inverse strength ``c``) on standardised frozen features.

    :func:`probe_backend` chooses the solver: :func:`torch_linear_probe` (the same objective,
    float32, full-batch L-BFGS) when ``device`` (default: the features' own, the CPU for numpy
    arrays) is an accelerator and the probe has at least :data:`TORCH_PROBE_MIN_ENTRIES` feature
    entries; scikit-learn's L-BFGS on the CPU otherwise. With a single labeled class the probe
    predicts that class.

    Args:
        train_x: (N, D) features, train_y: (N,) labels; evals: name -> ((M, D), (M,)).
    Returns:
        accuracy on each named evaluation set.
    """
    train_y = _numpy(train_y)
    if len(np.unique(train_y)) < 2:
        return {name: float((_numpy(y) == train_y[0]).mean()) for name, (_, y) in evals.items()}
    device = torch.device(device) if device is not None else _device_of(train_x)
    if probe_backend(len(train_x), int(train_x.shape[1]), device) == "torch":
        return torch_linear_probe(train_x, train_y, evals, c=c, device=device)
    return sklearn_linear_probe(_numpy(train_x), train_y, {k: (_numpy(x), _numpy(y)) for k, (x, y) in evals.items()},
                                c=c, seed=seed)


def probe_backend(n_train: int, dim: int, device: torch.device) -> str:
    """``"torch"`` for a probe of at least :data:`TORCH_PROBE_MIN_ENTRIES` feature entries on an
    accelerator, else ``"sklearn"``. Not on the CPU: there the torch solver took 1.3-1.6x the CPU
    time of scikit-learn's on a 20k x 2048 probe (2 cores; benchmark in docs/tasks.md)."""
    return "torch" if device.type != "cpu" and n_train * dim >= TORCH_PROBE_MIN_ENTRIES else "sklearn"


def _device_of(a: np.ndarray | torch.Tensor) -> torch.device:
    return a.device if isinstance(a, torch.Tensor) else torch.device("cpu")


def _numpy(a: np.ndarray | torch.Tensor) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def sklearn_linear_probe(train_x: np.ndarray, train_y: np.ndarray, evals: dict[str, tuple[np.ndarray, np.ndarray]],
                         *, c: float = 1.0, seed: int = 0) -> dict[str, float]:
    """scikit-learn's ``LogisticRegression(C=c)`` (L-BFGS, tol 1e-4, at most 1000 iterations) on
    features standardised by a ``StandardScaler`` fitted on ``train_x``; accuracy per eval set."""
    # imported here: only the linear probe needs scikit-learn, whose import takes 1.4 s (measured)
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(C=c, max_iter=1000, random_state=seed)
    clf.fit(scaler.transform(train_x), train_y)
    return {name: float(clf.score(scaler.transform(x), y)) for name, (x, y) in evals.items()}


@torch.enable_grad()
def torch_linear_probe(train_x: np.ndarray | torch.Tensor, train_y: np.ndarray | torch.Tensor,
                       evals: dict[str, tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]], *,
                       c: float = 1.0, device: torch.device | str | None = None, max_iter: int = 1000,
                       tol: float = 1e-4, chunk: int = 65536) -> dict[str, float]:
    """:func:`sklearn_linear_probe` in torch, for large probes on an accelerator: the same model
    and objective, on ``device`` (default: ``train_x``'s), float32.

    As scikit-learn does: features standardised with the train set's mean and population std
    (constant features left unscaled); the objective is mean cross-entropy + ||W||^2 / (2 c N),
    the intercept unpenalised (scikit-learn's C times the summed loss plus ||W||^2 / 2, divided
    by C N), minimised from zero by L-BFGS (strong-Wolfe line search, 10 corrections, stopping
    when no gradient entry exceeds ``tol`` or after ``max_iter`` iterations). Two classes are one
    logit (binary logistic regression, as scikit-learn fits them), more are a softmax over all.

    Returns:
        accuracy on each named evaluation set.
    """
    dev = torch.device(device) if device is not None else _device_of(train_x)
    x = _tensor(train_x, dev, torch.float32)  # (N, D)
    mean, scale = x.mean(0), x.std(0, correction=0)
    scale[x.amax(0) == x.amin(0)] = 1.0  # a constant feature stays 0 after centring
    x = (x - mean) / scale
    classes, y = torch.unique(_tensor(train_y, dev, torch.long), return_inverse=True)  # y: (N,) in [0, K)
    w, b = _fit_softmax(x, y, len(classes), c=c, max_iter=max_iter, tol=tol)
    out = {}
    with torch.no_grad():
        for name, (ex, ey) in evals.items():
            ex, ey = _tensor(ex, dev, torch.float32), _tensor(ey, dev, torch.long)
            correct = sum(int((classes[_logits((ex[i:i + chunk] - mean) / scale, w, b).argmax(1)]
                               == ey[i:i + chunk]).sum()) for i in range(0, len(ex), chunk))
            out[name] = correct / max(1, len(ex))
    return out


def _tensor(a: np.ndarray | torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach().to(device, dtype)
    return torch.tensor(np.asarray(a), device=device, dtype=dtype)  # a copy: object-store arrays are read-only


def _logits(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, K) logits; with one weight column (two classes) the first class's logit is 0."""
    z = x @ w + b  # (N, K) or (N, 1)
    return torch.cat([torch.zeros_like(z), z], dim=1) if w.shape[1] == 1 else z


def _fit_softmax(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, c: float, max_iter: int,
                 tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (D, K) (or (D, 1) for two classes) and intercepts minimising the probe's objective."""
    cols = 1 if num_classes == 2 else num_classes
    w = torch.zeros(x.shape[1], cols, device=x.device, requires_grad=True)
    b = torch.zeros(cols, device=x.device, requires_grad=True)
    # scipy's L-BFGS-B as scikit-learn calls it: 10 corrections, at most 15000 function evaluations
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, max_eval=15000, tolerance_grad=tol,
                            history_size=10, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(_logits(x, w, b), y) + (w * w).sum() / (2 * c * len(x))
        loss.backward()
        return loss

    opt.step(objective)
    return w.detach(), b.detach()


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 150
    lr: float = 0.01
    batch_size: int = 64
    weight_decay: float = 5e-4


def finetune_steps(n_labels: int, *, epochs: float, batch_size: int, min_steps: int, max_steps: int) -> int:
    """Optimizer steps of fine-tuning on ``n_labels`` images: ``epochs`` passes over the labelled
    subset, ``ceil(epochs * n_labels / batch_size)``, at least ``min_steps`` (small budgets) and at
    most ``max_steps`` (100% of a large dataset stays bounded).

    With the default ``confirm`` (30 epochs, batch 64, floor 150, cap 5000), CIFAR-10's train pool
    (50,000 less the 15% validation split: 42,500) gives 420 labels at 1% -> 197 steps (30
    epochs), 4,250 at 10% -> 1,993 (30 epochs), 42,500 at 100% -> 5,000 (the cap: 7.5 epochs);
    a 1M-image pool hits the cap from 1% on (10% of ImageNet-1k: 2.9 epochs); see docs/tasks.md."""
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
                       autocast: bool = False, holdout: float = 0.2, device: torch.device | None = None) -> LrChoice:
    """Choose the fine-tune lr from ``lrs`` on the labelled subset alone (no validation or test label).

    The subset is split by :func:`holdout_split`; each lr fine-tunes on the fit part
    (``steps_for(len(fit))`` steps) and is scored on the held-out part; the best held-out accuracy
    wins, ties going to the lr nearest the grid's middle value, then to the smaller. With one lr, or
    no held-out part (no class with 2 labels), the grid's middle value is taken and
    ``chosen`` is False. ``images`` and ``device`` as for :func:`finetune` (the subset may stay in
    host memory)."""
    lrs = tuple(float(v) for v in lrs)
    middle = lrs[len(lrs) // 2]
    split = holdout_split(labels.cpu().numpy(), seed=seed, fraction=holdout) if len(lrs) > 1 else None
    if split is None:
        return LrChoice(middle, False, {})
    fit, held = (torch.as_tensor(a) for a in split)
    steps = steps_for(len(fit))

    def held_out() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # a batch at a time, never a copy of the part
        for i in range(0, len(held), 512):
            part = held[i:i + 512]
            yield images[part.to(images.device)], labels[part.to(labels.device)]

    scores = {lr: finetune(encoder, num_classes, images, labels, {"heldout": held_out}, replace(cfg, lr=lr, steps=steps),
                           seed=seed, autocast=autocast, rows=fit, device=device)["heldout"] for lr in lrs}
    best = max(range(len(lrs)), key=lambda i: (scores[lrs[i]], -abs(i - len(lrs) // 2), -lrs[i]))
    return LrChoice(lrs[best], True, scores)


# What a fine-tuned model is scored on: (images, labels) tensors, or a function giving (images,
# labels) batches on the device (a split streamed or copied a batch at a time).
EvalSet = tuple[torch.Tensor, torch.Tensor] | Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]


def _eval_batches(data: EvalSet, batch_size: int = 512) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if callable(data):
        yield from data()
        return
    x, y = data
    for i in range(0, len(x), batch_size):
        yield x[i:i + batch_size], y[i:i + batch_size]


def finetune(encoder: nn.Module, num_classes: int, images: torch.Tensor, labels: torch.Tensor,
             evals: dict[str, EvalSet], cfg: FinetuneConfig, *, seed: int, autocast: bool = False,
             rows: torch.Tensor | None = None, device: torch.device | None = None) -> dict[str, float]:
    """Fine-tune a copy of the encoder with a new linear head on the labeled images.

    ``cfg.steps`` SGD steps (cosine schedule; the confirm phase sets them per budget with
    :func:`finetune_steps`); batches are always drawn with replacement (a 1% subset may be smaller than a batch).
    The encoder passed in is not modified. The head's initial weights and the batches come from
    ``seed`` alone, so the same call gives the same result whatever ran before in the process.

    The head is a parameter-free BatchNorm then a linear layer (the BN-before-the-classifier of
    MAE's linear probing, He et al. 2022, sec. A.2), so it sees standardised features whatever
    their scale, as the linear probe's StandardScaler does. Without it a pretrained encoder's
    larger features (SimCLR's: mean norm ~5 against ~0.5 at random init, on digits) made the
    same SGD steps fall well short: 87.5% vs 98.1% test accuracy at 100% of labels.

    ``images`` may stay in host memory (a label budget's subset under ``host`` or ``stream``
    residency) while the model trains on ``device`` (default: where ``images`` are): each batch is
    copied there, so the device holds a batch, never the subset. ``rows`` (default: all) are the
    positions of ``images`` to train on; the draws are those of ``images[rows]``, without the copy.

    Returns:
        accuracy on each named evaluation set (tensors, or a function giving batches: :data:`EvalSet`).
    """
    device = images.device if device is None else torch.device(device)
    rows = torch.arange(len(images)) if rows is None else torch.as_tensor(rows).cpu()
    with torch.random.fork_rng(devices=[]):  # the head's init from ``seed``, not from whatever ran before
        torch.manual_seed(seed)
        head = nn.Sequential(nn.BatchNorm1d(encoder.out_dim, affine=False), nn.Linear(encoder.out_dim, num_classes))
    net = nn.Sequential(copy.deepcopy(encoder), head).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    bs = min(cfg.batch_size, len(rows))
    net.train()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        pick = rows[torch.randint(len(rows), (bs,), generator=gen)]
        x = images[pick.to(images.device)].to(device, non_blocking=True)
        y = labels[pick.to(labels.device)].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(net(to_float(x)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    out = {}
    with torch.no_grad():
        for name, data in evals.items():
            correct = total = 0
            for x, y in _eval_batches(data):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    correct += (net(to_float(x)).argmax(1) == y).sum().item()
                total += len(y)
            out[name] = correct / max(1, total)
    return out

