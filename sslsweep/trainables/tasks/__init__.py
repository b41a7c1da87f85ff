"""The registry of pretext tasks.

Adding a task = one module here + one ``conf/method/<name>.yaml`` + one line in ``TASKS``.
The registry is light on purpose (no torch import): config validation reads it in well under a
second, and a task's module is imported only when a trial builds it. Only names in ``TASKS`` are
ever imported: nothing in a config is instantiated by import path.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sslsweep.config import EncoderConfig
    from sslsweep.trainables.tasks.base import PretextTask


@dataclass(frozen=True)
class TaskEntry:
    """How to build a task, and what validation must know about it.

    Args:
        builder: ``"module:Class"`` of the :class:`PretextTask` subclass.
        pretrains: False only for the random-init baseline.
        min_size: smallest image side the task supports (dataset.image_size must reach it).
        required: hyperparameters the method's space must define.
        contrastive: whether the task has a temperature.
        loads_weights: whether the encoder starts from ``encoder.weights`` (transfer); every other
            task starts from a random init, so ``none`` stays the random-init baseline.
        single_worker: why the task cannot train on several workers (``resources.workers > 1``,
            :mod:`sslsweep.trainables.distributed`); empty when it trains there as on one worker.

    The rules on a task's hyperparameters live with every other rule, in :data:`sslsweep.rules.HP_RULES`.
    """

    builder: str
    pretrains: bool = True
    min_size: int = 4
    required: tuple[str, ...] = ()
    contrastive: bool = False
    loads_weights: bool = False
    single_worker: str = "it is not known to train on several workers as on one"


_T = "sslsweep.trainables.tasks"
_OWN_DRAWS = "its {} are drawn per step for each rank's images, outside the view augmentation"
TASKS: dict[str, TaskEntry] = {
    "none": TaskEntry(f"{_T}.none:RandomInit", pretrains=False, single_worker=""),
    "rotation": TaskEntry(f"{_T}.rotation:Rotation", single_worker=""),
    "simclr": TaskEntry(f"{_T}.simclr:SimCLR", required=("temperature",), contrastive=True, single_worker=""),
    "transfer": TaskEntry(f"{_T}.transfer:Transfer", pretrains=False, loads_weights=True, single_worker=""),
    "autoencoder": TaskEntry(f"{_T}.autoencoder:AutoEncoder", required=("noise", "noise_level"),
                             single_worker=_OWN_DRAWS.format("noise values")),
    "exemplar": TaskEntry(f"{_T}.exemplar:Exemplar", required=("surrogate_classes",),
                          single_worker="its surrogate classes are drawn per step and re-clustered "
                                        "from the whole pool every epoch"),
    "context": TaskEntry(f"{_T}.context:Context", min_size=16, required=("gap",),
                         single_worker=_OWN_DRAWS.format("patch positions")),
    "jigsaw": TaskEntry(f"{_T}.jigsaw:Jigsaw", min_size=12, required=("num_perms",),
                        single_worker=_OWN_DRAWS.format("permutations")),
    "gan": TaskEntry(f"{_T}.gan:DCGAN", required=("g_lr",),
                     single_worker="its generator has an optimizer of its own, stepped on a loss of its own"),
    "byol": TaskEntry(f"{_T}.byol:BYOL", required=("ema",), single_worker=""),
    "simsiam": TaskEntry(f"{_T}.simsiam:SimSiam", single_worker=""),
}


def encoder_config_for(method: str, cfg: "EncoderConfig") -> "EncoderConfig":
    """The encoder config a method builds from: ``encoder.weights`` only for tasks that load them."""
    return cfg if TASKS[method].loads_weights else dataclasses.replace(cfg, weights=None)


def get_task(name: str) -> type[PretextTask]:
    """The task class registered under ``name`` (imported on first use)."""
    if name not in TASKS:
        raise ValueError(f"method = {name!r}: unknown method; known: {', '.join(sorted(TASKS))}")
    module, cls = TASKS[name].builder.split(":")
    return getattr(importlib.import_module(module), cls)
