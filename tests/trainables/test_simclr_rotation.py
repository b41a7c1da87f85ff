"""The two first pretext losses against hand-written references."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sslsweep.trainables.tasks.rotation import rotate_batch
from sslsweep.trainables.tasks.simclr import nt_xent


def nt_xent_reference(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> float:
    """NT-Xent written out term by term as in eq. 1 of the SimCLR paper (loops, no tricks)."""
    z = [F.normalize(v, dim=0) for v in torch.cat([z1, z2])]
    n2 = len(z)
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        j = (i + n) % n2  # the positive of anchor i
        num = math.exp(float(z[i] @ z[j]) / tau)
        den = sum(math.exp(float(z[i] @ z[k]) / tau) for k in range(n2) if k != i)
        total += -math.log(num / den)
    return total / n2


def test_nt_xent_equals_the_papers_formula() -> None:
    """NT-Xent must equal the per-anchor formula averaged over all 2N anchors, for several tau."""
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    for tau in (0.1, 0.5, 1.0):
        assert abs(nt_xent(z1, z2, tau).item() - nt_xent_reference(z1, z2, tau)) < 1e-5


def test_nt_xent_stays_fp32_under_bf16_autocast() -> None:
    """The trainer runs the step under bf16 autocast on CUDA (CPU autocast here, the same rule):
    the loss must still equal the fp32 formula, with a float32 result. With the similarities
    computed in bf16 this input's loss at tau = 0.05 moved by 1.6e-4."""
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(64, 128, generator=g), torch.randn(64, 128, generator=g)
    z2 = z1 + 0.3 * z2  # positives similar to their anchors, as after training
    for tau in (0.05, 0.5):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nt_xent(z1, z2, tau)
        assert loss.dtype == torch.float32
        assert abs(loss.item() - nt_xent(z1, z2, tau).item()) < 1e-5


def test_nt_xent_is_low_when_views_agree_and_negatives_differ() -> None:
    """Identical, mutually orthogonal pairs give a far lower loss than random pairs."""
    eye = torch.eye(8)
    aligned = nt_xent(eye, eye, 0.1).item()
    g = torch.Generator().manual_seed(1)
    rand = nt_xent(torch.randn(8, 8, generator=g), torch.randn(8, 8, generator=g), 0.1).item()
    assert aligned < 0.01 < rand


def test_rotation_labels_are_the_rotation_applied() -> None:
    """Block k of the rotated batch is the input rotated k*90 degrees and is labeled k."""
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).reshape(2, 1, 3, 3)
    images, labels = rotate_batch(x)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    for k in range(4):
        assert torch.equal(images[2 * k:2 * k + 2], torch.rot90(x, k, dims=(-2, -1)))
    # 90 degrees counter-clockwise moves the top-right pixel to the top-left
    assert images[2, 0, 0, 0] == x[0, 0, 0, 2]
