"""The random-initialisation baseline."""

from __future__ import annotations

import torch

from sslsweep.trainables.tasks.base import PretextTask, TaskOutput


class RandomInit(PretextTask):
    """No pretraining: the encoder keeps its random initialisation.

    Evaluated by linear probe it measures what random features give; fine-tuned it is the
    supervised-only baseline on the labeled subset. Its search space is empty and it runs a
    single search trial (there is nothing to tune).
    """

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> TaskOutput:
        raise RuntimeError("the random-init baseline has no pretext loss; it is never pretrained")
