"""The validation stage: every rule a sweep's configuration must satisfy, checked before Ray starts.

Two calls, each made once by the pipeline:

- :func:`validate` (no data): value types were checked while building the typed config
  (:func:`sslsweep.config.from_dictconfig` calls this); here are the ranges, known names,
  paths, storage schemes and each method's search space.
- :func:`validate_against_data`: the rules that need facts about the dataset (split sizes, class
  counts, the image shape), read from labels, file listings and one decoded image by
  :func:`sslsweep.data.read_facts` -- no dataset is decoded before they pass.

Every broken rule raises :class:`~sslsweep.rules.ConfigError`: one line, naming the key, the value
and the rule. The rules themselves are predicates from :mod:`sslsweep.rules`.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from sslsweep.data.residency import RESIDENCIES, gpu_memory, plan_residency
from sslsweep.rules import HP_RULES, NEEDS_DEVICE_POOL, TORCHVISION_WEIGHTS, is_int, is_num, require
from sslsweep.schema import SELECTION_RULES, SELECTIONS
from sslsweep.storage import check_scheme, local_path, scheme
from sslsweep.trainables.tasks import TASKS

if TYPE_CHECKING:
    from sslsweep.config import (DatasetConfig, EvalConfig, ResourcesConfig, SearchConfig,
                                 SweepConfig, TrainerConfig)
    from sslsweep.data import DataFacts

DATASETS = ("digits", "parquet", "imagefolder")
ENCODERS = ("small_cnn", "resnet18", "resnet50")  # sslsweep.trainables.encoders.ENCODERS (torch-free here)
METRICS = ("knn", "linear")
# tracking value -> (the module its Ray Tune logger callback imports, how to install it)
TRACKING = {"none": None, "tensorboard": ("tensorboardX", "pip install tensorboardX (part of ray[tune])"),
            "mlflow": ("mlflow", "pip install 'sslsweep[mlflow]'"),
            "wandb": ("wandb", "pip install 'sslsweep[wandb]'")}
NATIVE_SIZE = {"digits": 8}  # image side of the datasets that ship with a package
log = logging.getLogger(__name__)


def validate(cfg: SweepConfig) -> None:
    """Every rule that needs no data, section by section; raises on the first broken one."""
    _check_dataset(cfg.dataset)
    _check_encoder(cfg)
    _check_search(cfg.search)
    _check_trainer(cfg.trainer)
    _check_resources(cfg.resources, cfg.trainer)
    _check_eval(cfg.eval)
    _check_confirm(cfg)
    _check_tracking(cfg.tracking)
    check_scheme(cfg.storage, "storage")
    if cfg.resume is not None:
        check_scheme(str(cfg.resume), "resume")
    _check_methods(cfg)


def validate_against_data(cfg: SweepConfig, facts: DataFacts) -> None:
    """The rules that need the dataset's facts: at least two classes, no empty split, enough
    images per class, batch sizes within the train pool, labels per class within the smallest
    class, square images large enough for every method."""
    d = cfg.dataset
    require(facts.num_classes >= 2, "dataset.path", d.path if d.path is not None else d.name,
            f"needs at least 2 classes; the data has {facts.num_classes} "
            f"({', '.join(f'{c}: {n} images' for c, n in facts.class_counts.items())})")
    if not facts.has_test_set:
        require(d.test_fraction > 0, "dataset.test_fraction", d.test_fraction,
                "must be > 0 when the dataset has no test set of its own (dataset.test_path, or test.parquet "
                "beside train.parquet): the confirm phase measures test accuracy")
    _check_splits(d, facts)
    for m in cfg.methods:
        if "batch_size" in m.space:
            for v in m.space["batch_size"].bounds():
                require(v <= facts.n_train, f"method.{m.name}.space.batch_size", v,
                        f"must be <= the train pool ({facts.n_train} images)")
    for k in d.labels_per_class:
        require(k <= facts.min_class_count, "dataset.labels_per_class", k,
                f"must be <= the smallest class in the train pool ({facts.min_class_count} images)")
    if facts.image_shape is not None:
        _, h, w = facts.image_shape
        require(h == w, "dataset.image_size", d.image_size,
                f"the images are {h}x{w} (height x width); the methods need square images: set dataset.image_size "
                "to resize them")
        _check_min_size(cfg, h)
    _check_residency(cfg, facts)


def _check_residency(cfg: SweepConfig, facts: DataFacts) -> None:
    """The residency asked for fits its limit (``auto``: the one chosen, logged with why), and
    every method can train under it. What is checked here and what in the trial:
    :mod:`sslsweep.data.residency`."""
    d, gpu = cfg.dataset, cfg.resources.gpu
    plan = plan_residency(d, facts, gpu_share=gpu,
                          gpu_total=gpu_memory() if gpu > 0 and d.device_memory_gb is None else None)
    log.info("dataset.residency = %s%s: %s", plan.residency, " (auto)" if d.residency == "auto" else "",
             plan.reason)
    if plan.residency in ("host", "stream"):
        for m in cfg.methods:
            need = NEEDS_DEVICE_POOL.get(m.name)
            if need is not None and need[0] in m.space and need[1] in m.space[need[0]].bounds():
                require(False, f"method.{m.name}.space.{need[0]}", need[1],
                        f"needs the whole train pool on the device at every epoch start; dataset.residency is "
                        f"{plan.residency}{' (auto: ' + plan.reason + ')' if d.residency == 'auto' else ''}: "
                        f"use another {need[0]}, or a residency that fits")


def _check_splits(d: DatasetConfig, facts: DataFacts) -> None:
    """Every class can give an image to each split asked for, and no split is empty."""
    if d.max_images is None:  # with max_images the empty-split rule below names that key instead
        split_test = not facts.has_test_set and d.test_fraction > 0
        need = 3 if split_test else 2  # one image per class for train and validation (and test)
        main = {c: facts.train_counts.get(c, 0) + facts.val_counts.get(c, 0)
                + (facts.test_counts.get(c, 0) if not facts.has_test_set else 0) for c in facts.class_counts}
        small = {c: n for c, n in main.items() if n < need}
        require(not small, "dataset.path", d.path if d.path is not None else d.name,
                f"needs at least {need} images per class for the train, validation"
                f"{' and test' if split_test else ''} splits; too few in "
                + ", ".join(f"{c} ({n})" for c, n in small.items()))
    for split, n, key, value in (("train", facts.n_train, "dataset.path", d.path),
                                 ("validation", facts.n_val, "dataset.val_fraction", d.val_fraction),
                                 ("test", facts.n_test, "dataset.test_fraction", d.test_fraction)):
        if n > 0:
            continue
        if d.max_images is not None:
            key, value, kept, hint = "dataset.max_images", d.max_images, \
                f"{d.max_images} of {facts.n_images} images", "raise it"
        else:
            kept, hint = f"{facts.n_images} images", ("the dataset is too small" if split == "train" else f"raise {key}")
        require(False, key, value, f"leaves the {split} split empty ({kept}, val_fraction {d.val_fraction}, "
                f"test_fraction {d.test_fraction}): {hint}")


# ----------------------------------------------------------------------------- sections


def _check_dataset(d: DatasetConfig) -> None:
    """Where the data is, how it splits, the label budgets and how the labelled images are chosen."""
    require(d.name in DATASETS, "dataset.name", d.name, f"unknown dataset; known: {', '.join(DATASETS)}")
    if d.name != "digits":
        require(d.path is not None and d.path != "???", "dataset.path", d.path, f"required for dataset {d.name}")
        _check_path_exists("dataset.path", d.path)
    if d.test_path is not None:
        _check_path_exists("dataset.test_path", d.test_path)
    if d.image_size is not None:
        require(is_int(d.image_size) and d.image_size >= 4, "dataset.image_size", d.image_size,
                "must be an integer >= 4 or null")
    require(0 < d.val_fraction < 1, "dataset.val_fraction", d.val_fraction, "must be in (0, 1)")
    require(0 <= d.test_fraction < 1, "dataset.test_fraction", d.test_fraction, "must be in [0, 1)")
    require(d.val_fraction + (d.test_fraction if d.test_path is None else 0) < 0.9, "dataset.val_fraction",
            d.val_fraction, "val_fraction + test_fraction must leave at least 10% for the train pool")
    if d.max_images is not None:
        require(is_int(d.max_images) and d.max_images >= 20, "dataset.max_images", d.max_images,
                "must be an integer >= 20 or null")
    require(len(d.label_fractions) + len(d.labels_per_class) > 0, "dataset.label_fractions",
            list(d.label_fractions), "give at least one label budget (label_fractions or labels_per_class)")
    for f in d.label_fractions:
        require(is_num(f) and 0 < f <= 1, "dataset.label_fractions", f, "every label fraction must be in (0, 1]")
    for k in d.labels_per_class:
        require(is_int(k) and k >= 1, "dataset.labels_per_class", k, "must be integers >= 1")
    for key, values in (("dataset.label_fractions", d.label_fractions),
                        ("dataset.labels_per_class", d.labels_per_class)):
        require(len(set(values)) == len(values), key, list(values), "has a budget twice; give each once")
    require(d.residency in RESIDENCIES, "dataset.residency", d.residency, f"must be one of {', '.join(RESIDENCIES)}")
    require(not (d.residency == "stream" and d.name == "digits"), "dataset.residency", d.residency,
            "stream reads dataset=parquet or imagefolder; digits is always in memory")
    for key, gb in (("dataset.host_memory_gb", d.host_memory_gb), ("dataset.device_memory_gb", d.device_memory_gb)):
        if gb is not None:
            require(is_num(gb) and gb > 0, key, gb, "must be a number of GiB > 0, or null")
    require(is_int(d.stream_buffer) and d.stream_buffer >= 1, "dataset.stream_buffer", d.stream_buffer,
            "must be an integer >= 1 (images held for shuffling)")
    require(is_int(d.stream_workers) and d.stream_workers >= 1, "dataset.stream_workers", d.stream_workers,
            "must be an integer >= 1 (decoding threads)")
    sel = list(d.label_selection)
    require(len(sel) > 0, "dataset.label_selection", sel, f"give at least one of {', '.join(SELECTIONS)}")
    for name in sel:
        require(name in SELECTIONS, "dataset.label_selection", name,
                f"unknown label selection; known: {', '.join(SELECTIONS)}")
    require(len(set(sel)) == len(sel), "dataset.label_selection", sel, "names a selection twice; give each once")


def _check_encoder(cfg: SweepConfig) -> None:
    """The encoder, and the pretrained weights a method that loads them needs."""
    e = cfg.encoder
    require(e.name in ENCODERS, "encoder.name", e.name, f"unknown encoder; known: {', '.join(ENCODERS)}")
    require(is_int(e.width) and e.width >= 1, "encoder.width", e.width, "must be an integer >= 1")
    if any(TASKS[m.name].loads_weights for m in cfg.methods):
        require(e.weights is not None, "encoder.weights", None,
                "method transfer needs pretrained weights: encoder=resnet18 "
                "encoder.weights=ResNet18_Weights.IMAGENET1K_V1, or encoder.weights=/path/to/file.pt")
    if e.weights is not None:
        if re.fullmatch(r"\w+_Weights\.\w+", str(e.weights)):
            enum = str(e.weights).split(".")[0]
            require(enum in TORCHVISION_WEIGHTS, "encoder.weights", e.weights,
                    f"only torchvision {', '.join(f'{k}.*' for k in TORCHVISION_WEIGHTS)} load by name; for another "
                    "network save its state dict to a file and give encoder.weights=/path/to/file.pt")
            fits = TORCHVISION_WEIGHTS[enum]
            require(e.name == fits and e.width == 64, "encoder.weights", e.weights,
                    f"torchvision {enum} need encoder={fits} with encoder.width=64")
        else:
            _check_path_exists("encoder.weights", str(e.weights))


def _check_search(s: SearchConfig) -> None:
    """The search protocol: trial budget, ASHA rungs, searcher and scheduler."""
    require(is_int(s.num_samples) and s.num_samples >= 1, "search.num_samples", s.num_samples, "must be >= 1")
    require(is_int(s.max_epochs) and s.max_epochs >= 1, "search.max_epochs", s.max_epochs, "must be >= 1")
    require(is_int(s.grace_period) and s.grace_period >= 1, "search.grace_period", s.grace_period, "must be >= 1")
    require(s.grace_period <= s.max_epochs, "search.grace_period", s.grace_period,
            f"must be <= search.max_epochs ({s.max_epochs})")
    require(is_int(s.reduction_factor) and s.reduction_factor >= 2, "search.reduction_factor",
            s.reduction_factor, "must be >= 2")
    require(is_int(s.eval_every) and 1 <= s.eval_every <= s.max_epochs, "search.eval_every", s.eval_every,
            f"must be in [1, search.max_epochs ({s.max_epochs})]")
    require(is_int(s.max_concurrent) and s.max_concurrent >= 0, "search.max_concurrent", s.max_concurrent,
            "must be >= 0 (0 = as many as resources allow)")
    require(s.searcher in ("tpe", "random"), "search.searcher", s.searcher, "must be tpe or random")
    require(s.scheduler in ("asha", "fifo"), "search.scheduler", s.scheduler, "must be asha or fifo")
    require(is_int(s.n_startup_trials) and s.n_startup_trials >= 1, "search.n_startup_trials",
            s.n_startup_trials, "must be >= 1")
    require(is_int(s.max_failures) and s.max_failures >= 0, "search.max_failures", s.max_failures, "must be >= 0")


def _check_resources(r: ResourcesConfig, t: TrainerConfig) -> None:
    """Per-trial resources, including GPU fractions; a trial asked to train on CUDA needs a GPU."""
    require(is_num(r.cpu) and r.cpu >= 1, "resources.cpu", r.cpu, "must be >= 1")
    require(is_num(r.gpu) and r.gpu >= 0, "resources.gpu", r.gpu, "must be >= 0")
    require(r.gpu <= 1 or float(r.gpu).is_integer(), "resources.gpu", r.gpu,
            "a GPU fraction must be in (0, 1]; more than one GPU must be a whole number")
    require(not (t.device == "cuda" and r.gpu == 0), "trainer.device", t.device,
            "cuda needs resources.gpu > 0 (Ray gives a trial without GPUs none to see)")
    require(is_int(r.workers) and r.workers >= 1, "resources.workers", r.workers, "must be an integer >= 1")
    require(r.workers == 1 or r.gpu == 0 or float(r.gpu).is_integer(), "resources.gpu", r.gpu,
            f"with resources.workers = {r.workers} each rank needs whole GPUs (NCCL cannot put two ranks on one)")


def _check_trainer(t: TrainerConfig) -> None:
    """Device, precision, layout and optimizer (warm-up is checked with confirm)."""
    require(t.device in ("auto", "cpu", "cuda"), "trainer.device", t.device, "must be auto, cpu or cuda")
    require(t.precision in ("auto", "bf16", "fp32"), "trainer.precision", t.precision, "must be auto, bf16 or fp32")
    require(t.channels_last in ("auto", True, False), "trainer.channels_last", t.channels_last,
            "must be auto, true or false")
    require(t.optimizer in ("sgd", "adamw"), "trainer.optimizer", t.optimizer, "must be sgd or adamw")
    if t.num_threads is not None:
        require(is_int(t.num_threads) and t.num_threads >= 1, "trainer.num_threads", t.num_threads, "must be >= 1")


def _check_eval(ev: EvalConfig) -> None:
    """The selection metric of the search."""
    require(ev.metric in METRICS, "eval.metric", ev.metric, f"must be one of {', '.join(METRICS)}")
    require(is_int(ev.knn_k) and ev.knn_k >= 1, "eval.knn_k", ev.knn_k, "must be >= 1")
    require(0 < ev.select_fraction <= 1, "eval.select_fraction", ev.select_fraction, "must be in (0, 1]")
    rules = ", ".join(SELECTION_RULES)
    require(ev.selection in SELECTION_RULES, "eval.selection", ev.selection, f"must be one of {rules}")
    require(isinstance(ev.compare, (tuple, list)), "eval.compare", ev.compare, f"must be a list of rules ({rules})")
    for rule in ev.compare:
        require(rule in SELECTION_RULES, "eval.compare", rule, f"unknown selection rule; known: {rules}")
    require(len(set(ev.compare)) == len(ev.compare), "eval.compare", list(ev.compare), "names a rule twice; give each once")
    labelled = [r for r in ev.compare if r != "label_free"]
    if ev.selection == "label_free" and labelled:  # allowed: the signals are for the report only
        log.warning("eval.selection = label_free with eval.compare = %s: the search trials read labels to report "
                    "the %s signal (never used by the label-free search or choice); eval.compare=[] reads no label "
                    "before confirm", list(ev.compare), " and ".join(labelled))


def _check_tracking(tracking: Any) -> None:
    """A known tracking backend whose package is installed (its Ray Tune callback imports it)."""
    require(isinstance(tracking, str) and tracking in TRACKING, "tracking", tracking,
            f"must be one of {', '.join(TRACKING)}")
    need = TRACKING[tracking]
    if need is not None:
        module, install = need
        require(importlib.util.find_spec(module) is not None, "tracking", tracking,
                f"needs the {module} package, which is not installed: {install}")


def _check_confirm(cfg: SweepConfig) -> None:
    """The confirm phase; then warm-up, which must end inside search and confirm trials alike."""
    c, s, t = cfg.confirm, cfg.search, cfg.trainer
    require(is_int(c.seeds) and c.seeds >= 1, "confirm.seeds", c.seeds, "must be >= 1")
    if c.epochs is not None:
        require(is_int(c.epochs) and c.epochs >= 1, "confirm.epochs", c.epochs, "must be >= 1 or null")
    require(is_num(c.finetune_epochs) and c.finetune_epochs >= 1, "confirm.finetune_epochs", c.finetune_epochs,
            "must be a number >= 1")
    require(is_int(c.finetune_min_steps) and c.finetune_min_steps >= 1, "confirm.finetune_min_steps",
            c.finetune_min_steps, "must be an integer >= 1")
    require(is_int(c.finetune_max_steps) and c.finetune_max_steps >= c.finetune_min_steps,
            "confirm.finetune_max_steps", c.finetune_max_steps,
            f"must be an integer >= confirm.finetune_min_steps ({c.finetune_min_steps})")
    require(isinstance(c.finetune_lrs, (list, tuple)) and len(c.finetune_lrs) > 0, "confirm.finetune_lrs",
            list(c.finetune_lrs) if isinstance(c.finetune_lrs, tuple) else c.finetune_lrs, "must be a non-empty list")
    for lr in c.finetune_lrs:
        require(is_num(lr) and lr > 0, "confirm.finetune_lrs", lr, "every lr must be a number > 0")
    require(is_int(c.finetune_batch_size) and c.finetune_batch_size >= 2, "confirm.finetune_batch_size",
            c.finetune_batch_size, "must be >= 2")
    require(c.linear_c > 0, "confirm.linear_c", c.linear_c, "must be > 0")
    shortest = min(s.max_epochs, cfg.confirm_epochs)  # confirm.epochs is known to be valid here
    require(is_int(t.warmup_epochs) and 0 <= t.warmup_epochs < shortest, "trainer.warmup_epochs",
            t.warmup_epochs, f"must be in [0, {shortest}) (the shorter of search.max_epochs {s.max_epochs} "
            f"and confirm.epochs {cfg.confirm_epochs})")


def _check_methods(cfg: SweepConfig) -> None:
    """Every method's space against the hyperparameter rules, its required names, and the image
    size where it is known before any data is read."""
    for m in cfg.methods:
        for name, spec in m.space.items():
            if name in HP_RULES:
                check, text = HP_RULES[name]
                for v in spec.bounds():
                    require(check(v), f"method.{m.name}.space.{name}", v, text)
        for name in TASKS[m.name].required:
            require(name in m.space, f"method.{m.name}.space.{name}", None, "required by this method")
        _check_false_negatives(m)
        _check_workers(m, cfg.resources.workers)
    size = cfg.dataset.image_size or NATIVE_SIZE.get(cfg.dataset.name)
    if size is not None:  # otherwise known from the data: validate_against_data
        _check_min_size(cfg, size)


def _check_workers(m: Any, workers: int) -> None:
    """A multi-worker trial (``resources.workers > 1``) needs a method that trains on several ranks
    as on one (:attr:`TaskEntry.single_worker` empty) and batch sizes the ranks split equally."""
    if workers <= 1 or not TASKS[m.name].pretrains:
        return
    why = TASKS[m.name].single_worker
    require(not why, "resources.workers", workers, f"method {m.name} trains on one worker only: {why}")
    batch = m.space.get("batch_size")
    if batch is None:
        return
    require(not batch.searched or batch.type == "categorical", f"method.{m.name}.space.batch_size", batch.to_dict(),
            f"with resources.workers = {workers} the batch size must be fixed or categorical (each value a "
            "multiple of the workers)")
    for v in batch.bounds():
        require(is_int(v) and v % workers == 0, f"method.{m.name}.space.batch_size", v,
                f"must be a multiple of resources.workers = {workers} (every rank trains on an equal slice)")


def _check_false_negatives(m: Any) -> None:
    """SimCLR's false-negative cancellation must leave every anchor a negative: with batch N
    there are 2N - 2, so fne_k <= 2N - 3 at the smallest batch size the space can draw."""
    negatives, fne_k, batch = m.space.get("negatives"), m.space.get("fne_k"), m.space.get("batch_size")
    if negatives is None or fne_k is None or batch is None:
        return
    if not {"eliminate", "attract"} & set(negatives.bounds()):
        return
    smallest = min(batch.bounds())
    require(max(fne_k.bounds()) <= 2 * smallest - 3, f"method.{m.name}.space.fne_k", max(fne_k.bounds()),
            f"must leave each anchor a negative: at most 2 x batch_size - 3 = {2 * smallest - 3} "
            f"(the smallest batch size is {smallest})")


def _check_min_size(cfg: SweepConfig, size: int) -> None:
    for m in cfg.methods:
        need = TASKS[m.name].min_size
        require(size >= need, "dataset.image_size", size,
                f"method {m.name} needs images of at least {need}x{need} (set dataset.image_size={need} or more)")


def _check_path_exists(key: str, path: str) -> None:
    if scheme(path) in ("", "file"):
        require(Path(local_path(path)).exists(), key, path, "path does not exist")


def check_space_names(where: str, name: str, raw: Any, method: str, known: Sequence[str] | None,
                      reserved: Sequence[str]) -> None:
    """A hyperparameter name in a space: not a trial's own key, and (given ``known``) one the method reads."""
    require(name not in reserved, where, raw,
            f"a hyperparameter may not be named {', '.join(reserved)} (the trial's own keys)")
    if known is not None:
        require(name in known, where, raw, f"method {method} has no such hyperparameter; known: {', '.join(sorted(known))}")
