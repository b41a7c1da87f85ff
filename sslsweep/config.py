"""Typed configuration of a sweep.

Hydra composes ``conf/`` with the user's overrides; :func:`from_dictconfig` turns the result into
frozen dataclasses, checking each value's type and every key's name, then runs the validation
stage (:func:`sslsweep.validate.validate`). It raises :class:`ConfigError` (one line: key, value,
rule) for the first bad value. Nothing here starts Ray or reads image data.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from sslsweep.rules import ConfigError, is_int, is_num
from sslsweep.rules import require as _require
from sslsweep.schema import SELECTION_RULE_DEFAULT, TRIAL_KEYS, search_rule
from sslsweep.trainables.tasks import TASKS
from sslsweep.validate import check_space_names, validate

__all__ = ["ConfigError", "SweepConfig", "from_dictconfig", "to_dict"]  # ConfigError re-exported for callers

SPACE_TYPES = ("uniform", "loguniform", "int", "intlog", "categorical")


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

    def bounds(self) -> list[Any]:
        """Every value the parameter can take at its extremes (for rules such as temperature > 0)."""
        if not self.searched:
            return [self.value]
        if self.type == "categorical":
            return list(self.choices or ())
        return [self.low, self.high]


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
    label_selection: tuple[str, ...] = ("random",)
    split_seed: int = 0
    residency: str = "auto"  # auto | device | host | stream: where a trial keeps the images (data/residency.py)
    host_memory_gb: float | None = None  # host cap for the decoded array; None -> a share of available memory
    device_memory_gb: float | None = None  # a trial's GPU share; None -> GPU memory x resources.gpu where seen
    stream_buffer: int = 4096  # stream residency: images in the shuffle buffer of a trial's reader
    stream_workers: int = 4  # stream residency: decoding threads of a trial's reader


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
    workers: int = 1  # ranks of one trial (DDP, :mod:`sslsweep.trainables.distributed`); cpu/gpu are per rank


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
    selection: str = "budget"  # budget | label_free | oracle: the rule that chooses what is confirmed (docs/selection.md)
    compare: tuple[str, ...] = ("oracle", "label_free")  # rules also confirmed, for the report's oracle gap

    @property
    def rules(self) -> tuple[str, ...]:
        """Every selection rule the sweep confirms: ``selection`` first, then ``compare`` (without repeats)."""
        return tuple(dict.fromkeys((self.selection, *self.compare)))


@dataclass(frozen=True)
class ConfirmConfig:
    seeds: int = 3
    epochs: int | None = None
    finetune_epochs: float = 30
    finetune_min_steps: int = 150
    finetune_max_steps: int = 5000
    finetune_lrs: tuple[float, ...] = (0.003, 0.01, 0.03)
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
    tracking: str = "none"

    @property
    def metric_name(self) -> str:
        """The search's metric, maximised by ASHA and Optuna: ``<eval.metric>_top1`` (``knn_top1``,
        ``linear_top1``) under ``eval.selection = oracle``, else ``rankme``: the ``label_free`` and
        ``budget`` searches read no label (the budget rule then chooses among their trials with
        each budget's own labels, docs/selection.md)."""
        return f"{self.eval.metric}_top1" if search_rule(self.eval.selection) == "oracle" else "rankme"

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
    "int": (is_int, "must be an integer"),
    "float": (is_num, "must be a number"),
    "bool": (lambda v: isinstance(v, bool), "must be true or false"),
    "str": (lambda v: isinstance(v, str), "must be a string"),
    "int | None": (lambda v: v is None or is_int(v), "must be an integer or null"),
    "float | None": (lambda v: v is None or is_num(v), "must be a number or null"),
    "str | None": (lambda v: v is None or isinstance(v, str), "must be a string or null"),
    "str | bool": (lambda v: isinstance(v, (str, bool)), "must be a string, true or false"),
    "tuple[float, ...]": (_seq_of(is_num), "must be a list of numbers"),
    "tuple[int, ...]": (_seq_of(is_int), "must be a list of integers"),
    "tuple[str, ...]": (_seq_of(lambda v: isinstance(v, str)), "must be a list of strings"),
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
    be a trial's own key (:data:`sslsweep.schema.TRIAL_KEYS`) and, given ``known``, must be one of them; an error
    names the key where the user wrote it (``search.space.<name>`` for a shared one)."""
    merged = {**dict(common or {}), **dict(own or {})}
    for name, raw in merged.items():
        where = f"{key}.{name}" if name in (own or {}) else f"search.space.{name}"
        check_space_names(where, name, raw, key.split(".")[1], known, TRIAL_KEYS)
    return {name: parse_param(f"{key}.{name}", name, raw) for name, raw in merged.items()}


def upgrade(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A config saved by an older sslsweep (a resumed sweep's manifest) in today's keys, meaning
    the same: ``confirm.finetune_steps: s`` is a fixed length (min = max = s steps),
    ``confirm.finetune_lr: lr`` a one-value grid (no lr search), and a config without
    ``eval.compare`` confirmed its ``eval.selection`` alone (``oracle`` when it names none), as
    that sweep started."""
    out = dict(raw)
    confirm = dict(out.get("confirm") or {})
    if "finetune_steps" in confirm:
        steps = confirm.pop("finetune_steps")
        confirm.setdefault("finetune_min_steps", steps)
        confirm.setdefault("finetune_max_steps", steps)
    if "finetune_lr" in confirm:
        confirm.setdefault("finetune_lrs", [confirm.pop("finetune_lr")])
    if confirm:
        out["confirm"] = confirm
    ev = dict(out.get("eval") or {})
    if "selection" not in ev or "compare" not in ev:  # before issue 14's budget rule: oracle (or the named rule) alone
        ev.setdefault("selection", SELECTION_RULE_DEFAULT)
        ev.setdefault("compare", [])
        out["eval"] = ev
    return out


def from_dictconfig(cfg: DictConfig | Mapping[str, Any]) -> SweepConfig:
    """Validate a composed Hydra config into a :class:`SweepConfig` (raises :class:`ConfigError`)."""
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
        if is_num(raw.get(top)):  # Hydra reads name=2024 as a number
            raw[top] = str(raw[top])
        _require(raw.get(top) is None or isinstance(raw[top], str), top, raw.get(top), "must be a string or null")
    _require(is_int(raw.get("seed", 0)), "seed", raw.get("seed"), "must be an integer")
    known_top = {"dataset", "encoder", "method", "search", "resources", "trainer", "eval", "confirm",
                 "name", "storage", "resume", "seed", "tracking"}
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
        tracking=raw.get("tracking", "none"),
    )
    validate(sweep)
    return sweep


def to_dict(cfg: SweepConfig) -> dict[str, Any]:
    """A JSON-able view of the config (spaces as written in YAML)."""
    out = asdict(cfg)
    out["methods"] = {m.name: {k: v.to_dict() for k, v in m.space.items()} for m in cfg.methods}
    return out
