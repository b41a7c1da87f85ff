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

    The rules on a task's hyperparameters live with every other rule, in :data:`sslsweep.rules.HP_RULES`.
    """

    builder: str
    pretrains: bool = True
    min_size: int = 4
    required: tuple[str, ...] = ()
    contrastive: bool = False
    loads_weights: bool = False


_T = "sslsweep.trainables.tasks"
TASKS: dict[str, TaskEntry] = {
    "none": TaskEntry(f"{_T}.none:RandomInit", pretrains=False),
    "rotation": TaskEntry(f"{_T}.rotation:Rotation"),
    "simclr": TaskEntry(f"{_T}.simclr:SimCLR", required=("temperature",), contrastive=True),
    "transfer": TaskEntry(f"{_T}.transfer:Transfer", pretrains=False, loads_weights=True),
    "autoencoder": TaskEntry(f"{_T}.autoencoder:AutoEncoder", required=("noise", "noise_level")),
    "exemplar": TaskEntry(f"{_T}.exemplar:Exemplar", required=("surrogate_classes",)),
    "context": TaskEntry(f"{_T}.context:Context", min_size=16, required=("gap",)),
    "jigsaw": TaskEntry(f"{_T}.jigsaw:Jigsaw", min_size=12, required=("num_perms",)),
    "gan": TaskEntry(f"{_T}.gan:DCGAN", required=("g_lr",)),
    "byol": TaskEntry(f"{_T}.byol:BYOL", required=("ema",)),
    "simsiam": TaskEntry(f"{_T}.simsiam:SimSiam"),
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
