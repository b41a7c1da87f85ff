"""Fine-tuning: what the protocol promises about the new head."""

from __future__ import annotations

import torch
from torch import nn

from sslsweep.config import EncoderConfig
from sslsweep.trainables.encoders import Encoder, build_encoder
from sslsweep.trainables.evaluate import FinetuneConfig, finetune


class _Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def _toy(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey 8x8 uint8 images whose class (0-3) is the bright quadrant: easy to learn in a few steps."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    images = torch.randint(0, 60, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    for i, c in enumerate(labels.tolist()):
        r, q = divmod(c, 2)
        images[i, :, 4 * r:4 * r + 4, 4 * q:4 * q + 4] += 180
    return images, labels


def test_finetune_does_not_depend_on_the_scale_of_the_encoders_features() -> None:
    """The same encoder with its features multiplied by 50 fine-tunes to the same accuracy: the
    head standardises its input, so a pretrained encoder with large features (SimCLR's) is not
    penalised for their scale. A plain linear head fails this (its logits grow 50x)."""
    torch.manual_seed(0)
    enc = build_encoder(EncoderConfig("small_cnn", 4), 1)
    scaled = Encoder(nn.Sequential(enc.backbone, _Scale(50.0)), enc.out_dim)
    x, y = _toy(256, 0)
    xt, yt = _toy(256, 1)
    cfg = FinetuneConfig(steps=40, lr=0.05, batch_size=32)
    plain = finetune(enc, 4, x, y, {"test": (xt, yt)}, cfg, seed=0)["test"]
    big = finetune(scaled, 4, x, y, {"test": (xt, yt)}, cfg, seed=0)["test"]
    assert plain > 0.9, f"the toy task should be learnt: {plain}"
    assert abs(plain - big) <= 2 / 256, (plain, big)
