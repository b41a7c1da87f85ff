"""Autoencoder: reconstruct the image from the encoder's feature vector (optionally denoising)."""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from sslsweep.rules import HP_RULES, require
from sslsweep.trainables.augment import to_float
from sslsweep.trainables.tasks.base import PretextTask, TaskContext, TaskOutput


def corrupt(x: torch.Tensor, noise: str, level: float, generator: torch.Generator | None) -> torch.Tensor:
    """The denoising autoencoder's corruption of clean images ``x`` (N, C, H, W) in [0, 1].

    ``mask``: each pixel (all its channels) is set to 0 with probability ``level`` (Vincent et al.
    2008's masking noise); ``gaussian``: additive N(0, level^2), clipped to [0, 1]; ``none``: ``x``.
    """
    if noise == "none" or level == 0.0:
        return x
    n, c, h, w = x.shape
    if noise == "mask":
        keep = torch.rand(n, 1, h, w, generator=generator, device=x.device) >= level  # (N, 1, H, W)
        return x * keep
    return (x + level * torch.randn(x.shape, generator=generator, device=x.device)).clamp(0.0, 1.0)


class ConvDecoder(nn.Module):
    """Feature vector (N, D) -> image (N, C, S, S) in [0, 1]: a linear map to a (w, s0, s0) grid,
    s0 = ceil(S / 4), then two (upsample x2, conv3x3-BN-ReLU) stages, a resize to S and a 3x3 conv."""

    def __init__(self, in_dim: int, channels: int, size: int, width: int) -> None:
        super().__init__()
        self.size, self.width, self.s0 = size, width, max(1, math.ceil(size / 4))
        self.fc = nn.Linear(in_dim, width * self.s0 * self.s0)
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2), nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2), nn.Conv2d(width, width // 2, 3, padding=1, bias=False),
            nn.BatchNorm2d(width // 2), nn.ReLU(inplace=True))
        self.out = nn.Conv2d(width // 2, channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc(z)).view(len(z), self.width, self.s0, self.s0)  # (N, w, s0, s0)
        h = self.up(h)  # (N, w/2, 4 s0, 4 s0)
        if h.shape[-1] != self.size:  # 4 s0 overshoots S when S is not a multiple of 4
            h = F.interpolate(h, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return torch.sigmoid(self.out(h))  # (N, C, S, S)


class AutoEncoder(PretextTask):
    """Autoencoder (Hinton & Salakhutdinov, Science 2006, "Reducing the dimensionality of data with
    neural networks"): the encoder maps an image to its feature vector, a decoder maps the vector
    back to the image, and the loss is the pixel mean squared error. Hinton & Salakhutdinov used
    fully connected layers; here the encoder is the sweep's convolutional encoder, the decoder
    its convolutional mirror, and the code is the encoder's pooled output (what is evaluated).

    With ``noise`` = ``mask`` or ``gaussian`` it is the denoising autoencoder of Vincent, Larochelle,
    Bengio & Manzagol (ICML 2008): the input is corrupted and the *clean* image is the target.
    No other augmentation (``strength`` is unused).

    Args (hp):
        noise: ``none`` | ``mask`` | ``gaussian``.
        noise_level: masking probability or Gaussian standard deviation (images in [0, 1]).
        decoder_width: channels of the decoder's first stage (64).

    Example:
        >>> task = AutoEncoder(encoder, {"noise": "mask", "noise_level": 0.25, "decoder_width": 64}, ctx)
        >>> task(x_uint8).loss.backward()       # x_uint8: (N, C, S, S) uint8
    """

    def __init__(self, encoder: nn.Module, hp: Mapping[str, Any], ctx: TaskContext) -> None:
        super().__init__(encoder, hp, ctx)
        self.noise = str(self.hp["noise"])
        valid, rule = HP_RULES["noise"]  # corrupt() would take any other name for gaussian
        require(valid(self.noise), "noise", self.noise, rule)
        self.level = float(self.hp["noise_level"])
        width = max(2, int(self.hp["decoder_width"]))
        self.decoder = ConvDecoder(encoder.out_dim, ctx.in_channels, ctx.image_size, width)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> TaskOutput:
        clean = to_float(x)  # (N, C, S, S) in [0, 1]
        recon = self.decoder(self.encoder(corrupt(clean, self.noise, self.level, generator)))
        return TaskOutput(loss=F.mse_loss(recon.float(), clean), views=x.shape[0])
