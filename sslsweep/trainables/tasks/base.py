"""What every pretext task is: an encoder, a head and a loss behind one small interface."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import nn

from sslsweep.trainables.augment import AugmentConfig, BatchAugment


def epoch_batch_size(hp: Mapping[str, Any], num_images: int) -> int:
    """The batch size pretraining uses on a pool of ``num_images``: ``hp["batch_size"]`` (required:
    the shared space sets it), at most the pool. An epoch is the pool's full batches of this size."""
    return min(int(hp["batch_size"]), num_images)


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
    """The result of one pretext step: the loss to minimise, an optional pretext accuracy and the views used.

    ``extra_losses[name]`` is the loss of the task's own optimizer ``name``
    (:meth:`PretextTask.extra_optimizers`); the trainer backpropagates it to that optimizer's
    parameters only. ``loss`` must not reach those parameters (the GAN detaches its fakes).
    """

    loss: torch.Tensor
    views: int
    acc: torch.Tensor | None = None
    extra_losses: dict[str, torch.Tensor] = field(default_factory=dict)


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
    #: set on each rank of a multi-worker trial (:func:`sslsweep.trainables.distributed.join`)
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __init__(self, encoder: nn.Module, hp: Mapping[str, Any], ctx: TaskContext) -> None:
        super().__init__()
        self.encoder = encoder
        self.hp = dict(hp)
        self.ctx = ctx
        self.progress = 0.0

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> TaskOutput:  # pragma: no cover
        raise NotImplementedError

    def gather_batch(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` (n, ...) of this rank's images -> the whole batch's (N, ...), in the batch's order,
        differentiably; ``z`` itself on one worker. For a loss that couples the samples of a batch
        (NT-Xent's negatives): computed on the gathered batch it equals the one-worker loss."""
        return z if self.gather is None else self.gather(z)

    def on_epoch_start(self, pool: torch.Tensor, epoch: int, generator: torch.Generator | None = None) -> None:
        """Called by the training loop before every epoch, including the first after a resume, with
        the whole unlabeled pool (uint8 (N, C, H, W) on the device: the same images in the same
        order every epoch) and the index of the epoch about to run (0 first). For a task whose
        targets depend on the pool as a whole (Exemplar on clusters). Anything it computes that a
        later step depends on must be a buffer (checkpointed) or be rebuilt here from buffers, and
        its random draws must come from ``generator``, so a resumed trial continues exactly.
        Nothing by default."""

    def extra_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The task's own optimizers by name, for parameters trained on a loss of their own
        (``TaskOutput.extra_losses[name]``) rather than on ``TaskOutput.loss``: a GAN's generator.

        The trainer calls this once, keeps these parameters out of its own optimizer, steps each
        after every training step at the optimizer's own learning rate (no schedule), and
        checkpoints their state. None by default.
        """
        return {}


def view_augment(ctx: TaskContext, hp: Mapping[str, Any], *, gray_p: float) -> BatchAugment:
    """SimCLR's view generator as the view-based tasks configure it: a random resized crop of
    area ``[hp["crop_min"], 1]``, a horizontal flip (p 0.5) where ``ctx.hflip`` allows it, colour
    distortion of strength ``hp["strength"]`` and, for colour images, grayscale with probability
    ``gray_p`` (a task's paper sets it: 0.2 in SimCLR)."""
    return BatchAugment(AugmentConfig(
        size=ctx.image_size, crop_scale=(float(hp["crop_min"]), 1.0), flip_p=0.5 if ctx.hflip else 0.0,
        strength=float(hp["strength"]), gray_p=gray_p if ctx.in_channels == 3 else 0.0))


def mlp_head(in_dim: int, hidden: int, out: int) -> nn.Sequential:
    """The SimCLR projection head: Linear-BN-ReLU-Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out))
