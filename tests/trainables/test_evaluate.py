"""Fine-tuning: what the protocol promises about the new head; RankMe against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sslsweep.config import EncoderConfig
from sslsweep.trainables.encoders import Encoder, build_encoder
from sslsweep.trainables.evaluate import FinetuneConfig, finetune, rankme


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


# ----------------------------------------------------------------------------- RankMe


def test_rankme_matches_a_hand_computed_value() -> None:
    """diag(2, 1, 1): sigma = (2, 1, 1), ||sigma||_1 = 4, p = (1/2, 1/4, 1/4) (+ eps);
    entropy = 1/2 ln 2 + 2 * 1/4 ln 4 = 3/2 ln 2, so RankMe = 2^(3/2) = 2.828..."""
    assert rankme(torch.diag(torch.tensor([2.0, 1.0, 1.0]))) == pytest.approx(2 ** 1.5, rel=1e-5)
    # a non-square one: rows (3, 0) and (0, 1) padded with a zero row: sigma = (3, 1), p = (3/4, 1/4)
    x = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    assert rankme(x) == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))), rel=1e-5)


def test_rankme_of_a_rank_one_matrix_is_one() -> None:
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(50, 1, generator=g), torch.randn(1, 16, generator=g)
    assert rankme(u @ v) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("n, d", [(40, 8), (8, 40)])
def test_rankme_of_orthonormal_columns_or_rows_is_the_full_rank(n: int, d: int) -> None:
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(max(n, d), min(n, d), generator=g))  # orthonormal columns
    x = q if n >= d else q.T
    assert rankme(x) == pytest.approx(min(n, d), rel=1e-5)


def test_rankme_ignores_the_scale_and_row_order_of_the_embeddings() -> None:
    x = torch.randn(30, 6, generator=torch.Generator().manual_seed(1))
    assert rankme(7.0 * x[torch.randperm(30)]) == pytest.approx(rankme(x), rel=1e-6)
