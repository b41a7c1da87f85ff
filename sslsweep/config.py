"""Typed configuration of a sweep, and every rule a value must satisfy.

Hydra composes ``conf/`` with the user's overrides; :func:`from_dictconfig` turns the result into
frozen dataclasses and raises :class:`ConfigError` (one line: key, value, rule) for the first bad
value. Nothing here starts Ray or reads image data, so a bad value fails in about a second.
Rules that need the dataset's size (batch size vs. train pool, labels per class vs. smallest class)
live in :func:`check_against_data`, called once the labels are known and still before Ray starts.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

DATASETS = ("digits", "parquet", "imagefolder")
ENCODERS = ("small_cnn", "resnet18")
SPACE_TYPES = ("uniform", "loguniform", "int", "intlog", "categorical")
STORAGE_SCHEMES = ("", "file", "s3", "gs", "gcs")
METRICS = ("knn", "linear")


class ConfigError(ValueError):
    """A configuration value breaks a rule. The message is one line: key, value, rule."""

    def __init__(self, key: str, value: Any, rule: str) -> None:
        self.key, self.value, self.rule = key, value, rule
        super().__init__(f"{key} = {value!r}: {rule}")


def _require(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(key, value, rule)


# ----------------------------------------------------------------------------- search spaces


@dataclass(frozen=True)
class ParamSpec:
    """One hyperparameter: searched (``type`` + range or choices) or fixed (``value``)."""

    name: str
    type: str | None = None
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    value: Any = None

    @property
    def searched(self) -> bool:
        return self.type is not None

    def to_dict(self) -> Any:
        if not self.searched:
            return self.value
        if self.type == "categorical":
            return {"type": self.type, "choices": list(self.choices or ())}
        return {"type": self.type, "low": self.low, "high": self.high}


def parse_param(key: str, name: str, raw: Any) -> ParamSpec:
    """Parse ``{type: loguniform, low: .., high: ..}``, ``{type: categorical, choices: [..]}`` or a plain value."""
    if not isinstance(raw, Mapping):
        return ParamSpec(name=name, value=raw)
    kind = raw.get("type")
    _require(kind in SPACE_TYPES, f"{key}.type", kind, f"must be one of {', '.join(SPACE_TYPES)}")
    if kind == "categorical":
        choices = raw.get("choices")
        _require(isinstance(choices, Sequence) and not isinstance(choices, str) and len(choices) > 0,
                 f"{key}.choices", choices, "must be a non-empty list")
        extra = set(raw) - {"type", "choices"}
        _require(not extra, key, dict(raw), "a categorical spec takes only 'type' and 'choices'")
        return ParamSpec(name=name, type=kind, choices=tuple(choices))
    extra = set(raw) - {"type", "low", "high"}
    _require(not extra, key, dict(raw), f"a {kind} spec takes only 'type', 'low' and 'high'")
    low, high = raw.get("low"), raw.get("high")
    for bound, val in (("low", low), ("high", high)):
        _require(isinstance(val, (int, float)) and not isinstance(val, bool) and math.isfinite(val),
                 f"{key}.{bound}", val, "must be a finite number")
    _require(low < high, key, {"low": low, "high": high}, "must have low < high")
    if kind in ("loguniform", "intlog"):
        _require(low > 0, f"{key}.low", low, f"must be > 0 for a {kind} range")
    if kind in ("int", "intlog"):
        _require(float(low).is_integer() and float(high).is_integer(), key, {"low": low, "high": high},
                 "int ranges need whole-number bounds")
    return ParamSpec(name=name, type=kind, low=float(low), high=float(high))


def param_bounds(spec: ParamSpec) -> list[Any]:
    """Every value the parameter can take at its extremes (for range rules such as temperature > 0)."""
    if not spec.searched:
        return [spec.value]
    if spec.type == "categorical":
        return list(spec.choices or ())
    return [spec.low, spec.high]


# ----------------------------------------------------------------------------- config groups


@dataclass(frozen=True)
class DatasetConfig:
    name: str = "digits"
    path: str | None = None
    image_column: str = "image"
    label_column: str = "label"
    test_path: str | None = None
    image_size: int | None = None
    hflip: bool = True
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    max_images: int | None = None
    label_fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    labels_per_class: tuple[int, ...] = ()
    split_seed: int = 0


@dataclass(frozen=True)
class EncoderConfig:
    name: str = "small_cnn"
    width: int = 32
    weights: str | None = None


@dataclass(frozen=True)
class MethodConfig:
    name: str
    space: dict[str, ParamSpec] = field(default_factory=dict)

    @property
    def searched(self) -> dict[str, ParamSpec]:
        return {k: v for k, v in self.space.items() if v.searched}

    @property
    def fixed(self) -> dict[str, Any]:
        return {k: v.value for k, v in self.space.items() if not v.searched}


@dataclass(frozen=True)
class SearchConfig:
    num_samples: int = 8
    max_epochs: int = 20
    grace_period: int = 2
    reduction_factor: int = 3
    eval_every: int = 1
    max_concurrent: int = 0
    searcher: str = "tpe"
    scheduler: str = "asha"
    n_startup_trials: int = 3
    max_failures: int = 2


@dataclass(frozen=True)
class ResourcesConfig:
    cpu: float = 1
    gpu: float = 0


@dataclass(frozen=True)
class TrainerConfig:
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    channels_last: str | bool = "auto"
    num_threads: int | None = None
    optimizer: str = "sgd"
    warmup_epochs: int = 0


@dataclass(frozen=True)
class EvalConfig:
    metric: str = "knn"
    knn_k: int = 20
    select_fraction: float = 1.0


@dataclass(frozen=True)
class ConfirmConfig:
    seeds: int = 2
    epochs: int | None = None
    finetune_steps: int = 150
    finetune_lr: float = 0.01
    finetune_batch_size: int = 64
    linear_c: float = 1.0


@dataclass(frozen=True)
class SweepConfig:
    """The whole validated configuration; each stage receives only its own part."""

    dataset: DatasetConfig
    encoder: EncoderConfig
    methods: tuple[MethodConfig, ...]
    search: SearchConfig
    resources: ResourcesConfig
    trainer: TrainerConfig
    eval: EvalConfig
    confirm: ConfirmConfig
    name: str | None = None
    storage: str = "runs"
    resume: str | None = None
    seed: int = 0

    @property
    def confirm_epochs(self) -> int:
        return self.confirm.epochs if self.confirm.epochs is not None else self.search.max_epochs

    def method(self, name: str) -> MethodConfig:
        for m in self.methods:
            if m.name == name:
                return m
        raise KeyError(name)


# ----------------------------------------------------------------------------- building


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def _seq_of(check: Any) -> Any:
    return lambda v: isinstance(v, (list, tuple)) and all(check(x) for x in v)


# The value types of the config fields, by their annotation: checked before any rule compares them.
_TYPES: dict[str, tuple[Any, str]] = {
    "int": (lambda v: _is_int(v), "must be an integer"),
    "float": (lambda v: _num(v), "must be a number"),
    "bool": (lambda v: isinstance(v, bool), "must be true or false"),
    "str": (lambda v: isinstance(v, str), "must be a string"),
    "int | None": (lambda v: v is None or _is_int(v), "must be an integer or null"),
    "str | None": (lambda v: v is None or isinstance(v, str), "must be a string or null"),
    "str | bool": (lambda v: isinstance(v, (str, bool)), "must be a string, true or false"),
    "tuple[float, ...]": (_seq_of(lambda v: _num(v)), "must be a list of numbers"),
    "tuple[int, ...]": (_seq_of(lambda v: _is_int(v)), "must be a list of integers"),
}


def _build(cls: type, raw: Mapping[str, Any] | None, key: str) -> Any:
    raw = dict(raw or {})
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - names)
    _require(not unknown, f"{key}.{unknown[0]}" if unknown else key, raw.get(unknown[0]) if unknown else None,
             f"unknown key; known keys: {', '.join(sorted(names))}")
    for f in fields(cls):
        if f.name not in raw:
            continue
        check, rule = _TYPES.get(str(f.type), (None, ""))
        if check is not None:
            _require(check(raw[f.name]), f"{key}.{f.name}", raw[f.name], rule)
        if isinstance(raw[f.name], list):
            raw[f.name] = tuple(raw[f.name])
    return cls(**raw)


# Keys a trial config holds besides the hyperparameters: a space may not name them.
RESERVED_KEYS = ("method", "seed", "run", "source_trial_id")
# Hyperparameters the trainer reads for every method (a method may fix them in its space).
TRAINER_PARAMS = ("optimizer", "beta1")
CONF_DIR = Path(__file__).resolve().parent / "conf"


@functools.lru_cache(maxsize=None)
def known_params(method: str) -> frozenset[str]:
    """The hyperparameter names ``method`` reads: its own config file's space
    (``conf/method/<method>.yaml``), the shared space (``conf/search/*.yaml``) and
    :data:`TRAINER_PARAMS`. Any other name in a space would be searched or fixed for nothing."""
    own_file = CONF_DIR / "method" / f"{method}.yaml"
    own = (OmegaConf.load(own_file).get(method) or {}).get("space") or {} if own_file.exists() else {}
    shared: set[str] = set()
    for f in sorted((CONF_DIR / "search").glob("*.yaml")):
        shared |= set(OmegaConf.load(f).get("space") or {})
    return frozenset(set(own) | shared | set(TRAINER_PARAMS))


def merge_space(common: Mapping[str, Any], own: Mapping[str, Any], key: str,
                known: frozenset[str] | None = None) -> dict[str, ParamSpec]:
    """The method's space: the shared space with the method's own keys on top. Each name must not
    be a trial's own key (:data:`RESERVED_KEYS`) and, given ``known``, must be one of them; an error
    names the key where the user wrote it (``search.space.<name>`` for a shared one)."""
    merged = {**dict(common or {}), **dict(own or {})}
    for name, raw in merged.items():
        where = f"{key}.{name}" if name in (own or {}) else f"search.space.{name}"
        _require(name not in RESERVED_KEYS, where, raw,
                 f"a hyperparameter may not be named {', '.join(RESERVED_KEYS)} (the trial's own keys)")
        if known is not None:
            _require(name in known, where, raw,
                     f"method {key.split('.')[1]} has no such hyperparameter; known: {', '.join(sorted(known))}")
    return {name: parse_param(f"{key}.{name}", name, raw) for name, raw in merged.items()}


def from_dictconfig(cfg: DictConfig | Mapping[str, Any]) -> SweepConfig:
    """Validate a composed Hydra config into a :class:`SweepConfig` (raises :class:`ConfigError`)."""
    from sslsweep.trainables.tasks import TASKS  # light: the registry imports no data

    raw = dict(_plain(cfg))
    raw.pop("hydra", None)
    search_raw = dict(raw.get("search") or {})
    common_space = search_raw.pop("space", {}) or {}
    method_raw = raw.get("method") or {}
    _require(isinstance(method_raw, Mapping) and len(method_raw) > 0, "method", method_raw,
             "select at least one method, e.g. method=[simclr,rotation]")
    methods = []
    for name, body in method_raw.items():
        _require(name in TASKS, "method", name, f"unknown method; known: {', '.join(sorted(TASKS))}")
        body = dict(body or {})
        extra = set(body) - {"space"}
        _require(not extra, f"method.{name}", sorted(extra), "a method config takes only 'space'")
        space = {} if not TASKS[name].pretrains else merge_space(common_space, body.get("space") or {},
                                                                 f"method.{name}.space", known_params(name))
        methods.append(MethodConfig(name=name, space=space))

    for top in ("name", "resume"):
        if _num(raw.get(top)):  # Hydra reads name=2024 as a number
            raw[top] = str(raw[top])
        _require(raw.get(top) is None or isinstance(raw[top], str), top, raw.get(top), "must be a string or null")
    _require(_is_int(raw.get("seed", 0)), "seed", raw.get("seed"), "must be an integer")
    known_top = {"dataset", "encoder", "method", "search", "resources", "trainer", "eval", "confirm",
                 "name", "storage", "resume", "seed"}
    unknown = sorted(set(raw) - known_top)
    _require(not unknown, unknown[0] if unknown else "", raw.get(unknown[0]) if unknown else None,
             f"unknown key; known top-level keys: {', '.join(sorted(known_top))}")
    sweep = SweepConfig(
        dataset=_build(DatasetConfig, raw.get("dataset"), "dataset"),
        encoder=_build(EncoderConfig, raw.get("encoder"), "encoder"),
        methods=tuple(methods),
        search=_build(SearchConfig, search_raw, "search"),
        resources=_build(ResourcesConfig, raw.get("resources"), "resources"),
        trainer=_build(TrainerConfig, raw.get("trainer"), "trainer"),
        eval=_build(EvalConfig, raw.get("eval"), "eval"),
        confirm=_build(ConfirmConfig, raw.get("confirm"), "confirm"),
        name=raw.get("name"),
        storage=str(raw.get("storage") or "runs"),
        resume=raw.get("resume"),
        seed=raw.get("seed", 0),
    )
    validate(sweep)
    return sweep


# ----------------------------------------------------------------------------- rules


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate(cfg: SweepConfig) -> None:
    """Every rule that needs no data, section by section. Raises
    :class:`ConfigError` on the first broken one."""
    _check_dataset(cfg.dataset)
    _check_encoder(cfg)
    _check_search(cfg.search)
    _check_trainer(cfg.trainer)
    _check_resources(cfg.resources, cfg.trainer)
    _check_eval(cfg.eval)
    _check_confirm(cfg)
    check_storage(cfg.storage, "storage")
    if cfg.resume is not None:
        check_storage(str(cfg.resume), "resume")
    _check_methods(cfg)


def _check_dataset(d: DatasetConfig) -> None:
    """Where the data is, how it splits, and the label budgets."""
    _require(d.name in DATASETS, "dataset.name", d.name, f"unknown dataset; known: {', '.join(DATASETS)}")
    if d.name != "digits":
        _require(d.path is not None and d.path != "???", "dataset.path", d.path,
                 f"required for dataset {d.name}")
        _check_path_exists("dataset.path", d.path)
    if d.test_path is not None:
        _check_path_exists("dataset.test_path", d.test_path)
    if d.image_size is not None:
        _require(_is_int(d.image_size) and d.image_size >= 4, "dataset.image_size", d.image_size,
                 "must be an integer >= 4 or null")
    _require(0 < d.val_fraction < 1, "dataset.val_fraction", d.val_fraction, "must be in (0, 1)")
    _require(0 <= d.test_fraction < 1, "dataset.test_fraction", d.test_fraction, "must be in [0, 1)")
    _require(d.val_fraction + (d.test_fraction if d.test_path is None else 0) < 0.9, "dataset.val_fraction",
             d.val_fraction, "val_fraction + test_fraction must leave at least 10% for the train pool")
    if d.max_images is not None:
        _require(_is_int(d.max_images) and d.max_images >= 20, "dataset.max_images", d.max_images,
                 "must be an integer >= 20 or null")
    _require(len(d.label_fractions) + len(d.labels_per_class) > 0, "dataset.label_fractions",
             list(d.label_fractions), "give at least one label budget (label_fractions or labels_per_class)")
    for f in d.label_fractions:
        _require(isinstance(f, (int, float)) and 0 < f <= 1, "dataset.label_fractions", f,
                 "every label fraction must be in (0, 1]")
    for k in d.labels_per_class:
        _require(_is_int(k) and k >= 1, "dataset.labels_per_class", k, "must be integers >= 1")
    for key, values in (("dataset.label_fractions", d.label_fractions), ("dataset.labels_per_class", d.labels_per_class)):
        _require(len(set(values)) == len(values), key, list(values), "has a budget twice; give each once")


def _check_encoder(cfg: SweepConfig) -> None:
    """The encoder, and the pretrained weights a method that loads them needs."""
    from sslsweep.trainables.tasks import TASKS

    e = cfg.encoder
    _require(e.name in ENCODERS, "encoder.name", e.name, f"unknown encoder; known: {', '.join(ENCODERS)}")
    _require(_is_int(e.width) and e.width >= 1, "encoder.width", e.width, "must be an integer >= 1")
    if any(TASKS[m.name].loads_weights for m in cfg.methods):
        _require(e.weights is not None, "encoder.weights", None,
                 "method transfer needs pretrained weights: encoder=resnet18 "
                 "encoder.weights=ResNet18_Weights.IMAGENET1K_V1, or encoder.weights=/path/to/file.pt")
    if e.weights is not None:
        if re.fullmatch(r"\w+_Weights\.\w+", str(e.weights)):
            _require(e.name == "resnet18" and e.width == 64, "encoder.weights", e.weights,
                     "torchvision ResNet-18 weights need encoder=resnet18 with encoder.width=64")
        else:
            _check_path_exists("encoder.weights", str(e.weights))


def _check_search(s: SearchConfig) -> None:
    """The search protocol: trial budget, ASHA rungs, searcher and scheduler."""
    _require(_is_int(s.num_samples) and s.num_samples >= 1, "search.num_samples", s.num_samples, "must be >= 1")
    _require(_is_int(s.max_epochs) and s.max_epochs >= 1, "search.max_epochs", s.max_epochs, "must be >= 1")
    _require(_is_int(s.grace_period) and s.grace_period >= 1, "search.grace_period", s.grace_period, "must be >= 1")
    _require(s.grace_period <= s.max_epochs, "search.grace_period", s.grace_period,
             f"must be <= search.max_epochs ({s.max_epochs})")
    _require(_is_int(s.reduction_factor) and s.reduction_factor >= 2, "search.reduction_factor",
             s.reduction_factor, "must be >= 2")
    _require(_is_int(s.eval_every) and 1 <= s.eval_every <= s.max_epochs, "search.eval_every", s.eval_every,
             f"must be in [1, search.max_epochs ({s.max_epochs})]")
    _require(_is_int(s.max_concurrent) and s.max_concurrent >= 0, "search.max_concurrent", s.max_concurrent,
             "must be >= 0 (0 = as many as resources allow)")
    _require(s.searcher in ("tpe", "random"), "search.searcher", s.searcher, "must be tpe or random")
    _require(s.scheduler in ("asha", "fifo"), "search.scheduler", s.scheduler, "must be asha or fifo")
    _require(_is_int(s.n_startup_trials) and s.n_startup_trials >= 1, "search.n_startup_trials",
             s.n_startup_trials, "must be >= 1")
    _require(_is_int(s.max_failures) and s.max_failures >= 0, "search.max_failures", s.max_failures, "must be >= 0")


def _check_resources(r: ResourcesConfig, t: TrainerConfig) -> None:
    """Per-trial resources, including GPU fractions; a trial asked to train on CUDA needs a GPU."""
    _require(isinstance(r.cpu, (int, float)) and r.cpu >= 1, "resources.cpu", r.cpu, "must be >= 1")
    _require(isinstance(r.gpu, (int, float)) and r.gpu >= 0, "resources.gpu", r.gpu, "must be >= 0")
    _require(r.gpu <= 1 or float(r.gpu).is_integer(), "resources.gpu", r.gpu,
             "a GPU fraction must be in (0, 1]; more than one GPU must be a whole number")
    _require(not (t.device == "cuda" and r.gpu == 0), "trainer.device", t.device,
             "cuda needs resources.gpu > 0 (Ray gives a trial without GPUs none to see)")


def _check_trainer(t: TrainerConfig) -> None:
    """Device, precision, layout and optimizer (warm-up is checked with confirm)."""
    _require(t.device in ("auto", "cpu", "cuda"), "trainer.device", t.device, "must be auto, cpu or cuda")
    _require(t.precision in ("auto", "bf16", "fp32"), "trainer.precision", t.precision, "must be auto, bf16 or fp32")
    _require(t.channels_last in ("auto", True, False), "trainer.channels_last", t.channels_last,
             "must be auto, true or false")
    _require(t.optimizer in ("sgd", "adamw"), "trainer.optimizer", t.optimizer, "must be sgd or adamw")
    if t.num_threads is not None:
        _require(_is_int(t.num_threads) and t.num_threads >= 1, "trainer.num_threads", t.num_threads, "must be >= 1")


def _check_eval(ev: EvalConfig) -> None:
    """The selection metric of the search."""
    _require(ev.metric in METRICS, "eval.metric", ev.metric, f"must be one of {', '.join(METRICS)}")
    _require(_is_int(ev.knn_k) and ev.knn_k >= 1, "eval.knn_k", ev.knn_k, "must be >= 1")
    _require(0 < ev.select_fraction <= 1, "eval.select_fraction", ev.select_fraction, "must be in (0, 1]")


def _check_confirm(cfg: SweepConfig) -> None:
    """The confirm phase; then warm-up, which must end inside search and confirm trials alike."""
    c, s, t = cfg.confirm, cfg.search, cfg.trainer
    _require(_is_int(c.seeds) and c.seeds >= 1, "confirm.seeds", c.seeds, "must be >= 1")
    if c.epochs is not None:
        _require(_is_int(c.epochs) and c.epochs >= 1, "confirm.epochs", c.epochs, "must be >= 1 or null")
    _require(_is_int(c.finetune_steps) and c.finetune_steps >= 1, "confirm.finetune_steps", c.finetune_steps,
             "must be >= 1")
    _require(c.finetune_lr > 0, "confirm.finetune_lr", c.finetune_lr, "must be > 0")
    _require(_is_int(c.finetune_batch_size) and c.finetune_batch_size >= 2, "confirm.finetune_batch_size",
             c.finetune_batch_size, "must be >= 2")
    _require(c.linear_c > 0, "confirm.linear_c", c.linear_c, "must be > 0")
    # after confirm.epochs is known to be valid
    shortest = min(s.max_epochs, cfg.confirm_epochs)
    _require(_is_int(t.warmup_epochs) and 0 <= t.warmup_epochs < shortest, "trainer.warmup_epochs",
             t.warmup_epochs, f"must be in [0, {shortest}) (the shorter of search.max_epochs {s.max_epochs} "
             f"and confirm.epochs {cfg.confirm_epochs})")


def _check_methods(cfg: SweepConfig) -> None:
    """Every method's space against its own and the shared parameter rules, and its image size."""
    from sslsweep.trainables.tasks import TASKS

    d = cfg.dataset
    for m in cfg.methods:
        task = TASKS[m.name]
        for name, spec in m.space.items():
            key = f"method.{m.name}.space.{name}"
            rule = task.rules.get(name) or PARAM_RULES.get(name)
            if rule is not None:
                check, text = rule
                for v in param_bounds(spec):
                    _require(check(v), key, v, text)
        for name in task.required:
            _require(name in m.space, f"method.{m.name}.space.{name}", None, "required by this method")
    size = d.image_size or _NATIVE_SIZE.get(d.name)
    if size is not None:  # otherwise known once decoded: check_image_shape
        _check_min_size(cfg, size)


def _check_min_size(cfg: SweepConfig, size: int) -> None:
    from sslsweep.trainables.tasks import TASKS

    for m in cfg.methods:
        need = TASKS[m.name].min_size
        _require(size >= need, "dataset.image_size", size,
                 f"method {m.name} needs images of at least {need}x{need} (set dataset.image_size={need} or more)")


def check_image_shape(cfg: SweepConfig, shape: Sequence[int]) -> None:
    """Rules on the decoded images, (C, H, W): square, and large enough for every method. Run
    after decoding, before Ray starts (the size of parquet and imagefolder data is known only then)."""
    _, h, w = shape
    _require(h == w, "dataset.image_size", cfg.dataset.image_size,
             f"the images are {h}x{w} (height x width); the methods need square images: set dataset.image_size "
             "to resize them")
    _check_min_size(cfg, h)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _whole(v: Any) -> bool:
    return _is_int(v) or (isinstance(v, float) and v.is_integer())


# Rules by hyperparameter name, wherever the name appears (searched bounds and fixed values alike).
PARAM_RULES: dict[str, tuple[Any, str]] = {
    "proj_dim": (lambda v: _whole(v) and v >= 2, "the projection dimension must be an integer >= 2"),
    "crop_min": (lambda v: _num(v) and 0 < v <= 1, "the crop scale lower bound must be in (0, 1]"),
    "lr": (lambda v: _num(v) and v > 0, "the learning rate must be > 0"),
    "weight_decay": (lambda v: _num(v) and v >= 0, "weight decay must be >= 0"),
    "batch_size": (lambda v: _whole(v) and v >= 2, "the batch size must be an integer >= 2"),
    "strength": (lambda v: _num(v) and 0 <= v <= 2, "augmentation strength must be in [0, 2]"),
    "optimizer": (lambda v: v in ("sgd", "adamw"), "the optimizer must be sgd or adamw"),
    "beta1": (lambda v: _num(v) and 0 <= v < 1, "Adam's beta1 must be in [0, 1)"),
}
_NATIVE_SIZE = {"digits": 8}


def _check_path_exists(key: str, path: str) -> None:
    scheme = path.split("://", 1)[0] if "://" in path else ""
    if scheme in ("", "file"):
        local = path.split("://", 1)[1] if scheme else path
        _require(Path(local).exists(), key, path, "path does not exist")


def check_storage(uri: str, key: str) -> None:
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    _require(scheme in STORAGE_SCHEMES, key, uri,
             "unknown URI scheme; use a local path, file://, s3:// or gs://")


def check_against_data(cfg: SweepConfig, n_train: int, min_class_count: int) -> None:
    """Rules that need the split sizes: run after the labels are read, before Ray starts."""
    for m in cfg.methods:
        if "batch_size" in m.space:
            for v in param_bounds(m.space["batch_size"]):
                _require(v <= n_train, f"method.{m.name}.space.batch_size", v,
                         f"must be <= the train pool ({n_train} images)")
    for k in cfg.dataset.labels_per_class:
        _require(k <= min_class_count, "dataset.labels_per_class", k,
                 f"must be <= the smallest class in the train pool ({min_class_count} images)")


def to_dict(cfg: SweepConfig) -> dict[str, Any]:
    """A JSON-able view of the config (spaces as written in YAML)."""
    out = asdict(cfg)
    out["methods"] = {m.name: {k: v.to_dict() for k, v in m.space.items()} for m in cfg.methods}
    return out
