"""The registry of pretext tasks.

Adding a task = one module here + one ``conf/method/<name>.yaml`` + one line in ``TASKS``.
The registry is light on purpose (no torch import): config validation reads it in well under a
second, and a task's module is imported only when a trial builds it. Only names in ``TASKS`` are
ever imported: nothing in a config is instantiated by import path.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
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
        rules: ``name -> (check, rule)`` for the task's own hyperparameters; every searched bound
            and fixed value must pass ``check`` (rules shared by all tasks live in ``config.PARAM_RULES``).
    """

    builder: str
    pretrains: bool = True
    min_size: int = 4
    required: tuple[str, ...] = ()
    contrastive: bool = False
    rules: dict[str, tuple[Callable[[Any], bool], str]] = field(default_factory=dict)


def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


TASKS: dict[str, TaskEntry] = {
    "none": TaskEntry("sslsweep.trainables.tasks.none:RandomInit", pretrains=False),
    "rotation": TaskEntry("sslsweep.trainables.tasks.rotation:Rotation"),
    "simclr": TaskEntry("sslsweep.trainables.tasks.simclr:SimCLR", required=("temperature",), contrastive=True,
                        rules={"temperature": (_positive, "the temperature must be > 0")}),
}


def get_task(name: str) -> type[PretextTask]:
    """The task class registered under ``name`` (imported on first use)."""
    if name not in TASKS:
        raise ValueError(f"method = {name!r}: unknown method; known: {', '.join(sorted(TASKS))}")
    module, cls = TASKS[name].builder.split(":")
    return getattr(importlib.import_module(module), cls)
