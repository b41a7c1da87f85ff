"""What every pretext task is: an encoder, a head and a loss behind one small interface."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import torch
from torch import nn


def epoch_batch_size(hp: Mapping[str, Any], num_images: int) -> int:
    """The batch size pretraining uses on a pool of ``num_images``: ``hp["batch_size"]`` (default
    128), at most the pool. An epoch is the pool's full batches of this size."""
    return min(int(hp.get("batch_size", 128)), num_images)


@dataclass(frozen=True)
class TaskContext:
    """What a task may know about the data: shapes and symmetries, never labels.

    Args:
        in_channels: 1 (grey) or 3 (colour).
        image_size: side of the square uint8 images the task receives.
        hflip: whether a horizontal flip preserves an image's meaning (false for digits).
        num_images: size of the unlabeled train pool.
    """

    in_channels: int
    image_size: int
    hflip: bool = True
    num_images: int = 0


@dataclass
class TaskOutput:
    """The result of one pretext step: the loss to minimise, an optional pretext accuracy and the views used."""

    loss: torch.Tensor
    views: int
    acc: torch.Tensor | None = None


class PretextTask(nn.Module):
    """Base of every pretext task. Subclasses build their heads in ``__init__`` and define ``forward``.

    ``forward(x, generator)`` receives a uint8 batch (N, C, H, W) of *unlabeled* images on the
    training device and returns a :class:`TaskOutput`. Labels are never passed to a task.

    What validation needs without importing torch (minimum image size, required
    hyperparameters, whether it pretrains at all) lives in the registry entry
    (:class:`sslsweep.trainables.tasks.TaskEntry`).

    Class attributes:
        has_pretext_acc: whether ``TaskOutput.acc`` is set.

    Attributes:
        progress: fraction of the trial's pretraining done, in [0, 1]; the training loop sets it
            before every step (from the epoch and step, so a resumed trial sees the same values).
            For schedules a paper ties to the length of training (BYOL's target decay).
    """

    has_pretext_acc: ClassVar[bool] = False

    def __init__(self, encoder: nn.Module, hp: Mapping[str, Any], ctx: TaskContext) -> None:
        super().__init__()
        self.encoder = encoder
        self.hp = dict(hp)
        self.ctx = ctx
        self.progress = 0.0

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> TaskOutput:  # pragma: no cover
        raise NotImplementedError


def mlp_head(in_dim: int, hidden: int, out: int) -> nn.Sequential:
    """The SimCLR projection head: Linear-BN-ReLU-Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out))
