"""Multi-worker (DDP) trials: one trial trained by ``resources.workers`` ranks in lockstep.

The Tune trial function is rank 0. It starts ranks 1..N-1 as Ray actors in bundles 1..N-1 of its
own placement group (:func:`start_workers`), hands them the data (one ``ray.put``), the sampled
hyperparameters, the seed and the state it restored from its checkpoint, and a rendezvous
address; every rank joins one ``torch.distributed`` process group (NCCL on GPUs, gloo on CPUs)
and runs the same :func:`sslsweep.trainables.train.train_one_epoch`. Rank 0 alone evaluates,
reports to Tune and checkpoints, so Tune's report, checkpoint and ASHA semantics are those of a
one-worker trial; :func:`stop_workers` kills the other ranks when the trial ends or is stopped.
docs/distributed.md gives the reasons for this design over Ray Train's TorchTrainer.

What makes N workers train as one worker does at the same global batch:

- every rank draws the same global batch order from the same seeded generator and trains on
  its slice ``x[rank::world]`` (:meth:`DistContext.shard`); the batch size must divide by N;
- view augmentation draws its parameters for the whole global batch and keeps this rank's rows
  (:class:`ShardedAugment`), so every image gets the view it would get on one worker and the
  generators of all ranks stay equal;
- batch norm normalises with the statistics of the whole global batch: ``SyncBatchNorm`` on CUDA,
  :class:`GlobalBatchNorm` (differentiable all-reduce) on CPU, where ``SyncBatchNorm`` refuses;
- DDP averages gradients; a loss that couples samples (NT-Xent's negatives) is computed on the
  whole batch, gathered differentiably (:meth:`PretextTask.gather_batch`).

Only tasks whose randomness per step is their view augmentation and whose loss is a per-sample
mean (or gathered) train this way: the registry's ``TaskEntry.single_worker`` says why the others
do not (:func:`check_distributable`).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Mapping

import ray
import torch
import torch.distributed as dist
from ray.util.placement_group import get_current_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from sslsweep.config import EncoderConfig, TrainerConfig
from sslsweep.data import Prepared
from sslsweep.rules import needs_device_pool
from sslsweep.trainables.augment import AugmentParams, BatchAugment
from sslsweep.trainables.tasks import TASKS
from sslsweep.trainables.tasks.base import epoch_batch_size
from sslsweep.trainables.train import DeviceData, Pretrainer, Runtime, make_pretrainer, train_one_epoch

log = logging.getLogger(__name__)

#: How long a rank waits in a collective for the others: rank 0 evaluates and checkpoints while
#: the other ranks wait at the next epoch's first step.
TIMEOUT = datetime.timedelta(minutes=30)


def check_distributable(method: str, workers: int, batch_size: int | None = None) -> None:
    """Raise ``ValueError`` naming ``resources.workers`` when ``method`` (its registry entry's
    ``single_worker``) or the global batch size cannot train on ``workers`` ranks."""
    if workers <= 1:
        return
    why = TASKS[method].single_worker
    if why:
        able = ", ".join(name for name, entry in TASKS.items() if entry.pretrains and not entry.single_worker)
        raise ValueError(f"resources.workers = {workers}: method {method!r} cannot train on several workers "
                         f"({why}); multi-worker methods: {able}")
    if batch_size is not None and batch_size % workers:
        raise ValueError(f"resources.workers = {workers}: batch_size {batch_size} must be a multiple of the "
                         "number of workers (every rank trains on an equal slice of the global batch)")


@dataclass
class DistContext:
    """This process's place in a multi-worker trial.

    Args:
        rank: 0 for the Tune trial function, 1..world-1 for the worker actors.
        world: the number of ranks.
        module: the task wrapped in ``DistributedDataParallel`` (set by :func:`join`); the
            training step calls it instead of the task.
    """

    rank: int
    world: int
    module: nn.Module | None = None

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a global batch (B, ...): rows ``rank, rank + world, ...`` (B / world)."""
        return x[self.rank::self.world]

    def epoch_totals(self, loss: torch.Tensor, acc: torch.Tensor, views: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(loss, acc, views) of an epoch over all ranks: each rank's sums of its step losses
        (its slice's means) averaged over ranks, which with equal slices is the sum of the global
        batches' means; views summed. One all-reduce."""
        t = torch.stack([loss.float(), acc.float(), torch.tensor(float(views), device=loss.device)])
        dist.all_reduce(t)
        return t[0] / self.world, t[1] / self.world, int(t[2].item())


# ----------------------------------------------------------------------------- differentiable collectives


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of every rank's input is the sum of all ranks' gradients
    (each rank's loss depends on every rank's input)."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:  # noqa: ANN401
        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:  # noqa: ANN401
        g = g.clone()
        dist.all_reduce(g)
        return g


class _GatherBatch(torch.autograd.Function):
    """Every rank's (n, ...) slice -> the global batch (N = n * world, ...) in its own order (row
    ``j * world + r`` is rank r's row j, as :meth:`DistContext.shard` cut it). The gradient of a
    rank's slice sums every rank's gradient of it (gloo has no reduce-scatter: an all-reduce)."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, rank: int, world: int) -> torch.Tensor:  # noqa: ANN401
        ctx.rank, ctx.world = rank, world
        parts = [torch.empty_like(z) for _ in range(world)]
        dist.all_gather(parts, z.contiguous())
        return torch.stack(parts, dim=1).flatten(0, 1)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # noqa: ANN401
        g = g.contiguous().clone()
        dist.all_reduce(g)
        return g.unflatten(0, (-1, ctx.world))[:, ctx.rank], None, None


class GlobalBatchNorm(_BatchNorm):
    """Batch norm over the global batch of all ranks, for CPU process groups (gloo), where
    ``torch.nn.SyncBatchNorm`` refuses to run: the same normalisation and running statistics as
    one worker's ``BatchNorm`` on the whole batch, in fp32. Two differentiable all-reduces per
    layer and step (the mean, then the centred second moment: the two-pass variance, as
    ``BatchNorm`` computes it). Outside training (or with no process group) it is ``BatchNorm``.
    Assumes equal slices on every rank."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        world = dist.get_world_size()
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        count = xf.numel() // xf.shape[1] * world  # values per channel in the global batch
        mean = _AllReduceSum.apply(xf.sum(dims)) / count  # (C,)
        xc = xf - mean.view(shape)
        var = _AllReduceSum.apply((xc * xc).sum(dims)) / count  # (C,) biased, as BatchNorm normalises
        y = xc * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1  # type: ignore[operator]
                f = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - f).add_(mean.detach(), alpha=f)
                self.running_var.mul_(1 - f).add_(var.detach() * count / max(count - 1, 1), alpha=f)  # unbiased
        return y.to(x.dtype)


def convert_batchnorm(module: nn.Module, cls: type[_BatchNorm] | None) -> nn.Module:
    """``module`` with every batch-norm layer replaced by ``cls`` (``None``: back to the plain
    ``BatchNorm{1,2,3}d`` of its input rank), sharing its parameters and buffers (the optimizer and
    state-dict keys are unchanged)."""
    out = module
    if isinstance(module, _BatchNorm):
        target = cls or _PLAIN.get(getattr(module, "_plain", type(module)), type(module))
        if type(module) is not target:
            out = target(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
            out._plain = getattr(module, "_plain", type(module))  # type: ignore[assignment]
            if module.affine:
                out.weight, out.bias = module.weight, module.bias
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
            out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_batchnorm(child, cls))
    return out


_PLAIN: dict[type, type] = {nn.BatchNorm1d: nn.BatchNorm1d, nn.BatchNorm2d: nn.BatchNorm2d,
                            nn.BatchNorm3d: nn.BatchNorm3d}


@dataclass
class ShardedAugment:
    """A task's :class:`BatchAugment` on one rank: the parameters are drawn for the whole global
    batch (``world`` times this rank's rows) and this rank keeps rows ``rank::world``. A task
    augments blocks of its batch (SimCLR: ``cat([x, x])``); with the global batch a multiple of
    ``world``, each block's rows of this rank are exactly rows ``rank::world`` of the global draw."""

    inner: BatchAugment
    rank: int
    world: int

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n, _, height, width = x.shape
        params = self.inner.make_params(n * self.world, height, width, generator=generator, device=x.device)
        sliced = {f.name: getattr(params, f.name)[self.rank::self.world]
                  for f in dataclasses.fields(AugmentParams) if f.name not in ("height", "width")}
        return self.inner.apply(x, AugmentParams(**sliced, height=height, width=width))


def join(pre: Pretrainer, ctx: DistContext) -> None:
    """Make ``pre`` one rank of a multi-worker trial (the process group is up): global batch
    norm, sharded augmentation, the task's batch gathered across ranks, DDP around the task."""
    task = pre.task
    cuda = pre.runtime.device.type == "cuda"
    convert_batchnorm(task, nn.SyncBatchNorm if cuda else GlobalBatchNorm)
    for name, value in list(vars(task).items()):
        if isinstance(value, BatchAugment):
            setattr(task, name, ShardedAugment(value, ctx.rank, ctx.world))
    task.gather = lambda z: _GatherBatch.apply(z, ctx.rank, ctx.world)  # type: ignore[assignment]
    ctx.module = DistributedDataParallel(task, device_ids=[pre.runtime.device] if cuda else None)
    pre.dist = ctx


def leave(pre: Pretrainer) -> None:
    """Undo :func:`join`: ``pre`` trains and evaluates alone again (rank 0 before the confirm
    phase fine-tunes copies of its encoder)."""
    task = pre.task
    convert_batchnorm(task, None)
    for name, value in list(vars(task).items()):
        if isinstance(value, ShardedAugment):
            setattr(task, name, value.inner)
    task.gather = None
    pre.dist = None


# ----------------------------------------------------------------------------- ranks


@dataclass(frozen=True)
class RankSpec:
    """What a rank needs to build the trial's state as rank 0 has it."""

    method: str
    hp: Mapping[str, Any]
    seed: int
    encoder: EncoderConfig
    trainer: TrainerConfig
    num_threads: int | None
    max_epochs: int
    residency: str
    state: Mapping[str, Any] | None  # rank 0's state after its restore (None: from scratch)


def build_rank(spec: RankSpec, data: Prepared) -> tuple[Pretrainer, Any]:
    """The trial's pretrainer built from ``spec`` in this process, at rank 0's state, and its
    train pool. Not joined yet (:func:`connect`)."""
    runtime = Runtime.resolve(spec.trainer, spec.num_threads)
    pre = make_pretrainer(spec.method, spec.hp, data, spec.encoder, spec.trainer, runtime,
                          max_epochs=spec.max_epochs, seed=spec.seed)
    if spec.state is not None:
        pre.load_state_dict(spec.state)
    return pre, DeviceData.put(data, runtime.device, spec.residency).pool(whole=needs_device_pool(spec.method, spec.hp))


def connect(pre: Pretrainer, init_method: str, rank: int, world: int) -> None:
    """Join the trial's process group as ``rank`` and :func:`join` it (collective: every rank at once)."""
    init_group(pre.runtime, init_method, rank, world)
    join(pre, DistContext(rank, world))


def init_group(runtime: Runtime, init_method: str, rank: int, world: int) -> None:
    """Join the trial's process group: NCCL when the rank computes on a GPU, gloo on the CPU."""
    dist.init_process_group("nccl" if runtime.device.type == "cuda" else "gloo", init_method=init_method,
                            rank=rank, world_size=world, timeout=TIMEOUT)


def train_rank(pre: Pretrainer, pool: Any) -> list[float]:
    """A rank's loop: the epochs rank 0 runs, in lockstep with it (every step's collectives wait
    for every rank). Returns the epoch losses (averaged over ranks)."""
    return [train_one_epoch(pre, pool).loss for _ in range(pre.epoch, pre.max_epochs)]


@ray.remote
class RankWorker:
    """Rank 1..N-1 of a multi-worker trial, in its own bundle of the trial's placement group."""

    def build(self, spec: RankSpec, data: Prepared) -> None:
        self.pre, self.pool = build_rank(spec, data)

    def connect(self, init_method: str, rank: int, world: int) -> None:
        connect(self.pre, init_method, rank, world)

    def train(self) -> int:
        """Train in lockstep with rank 0. A rank that fails ends its process after logging why:
        an actor method's exception leaves the process, and its sockets, alive, and rank 0 would
        wait in its next collective until the process group's timeout; with the process gone, gloo
        raises in rank 0 at once and the trial fails (Tune's retry resumes it from its checkpoint).
        NCCL notices a dead peer only at the timeout."""
        try:
            train_rank(self.pre, self.pool)
        except BaseException as exc:  # noqa: BLE001 - logged, then the process ends
            log.error("rank %s of a multi-worker trial failed at epoch %d: %s: %s",
                      self.pre.dist.rank if self.pre.dist else "?", self.pre.epoch + 1, type(exc).__name__, exc)
            logging.shutdown()
            os._exit(1)
        return self.pre.epoch


def rendezvous() -> str:
    """``tcp://ip:port`` on this node, the port free now (ranks connect within seconds)."""
    ip = ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"
    with socket.socket() as s:
        s.bind((ip, 0))
        return f"tcp://{ip}:{s.getsockname()[1]}"


# The worker actors this process started for its running trial: per process, as the torch
# process group itself is (a Tune actor runs one trial at a time).
_WORKERS: list[Any] = []
# The data this process put in the object store for its ranks, by fingerprint: one copy per trial
# process (a reused Tune actor runs many trials on the same data), not one per trial.
_DATA_REFS: dict[str, Any] = {}


def _shared(data: Prepared) -> Any:
    """An object-store reference to ``data`` for the other ranks, put once per process and dataset."""
    if data.fingerprint not in _DATA_REFS:
        _DATA_REFS.clear()  # another dataset: the old copy can go
        _DATA_REFS[data.fingerprint] = ray.put(data)
    return _DATA_REFS[data.fingerprint]


def start_workers(pre: Pretrainer, method: str, data: Prepared, encoder: EncoderConfig, trainer: TrainerConfig,
                  num_threads: int | None, residency: str, workers: int) -> None:
    """From the trial function (rank 0), once it restored its checkpoint into ``pre``: start ranks
    1..workers-1 in bundles 1.. of the trial's placement group at ``pre``'s state, join the process
    group with them and start their loop. :func:`stop_workers` ends them."""
    t0 = time.perf_counter()
    check_distributable(method, workers, epoch_batch_size(pre.hp, len(data.splits.train)))
    pg = get_current_placement_group()
    if pg is None or len(pg.bundle_specs) < workers:
        raise ValueError(f"resources.workers = {workers}: the trial's placement group has "
                         f"{0 if pg is None else len(pg.bundle_specs)} bundles; it needs one per worker "
                         "(tune.PlacementGroupFactory([bundle] * workers))")
    spec = RankSpec(method, pre.hp, pre.seed, encoder, trainer, num_threads, pre.max_epochs, residency,
                    pre.state_dict())
    ref = _shared(data)
    for rank in range(1, workers):
        bundle = pg.bundle_specs[rank]
        _WORKERS.append(RankWorker.options(  # type: ignore[attr-defined]
            num_cpus=bundle.get("CPU", 0), num_gpus=bundle.get("GPU", 0),
            scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=rank)).remote())
    ray.get([a.build.remote(spec, ref) for a in _WORKERS])  # a rank that cannot build fails the trial here
    init_method = rendezvous()
    joined = [a.connect.remote(init_method, r, workers) for r, a in enumerate(_WORKERS, start=1)]
    connect(pre, init_method, 0, workers)
    ray.get(joined)
    for actor in _WORKERS:
        actor.train.remote()
    log.info("%d ranks joined at %s in %.1f s", workers, init_method, time.perf_counter() - t0)


def stop_workers(pre: Pretrainer | None = None) -> None:
    """End this process's multi-worker trial, if it has one: kill the other ranks (done, or
    waiting in a collective after an ASHA stop), leave the process group and undo :func:`join`.
    (When Tune removes a finished trial's placement group the actors in it end too.)"""
    while _WORKERS:
        ray.kill(_WORKERS.pop())
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    if pre is not None and pre.dist is not None:
        leave(pre)
