"""Exemplar-CNN: every seed image is its own class; its transformed copies are the class members."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from sslsweep.trainables.augment import AugmentConfig, BatchAugment, to_float
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


class Exemplar(PretextTask):
    """Exemplar-CNN (Dosovitskiy, Springenberg, Riedmiller & Brox, NeurIPS 2014, "Discriminative
    unsupervised feature learning with convolutional neural networks"): K seed images each define
    a surrogate class; its members are heavily transformed copies (translation, scale, rotation,
    colour); a K-way softmax classifier on the encoder's features learns to tell them apart.

    Seeds: the first K images of the (shuffled) pool the task receives are stored in a buffer (part
    of the checkpoint); K is capped at the images one epoch shows (the pool less its last partial
    batch), so no image seeds two classes. Every step draws a batch of seeds, transforms
    each afresh and classifies it. As in the paper, only the K seeds are trained on.

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

    Example:
        >>> task = Exemplar(encoder, {"surrogate_classes": 8000, "strength": 1.0}, ctx)
        >>> out = task(x_uint8); out.loss.backward()
    """

    has_pretext_acc: ClassVar[bool] = True
    # only for tests/trainables/test_tasks.py, which leaves it out (see PretextTask.defaults)
    defaults = {"num_sampled": 4096}

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
        self.colour = BatchAugment(AugmentConfig(  # colour only: the crop is the whole image
            size=ctx.image_size, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0,
            strength=0.5 * self.strength, jitter_p=1.0, gray_p=0.0))
        s = ctx.image_size
        self.register_buffer("seeds", torch.zeros(self.k, ctx.in_channels, s, s, dtype=torch.uint8))
        self.register_buffer("filled", torch.zeros((), dtype=torch.int64))
        self.classifier = nn.Linear(encoder.out_dim, self.k)

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
        filled = self._store(x)
        target = torch.randint(filled, (n,), generator=generator, device=x.device)  # surrogate classes (N,)
        views = self.colour(random_affine(to_float(self.seeds[target]), self.strength, generator), generator)
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
