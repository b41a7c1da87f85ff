"""DCGAN: the discriminator's trunk is the encoder."""

from __future__ import annotations

import contextlib
import math
from typing import Any, ClassVar, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from sslsweep.trainables.augment import to_float
from sslsweep.trainables.tasks.base import PretextTask, TaskContext, TaskOutput


class Generator(nn.Module):
    """DCGAN generator: z (N, z_dim) -> linear to (4w, s0, s0), s0 = ceil(S / 4) -> two
    fractionally-strided convs (4w -> 2w -> w, BN-ReLU) -> 3x3 conv to C, tanh -> [0, 1] images (N, C, S, S)."""

    def __init__(self, z_dim: int, channels: int, size: int, width: int) -> None:
        super().__init__()
        self.size, self.width, self.s0 = size, width, max(1, math.ceil(size / 4))
        self.fc = nn.Sequential(nn.Linear(z_dim, 4 * width * self.s0 ** 2, bias=False),
                                nn.BatchNorm1d(4 * width * self.s0 ** 2), nn.ReLU(inplace=True))
        self.up = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(True),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True),
            nn.Conv2d(width, channels, 3, padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.up(self.fc(z).view(len(z), 4 * self.width, self.s0, self.s0))  # (N, C, 4 s0, 4 s0)
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x + 1) / 2


@contextlib.contextmanager
def frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """Batch norm still normalises with batch statistics but does not update its running
    statistics (momentum 0), so generated images never leak into the statistics used at evaluation."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom


class DCGAN(PretextTask):
    """DCGAN (Radford, Metz & Chintala, ICLR 2016, "Unsupervised representation learning with deep
    convolutional generative adversarial networks"): a generator maps noise to images, a
    discriminator tells them from real ones. The *discriminator* trunk is the encoder: it is the
    network that takes images in and learns features of them; the paper's sec. 5.1 classifies
    CIFAR-10 from its discriminator's features. The generator maps noise to images and has no way
    from an image to a feature (that needs an inverse, as in BiGAN); it is dropped after training.

    Two players, two optimizers. ``forward`` returns the discriminator's loss (BCE on real = 1,
    generated = 0), which the trainer's optimizer minimises over the encoder and the discriminator
    head, and (training mode only) the generator's non-saturating loss -log D(G(z)) as
    ``extra_losses["generator"]``, which the trainer minimises over the generator alone with the
    task's own Adam (:meth:`extra_optimizers`; DCGAN: lr ``g_lr``, beta1 0.5, not on the trainer's
    schedule). Both gradients are taken at the same weights before either player steps: a
    simultaneous update, where DCGAN alternates. Generated batches do not update the encoder's
    batch-norm running statistics.

    Deviation: DCGAN's discriminator uses strided convolutions and LeakyReLU; here it is the sweep's
    encoder (the same for every task, so the comparison is fair) plus a linear real/fake head.

    Args (hp):
        g_lr: the generator's Adam learning rate (DCGAN: 2e-4).
        z_dim: noise dimension (DCGAN: 100).
        gen_width: the generator's last hidden width (4w, 2w, w channels).

    Example:
        >>> task = DCGAN(encoder, {"g_lr": 2e-4, "z_dim": 100, "gen_width": 64}, ctx)
        >>> out = task(x_uint8); out.loss.backward(); out.acc   # discriminator accuracy, chance 0.5
    """

    has_pretext_acc: ClassVar[bool] = True

    def __init__(self, encoder: nn.Module, hp: Mapping[str, Any], ctx: TaskContext) -> None:
        super().__init__(encoder, hp, ctx)
        self.z_dim, self.g_lr = int(self.hp["z_dim"]), float(self.hp["g_lr"])
        self.generator = Generator(self.z_dim, ctx.in_channels, ctx.image_size, int(self.hp["gen_width"]))
        self.disc_head = nn.Linear(encoder.out_dim, 1)

    def extra_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The generator's Adam, with DCGAN's beta1 = 0.5 (sec. 4)."""
        return {"generator": torch.optim.Adam(self.generator.parameters(), lr=self.g_lr, betas=(0.5, 0.999),
                                              eps=1e-8)}

    def _discriminate(self, x: torch.Tensor) -> torch.Tensor:
        return self.disc_head(self.encoder(x)).squeeze(1).float()  # (N,) logits

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> TaskOutput:
        n = x.shape[0]
        z = torch.randn(n, self.z_dim, generator=generator, device=x.device)
        fake = self.generator(z)  # (N, C, S, S) in [0, 1]
        d_real = self._discriminate(to_float(x))
        with frozen_bn_stats(self.encoder):
            d_fake = self._discriminate(fake.detach())
        loss = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
        extra: dict[str, torch.Tensor] = {}
        if self.training and torch.is_grad_enabled():
            with frozen_bn_stats(self.encoder):
                d_gen = self._discriminate(fake)
            extra["generator"] = F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen))  # non-saturating
        acc = ((d_real > 0).float().mean() + (d_fake < 0).float().mean()) / 2
        return TaskOutput(loss=loss, views=2 * n, acc=acc.detach(), extra_losses=extra)
