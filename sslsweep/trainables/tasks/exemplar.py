"""Exemplar-CNN: every seed image is its own class, or every k-means cluster of the pool's features
is; the transformed copies of its images are the class members."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from sslsweep.rules import HP_RULES, require
from sslsweep.trainables.augment import AugmentConfig, BatchAugment, to_float
from sslsweep.trainables.evaluate import extract_features
from sslsweep.trainables.tasks.base import PretextTask, TaskContext, TaskOutput, epoch_batch_size


def random_affine(x: torch.Tensor, strength: float, generator: torch.Generator | None) -> torch.Tensor:
    """Exemplar-CNN's geometric transformations, one random draw per image: (N, C, S, S) -> same.

    At ``strength`` 1 the ranges of Dosovitskiy et al. (sec. 2): translation up to 0.2 of the
    side, scale factor in [0.7, 1.4] (log-uniform), rotation up to 20 degrees; ``strength`` scales
    the translation, the log-scale and the angle. Borders are filled by reflection.
    """
    n = x.shape[0]
    u = torch.rand(n, 4, generator=generator, device=x.device) * 2 - 1  # (N, 4) in [-1, 1)
    angle = math.radians(20.0) * strength * u[:, 0]
    log_lo, log_hi = math.log(0.7) * strength, math.log(1.4) * strength
    scale = torch.exp(log_lo + (log_hi - log_lo) * (u[:, 1] + 1) / 2)
    shift = 0.4 * strength * u[:, 2:]  # 0.2 of the side = 0.4 in [-1, 1] coordinates
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack((torch.stack((cos, -sin, shift[:, 0]), 1), torch.stack((sin, cos, shift[:, 1]), 1)), 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (N, S, S, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def kmeans(x: torch.Tensor, k: int, generator: torch.Generator | None, *, previous: torch.Tensor | None = None,
           iters: int = 10) -> torch.Tensor:
    """Cluster ids (N,) int64 in [0, k) of the points ``x`` (N, D), k <= N, on ``x``'s device: ``iters``
    Lloyd iterations from k-means++ seeding (Arthur & Vassilvitskii, SODA 2007) or, for a refresh,
    from the means in ``x`` of the ``previous`` clusters (N,): cluster i stays near what it was, so
    ids carry over. Every random draw comes from ``generator``: the same state gives the same
    clusters. A cluster left empty keeps its centre (an empty previous one starts at a random point)."""
    if previous is None:
        c = _kmeanspp(x, k, generator)
    else:
        c = _means(x, previous, x[torch.randint(len(x), (k,), generator=generator, device=x.device)])
    for _ in range(iters):
        c = _means(x, _nearest(x, c), c)
    return _nearest(x, c)


def _kmeanspp(x: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
    """k centres (k, D) drawn from the points (N, D), each with probability ~ squared distance to the nearest so far."""
    pick = torch.randint(len(x), (1,), generator=generator, device=x.device)
    centres, d2 = [x[pick]], (x - x[pick]).pow(2).sum(1)  # d2: (N,) squared distance to the nearest centre
    for _ in range(1, k):
        # the floor keeps the draw defined once every point is a centre (duplicates)
        pick = torch.multinomial(d2.clamp_min(1e-12), 1, generator=generator)
        centres.append(x[pick])
        d2 = torch.minimum(d2, (x - x[pick]).pow(2).sum(1))
    return torch.cat(centres)


def _means(x: torch.Tensor, assign: torch.Tensor, empty: torch.Tensor) -> torch.Tensor:
    """Mean (k, D) of the points (N, D) of each cluster of ``assign`` (N,); row i of ``empty`` (k, D) where none."""
    sums = torch.zeros_like(empty).index_add_(0, assign, x)
    counts = torch.bincount(assign, minlength=len(empty))[:, None]
    return torch.where(counts > 0, sums / counts.clamp_min(1), empty)


def _nearest(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centre (N,) for points (N, D) and centres (k, D), in row blocks whose
    (rows, k) distance matrix stays near 64 MiB."""
    rows, c2 = max(1, 2**24 // len(c)), c.pow(2).sum(1)  # |x - c|^2 = |x|^2 - 2 x.c + |c|^2, |x|^2 is constant
    return torch.cat([(c2 - 2 * x[i:i + rows] @ c.T).argmin(1) for i in range(0, len(x), rows)])


@dataclass(frozen=True)
class Clusters:
    """The pool grouped by cluster, to draw a batch as DeepCluster does (Caron et al., ECCV 2018):
    a non-empty cluster uniformly, then one of its images uniformly, so large clusters do not crowd
    out small ones."""

    pool: torch.Tensor  # (N, C, S, S) uint8
    members: torch.Tensor  # (N,) pool rows sorted by cluster id
    start: torch.Tensor  # (k,) where each cluster's rows begin in members
    sizes: torch.Tensor  # (k,)
    nonempty: torch.Tensor  # (m,) ids of the clusters with members

    @staticmethod
    def of(pool: torch.Tensor, assign: torch.Tensor, k: int) -> "Clusters":
        sizes = torch.bincount(assign, minlength=k)
        return Clusters(pool, torch.argsort(assign, stable=True), torch.cumsum(sizes, 0) - sizes, sizes,
                        sizes.nonzero().squeeze(1))

    def draw(self, n: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool rows (n,) and their cluster ids (n,)."""
        dev = self.pool.device
        target = self.nonempty[torch.randint(len(self.nonempty), (n,), generator=generator, device=dev)]
        within = torch.randint(2**62, (n,), generator=generator, device=dev) % self.sizes[target]
        return self.members[self.start[target] + within], target


class Exemplar(PretextTask):
    """Exemplar-CNN (Dosovitskiy, Springenberg, Riedmiller & Brox, NeurIPS 2014, "Discriminative
    unsupervised feature learning with convolutional neural networks"): K seed images each define
    a surrogate class; its members are heavily transformed copies (translation, scale, rotation,
    colour); a K-way softmax classifier on the encoder's features learns to tell them apart.

    Seeds: the first K images of the (shuffled) pool the task receives are stored in a buffer (part
    of the checkpoint); K is capped at the images one epoch shows (the pool less its last partial
    batch), so no image seeds two classes. Every step draws a batch of seeds, transforms
    each afresh and classifies it. As in the paper, only the K seeds are trained on.

    Cluster surrogates (``surrogate="cluster"``; the problem statement's idea: many seed images
    show the same real class, so their classes fight each other): the K classes are k-means
    clusters of the L2-normalised features of the whole pool. Epoch 0 trains on image surrogates as
    above; clustering starts at epoch 1, from the features that epoch learned rather than a random
    encoder's, and is refreshed every ``refresh_every`` epochs (r): at the start of epochs 1, 1 + r,
    1 + 2r, ..., with the features of the encoder at that moment (eval mode). A refresh starts
    k-means from the previous clusters' means (:func:`kmeans`), so cluster ids carry over and the
    classifier keeps what it learned (DeepCluster instead re-initialises it: on digits, with a few
    steps per epoch, that dropped the pretext accuracy back to near chance after every refresh).
    Each step draws its images from the pool (:class:`Clusters`), transforms them and classifies
    them by cluster id; the trainer's batch only sets the batch size. The assignments are a buffer
    (checkpointed). Clustering another checkpoint's features (``encoder.weights``) is not implemented.

    Large K: the classifier is parametric as in the paper, but when K exceeds ``num_sampled`` the
    softmax is a *sampled* softmax: the logits are computed only for the batch's own classes plus
    ``num_sampled`` classes drawn uniformly, with accidental hits masked. Cost per step is then
    independent of K (the K x D weight matrix is the only thing that grows); pretext accuracy is
    measured among those candidates.

    Args (hp):
        surrogate_classes: K (the paper: 50 to 32000, best near 8000 on STL-10).
        strength: magnitude of every transformation (1 = the paper's ranges, see :func:`random_affine`;
            colour: brightness/contrast/saturation x [1 - 0.4s, 1 + 0.4s], hue +-0.1s).
        num_sampled: sampled-softmax candidates beyond the batch's classes (4096).
        surrogate: ``image`` (the paper) or ``cluster``.
        refresh_every: with ``cluster``, epochs between two clusterings.

    Example:
        >>> task = Exemplar(encoder, {"surrogate_classes": 8000, "strength": 1.0, "num_sampled": 4096,
        ...                           "surrogate": "image", "refresh_every": 1, "batch_size": 128}, ctx)
        >>> out = task(x_uint8); out.loss.backward()
    """

    has_pretext_acc: ClassVar[bool] = True

    def __init__(self, encoder: nn.Module, hp: Mapping[str, Any], ctx: TaskContext) -> None:
        super().__init__(encoder, hp, ctx)
        k = int(self.hp["surrogate_classes"])
        if ctx.num_images > 0:
            # capped at the images one epoch shows: it visits full batches only, and seeds stored
            # from a second epoch would repeat images already held (two classes, one seed image)
            bs = epoch_batch_size(self.hp, ctx.num_images)
            k = min(k, ctx.num_images // bs * bs)
        self.k = k
        self.strength = float(self.hp["strength"])
        self.num_sampled = int(self.hp["num_sampled"])
        for key in ("surrogate", "refresh_every"):  # tests and benchmarks build tasks without validation
            valid, rule = HP_RULES[key]
            require(valid(self.hp[key]), key, self.hp[key], rule)
        self.surrogate, self.refresh_every = str(self.hp["surrogate"]), int(self.hp["refresh_every"])
        self.colour = BatchAugment(AugmentConfig(  # colour only: the crop is the whole image
            size=ctx.image_size, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0,
            strength=0.5 * self.strength, jitter_p=1.0, gray_p=0.0))
        s = ctx.image_size
        self.register_buffer("seeds", torch.zeros(self.k, ctx.in_channels, s, s, dtype=torch.uint8))
        self.register_buffer("filled", torch.zeros((), dtype=torch.int64))
        self.classifier = nn.Linear(encoder.out_dim, self.k)
        self.clusters: Clusters | None = None  # rebuilt by on_epoch_start from the pool and `assign`
        if self.surrogate == "cluster":
            if ctx.num_images <= 0:
                raise ValueError(f"surrogate = 'cluster' needs the pool size: TaskContext.num_images = "
                                 f"{ctx.num_images}, must be > 0")
            self.register_buffer("assign", torch.zeros(ctx.num_images, dtype=torch.int64))  # (N,) cluster ids

    def on_epoch_start(self, pool: torch.Tensor, epoch: int, generator: torch.Generator | None = None) -> None:
        if self.surrogate != "cluster" or epoch == 0:
            return
        if len(pool) != len(self.assign):
            raise ValueError(f"the pool holds {len(pool)} images, the task was built for {len(self.assign)}")
        if (epoch - 1) % self.refresh_every == 0:
            feats = F.normalize(extract_features(self.encoder, pool), dim=1)  # (N, D)
            self.assign.copy_(kmeans(feats, self.k, generator, previous=self.assign if epoch > 1 else None))
        self.clusters = Clusters.of(pool, self.assign, self.k)

    def _store(self, x: torch.Tensor) -> int:
        """Append unseen images of ``x`` to the seed buffer until it holds K; returns how many it holds."""
        filled = int(self.filled)  # one host sync per step
        take = min(self.k - filled, x.shape[0])
        if take > 0:
            self.seeds[filled:filled + take] = x[:take]
            self.filled += take
        return filled + take

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> TaskOutput:
        n = x.shape[0]
        if self.clusters is None:  # image surrogates: the seed is the class
            filled = self._store(x)
            target = torch.randint(filled, (n,), generator=generator, device=x.device)  # surrogate classes (N,)
            originals = self.seeds[target]
        else:  # cluster surrogates: images drawn from the pool, labelled with their cluster
            rows, target = self.clusters.draw(n, generator)
            originals = self.clusters.pool[rows]
        views = self.colour(random_affine(to_float(originals), self.strength, generator), generator)
        feats = self.encoder(views)  # (N, D)
        if self.k <= self.num_sampled:  # full softmax over the K surrogate classes
            logits, labels = self.classifier(feats), target
        else:  # sampled softmax: candidates = the batch's classes + uniform negatives
            neg = torch.randint(self.k, (self.num_sampled,), generator=generator, device=x.device)
            cand = torch.cat([target, neg])  # (N + m,)
            logits = feats @ self.classifier.weight[cand].T + self.classifier.bias[cand]  # (N, N + m)
            labels = torch.arange(n, device=x.device)
            hit = (cand[None, :] == target[:, None]) & (labels[:, None] != torch.arange(len(cand), device=x.device))
            logits = logits.masked_fill(hit, float("-inf"))  # the own class appears once
        loss = F.cross_entropy(logits.float(), labels)
        acc = (logits.argmax(1) == labels).float().mean()
        return TaskOutput(loss=loss, views=n, acc=acc.detach())
