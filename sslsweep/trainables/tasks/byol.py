"""BYOL: an online network predicts a slow-moving target network's projection of another view."""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from sslsweep.trainables.tasks.base import PretextTask, TaskContext, TaskOutput, mlp_head, view_augment


def byol_loss(q: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL eq. 2: ||q/|q| - z/|z|||^2 = 2 - 2 cos(q, z), averaged over the batch; z is the target (no gradient).

    Args:
        q: (N, P) online predictions; z: (N, P) target projections of the other view.
    """
    return (2 - 2 * F.cosine_similarity(q.float(), z.detach().float(), dim=1)).mean()


class BYOL(PretextTask):
    """BYOL (Grill et al., NeurIPS 2020, "Bootstrap your own latent"): the online network (encoder,
    projector, predictor) predicts the target network's projection of the other view; the target
    (encoder, projector) is an exponential moving average of the online one, xi <- tau xi +
    (1 - tau) theta, and gets no gradient. Symmetrised loss, no negatives.

    Shapes as in the paper: projector and predictor are Linear-BN-ReLU-Linear, hidden
    ``hidden_dim`` (4096), output ``proj_dim`` (256). Augmentation: SimCLR's (strength s).

    The target decay follows the paper's schedule (sec. 3.2): tau = 1 - (1 - tau_base)
    (cos(pi k / K) + 1) / 2 over the trial's training, from tau_base to 1 (``progress`` = k / K is
    set by the training loop). Deviation: the target is updated at the start of each training step
    from the online weights of the previous step (the paper: right after it): the same sequence
    of targets.

    Args (hp):
        ema: tau_base (the paper's Table 5b: 0.9 to 0.999 work, 0.996 default).
        proj_dim, hidden_dim, strength, crop_min.

    Example:
        >>> task = BYOL(encoder, {"ema": 0.99, "proj_dim": 256, "hidden_dim": 4096, "strength": 0.5,
        ...                       "crop_min": 0.08}, ctx)
        >>> task(x_uint8).loss.backward()     # the loss is in [0, 4]
    """

    def __init__(self, encoder: nn.Module, hp: Mapping[str, Any], ctx: TaskContext) -> None:
        super().__init__(encoder, hp, ctx)
        self.tau = float(self.hp["ema"])
        self.augment = view_augment(ctx, self.hp, gray_p=0.2)
        dim, out, hidden = encoder.out_dim, int(self.hp["proj_dim"]), int(self.hp["hidden_dim"])
        self.projector = mlp_head(dim, hidden, out)
        self.predictor = mlp_head(out, hidden, out)
        self.target = nn.Sequential(copy.deepcopy(encoder), copy.deepcopy(self.projector))
        self.target.requires_grad_(False)  # not in the trainer's optimizer

    def current_tau(self) -> float:
        """tau at this point of training: tau_base at the start, 1 at the end (cosine)."""
        return 1 - (1 - self.tau) * (math.cos(math.pi * self.progress) + 1) / 2

    @torch.no_grad()
    def update_target(self) -> None:
        """xi <- tau xi + (1 - tau) theta for weights; batch-norm statistics are copied."""
        online = nn.Sequential(self.encoder, self.projector)
        tau = self.current_tau()
        for t, o in zip(self.target.parameters(), online.parameters()):
            t.lerp_(o, 1 - tau)
        for t, o in zip(self.target.buffers(), online.buffers()):
            t.copy_(o)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> TaskOutput:
        n = x.shape[0]
        if self.training:
            self.update_target()
        views = torch.cat([self.augment(x, generator), self.augment(x, generator)])  # (2N, C, S, S)
        q = self.predictor(self.projector(self.encoder(views)))  # (2N, P) online predictions
        with torch.no_grad():
            z = self.target(views)  # (2N, P) target projections
        loss = byol_loss(q[:n], z[n:]) + byol_loss(q[n:], z[:n])
        return TaskOutput(loss=loss, views=2 * n)
