"""SimCLR: contrastive learning between two augmented views of each image."""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from sslsweep.rules import HP_RULES, require
from sslsweep.trainables.tasks.base import PretextTask, TaskContext, TaskOutput, mlp_head, view_augment
from sslsweep.trainables.tasks.contrastive import debiased_nt_xent, fnc_nt_xent


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (eq. 1 of the paper).

    Args:
        z1, z2: (N, D) projections of the two views; row i of z1 and row i of z2 are positives,
            the other 2N - 2 rows are negatives.
        temperature: tau > 0.
    Returns:
        the loss averaged over all 2N anchors.
    """
    n = z1.shape[0]
    # fp32 for a stable softmax: under autocast the matmul would run in bf16 whatever its inputs'
    # dtype (tests/trainables/test_simclr_rotation.py measures the difference)
    with torch.autocast(z1.device.type, enabled=False):
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2N, D)
        sim = z @ z.T / temperature  # (2N, 2N) cosine similarities / tau
        sim.fill_diagonal_(float("-inf"))  # an anchor is not its own negative
        idx = torch.arange(n, device=z.device)  # made on the device: no host-to-device copy (and sync) per step
        targets = torch.cat([idx + n, idx])
        return F.cross_entropy(sim, targets)


class SimCLR(PretextTask):
    """SimCLR (Chen, Kornblith, Norouzi & Hinton, ICML 2020, "A simple framework for contrastive
    learning of visual representations"): two views of each image from random resized crop,
    flip and colour distortion of strength s; an MLP projection head; NT-Xent with temperature tau.

    Hyperparameters (space): ``temperature``, ``strength`` (s: jitter 0.8s/0.8s/0.8s/0.2s),
    ``proj_dim``, ``crop_min``, and ``negatives``, what to do about negatives of the anchor's own
    class (:mod:`~sslsweep.trainables.tasks.contrastive`): ``standard`` (NT-Xent), ``debiased``
    (Chuang et al. 2020, class prior ``tau_plus``), ``eliminate`` or ``attract`` (Huynh et al.
    2022, the ``fne_k`` most similar negatives dropped from the denominator or made positives).

    Example:
        >>> task = SimCLR(encoder, {"temperature": 0.5, "strength": 0.5, "crop_min": 0.2, "proj_dim": 128,
        ...                         "negatives": "standard"}, ctx)
        >>> out = task(x_uint8)           # x_uint8: (N, C, H, W) uint8
        >>> out.loss.backward()
    """

    def __init__(self, encoder: nn.Module, hp: Mapping[str, Any], ctx: TaskContext) -> None:
        super().__init__(encoder, hp, ctx)
        self.temperature = float(self.hp["temperature"])
        self.negatives = str(self.hp["negatives"])
        valid, rule = HP_RULES["negatives"]
        require(valid(self.negatives), "negatives", self.negatives, rule)
        self.augment = view_augment(ctx, self.hp, gray_p=0.2)
        dim = encoder.out_dim
        self.projector = mlp_head(dim, dim, int(self.hp["proj_dim"]))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> TaskOutput:
        n = x.shape[0]
        views = self.augment(torch.cat([x, x]), generator)  # (2N, C, S, S): two independent views, one pass
        z = self.projector(self.encoder(views))  # one pass: BN statistics over both views
        # on several workers every rank's negatives are the whole global batch's (distributed.py)
        return TaskOutput(loss=self.loss(self.gather_batch(z[:n]), self.gather_batch(z[n:])), views=2 * n)

    def loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """The contrastive loss ``negatives`` selects, on the (N, D) projections of the two views;
        ``tau_plus`` and ``fne_k`` are read only by the variants that use them."""
        if self.negatives == "debiased":
            return debiased_nt_xent(z1, z2, self.temperature, float(self.hp["tau_plus"]))
        if self.negatives in ("eliminate", "attract"):
            return fnc_nt_xent(z1, z2, self.temperature, self.hp["fne_k"], attract=self.negatives == "attract")
        return nt_xent(z1, z2, self.temperature)
