"""Jigsaw puzzles: which permutation of a 3x3 grid of tiles was applied?"""

from __future__ import annotations

import functools
import itertools
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sslsweep.trainables.tasks.base import PretextTask, TaskContext, TaskOutput, mlp_head, view_augment
from sslsweep.trainables.tasks.context import crop_patches

MIN_TILE = 3


@functools.lru_cache(maxsize=8)
def hamming_permutations(count: int, seed: int = 0) -> np.ndarray:
    """Noroozi & Favaro's Algorithm 1 ("maximal" set): ``count`` permutations of 9 tiles chosen
    greedily, each the one with the largest mean Hamming distance to those already chosen; the
    first at random (``seed``). Returns (count, 9) int64; deterministic for a (count, seed)."""
    if not 2 <= count <= 10_000:
        raise ValueError(f"num_perms = {count}, but must be in [2, 10000]")
    every = np.array(list(itertools.permutations(range(9))), dtype=np.int8)  # (9!, 9)
    chosen = [int(np.random.default_rng(seed).integers(len(every)))]
    total = np.zeros(len(every), dtype=np.int64)  # summed Hamming distance to the chosen set
    for _ in range(count - 1):
        total += (every != every[chosen[-1]]).sum(1)
        total[chosen] = -1  # never pick a permutation twice
        chosen.append(int(total.argmax()))
    return every[chosen].astype(np.int64)


def tile_layout(size: int, tile_frac: float) -> tuple[int, int]:
    """(cell, tile) in pixels: cells of side S // 3, tiles of floor(tile_frac * cell) pixels, at
    least 3 and at most cell - 1 (so tiles never touch by construction)."""
    cell = size // 3
    tile = min(cell - 1, max(MIN_TILE, int(tile_frac * cell)))
    if tile < MIN_TILE:
        raise ValueError(f"image_size = {size}: too small for a 3x3 jigsaw of tiles >= {MIN_TILE} pixels "
                         f"with a gap (use dataset.image_size >= 12)")
    return cell, tile


class Jigsaw(PretextTask):
    """Jigsaw puzzles (Noroozi & Favaro, ECCV 2016, "Unsupervised learning of visual representations
    by solving jigsaw puzzles"): the image is cut into a 3x3 grid of cells, a tile is taken at a
    random position inside each cell (random gaps, so edges do not match), the tiles are shuffled by
    one of ``num_perms`` permutations with maximal Hamming distance, each tile goes through the
    shared encoder (the context-free network), and a head on the 9 concatenated features predicts
    the permutation's index. The sampled index *is* the label.

    Shortcuts removed as in the paper: each tile is normalised to its own mean and standard
    deviation (sec. 3.3), and colour images are made grey with probability 0.3.
    Minimum image size 12 (3-pixel tiles); at 32x32, 8-pixel tiles in 10-pixel cells.

    Args (hp):
        num_perms: size of the permutation set (the paper: 100 to 1000).
        tile_frac: tile side / cell side (the paper: 64 / 75 ~ 0.85).
        crop_min: lower bound of the random-resized-crop area before tiling (the space: 0.6).

    Example:
        >>> task = Jigsaw(encoder, {"num_perms": 100, "tile_frac": 0.85, "crop_min": 0.6, "strength": 0.0}, ctx)
        >>> out = task(x_uint8); out.loss.backward(); out.acc   # chance = 1/num_perms
    """

    has_pretext_acc: ClassVar[bool] = True

    def __init__(self, encoder: nn.Module, hp: Mapping[str, Any], ctx: TaskContext) -> None:
        super().__init__(encoder, hp, ctx)
        self.cell, self.tile = tile_layout(ctx.image_size, float(self.hp["tile_frac"]))
        self.register_buffer("perms", torch.from_numpy(hamming_permutations(int(self.hp["num_perms"]))))
        self.augment = view_augment(ctx, self.hp, gray_p=0.3)
        dim = encoder.out_dim
        self.head = mlp_head(9 * dim, 512, len(self.perms))

    def shuffled_tiles(self, img: torch.Tensor, label: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """The puzzles: (N, C, S, S) images, (N,) permutation indices, (N, 9, 2) tile offsets inside
        their cells -> (9N, C, t, t) tiles, image by image, position i showing cell ``perms[label][i]``."""
        n = img.shape[0]
        cell = self.perms[label].reshape(-1)  # (9N,) source cell of each position
        top = (cell // 3) * self.cell + shift.reshape(-1, 2)[:, 0]
        left = (cell % 3) * self.cell + shift.reshape(-1, 2)[:, 1]
        owner = torch.arange(n, device=img.device).repeat_interleave(9)  # (9N,) image of each tile
        return crop_patches(img, top, left, self.tile, owner)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> TaskOutput:
        n, dev = x.shape[0], x.device
        img = self.augment(x, generator)  # (N, C, S, S)
        label = torch.randint(len(self.perms), (n,), generator=generator, device=dev)  # (N,)
        shift = torch.randint(self.cell - self.tile + 1, (n, 9, 2), generator=generator, device=dev)
        tiles = self.shuffled_tiles(img, label, shift)  # (9N, C, t, t)
        mean = tiles.mean(dim=(1, 2, 3), keepdim=True)
        std = tiles.std(dim=(1, 2, 3), keepdim=True)
        tiles = 0.5 + 0.25 * (tiles - mean) / (std + 1e-3)  # own mean/std; the encoder maps 0.5/0.25 to 0/1
        feats = self.encoder(tiles).view(n, 9 * self.encoder.out_dim)  # (N, 9D) in shuffled order
        logits = self.head(feats)  # (N, P)
        loss = F.cross_entropy(logits.float(), label)
        acc = (logits.argmax(1) == label).float().mean()
        return TaskOutput(loss=loss, views=9 * n, acc=acc.detach())
