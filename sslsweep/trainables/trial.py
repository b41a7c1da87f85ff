"""The Ray Tune trial functions: thin adapters from a sampled dict to the plain-PyTorch loop.

sampled dict -> typed settings -> :mod:`sslsweep.trainables.train` -> ``tune.report(metrics,
checkpoint=...)``; resume through ``tune.get_checkpoint()``. Ray's reporting API has changed
several times: it is used here and nowhere else in ``trainables/``.
"""

from __future__ import annotations

import gc
import json
import logging
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import pyarrow.fs as pafs
import ray
import torch
from ray import tune

from sslsweep.config import ConfirmConfig, EncoderConfig, EvalConfig, TrainerConfig
from sslsweep.data import Prepared
from sslsweep.rules import NEEDS_DEVICE_POOL, needs_device_pool
from sslsweep.schema import TRIAL_KEYS, budget_label
from sslsweep.trainables.distributed import start_workers, stop_workers
from sslsweep.trainables.encoders import build_encoder
from sslsweep.trainables.tasks import encoder_config_for
from sslsweep.trainables.train import (
    DeviceData,
    Diverged,
    EpochStats,
    Pretrainer,
    Runtime,
    choose_residency,
    load_checkpoint,
    make_pretrainer,
    pretrains,
    save_checkpoint,
    train_epochs,
)
from sslsweep.trainables.scores import BudgetSubset, evaluate_budgets, search_metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialSettings:
    """The parts of the sweep config a trial needs (the sampled hyperparameters come separately)."""

    encoder: EncoderConfig
    trainer: TrainerConfig
    eval: EvalConfig
    confirm: ConfirmConfig
    metric: str
    max_epochs: int
    eval_every: int
    num_threads: int | None
    budgets: tuple[tuple[str, float], ...] = ()
    selections: tuple[str, ...] = ("random",)  # dataset.label_selection
    workers: int = 1  # resources.workers: DDP ranks, one per bundle of the trial's placement group
    subsets: tuple[BudgetSubset, ...] = ()  # the budget rule's labelled subsets (seed 0), drawn by the driver


def split_config(config: dict[str, Any]) -> tuple[str, int, dict[str, Any]]:
    """(method, seed, hyperparameters) of a sampled trial config (confirm trials nest it in ``run``)."""
    config = config.get("run", config)
    hp = {k: v for k, v in config.items() if k not in TRIAL_KEYS}
    return str(config["method"]), int(config.get("seed", 0)), hp


def run_budgets(config: dict[str, Any], budgets: tuple[tuple[str, float], ...]) -> list[tuple[str, float]]:
    """The label budgets a confirm run evaluates: those its ``budgets`` key names (the budgets at
    which a selection rule chose its configuration, :mod:`sslsweep.search.choice`), every one when
    it names none (a run of a sweep made before the budget rule)."""
    named = config.get("run", config).get("budgets")
    if named is None:
        return list(budgets)
    return [(kind, value) for kind, value in budgets if budget_label(kind, value) in named]


def _node() -> str:
    if not ray.is_initialized():  # outside Ray (tests of the loop): asking would start a local Ray
        return "local"
    return ray.get_runtime_context().get_node_id()


def _gpu_share() -> float:
    """The GPUs Ray gave this trial (a fraction when several share one), 0 outside a Ray worker
    (a driver has no assigned resources: Ray refuses to say)."""
    if not ray.is_initialized() or ray.get_runtime_context().worker.mode != ray.WORKER_MODE:
        return 0.0
    return float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0))


def device_data(data: Prepared, runtime: Runtime) -> DeviceData:
    """The trial's data at the residency this trial's device allows (:func:`choose_residency`)."""
    return DeviceData.put(data, runtime.device, choose_residency(data, runtime.device, _gpu_share()))


def _check_pool_access(method: str, hp: dict[str, Any], dd: DeviceData) -> None:
    """A task that needs the whole pool on the device at epoch start cannot train from a host or
    streamed pool (validation refuses it before Ray starts; this catches an ``auto`` that the
    trial itself moved to ``host``)."""
    if dd.residency != "device" and needs_device_pool(method, hp):
        need = NEEDS_DEVICE_POOL[method]
        raise ValueError(f"method.{method}.space.{need[0]} = {need[1]!r}: needs the whole train pool on the device "
                         f"at every epoch start; this trial holds it in {dd.residency} residency")


def _checkpoint_candidates(ckpt: tune.Checkpoint) -> list[tune.Checkpoint]:
    """The checkpoint Tune hands back, then the trial's older ones (newest first), in its storage."""

    parent = ckpt.path.rstrip("/").rsplit("/", 1)[0]
    try:
        infos = ckpt.filesystem.get_file_info(pafs.FileSelector(parent))
    except OSError:
        return [ckpt]
    older = sorted((i.path for i in infos if i.type == pafs.FileType.Directory
                    and i.base_name.startswith("checkpoint_") and i.path.rstrip("/") != ckpt.path.rstrip("/")),
                   reverse=True)
    return [ckpt] + [tune.Checkpoint(p, filesystem=ckpt.filesystem) for p in older]


def restore_latest(pre: Pretrainer, checkpoint: tune.Checkpoint | None) -> None:
    """Load the newest checkpoint that loads; a corrupt one is reported (naming its file) and the
    previous one is used. Raises the first error if none loads."""
    if checkpoint is None:
        return
    errors: list[str] = []
    for ckpt in _checkpoint_candidates(checkpoint):
        try:
            with ckpt.as_directory() as d:
                pre.load_state_dict(load_checkpoint(Path(d) / "state.pt"))
            if errors:
                log.warning("resumed from an older checkpoint %s after: %s", ckpt.path, "; ".join(errors))
            return
        except (ValueError, FileNotFoundError, KeyError) as exc:
            errors.append(str(exc))
    raise ValueError(errors[0])


def _report(metrics: dict[str, Any], pre: Pretrainer | None) -> None:
    if pre is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(pre.state_dict(), tmp)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def _progress(pre: Pretrainer | None, stats: EpochStats | None, t0: float) -> dict[str, Any]:
    return {
        "epoch": pre.epoch if pre else 0,
        "pretext_loss": stats.loss if stats else float("nan"),
        "pretext_acc": stats.acc if stats and stats.acc is not None else float("nan"),
        "epoch_time_s": stats.seconds if stats else 0.0,
        "throughput": stats.throughput if stats else 0.0,
        "trial_wall_s": time.time() - t0,
        "node_id": _node(),
        "diverged": 0,
        "error": "",
    }


def _pretrain(method: str, hp: dict[str, Any], seed: int, data: Prepared, s: TrialSettings, runtime: Runtime,
              epochs: int, dd: DeviceData, score: bool, t0: float) -> tuple[Pretrainer | None, bool]:
    """Pretrain (resuming from the trial's checkpoint), reporting every ``eval_every`` epochs.

    Returns (pretrainer, finished): finished is False when the trial ended early (diverged or out
    of memory) and reported that as its last result."""
    if not pretrains(method):
        return None, True
    _check_pool_access(method, hp, dd)
    pre = make_pretrainer(method, hp, data, s.encoder, s.trainer, runtime, max_epochs=epochs, seed=seed)
    restore_latest(pre, tune.get_checkpoint())
    start_epoch = pre.epoch  # > 0 when this attempt resumed from a checkpoint
    if s.workers > 1:  # ranks 1.. start from the state restored above; stopped by _release
        start_workers(pre, method, data, s.encoder, s.trainer, s.num_threads, dd.residency, s.workers)
    pool = dd.pool(whole=needs_device_pool(method, hp))
    while pre.epoch < epochs:
        result = None
        try:
            stats = train_epochs(pre, pool, s.eval_every)
        except (Diverged, torch.cuda.OutOfMemoryError) as exc:
            oom = isinstance(exc, torch.cuda.OutOfMemoryError)
            msg = (f"out of GPU memory at batch size {hp.get('batch_size')}" if oom else str(exc))
            result = _progress(pre, None, t0) | {s.metric: 0.0, "diverged": 0 if oom else 1, "error": msg,
                                                  "epoch": pre.epoch + 1}
        if result is not None:
            # out of the except block: there the exception's traceback still holds the failed
            # step's frames and tensors, and the memory could not be given back
            del pre, pool
            _release(runtime)  # give the memory back to trials sharing the GPU
            tune.report(result)
            return None, False
        scores = search_metrics(pre.encoder, dd, s.eval, runtime, s.metric, s.subsets) if score else {}
        # after the evaluation: it is the trial's own work, counted in trial_wall_s
        metrics = _progress(pre, stats, t0) | {"attempt_start_epoch": start_epoch} | scores
        if start_epoch and pre.epoch == start_epoch + min(s.eval_every, epochs - start_epoch):
            # first report after a restore: re-send what the checkpoint knows, in case a result
            # was checkpointed but never logged when the worker died (seen under SIGKILL)
            metrics["history"] = json.dumps(pre.history)
        pre.history.append({k: v for k, v in metrics.items() if k != "history"})
        _report(metrics, pre)
    stop_workers(pre)  # the other ranks are done: rank 0 evaluates alone from here
    return pre, True


def _freeze_imports_once() -> None:
    """Move everything alive in this worker process so far (torch, Ray, the dataset) out of the
    garbage collector's reach, once per process.

    Those objects live as long as the process; without this every full collection - the one in
    :func:`_release` and Python's own periodic ones - walks them again: ~0.2 s each on a 2-core
    CPU, which on short trials is as long as an epoch. Only done once, so a trial's leftovers are
    never frozen by the next trial on a reused actor.
    """
    if gc.get_freeze_count() == 0:
        gc.freeze()


def _release(runtime: Runtime) -> None:
    """Give device memory back when a trial ends or is stopped: with reused actors the process
    lives on, and trials sharing the GPU need the memory."""
    stop_workers()  # a multi-worker trial's other ranks, when it ends early or is stopped
    gc.collect()
    if runtime.device.type == "cuda":
        torch.cuda.empty_cache()


def _run_trial(body: Callable[..., None], config: dict[str, Any], data: Prepared, settings: TrialSettings) -> None:
    """Run a trial's ``body`` in this worker: imports frozen once, the runtime resolved, the data at
    the trial's residency, and every device buffer and rank released after, however it ends."""
    _freeze_imports_once()
    runtime = Runtime.resolve(settings.trainer, settings.num_threads)
    try:
        t0 = time.time()
        dd = device_data(data, runtime)
        try:
            method, seed, hp = split_config(config)
            body(config, method, seed, hp, data, settings, runtime, dd, t0)
        finally:
            dd.close()
    finally:
        _release(runtime)


def search_trial(config: dict[str, Any], data: Prepared, settings: TrialSettings) -> None:
    """A search trial: pretrain up to ``max_epochs``, reporting every selection signal
    (:func:`search_metrics`) every ``eval_every`` epochs with a checkpoint (ASHA may stop it
    after any report)."""
    _run_trial(_search_body, config, data, settings)


def _search_body(config: dict[str, Any], method: str, seed: int, hp: dict[str, Any], data: Prepared,
                 settings: TrialSettings, runtime: Runtime, dd: DeviceData, t0: float) -> None:
    if not pretrains(method):  # random init: one report at epoch 0
        torch.manual_seed(seed)
        encoder = build_encoder(encoder_config_for(method, settings.encoder), *data.shape[:2]).to(runtime.device)
        tune.report(_progress(None, None, t0) | search_metrics(encoder, dd, settings.eval, runtime, settings.metric,
                                                               settings.subsets))
        return
    _pretrain(method, hp, seed, data, settings, runtime, settings.max_epochs, dd, True, t0)


def confirm_trial(config: dict[str, Any], data: Prepared, settings: TrialSettings) -> None:
    """A confirm trial: retrain a configuration a selection rule chose with one seed for the full
    budget, then evaluate it (linear probe and fine-tuning, val and test) at the label budgets it
    was chosen at (:func:`run_budgets`)."""
    _run_trial(_confirm_body, config, data, settings)


def _confirm_body(config: dict[str, Any], method: str, seed: int, hp: dict[str, Any], data: Prepared,
                  settings: TrialSettings, runtime: Runtime, dd: DeviceData, t0: float) -> None:
    settings = replace(settings, budgets=tuple(run_budgets(config, settings.budgets)))
    _confirm_with(method, seed, hp, data, settings, runtime, dd, t0)


def _confirm_with(method: str, seed: int, hp: dict[str, Any], data: Prepared, settings: TrialSettings,
                  runtime: Runtime, dd: DeviceData, t0: float) -> None:
    pre, finished = _pretrain(method, hp, seed, data, settings, runtime, settings.max_epochs, dd, False, t0)
    if not finished:
        return
    pretrain_s = time.time() - t0
    if pre is None:
        torch.manual_seed(seed)
        encoder = build_encoder(encoder_config_for(method, settings.encoder), *data.shape[:2]).to(runtime.device)
    else:
        encoder = pre.encoder
    rows = evaluate_budgets(encoder, dd, settings.confirm, list(settings.budgets), runtime, seed=seed,
                            selections=settings.selections)
    for r in rows:
        r.update(pretrain_epochs=pre.epoch if pre else 0, pretrain_time_s=pretrain_s)
    tune.report(_progress(pre, None, t0) | {"budget_rows": json.dumps(rows)})
