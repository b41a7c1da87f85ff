"""The plain-PyTorch training loop of a trial: no Ray here.

Read top to bottom: :func:`make_pretrainer` builds encoder + task + optimizers for one sampled
configuration; :func:`train_epochs` runs epochs; :class:`DeviceData` holds the trial's data at its
residency (what the encoder is scored on: :mod:`sslsweep.trainables.scores`). State (weights, optimizers, epoch, RNG) round-trips through :meth:`Pretrainer.state_dict`
so a trial resumes exactly where its last checkpoint left it.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Protocol

import numpy as np
import torch

from sslsweep.config import EncoderConfig, TrainerConfig
from sslsweep.data import Prepared, StreamReader
from sslsweep.data.residency import fits_device
from sslsweep.storage import atomic_local_file
from sslsweep.trainables.encoders import Encoder, build_encoder
from sslsweep.trainables.evaluate import extract_features
from sslsweep.trainables.tasks import TASKS, encoder_config_for, get_task
from sslsweep.trainables.tasks.base import PretextTask, TaskContext, TaskOutput, epoch_batch_size

if TYPE_CHECKING:
    from sslsweep.trainables.distributed import DistContext


log = logging.getLogger(__name__)


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
    dist: DistContext | None = None  # one rank of a multi-worker trial (sslsweep.trainables.distributed)
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
    encoder = build_encoder(encoder_config_for(method, encoder_cfg), data.shape[0], data.shape[1])
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


class BatchPool(Protocol):
    """An unlabeled pool that is not on the device at once (``host`` and ``stream`` residency):
    it hands out shuffled full batches, uint8 (B, C, H, W) on the device, drawing its randomness
    from the trial's generator so a resumed trial sees the same epochs."""

    def __len__(self) -> int: ...

    def batches(self, pre: Pretrainer, batch_size: int) -> Iterator[torch.Tensor]: ...


def train_one_epoch(pre: Pretrainer, images: torch.Tensor | BatchPool) -> EpochStats:
    """One pass over the unlabeled pool ``images`` in shuffled full batches: a uint8 tensor on the
    device (``device`` residency: the task sees the whole pool first,
    :meth:`PretextTask.on_epoch_start`), or a :class:`BatchPool` (``host``, ``stream``: the tasks
    that need the pool at epoch start are refused there, :data:`sslsweep.rules.NEEDS_DEVICE_POOL`)."""
    bs = epoch_batch_size(pre.hp, len(images))
    n_steps = len(images) // bs
    if isinstance(images, torch.Tensor):
        pre.task.on_epoch_start(images, pre.epoch, pre.gen)
        order = torch.randperm(len(images), generator=pre.gen, device=pre.runtime.device)
        batches: Iterator[torch.Tensor] = (images[order[step * bs:(step + 1) * bs]] for step in range(n_steps))
    else:
        batches = images.batches(pre, bs)
    base_lr = float(pre.hp["lr"])
    pre.task.train()
    total_loss = torch.zeros((), device=pre.runtime.device)
    total_acc = torch.zeros((), device=pre.runtime.device)
    views, has_acc = 0, False
    t0 = time.perf_counter()
    done = 0  # steps taken: a stream that skipped undecodable images may end a step early
    for step, x in enumerate(batches):
        x = x if pre.dist is None else pre.dist.shard(x)  # every rank: the same global batch, its own slice
        for group in pre.optimizer.param_groups:
            group["lr"] = lr_at(pre.epoch + step / n_steps, base_lr, pre.max_epochs, pre.warmup_epochs)
        pre.task.progress = min(1.0, (pre.epoch + step / n_steps) / max(pre.max_epochs, 1))
        with torch.autocast(pre.runtime.device.type, dtype=torch.bfloat16, enabled=pre.runtime.autocast):
            out = (pre.task if pre.dist is None else pre.dist.module)(x, pre.gen)  # type: ignore[operator]
        backward_and_step(pre, out)
        total_loss += out.loss.detach().float()
        if out.acc is not None:
            total_acc += out.acc.float()
            has_acc = True
        views += out.views
        done += 1
    if pre.dist is not None:  # the global batch's means, all ranks' views
        total_loss, total_acc, views = pre.dist.epoch_totals(total_loss, total_acc, views)
    loss = total_loss.item() / max(done, 1)  # one host sync per epoch
    if not math.isfinite(loss):
        raise Diverged(f"pretext loss is {loss} at epoch {pre.epoch + 1} (lr {base_lr:g}, batch size {bs})")
    pre.epoch += 1
    acc = total_acc.item() / max(done, 1) if has_acc else None
    return EpochStats(loss=loss, acc=acc, views=views, seconds=time.perf_counter() - t0)


def train_epochs(pre: Pretrainer, images: torch.Tensor | BatchPool, n: int) -> EpochStats:
    """Up to ``n`` epochs (never past ``max_epochs``); the stats of the last one, time and views summed."""
    stats, seconds, views = None, 0.0, 0
    for _ in range(min(n, pre.max_epochs - pre.epoch)):
        stats = train_one_epoch(pre, images)
        seconds += stats.seconds
        views += stats.views
    if stats is None:
        return EpochStats(loss=float("nan"), acc=None, views=0, seconds=0.0)
    return EpochStats(loss=stats.loss, acc=stats.acc, views=views, seconds=seconds)


class HostPool:
    """The train pool read from a host array (the whole prepared set, shared with Ray's object
    store: never copied whole): each batch is gathered on the host into a staging buffer (pinned
    on CUDA) and copied to the device without blocking; on a CPU trial the staging buffer is the
    batch. The order is the device path's (the same permutation from the trial's generator), so
    both train alike."""

    def __init__(self, images: torch.Tensor, indices: np.ndarray, device: torch.device) -> None:
        self.images, self.device = images, device  # (N, C, H, W) uint8 on the host: the whole labelled set
        self.indices = torch.as_tensor(np.asarray(indices, dtype=np.int64))  # (n,) the pool's rows in it

    def __len__(self) -> int:
        return len(self.indices)

    def batches(self, pre: Pretrainer, batch_size: int) -> Iterator[torch.Tensor]:
        order = self.indices[torch.randperm(len(self.indices), generator=pre.gen, device=pre.runtime.device).cpu()]
        cuda = self.device.type == "cuda"
        shape = (batch_size, *self.images.shape[1:])
        staging = [torch.empty(shape, dtype=torch.uint8, pin_memory=cuda) for _ in range(2)]
        copied: list[Any] = [None, None]  # CUDA events: a staging buffer is refilled only once its copy is done
        for step in range(len(order) // batch_size):
            k = step % 2
            if copied[k] is not None:
                copied[k].synchronize()
            torch.index_select(self.images, 0, order[step * batch_size:(step + 1) * batch_size], out=staging[k])
            x = staging[k].to(self.device, non_blocking=cuda)
            if cuda:
                copied[k] = torch.cuda.Event()
                copied[k].record()
            yield x


class StreamPool:
    """The train pool read from its shards while training (``stream`` residency): an epoch's
    order (shards, row groups, shuffle buffer, crops) comes from one seed drawn from the trial's
    generator."""

    def __init__(self, reader: StreamReader, indices: np.ndarray, device: torch.device) -> None:
        self.reader, self.indices, self.device = reader, indices, device

    def __len__(self) -> int:
        return len(self.indices)

    def batches(self, pre: Pretrainer, batch_size: int) -> Iterator[torch.Tensor]:
        seed = int(torch.randint(2 ** 62, (1,), generator=pre.gen, device=pre.runtime.device).item())
        for images, _ in self.reader.batches(self.indices, batch_size, seed=seed, drop_last=True):
            yield _to_device(images, self.device)


def _to_device(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    if isinstance(images, torch.Tensor):  # decoded on the device already (StreamReader.decode_device)
        return images.to(device)
    x = torch.from_numpy(images)
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x


def choose_residency(data: Prepared, device: torch.device, gpu_share: float) -> str:
    """The trial's residency: ``stream`` and ``host`` as planned; ``device`` checked against this
    trial's GPU (its share of the total, and what is free now), ``auto`` falling back to ``host``
    when the array does not fit there. On the CPU, ``auto`` is ``device``."""
    if data.residency in ("stream", "host") or device.type != "cuda":
        return "device" if data.residency == "auto" else data.residency
    free, total = torch.cuda.mem_get_info(device)
    share = gpu_share if gpu_share > 0 else 1.0
    if fits_device(data.nbytes, free, share, total):
        return "device"
    limit = min(free, int(total * min(share, 1.0)))
    why = (f"the decoded images need {data.nbytes / 2 ** 30:.2f} GiB, more than this trial's GPU share "
           f"({limit / 2 ** 30:.2f} GiB of {total / 2 ** 30:.2f} GiB, share {share:g}, free now {free / 2 ** 30:.2f})")
    if data.residency == "device":
        raise RuntimeError(f"dataset.residency = 'device': {why}: use host, stream or auto")
    log.info("dataset.residency = host (auto, in the trial): %s", why)
    return "host"


def shared_tensor(images: np.ndarray) -> torch.Tensor:
    """``images`` as a host tensor without a copy. In a trial they come from Ray's object store
    (``tune.with_parameters``), read-only and shared by every trial of the node: the trials of a
    node then hold one copy of the pool between them, not one each. Nothing writes to the pool
    (batches are gathered into new tensors), so PyTorch's warning about a non-writable array is
    silenced here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(images)


@dataclass
class DeviceData:
    """The prepared data as one trial holds it, by residency (:mod:`sslsweep.data.residency`):

    - ``device``: ``images`` on the device, moved once per trial (uint8: a quarter of float32).
    - ``host``: ``images`` in host memory, shared with Ray's object store (:func:`shared_tensor`),
      batches moved per step through pinned buffers. On a CPU trial ``device`` shares them too,
      and its training pool reads them a batch at a time unless the task needs the pool whole
      (:meth:`pool`).
    - ``stream``: no ``images``; ``reader`` reads them from the shards.

    ``labels`` are on the device in every case (N int64: small)."""

    images: torch.Tensor | None
    labels: torch.Tensor
    data: Prepared
    residency: str = "device"
    reader: StreamReader | None = None
    on: torch.device | None = None  # the trial's device, where ``images`` is not on it (host, stream)

    @staticmethod
    def put(data: Prepared, device: torch.device, residency: str = "device") -> "DeviceData":
        labels = torch.tensor(data.labels, device=device)
        if residency == "stream":
            if data.stream is None:
                raise ValueError("dataset.residency = 'stream': the prepared data holds no stream index")
            reader = StreamReader(data.stream, buffer=data.stream_buffer, workers=data.stream_workers,
                                  decode_device=device if device.type == "cuda" else None)  # nvJPEG on a GPU
            return DeviceData(None, labels, data, residency, reader, device)
        if data.images is None:
            raise ValueError(f"dataset.residency = {residency!r}: the prepared data was streamed, not decoded")
        if residency == "host":  # batches go through pinned staging buffers (HostPool): the pool needs no pinning
            return DeviceData(shared_tensor(data.images), labels, data, residency, None, device)
        if device.type == "cpu":
            return DeviceData(shared_tensor(data.images), labels, data)
        return DeviceData(torch.tensor(data.images, device=device), labels, data)

    @property
    def device(self) -> torch.device:
        return self.on if self.on is not None else self.images.device  # type: ignore[union-attr]

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()

    def idx(self, indices: np.ndarray) -> torch.Tensor:
        # a copy: split indices from the object store are read-only too (and small)
        return torch.tensor(indices, device=self.device)

    def pool(self, whole: bool = True) -> torch.Tensor | BatchPool:
        """The unlabeled train pool: a device tensor (``device``) or a :class:`BatchPool`.

        ``whole=False`` (a task that does not need the pool at epoch start,
        :func:`sslsweep.rules.needs_device_pool`): on a CPU trial under ``device`` the batches are
        gathered from the shared array (:class:`HostPool`, the same batches in the same order)
        instead of copying the train split into a tensor of its own."""
        train = self.data.splits.train
        if self.residency == "stream":
            return StreamPool(self.reader, train, self.device)  # type: ignore[arg-type]
        if self.residency == "host" or (not whole and self.device.type == "cpu"):
            return HostPool(self.images, train, self.device)  # type: ignore[arg-type]
        return self.images[self.idx(train)]  # type: ignore[index]

    def features(self, encoder: Encoder, indices: np.ndarray, *, autocast: bool,
                 chunk: int = 4096) -> tuple[torch.Tensor, np.ndarray]:
        """(features (n, D) on the device, the indices they are of): ``indices`` in order, less any
        image the stream skipped as undecodable (counted by the reader, logged with its file)."""
        if self.residency == "device":
            return extract_features(encoder, self.images[self.idx(indices)], autocast=autocast), indices  # type: ignore[index]
        if self.residency == "host":
            parts = [extract_features(encoder, self.images[torch.tensor(indices[i:i + chunk])].to(self.device),  # type: ignore[index]
                                      autocast=autocast) for i in range(0, len(indices), chunk)]
            return (torch.cat(parts) if parts else torch.zeros(0, encoder.out_dim, device=self.device)), indices
        feats, got = [], []
        for images, pos in self.reader.batches(indices, 512):  # type: ignore[union-attr]
            feats.append(extract_features(encoder, _to_device(images, self.device), autocast=autocast))
            got.append(pos)
        if not feats:
            return torch.zeros(0, encoder.out_dim, device=self.device), indices[:0]
        pos = np.concatenate(got)
        order = np.argsort(pos, kind="stable")
        return torch.cat(feats)[torch.as_tensor(order, device=self.device)], np.asarray(indices)[pos[order]]

    def labelled_batches(self, indices: np.ndarray, batch_size: int = 512) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) of ``indices`` on the device, ``batch_size`` at a time, in no promised
        order: what a fine-tuned model is scored on, never held whole (under ``host`` copied a
        batch at a time, under ``stream`` read as centre crops, less skipped images)."""
        indices = np.asarray(indices)
        if self.residency == "stream":
            for images, pos in self.reader.batches(indices, batch_size):  # type: ignore[union-attr]
                yield _to_device(images, self.device), self.labels[self.idx(indices[pos])]
            return
        for i in range(0, len(indices), batch_size):
            part = indices[i:i + batch_size]
            if self.residency == "host":
                yield self.images[torch.tensor(part)].to(self.device), self.labels[self.idx(part)]  # type: ignore[index]
            else:
                yield self.images[self.idx(part)], self.labels[self.idx(part)]  # type: ignore[index]

    def materialize(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of ``indices``, whole: a label budget's subset, which fine-tuning draws
        random batches from. The images stay where the residency keeps them: on the device under
        ``device``, in host memory under ``host`` and ``stream`` (read whole as centre crops, less
        skipped images), from where fine-tuning copies one batch at a time to the device
        (10% of 1M images at 224 px is 15 GB); the labels are on the device."""
        if self.residency == "stream":
            images, kept = self.reader.materialize(indices)  # type: ignore[union-attr]
            return torch.from_numpy(images), self.labels[self.idx(np.asarray(indices)[kept])]
        if self.residency == "host":
            return self.images[torch.tensor(indices)], self.labels[self.idx(indices)]  # type: ignore[index]
        return self.images[self.idx(indices)], self.labels[self.idx(indices)]  # type: ignore[index]


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
