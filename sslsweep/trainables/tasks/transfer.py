"""Transfer: the encoder starts from pretrained weights and is evaluated without pretext training."""

from __future__ import annotations

import torch

from sslsweep.trainables.tasks.base import PretextTask, TaskOutput


class Transfer(PretextTask):
    """The transfer baseline: features of an encoder pretrained elsewhere, no pretext training here.

    The weights come from ``encoder.weights`` and are loaded when the encoder is built
    (:func:`sslsweep.trainables.encoders.build_encoder`): either torchvision weights by name,
    ``ResNet18_Weights.IMAGENET1K_V1`` (with ``encoder=resnet18 encoder.width=64``; the 7x7 ImageNet
    conv1 is resized to the CIFAR stem's 3x3, summed over colour channels for grey images) or
    ``ResNet50_Weights.IMAGENET1K_V2`` (with ``encoder=resnet50``, at 96-224 px), or a
    checkpoint file, ``encoder.weights=/path/to/file.pt``: an encoder state dict or an sslsweep
    trial checkpoint (``state.pt``). Registered with ``pretrains=False``: like ``none`` it has no
    search space and runs one search trial; linear probe = frozen transfer, fine-tuning = the usual
    transfer-learning baseline. Offline without the file, building the encoder fails with one line
    naming the file to provide.
    """

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> TaskOutput:
        raise RuntimeError("the transfer baseline has no pretext loss; its encoder is loaded, never pretrained")
