"""RotNet: predict the rotation applied to an image."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from sslsweep.trainables.tasks.base import PretextTask, TaskContext, TaskOutput, view_augment


def rotate_batch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All four rotations of every image and their labels.

    Args:
        x: (N, C, H, W) square images.
    Returns:
        images (4N, C, H, W): block k holds ``x`` rotated by k*90 degrees counter-clockwise;
        labels (4N,): k for block k. The rotation drawn *is* the label.
    """
    rotated = torch.cat([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)])
    labels = torch.arange(4, device=x.device).repeat_interleave(x.shape[0])
    return rotated, labels


class Rotation(PretextTask):
    """RotNet (Gidaris, Singh & Komodakis, ICLR 2018, "Unsupervised representation learning by
    predicting image rotations"): a 4-way classifier on the encoder's features predicts whether an
    image was rotated by 0, 90, 180 or 270 degrees. As in the paper all four rotations of each
    image are in the same batch.

    Hyperparameters (space): ``strength`` (colour jitter, 0 in the paper), ``crop_min``.

    Example:
        >>> task = Rotation(encoder, {"strength": 0.0, "crop_min": 0.6}, ctx)
        >>> task(x_uint8).loss.backward()
    """

    has_pretext_acc: ClassVar[bool] = True

    def __init__(self, encoder: nn.Module, hp: Mapping[str, Any], ctx: TaskContext) -> None:
        super().__init__(encoder, hp, ctx)
        self.augment = view_augment(ctx, self.hp, gray_p=0.0)
        self.classifier = nn.Linear(encoder.out_dim, 4)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> TaskOutput:
        views, labels = rotate_batch(self.augment(x, generator))  # (4N, C, S, S), (4N,)
        logits = self.classifier(self.encoder(views))
        loss = F.cross_entropy(logits, labels)
        acc = (logits.argmax(1) == labels).float().mean()
        return TaskOutput(loss=loss, views=views.shape[0], acc=acc.detach())
