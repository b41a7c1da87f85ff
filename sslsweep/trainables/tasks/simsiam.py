"""SimSiam: two views, a predictor, stop-gradient; no negatives and no momentum encoder."""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from sslsweep.trainables.tasks.base import PretextTask, TaskContext, TaskOutput, view_augment


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, z) of SimSiam eq. 1: minus the mean cosine similarity, with z a constant (stop-gradient).

    Args:
        p: (N, D) predictions; z: (N, D) projections of the other view.
    """
    return -F.cosine_similarity(p.float(), z.detach().float(), dim=1).mean()


class SimSiam(PretextTask):
    """SimSiam (Chen & He, CVPR 2021, "Exploring simple Siamese representation learning"): two
    augmented views through encoder + projector f, a predictor h on one side, and the symmetric
    loss D(h(f(x1)), sg(f(x2))) / 2 + D(h(f(x2)), sg(f(x1))) / 2. The stop-gradient alone prevents
    collapse: no negative pairs, no momentum encoder, no large batches.

    Shapes as in the paper's CIFAR setting (appendix D): a 2-layer projector (Linear-BN-ReLU,
    Linear-BN) of width ``proj_dim`` (2048) and a bottleneck predictor (``pred_hidden`` 512).
    Augmentation: SimCLR's, colour distortion of strength s (the paper: ColorJitter 0.4/0.4/0.4/0.1,
    s = 0.5). The paper keeps the predictor's learning rate fixed; here it follows the schedule.

    Args (hp):
        proj_dim, pred_hidden, strength, crop_min.

    Example:
        >>> task = SimSiam(encoder, {"proj_dim": 2048, "pred_hidden": 512, "strength": 0.5, "crop_min": 0.2}, ctx)
        >>> task(x_uint8).loss.backward()     # the loss is in [-1, 1]; -1 = views agree
    """

    def __init__(self, encoder: nn.Module, hp: Mapping[str, Any], ctx: TaskContext) -> None:
        super().__init__(encoder, hp, ctx)
        self.augment = view_augment(ctx, self.hp, gray_p=0.2)
        dim, proj, hidden = encoder.out_dim, int(self.hp["proj_dim"]), int(self.hp["pred_hidden"])
        self.projector = nn.Sequential(
            nn.Linear(dim, proj, bias=False), nn.BatchNorm1d(proj), nn.ReLU(inplace=True),
            nn.Linear(proj, proj, bias=False), nn.BatchNorm1d(proj))
        self.predictor = nn.Sequential(
            nn.Linear(proj, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, proj))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> TaskOutput:
        n = x.shape[0]
        views = torch.cat([self.augment(x, generator), self.augment(x, generator)])  # (2N, C, S, S)
        z = self.projector(self.encoder(views))  # (2N, P)
        p = self.predictor(z)  # (2N, P)
        loss = negative_cosine(p[:n], z[n:]) / 2 + negative_cosine(p[n:], z[:n]) / 2
        return TaskOutput(loss=loss, views=2 * n)
