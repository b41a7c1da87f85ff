"""Context prediction: which of the 8 neighbours of a centre patch is the second patch?"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from sslsweep.trainables.augment import to_float
from sslsweep.trainables.tasks.base import PretextTask, TaskContext, TaskOutput, mlp_head

# (dy, dx) of neighbour k, in reading order: label k <-> offset NEIGHBOURS[k].
NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
MIN_PATCH = 3


def patch_layout(size: int, gap: float, jitter: float) -> tuple[int, int, int]:
    """(patch, gap, jitter) in pixels: the largest patch p >= 3 with 3p + 2 gap + 2 jitter <= size,
    gap = floor(gap * p), jitter = floor(jitter * p) (both given as fractions of the patch side)."""
    for p in range(size // 3, MIN_PATCH - 1, -1):
        g, j = math.floor(gap * p), math.floor(jitter * p)
        if 3 * p + 2 * g + 2 * j <= size:
            return p, g, j
    raise ValueError(f"image_size = {size}: too small for 3x3 patches of side >= {MIN_PATCH} with gap {gap} "
                     f"and jitter {jitter} (fractions of the patch); use dataset.image_size >= 16")


def crop_patches(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, p: int,
                 image: torch.Tensor | None = None) -> torch.Tensor:
    """p x p patches with top-left corners (top[i], left[i]) of image ``image[i]`` (default i):
    (N, C, H, W), (M,), (M,) -> (M, C, p, p). One gather, no loop."""
    r = torch.arange(p, device=x.device)
    rows, cols = top[:, None] + r, left[:, None] + r  # (M, p) each
    src = torch.arange(len(top), device=x.device) if image is None else image
    return x[src[:, None, None], :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (M, p, p, C) -> NCHW


def drop_colours(x: torch.Tensor, prob: float, generator: torch.Generator | None) -> torch.Tensor:
    """Doersch et al.'s colour dropping: keep one random channel of a patch, replace the other two
    with Gaussian noise (std 1/100 of the kept channel's), with probability ``prob``: (N, 3, p, p)."""
    n = x.shape[0]
    u = torch.rand(n, 2, generator=generator, device=x.device)
    keep = (u[:, 0] * 3).long().clamp(max=2)  # (N,) channel kept
    noise = torch.randn(x.shape, generator=generator, device=x.device)
    kept = x[torch.arange(n, device=x.device), keep]  # (N, p, p)
    std = kept.flatten(1).std(1).view(n, 1, 1, 1) / 100
    mean = kept.flatten(1).mean(1).view(n, 1, 1, 1)
    dropped = torch.where(torch.arange(3, device=x.device).view(1, 3, 1, 1) == keep.view(n, 1, 1, 1),
                          x, mean + std * noise)
    return torch.where((u[:, 1] < prob).view(n, 1, 1, 1), dropped, x)


class Context(PretextTask):
    """Context prediction (Doersch, Gupta & Efros, ICCV 2015, "Unsupervised visual representation
    learning by context prediction"): a centre patch and one of its 8 neighbours in a 3x3
    arrangement are encoded by the shared encoder; a head on the two concatenated features predicts
    which neighbour it is. The sampled neighbour position *is* the label.

    Shortcuts removed as in the paper: a ``gap`` between patches (the paper: half the patch side)
    and an independent ``jitter`` of each patch (the paper: up to 7 of 96 pixels) so that edges and
    lines cannot be continued across patches; for colour images, colour dropping (sec. 3.1) against
    chromatic aberration. The arrangement is placed at a random position in the image.

    Minimum image size 16 (3x3 patches of 3-4 pixels); patches are (3p + 2 gap + 2 jitter <= S):
    at 32x32 and gap 0.5, 8x8 patches 4 pixels apart.

    Args (hp):
        gap: gap between patches as a fraction of the patch side (0..1).
        jitter: maximal shift of each patch, fraction of the patch side (0..0.25; the paper: 0.07).
        color_drop: probability of colour dropping (colour images only, where it is required).

    Example:
        >>> task = Context(encoder, {"gap": 0.5, "jitter": 0.07, "color_drop": 1.0}, ctx)
        >>> out = task(x_uint8); out.loss.backward(); out.acc   # chance = 1/8
    """

    has_pretext_acc: ClassVar[bool] = True

    def __init__(self, encoder: nn.Module, hp: Mapping[str, Any], ctx: TaskContext) -> None:
        super().__init__(encoder, hp, ctx)
        self.size = ctx.image_size
        self.patch, self.gap, self.jitter = patch_layout(ctx.image_size, float(self.hp["gap"]),
                                                         float(self.hp["jitter"]))
        self.color_drop = float(self.hp["color_drop"]) if ctx.in_channels == 3 else 0.0
        dim = encoder.out_dim
        self.head = mlp_head(2 * dim, max(2 * dim, 128), len(NEIGHBOURS))  # late fusion of the pair
        self.register_buffer("offsets", torch.tensor(NEIGHBOURS, dtype=torch.int64), persistent=False)

    def sample(self, n: int, device: torch.device, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw the pairs: label (N,) in 0..7 and the top-left corners (N, 2) as (row, col) of the
        centre patch and of its neighbour ``NEIGHBOURS[label]``, each jittered independently."""
        p, g, j = self.patch, self.gap, self.jitter
        stride = p + g
        label = torch.randint(len(NEIGHBOURS), (n,), generator=generator, device=device)
        # the 3x3 arrangement at a random place, far enough from the borders for any jitter
        free = self.size - (3 * p + 2 * g + 2 * j)  # >= 0 by patch_layout
        base = torch.randint(free + 1, (n, 2), generator=generator, device=device) + j + stride  # (N, 2)
        shake = torch.randint(2 * j + 1, (n, 4), generator=generator, device=device) - j
        centre = base + shake[:, :2]
        other = base + self.offsets[label] * stride + shake[:, 2:]
        return label, centre, other

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> TaskOutput:
        n, p = x.shape[0], self.patch
        label, centre, other = self.sample(n, x.device, generator)
        img = to_float(x)
        patches = torch.cat([crop_patches(img, centre[:, 0], centre[:, 1], p),
                             crop_patches(img, other[:, 0], other[:, 1], p)])  # (2N, C, p, p)
        if self.color_drop > 0:
            patches = drop_colours(patches, self.color_drop, generator)
        feats = self.encoder(patches)  # (2N, D): one pass, BN statistics over both patches
        logits = self.head(torch.cat([feats[:n], feats[n:]], dim=1))  # (N, 8)
        loss = F.cross_entropy(logits.float(), label)
        acc = (logits.argmax(1) == label).float().mean()
        return TaskOutput(loss=loss, views=2 * n, acc=acc.detach())
