"""Every rule a configuration value must satisfy, in one dependency-free module.

The predicates, the error they raise and the hyperparameter rules are used by
:mod:`sslsweep.config` (building the typed config), :mod:`sslsweep.validate` (the validation
stage) and the task registry alike. Nothing here imports another sslsweep module, torch or Ray.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

Check = Callable[[Any], bool]


class ConfigError(ValueError):
    """A configuration value breaks a rule. The message is one line: key, value, rule."""

    def __init__(self, key: str, value: Any, rule: str) -> None:
        self.key, self.value, self.rule = key, value, rule
        super().__init__(f"{key} = {value!r}: {rule}")


def require(ok: bool, key: str, value: Any, rule: str) -> None:
    """Raise :class:`ConfigError` ``key = value: rule`` unless ``ok``."""
    if not ok:
        raise ConfigError(key, value, rule)


# ----------------------------------------------------------------------------- predicates


def is_num(v: Any) -> bool:
    """An int or float (a bool is not a number here)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_int(v: Any) -> bool:
    """An int, not a bool."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_whole(v: Any) -> bool:
    """An int or a float with no fractional part (YAML and Optuna may give 8000.0 for 8000)."""
    return is_int(v) or (isinstance(v, float) and v.is_integer())


def positive(v: Any) -> bool:
    return is_num(v) and v > 0


def int_in(low: int, high: float = float("inf")) -> Check:
    """A whole number in [low, high]."""
    return lambda v: is_whole(v) and low <= v <= high


def in_range(low: float, high: float, *, open_low: bool = False, open_high: bool = False) -> Check:
    """A number in [low, high], with either end open if asked."""
    return lambda v: is_num(v) and (low < v if open_low else low <= v) and (v < high if open_high else v <= high)


def one_of(*values: Any) -> Check:
    return lambda v: v in values


# ----------------------------------------------------------------------------- hyperparameters

# Rules by hyperparameter name, wherever the name appears (a searched range's bounds, every
# categorical choice and a fixed value alike). Names are unique across methods, so one table
# holds the shared hyperparameters and every method's own.
HP_RULES: dict[str, tuple[Check, str]] = {
    # shared by every method (conf/search/*.yaml) and the trainer
    "lr": (positive, "the learning rate must be > 0"),
    "weight_decay": (lambda v: is_num(v) and v >= 0, "weight decay must be >= 0"),
    "batch_size": (int_in(2), "the batch size must be an integer >= 2"),
    "strength": (in_range(0, 2), "augmentation strength must be in [0, 2]"),
    "crop_min": (in_range(0, 1, open_low=True), "the crop scale lower bound must be in (0, 1]"),
    "proj_dim": (int_in(2), "the projection dimension must be an integer >= 2"),
    "optimizer": (one_of("sgd", "adamw"), "the optimizer must be sgd or adamw"),
    "beta1": (in_range(0, 1, open_high=True), "Adam's beta1 must be in [0, 1)"),
    # simclr
    "temperature": (positive, "the temperature must be > 0"),
    "negatives": (one_of("standard", "debiased", "eliminate", "attract"),
                  "negatives must be standard, debiased, eliminate or attract"),
    "tau_plus": (in_range(0, 1, open_high=True), "the class prior tau_plus must be in [0, 1)"),
    "fne_k": (int_in(1), "the number of false negatives per anchor fne_k must be an integer >= 1"),
    # autoencoder
    "noise": (one_of("none", "mask", "gaussian"), "the noise must be none, mask or gaussian"),
    "noise_level": (in_range(0, 1), "the noise level must be in [0, 1]"),
    "decoder_width": (int_in(2), "the decoder width must be an integer >= 2"),
    # exemplar
    "surrogate_classes": (int_in(2), "the number of surrogate classes must be an integer >= 2"),
    "num_sampled": (int_in(1), "the sampled-softmax size must be an integer >= 1"),
    "surrogate": (one_of("image", "cluster"), "the surrogate must be image or cluster"),
    "refresh_every": (int_in(1), "the cluster refresh interval must be an integer >= 1 (epochs)"),
    # context
    "gap": (in_range(0, 1), "the gap must be in [0, 1] (a fraction of the patch side)"),
    "jitter": (in_range(0, 0.25), "the jitter must be in [0, 0.25] (a fraction of the patch side)"),
    "color_drop": (in_range(0, 1), "the colour-dropping probability must be in [0, 1]"),
    # jigsaw
    "num_perms": (int_in(2, 10_000), "the permutation set size must be an integer in [2, 10000]"),
    "tile_frac": (in_range(0, 1, open_low=True), "the tile fraction must be in (0, 1]"),
    # gan
    "g_lr": (positive, "the generator learning rate must be > 0"),
    "z_dim": (int_in(1), "the noise dimension must be an integer >= 1"),
    "gen_width": (int_in(1), "the generator width must be an integer >= 1"),
    # byol
    "ema": (in_range(0, 1), "the target decay (ema) must be in [0, 1]"),
    "hidden_dim": (int_in(1), "the hidden dimension must be an integer >= 1"),
    # simsiam
    "pred_hidden": (int_in(1), "the predictor's hidden dimension must be an integer >= 1"),
}


# Tasks whose targets need the whole unlabeled pool on the device at every epoch start
# (:meth:`PretextTask.on_epoch_start`), by method: (hyperparameter, the value that needs it).
# Under ``dataset.residency`` host or stream the pool is never on the device at once: refused.
NEEDS_DEVICE_POOL: dict[str, tuple[str, str]] = {"exemplar": ("surrogate", "cluster")}


def needs_device_pool(method: str, hp: Mapping[str, Any]) -> bool:
    """Whether ``method`` with hyperparameters ``hp`` needs the whole pool as one tensor at every
    epoch start (:data:`NEEDS_DEVICE_POOL`)."""
    need = NEEDS_DEVICE_POOL.get(method)
    return need is not None and hp.get(need[0]) == need[1]


# torchvision weights that load by name (``encoder.weights=<Enum>.<NAME>``), by enum: the encoder
# they fit. The encoder must be torchvision's own network, i.e. width 64.
TORCHVISION_WEIGHTS: dict[str, str] = {"ResNet18_Weights": "resnet18", "ResNet50_Weights": "resnet50"}
