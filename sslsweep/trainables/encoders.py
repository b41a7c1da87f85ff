"""Encoders: images in, a feature vector out. Registered by name; each exposes ``out_dim``."""

from __future__ import annotations

from typing import Callable

import torch
import torchvision
from torch import nn

from sslsweep.config import EncoderConfig


class Encoder(nn.Module):
    """Wraps a backbone: fixed input normalisation, then the backbone, then flattened features.

    Args:
        backbone: maps (N, C, H, W) float images to (N, out_dim) or (N, out_dim, 1, 1).
        out_dim: feature dimension the evaluators and heads expect.
    Inputs are float images in [0, 1]; they are mapped to roughly zero mean, unit scale.
    """

    def __init__(self, backbone: nn.Module, out_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.backbone((x - 0.5) / 0.25), 1)  # (N, out_dim)


def small_cnn(in_channels: int, width: int) -> Encoder:
    """A 4-layer CNN sized for CPU: conv3x3-BN-ReLU with widths w, 2w, 4w, 4w, max-pool after the
    2nd and 3rd layers, global average pool. Works from 4x4 inputs up."""
    w = (width, 2 * width, 4 * width, 4 * width)
    layers: list[nn.Module] = []
    prev = in_channels
    for i, ch in enumerate(w):
        layers += [nn.Conv2d(prev, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch), nn.ReLU(inplace=True)]
        if i in (1, 2):
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        prev = ch
    layers += [nn.AdaptiveAvgPool2d(1)]
    return Encoder(nn.Sequential(*layers), out_dim=w[-1])


def resnet18_cifar(in_channels: int, width: int) -> Encoder:
    """torchvision's ResNet-18 with the CIFAR stem of the SimCLR paper (appendix B.9): conv1 is
    3x3 stride 1 and the first max-pool is removed, so 32x32 inputs keep their resolution.
    ``width`` is the stem width (64 = the standard network, 512-d features)."""
    net = torchvision.models.resnet18(weights=None)
    if width != 64:
        net = torchvision.models.ResNet(torchvision.models.resnet.BasicBlock, [2, 2, 2, 2])
        _scale_resnet(net, width)
    net.conv1 = nn.Conv2d(in_channels, net.conv1.out_channels, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    out_dim = net.fc.in_features
    net.fc = nn.Identity()
    return Encoder(net, out_dim=out_dim)


def _scale_resnet(net: torchvision.models.ResNet, width: int) -> None:
    """Rebuild a ResNet-18 with stem width ``width`` (stages w, 2w, 4w, 8w) for cheap tests."""
    block = torchvision.models.resnet.BasicBlock
    net.inplanes = width
    net.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    net.layer1 = net._make_layer(block, width, 2)
    net.layer2 = net._make_layer(block, 2 * width, 2, stride=2)
    net.layer3 = net._make_layer(block, 4 * width, 2, stride=2)
    net.layer4 = net._make_layer(block, 8 * width, 2, stride=2)
    net.fc = nn.Linear(8 * width, 1000)


ENCODERS: dict[str, Callable[[int, int], Encoder]] = {
    "small_cnn": small_cnn,
    "resnet18": resnet18_cifar,
}


def build_encoder(cfg: EncoderConfig, in_channels: int) -> Encoder:
    """Build the encoder named in ``cfg`` for images with ``in_channels`` channels."""
    if cfg.name not in ENCODERS:
        raise ValueError(f"encoder.name = {cfg.name!r}: unknown encoder; known: {', '.join(ENCODERS)}")
    return ENCODERS[cfg.name](in_channels, cfg.width)
