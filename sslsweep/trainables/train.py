"""The plain-PyTorch training loop of a trial: no Ray here.

Read top to bottom: :func:`make_pretrainer` builds encoder + task + optimizers for one sampled
configuration; :func:`train_epochs` runs epochs; :func:`selection_metric` scores the encoder on
the validation split; :func:`evaluate_budgets` runs the confirm-phase evaluation at every label
budget. State (weights, optimizers, epoch, RNG) round-trips through :meth:`Pretrainer.state_dict`
so a trial resumes exactly where its last checkpoint left it.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from sslsweep.config import ConfirmConfig, EncoderConfig, EvalConfig, TrainerConfig
from sslsweep.data import Prepared, label_subset, typical_subset
from sslsweep.storage import atomic_local_file
from sslsweep.trainables.encoders import Encoder, build_encoder
from sslsweep.trainables.evaluate import (FinetuneConfig, choose_finetune_lr, extract_features, finetune,
                                          finetune_steps, knn_top1, linear_probe, rankme)
from sslsweep.trainables.tasks import TASKS, encoder_config_for, get_task
from sslsweep.trainables.tasks.base import PretextTask, TaskContext, TaskOutput, epoch_batch_size


class Diverged(RuntimeError):
    """The pretext loss became NaN or infinite."""


@dataclass(frozen=True)
class Runtime:
    """Where and how a trial computes: resolved from :class:`TrainerConfig` on the worker."""

    device: torch.device
    autocast: bool
    channels_last: bool
    compile: bool

    @staticmethod
    def resolve(cfg: TrainerConfig, num_threads: int | None = None) -> "Runtime":
        cuda = torch.cuda.is_available() and cfg.device in ("auto", "cuda")
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("trainer.device = 'cuda': no CUDA device is visible to this trial "
                               "(set resources.gpu > 0 or trainer.device=auto)")
        if num_threads and not cuda:
            torch.set_num_threads(num_threads)
        autocast = cfg.precision == "bf16" or (cfg.precision == "auto" and cuda)
        channels_last = cfg.channels_last is True or (cfg.channels_last == "auto" and cuda)
        # compile is honoured on CPU too (inductor needs a C++ compiler there): one code path, tested on CPU
        return Runtime(torch.device("cuda" if cuda else "cpu"), autocast, channels_last, bool(cfg.compile))


@dataclass
class EpochStats:
    loss: float
    acc: float | None
    views: int
    seconds: float

    @property
    def throughput(self) -> float:
        return self.views / max(self.seconds, 1e-9)


@dataclass
class Pretrainer:
    """One trial's mutable state: task (encoder + heads), optimizers, epoch counter and RNGs.

    ``extra_optimizers`` are the task's own (:meth:`PretextTask.extra_optimizers`), stepped and
    checkpointed with ``optimizer``."""

    task: PretextTask
    optimizer: torch.optim.Optimizer
    hp: dict[str, Any]
    max_epochs: int
    warmup_epochs: int
    runtime: Runtime
    seed: int
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # every result reported, kept in checkpoints
    extra_optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    gen: torch.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.gen = torch.Generator(device=self.runtime.device).manual_seed(self.seed)

    @property
    def encoder(self) -> Encoder:
        return self.task.encoder  # type: ignore[return-value]

    def state_dict(self) -> dict[str, Any]:
        return {"task": self.task.state_dict(), "optimizer": self.optimizer.state_dict(), "epoch": self.epoch,
                "extra_optimizers": {name: opt.state_dict() for name, opt in self.extra_optimizers.items()},
                "gen": self.gen.get_state(), "torch_rng": torch.get_rng_state(),
                "history": json.dumps(self.history)}  # a string: weights_only loading accepts it

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.task.load_state_dict(state["task"])
        self.optimizer.load_state_dict(state["optimizer"])
        for name, opt in self.extra_optimizers.items():
            opt.load_state_dict(state["extra_optimizers"][name])
        self.epoch = int(state["epoch"])
        self.gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        self.history = json.loads(state.get("history", "[]"))


def task_context(data: Prepared) -> TaskContext:
    c, h, _ = data.shape
    return TaskContext(in_channels=c, image_size=h, hflip=data.hflip, num_images=len(data.splits.train))


def make_pretrainer(method: str, hp: Mapping[str, Any], data: Prepared, encoder_cfg: EncoderConfig,
                    trainer_cfg: TrainerConfig, runtime: Runtime, *, max_epochs: int, seed: int) -> Pretrainer:
    """Build encoder, task and optimizers for one sampled configuration, seeded. The trainer's
    optimizer gets every trainable parameter but those of the task's own optimizers."""
    torch.manual_seed(seed)
    encoder = build_encoder(encoder_config_for(method, encoder_cfg), data.shape[0])
    task = get_task(method)(encoder, hp, task_context(data)).to(runtime.device)
    if runtime.channels_last:
        task = task.to(memory_format=torch.channels_last)
    extra = task.extra_optimizers()
    theirs = {id(p) for opt in extra.values() for p in _params(opt)}
    lr, wd = float(hp["lr"]), float(hp["weight_decay"])
    params = [p for p in task.parameters() if p.requires_grad and id(p) not in theirs]
    if hp.get("optimizer", trainer_cfg.optimizer) == "adamw":  # a method may fix its own (gan: adamw, beta1 0.5)
        # beta1: only gan's space sets it; 0.9 is AdamW's own default, not a copy of a config value
        opt: torch.optim.Optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=wd,
                                                       betas=(float(hp.get("beta1", 0.9)), 0.999))
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd, nesterov=True)
    pre = Pretrainer(task=task, optimizer=opt, hp=dict(hp), max_epochs=max_epochs,
                     warmup_epochs=trainer_cfg.warmup_epochs, runtime=runtime, seed=seed, extra_optimizers=extra)
    if runtime.compile:  # the encoder only, in place: state_dict keys unchanged, tasks' own steps untouched
        task.encoder.compile()
    return pre


def lr_at(progress: float, base_lr: float, total_epochs: int, warmup_epochs: int) -> float:
    """Linear warm-up then cosine decay to 0; ``progress`` is in epochs (fractional)."""
    if progress < warmup_epochs:
        return base_lr * progress / warmup_epochs
    span = max(total_epochs - warmup_epochs, 1e-9)
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup_epochs) / span)))


def _params(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in opt.param_groups for p in group["params"]]


def backward_and_step(pre: Pretrainer, out: TaskOutput) -> None:
    """Backpropagate a step's losses, then step every optimizer: ``out.loss`` for the trainer's
    optimizer, ``out.extra_losses[name]`` for the task's optimizer ``name`` (and its parameters only).

    Every backward pass comes before any step: an extra loss's graph holds weights the main step
    changes in place (the GAN's generator loss runs through the discriminator)."""
    optimizers = [pre.optimizer, *pre.extra_optimizers.values()]
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    out.loss.backward()
    for name, loss in out.extra_losses.items():
        loss.backward(inputs=_params(pre.extra_optimizers[name]))
    for opt in optimizers:
        opt.step()


def train_one_epoch(pre: Pretrainer, images: torch.Tensor) -> EpochStats:
    """One pass over the unlabeled pool ``images`` (uint8, on the device), in shuffled full batches;
    the task sees the whole pool first (:meth:`PretextTask.on_epoch_start`)."""
    bs = epoch_batch_size(pre.hp, len(images))
    pre.task.on_epoch_start(images, pre.epoch, pre.gen)
    order = torch.randperm(len(images), generator=pre.gen, device=pre.runtime.device)
    n_steps = len(images) // bs
    base_lr = float(pre.hp["lr"])
    pre.task.train()
    total_loss = torch.zeros((), device=pre.runtime.device)
    total_acc = torch.zeros((), device=pre.runtime.device)
    views, has_acc = 0, False
    t0 = time.perf_counter()
    for step in range(n_steps):
        for group in pre.optimizer.param_groups:
            group["lr"] = lr_at(pre.epoch + step / n_steps, base_lr, pre.max_epochs, pre.warmup_epochs)
        pre.task.progress = min(1.0, (pre.epoch + step / n_steps) / max(pre.max_epochs, 1))
        x = images[order[step * bs:(step + 1) * bs]]
        with torch.autocast(pre.runtime.device.type, dtype=torch.bfloat16, enabled=pre.runtime.autocast):
            out = pre.task(x, pre.gen)
        backward_and_step(pre, out)
        total_loss += out.loss.detach().float()
        if out.acc is not None:
            total_acc += out.acc.float()
            has_acc = True
        views += out.views
    loss = total_loss.item() / max(n_steps, 1)  # one host sync per epoch
    if not math.isfinite(loss):
        raise Diverged(f"pretext loss is {loss} at epoch {pre.epoch + 1} (lr {base_lr:g}, batch size {bs})")
    pre.epoch += 1
    acc = total_acc.item() / max(n_steps, 1) if has_acc else None
    return EpochStats(loss=loss, acc=acc, views=views, seconds=time.perf_counter() - t0)


def train_epochs(pre: Pretrainer, images: torch.Tensor, n: int) -> EpochStats:
    """Up to ``n`` epochs (never past ``max_epochs``); the stats of the last one, time and views summed."""
    stats, seconds, views = None, 0.0, 0
    for _ in range(min(n, pre.max_epochs - pre.epoch)):
        stats = train_one_epoch(pre, images)
        seconds += stats.seconds
        views += stats.views
    if stats is None:
        return EpochStats(loss=float("nan"), acc=None, views=0, seconds=0.0)
    return EpochStats(loss=stats.loss, acc=stats.acc, views=views, seconds=seconds)


@dataclass
class DeviceData:
    """The prepared arrays moved to the device once per trial (uint8: a quarter of float32)."""

    images: torch.Tensor
    labels: torch.Tensor
    data: Prepared

    @staticmethod
    def put(data: Prepared, device: torch.device) -> "DeviceData":
        # arrays from Ray's object store are read-only: copy into torch-owned memory on the way
        return DeviceData(torch.tensor(data.images, device=device), torch.tensor(data.labels, device=device), data)

    def idx(self, indices: np.ndarray) -> torch.Tensor:
        # a copy: split indices from the object store are read-only too (and small)
        return torch.tensor(indices, device=self.images.device)

    def pool(self) -> torch.Tensor:
        return self.images[self.idx(self.data.splits.train)]


def selection_metric(encoder: Encoder, dd: DeviceData, cfg: EvalConfig, runtime: Runtime, *, seed: int = 0) -> float:
    """The search phase's score, reported under :attr:`SweepConfig.metric_name`.

    ``eval.selection = oracle``: kNN top-1 or linear-probe accuracy on the validation split, with
    the labeled bank ``eval.select_fraction`` of the train pool (a fixed, seeded subset): more
    labels than a small budget has, so an upper bound. ``label_free``: RankMe of the validation
    split's features; no label array is touched."""
    data = dd.data
    if cfg.selection == "label_free":
        return rankme(extract_features(encoder, dd.images[dd.idx(data.splits.val)], autocast=runtime.autocast))
    bank_idx = label_subset(data.labels, data.splits.train, seed=seed, fraction=cfg.select_fraction)
    bank = extract_features(encoder, dd.images[dd.idx(bank_idx)], autocast=runtime.autocast)
    val = extract_features(encoder, dd.images[dd.idx(data.splits.val)], autocast=runtime.autocast)
    if cfg.metric == "knn":
        return knn_top1(bank, dd.labels[dd.idx(bank_idx)], val, dd.labels[dd.idx(data.splits.val)],
                        k=cfg.knn_k, num_classes=data.num_classes)
    return linear_probe(bank.cpu().numpy(), data.labels[bank_idx],
                        {"val": (val.cpu().numpy(), data.labels[data.splits.val])}, seed=seed)["val"]


def evaluate_budgets(encoder: Encoder, dd: DeviceData, cfg: ConfirmConfig, dataset_budgets: list[tuple[str, float]],
                     runtime: Runtime, *, seed: int, selections: Sequence[str] = ("random",)) -> list[dict[str, Any]]:
    """Confirm-phase evaluation: for every label selection, at every label budget, linear probe and
    fine-tuning, on val and test.

    ``random`` subsets come from :func:`label_subset` with this ``seed``: nested and identical for
    every method. ``typical`` subsets come from :func:`typical_subset` on this encoder's features of
    the train pool (no label read to choose them), as many images as the random subset of the same
    budget. Fine-tuning runs ``finetune_steps`` of the subset's size, with the lr of
    ``confirm.finetune_lrs`` that :func:`choose_finetune_lr` picks on a held-out part of the subset
    (the validation split plays no part in it). Returns one dict per (selection, budget, protocol)
    with the columns of ``budget.parquet``.
    """
    data = dd.data
    val_i, test_i = data.splits.val, data.splits.test
    feats = {
        "train": extract_features(encoder, dd.pool(), autocast=runtime.autocast).cpu().numpy(),
        "val": extract_features(encoder, dd.images[dd.idx(val_i)], autocast=runtime.autocast).cpu().numpy(),
        "test": extract_features(encoder, dd.images[dd.idx(test_i)], autocast=runtime.autocast).cpu().numpy(),
    }
    pos = {int(g): i for i, g in enumerate(data.splits.train)}  # full index -> row of feats["train"]
    rows = []
    ft_cfg = FinetuneConfig(batch_size=cfg.finetune_batch_size)

    def steps_for(n: int) -> int:
        return finetune_steps(n, epochs=cfg.finetune_epochs, batch_size=cfg.finetune_batch_size,
                              min_steps=cfg.finetune_min_steps, max_steps=cfg.finetune_max_steps)
    for selection, (kind, value) in itertools.product(selections, dataset_budgets):
        sub = label_subset(data.labels, data.splits.train, seed=seed,
                           **({"fraction": value} if kind == "fraction" else {"per_class": int(value)}))
        t0 = time.perf_counter()  # the linear row's time includes choosing the subset
        if selection == "typical":  # the random subset gave the count only: equal labels, equal cost
            sub = data.splits.train[typical_subset(feats["train"], len(sub), seed=seed)]
        acc = linear_probe(feats["train"][[pos[int(i)] for i in sub]], data.labels[sub],
                           {"val": (feats["val"], data.labels[val_i]), "test": (feats["test"], data.labels[test_i])},
                           c=cfg.linear_c, seed=seed)
        rows.append(dict(budget_kind=kind, budget=value, n_labels=len(sub), protocol="linear", selection=selection,
                         val_acc=acc["val"], test_acc=acc["test"], eval_time_s=time.perf_counter() - t0))
        t0 = time.perf_counter()  # the finetune row's time includes choosing its lr
        sub_x, sub_y = dd.images[dd.idx(sub)], dd.labels[dd.idx(sub)]
        choice = choose_finetune_lr(encoder, data.num_classes, sub_x, sub_y, cfg.finetune_lrs, steps_for, ft_cfg,
                                    seed=seed, autocast=runtime.autocast)  # reads only the budget's labels
        acc = finetune(encoder, data.num_classes, sub_x, sub_y,
                       {"val": (dd.images[dd.idx(val_i)], dd.labels[dd.idx(val_i)]),
                        "test": (dd.images[dd.idx(test_i)], dd.labels[dd.idx(test_i)])},
                       replace(ft_cfg, lr=choice.lr, steps=steps_for(len(sub))), seed=seed, autocast=runtime.autocast)
        rows.append(dict(budget_kind=kind, budget=value, n_labels=len(sub), protocol="finetune", selection=selection,
                         val_acc=acc["val"], test_acc=acc["test"], eval_time_s=time.perf_counter() - t0,
                         finetune_lr=choice.lr, finetune_lr_chosen=choice.chosen))
    return rows


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(state: Mapping[str, Any], directory: str | Path, name: str = "state.pt") -> Path:
    """Write ``state`` atomically (a reader sees the old checkpoint or the new one, never half)."""
    final = Path(directory) / name
    with atomic_local_file(final) as tmp:
        torch.save(state, tmp)
    return final


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (never falling back to full unpickling).

    Raises ``ValueError`` naming the file when it is corrupt or not a checkpoint."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"checkpoint {path} cannot be loaded ({type(exc).__name__}: {exc}); "
                         "an earlier checkpoint of the trial may still load") from None


def pretrains(method: str) -> bool:
    return TASKS[method].pretrains
