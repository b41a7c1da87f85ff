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
        rules: ``name -> (check, rule)`` for the task's own hyperparameters; every searched bound
            and fixed value must pass ``check`` (rules shared by all tasks live in ``config.PARAM_RULES``).
    """

    builder: str
    pretrains: bool = True
    min_size: int = 4
    required: tuple[str, ...] = ()
    contrastive: bool = False
    loads_weights: bool = False
    rules: dict[str, tuple[Callable[[Any], bool], str]] = field(default_factory=dict)


def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int_in(low: int, high: float = float("inf")) -> Callable[[Any], bool]:
    """A whole number in [low, high] (YAML and Optuna may give 8000.0 for 8000)."""
    return lambda v: _number(v) and float(v).is_integer() and low <= v <= high


def _in(low: float, high: float, *, open_low: bool = False) -> Callable[[Any], bool]:
    return lambda v: _number(v) and (low < v if open_low else low <= v) and v <= high


_T = "sslsweep.trainables.tasks"
TASKS: dict[str, TaskEntry] = {
    "none": TaskEntry("sslsweep.trainables.tasks.none:RandomInit", pretrains=False),
    "rotation": TaskEntry("sslsweep.trainables.tasks.rotation:Rotation"),
    "simclr": TaskEntry("sslsweep.trainables.tasks.simclr:SimCLR", required=("temperature",), contrastive=True,
                        rules={"temperature": (_positive, "the temperature must be > 0")}),
    "transfer": TaskEntry(f"{_T}.transfer:Transfer", pretrains=False, loads_weights=True),
    "autoencoder": TaskEntry(f"{_T}.autoencoder:AutoEncoder", required=("noise", "noise_level"), rules={
        "noise": (lambda v: v in ("none", "mask", "gaussian"), "the noise must be none, mask or gaussian"),
        "noise_level": (_in(0, 1), "the noise level must be in [0, 1]"),
        "decoder_width": (_int_in(2), "the decoder width must be an integer >= 2")}),
    "exemplar": TaskEntry(f"{_T}.exemplar:Exemplar", required=("surrogate_classes",), rules={
        "surrogate_classes": (_int_in(2), "the number of surrogate classes must be an integer >= 2"),
        "num_sampled": (_int_in(1), "the sampled-softmax size must be an integer >= 1")}),
    "context": TaskEntry(f"{_T}.context:Context", min_size=16, required=("gap",), rules={
        "gap": (_in(0, 1), "the gap must be in [0, 1] (a fraction of the patch side)"),
        "jitter": (_in(0, 0.25), "the jitter must be in [0, 0.25] (a fraction of the patch side)"),
        "color_drop": (_in(0, 1), "the colour-dropping probability must be in [0, 1]")}),
    "jigsaw": TaskEntry(f"{_T}.jigsaw:Jigsaw", min_size=12, required=("num_perms",), rules={
        "num_perms": (_int_in(2, 10_000), "the permutation set size must be an integer in [2, 10000]"),
        "tile_frac": (_in(0, 1, open_low=True), "the tile fraction must be in (0, 1]")}),
    "gan": TaskEntry(f"{_T}.gan:DCGAN", required=("g_lr",), rules={
        "g_lr": (_positive, "the generator learning rate must be > 0"),
        "z_dim": (_int_in(1), "the noise dimension must be an integer >= 1"),
        "gen_width": (_int_in(1), "the generator width must be an integer >= 1")}),
    "byol": TaskEntry(f"{_T}.byol:BYOL", required=("ema",), rules={
        "ema": (_in(0, 1), "the target decay (ema) must be in [0, 1]"),
        "hidden_dim": (_int_in(1), "the hidden dimension must be an integer >= 1")}),
    "simsiam": TaskEntry(f"{_T}.simsiam:SimSiam", rules={
        "pred_hidden": (_int_in(1), "the predictor's hidden dimension must be an integer >= 1")}),
}


def encoder_config_for(method: str, cfg: "EncoderConfig") -> "EncoderConfig":
    """The encoder config a method builds from: ``encoder.weights`` only for tasks that load them."""
    import dataclasses

    return cfg if TASKS[method].loads_weights else dataclasses.replace(cfg, weights=None)


def get_task(name: str) -> type[PretextTask]:
    """The task class registered under ``name`` (imported on first use)."""
    if name not in TASKS:
        raise ValueError(f"method = {name!r}: unknown method; known: {', '.join(sorted(TASKS))}")
    module, cls = TASKS[name].builder.split(":")
    return getattr(importlib.import_module(module), cls)
