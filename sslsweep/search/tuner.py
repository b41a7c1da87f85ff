"""One place that assembles Ray Tune Tuners: searcher, scheduler, resources, storage, failures."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import optuna
from optuna.storages.journal import JournalFileBackend
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from sslsweep.config import MethodConfig, ResourcesConfig, SearchConfig
from sslsweep.search.concurrency import DriverEvents
from sslsweep.search.searcher import HonestOptunaSearch
from sslsweep.search.spaces import DefineByRun


def resources(cfg: ResourcesConfig) -> dict[str, float] | tune.PlacementGroupFactory:
    """A trial's resources: ``cpu``/``gpu`` for one worker; with ``workers`` > 1 one bundle of them
    per rank in the trial's placement group (rank 0 is the trial function itself, in bundle 0;
    :mod:`sslsweep.trainables.distributed` starts the other ranks in the other bundles)."""
    if cfg.workers > 1:
        return tune.PlacementGroupFactory([{"CPU": float(cfg.cpu), "GPU": float(cfg.gpu)}] * cfg.workers)
    return {"cpu": float(cfg.cpu), "gpu": float(cfg.gpu)}


def journal_storage(path: Path) -> optuna.storages.BaseStorage:
    """Optuna's journal storage in one file: the study survives the driver and can be inspected
    with Optuna's own tools (``optuna.load_study(study_name=method, storage=...)``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def sampler(search: SearchConfig, seed: int) -> optuna.samplers.BaseSampler:
    if search.searcher == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=search.n_startup_trials)


class ASHAWithHistory(ASHAScheduler):
    """ASHA whose rungs start filled with the results of trials from an earlier experiment of the
    same search, so trials added later (a top-up after a crash) compete with them at every rung
    instead of with each other alone.

    Args:
        history: per earlier trial, ``(trial_id, results)`` with each result a dict holding the
            ``time_attr`` and the metric, in the order they were reported.
        **kwargs: passed to :class:`ASHAScheduler`.
    """

    def __init__(self, *, history: Sequence[tuple[str, list[dict[str, Any]]]] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._history = list(history)

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        # replayed on the first trial: only then are metric and mode known (Tune sets them)
        history, self._history = self._history, []
        for trial_id, results in history:
            past = SimpleNamespace(trial_id=trial_id)
            super().on_trial_add(tune_controller, past)
            for result in results:
                super().on_trial_result(tune_controller, past, result)
            super().on_trial_remove(tune_controller, past)
        super().on_trial_add(tune_controller, trial)


def scheduler(search: SearchConfig, history: Sequence[tuple[str, list[dict[str, Any]]]] = ()) -> Any:
    """ASHA on the ``epoch`` resource (Li et al. 2020), its rungs filled with ``history`` (see
    :class:`ASHAWithHistory`), or no early stopping."""
    if search.scheduler == "fifo":
        return FIFOScheduler()
    return ASHAWithHistory(time_attr="epoch", max_t=search.max_epochs, grace_period=search.grace_period,
                           reduction_factor=search.reduction_factor, history=history)


def tracking_callbacks(tracking: str, name: str, sweep_dir: Path | None = None) -> list[Any]:
    """Ray Tune's own logger callback for ``tracking`` (``none`` adds none), for the experiment ``name``.

    - ``tensorboard``: :class:`~ray.tune.logger.TBXLoggerCallback`, event files in each trial's
      directory (``<sweep>/tune/<experiment>/<trial>/``).
    - ``mlflow``: :class:`~ray.air.integrations.mlflow.MLflowLoggerCallback`, one MLflow experiment
      per Tune experiment (``<sweep id>/<experiment>``) in the server of ``MLFLOW_TRACKING_URI``,
      else a file store ``<sweep_dir>/mlruns``.
    - ``wandb``: :class:`~ray.air.integrations.wandb.WandbLoggerCallback`, project ``sslsweep``,
      one group per Tune experiment; the mode is W&B's own (``WANDB_MODE=offline`` writes locally).
    """
    if tracking == "none":
        return []
    if tracking == "tensorboard":
        from ray.tune.logger import TBXLoggerCallback

        return [TBXLoggerCallback()]
    sweep_id = sweep_dir.name if sweep_dir is not None else "sweep"
    if tracking == "mlflow":
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        uri = os.environ.get("MLFLOW_TRACKING_URI") or \
            (f"file:{(sweep_dir / 'mlruns').resolve()}" if sweep_dir is not None else None)
        return [MLflowLoggerCallback(tracking_uri=uri, experiment_name=f"{sweep_id}/{name}")]
    if tracking == "wandb":
        from ray.air.integrations.wandb import WandbLoggerCallback

        return [WandbLoggerCallback(project="sslsweep", group=f"{sweep_id}/{name}")]
    raise ValueError(f"tracking = {tracking!r}: must be none, tensorboard, mlflow or wandb")


def run_config(name: str, storage_path: str, max_failures: int, *, tracking: str = "none",
               sweep_dir: Path | None = None) -> tune.RunConfig:
    """Where and how an experiment runs; ``tracking`` adds Tune's logger callback (:func:`tracking_callbacks`)."""
    return tune.RunConfig(
        name=name,
        storage_path=storage_path,
        failure_config=tune.FailureConfig(max_failures=max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        callbacks=tracking_callbacks(tracking, name, sweep_dir),
        verbose=1,
    )


def sweep_run_config(name: str, storage_path: str, max_failures: int, *, tracking: str = "none",
                     sweep_dir: Path | None = None) -> tune.RunConfig:
    """:func:`run_config` of an experiment of a sweep, which runs several experiments at once from
    driver threads: :class:`~sslsweep.search.concurrency.DriverEvents` comes first in its callbacks."""
    rc = run_config(name, storage_path, max_failures, tracking=tracking, sweep_dir=sweep_dir)
    return dataclasses.replace(rc, callbacks=[DriverEvents(), *rc.callbacks])


def search_tuner(trainable: Callable[..., Any], method: MethodConfig, search: SearchConfig, res: ResourcesConfig,
                 *, metric: str, seed: int, storage_path: str, journal: Path, name: str | None = None,
                 num_samples: int | None = None, top_up: int = 0,
                 history: Sequence[tuple[str, list[dict[str, Any]]]] = (), tracking: str = "none",
                 sweep_dir: Path | None = None) -> tune.Tuner:
    """The Tuner searching one method: its own seeded Optuna study (persisted in ``journal``),
    its own ASHA rungs, ``num_samples`` trials (default ``search.num_samples``; one for a method
    with nothing to search), in the experiment ``name`` (default ``search-<method>``).

    A top-up of a search that ended short (``top_up`` >= 1, counting top-ups) continues the same
    study with a sampler seeded ``seed + top_up`` (the same seed would draw the first experiment's
    configurations again) and ASHA rungs filled with the earlier trials' results (``history``)."""
    searched = bool(method.searched)
    alg: Any = None
    if searched:
        alg = HonestOptunaSearch(space=DefineByRun(method, seed), metric=metric, mode="max",
                                 sampler=sampler(search, seed + top_up), seed=seed + top_up,
                                 storage=journal_storage(journal), study_name=method.name,
                                 max_epochs=search.max_epochs)
    param_space = None if searched else {"method": method.name, "seed": seed, **method.fixed}
    return tune.Tuner(
        tune.with_resources(trainable, resources(res)),
        param_space=param_space,
        tune_config=tune.TuneConfig(metric=metric, mode="max", search_alg=alg, scheduler=scheduler(search, history),
                                    num_samples=(num_samples or search.num_samples) if searched else 1,
                                    reuse_actors=True, max_concurrent_trials=search.max_concurrent or None),
        run_config=sweep_run_config(name or f"search-{method.name}", storage_path, search.max_failures,
                                    tracking=tracking, sweep_dir=sweep_dir),
    )


def confirm_tuner(trainable: Callable[..., Any], runs: list[dict[str, Any]], res: ResourcesConfig, *,
                  name: str, max_concurrent: int, storage_path: str, max_failures: int, tracking: str = "none",
                  sweep_dir: Path | None = None) -> tune.Tuner:
    """The Tuner of one method's confirm phase, the experiment ``name`` (``confirm-<method>``):
    a grid over ``runs``, the method's best configuration once per seed."""
    return tune.Tuner(
        tune.with_resources(trainable, resources(res)),
        param_space={"run": tune.grid_search(runs)},
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=max_concurrent or None),
        run_config=sweep_run_config(name, storage_path, max_failures, tracking=tracking, sweep_dir=sweep_dir),
    )


def restore_or_new(path: str, trainable: Callable[..., Any], res: ResourcesConfig, make: Callable[[], tune.Tuner],
                   param_space: dict[str, Any] | None = None) -> tune.Tuner:
    """Continue the experiment at ``path`` if one was started there, else build a new Tuner."""
    if tune.Tuner.can_restore(path):
        return tune.Tuner.restore(path, tune.with_resources(trainable, resources(res)), resume_errored=True,
                                  param_space=param_space)
    return make()
