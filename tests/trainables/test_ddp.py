"""Multi-worker (DDP) trials: N ranks train as one worker does at the same global batch, and a
multi-worker trial resumes from its checkpoint as a one-worker trial does."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sslsweep.config import ConfirmConfig, EncoderConfig, EvalConfig, TrainerConfig
from sslsweep.trainables.distributed import (DistContext, RankSpec, build_rank, check_distributable, connect, join,
                                             leave, train_rank)
from sslsweep.trainables.tasks import TASKS
from sslsweep.trainables.train import load_checkpoint, train_one_epoch
from sslsweep.trainables.trial import TrialSettings
from tests.trainables.test_train import tiny_data

EPOCHS = 3
# batch 8 of the 40-image pool: 5 steps an epoch, 4 images per rank; every layer has batch norm
HP = {"lr": 0.05, "weight_decay": 1e-4, "batch_size": 8, "strength": 0.5, "crop_min": 0.3, "temperature": 0.5,
      "proj_dim": 16, "negatives": "standard", "ema": 0.99, "hidden_dim": 16, "pred_hidden": 8}
METHODS = ("rotation", "simclr", "byol", "simsiam")  # every method the registry lets train on several workers
# Two ranks sum each batch-norm statistic and gradient in another order than one worker (half
# sums, then all-reduced): fp32 rounding. Measured on these runs: the first step's gradients
# agree to ~4e-6 relative; rotation's curve then agrees to 1e-7, SimCLR (batch norm on 4 images
# a rank, a softmax over the batch) amplifies the rounding to ~1e-5 after one epoch and ~2e-4
# after three. What a design error does, measured on the same runs: per-rank batch-norm
# statistics move the curves by 3e-3 (rotation) and 7e-3 (SimCLR) in the first epoch, 1e-1 by
# the second; augmentation drawn per rank by 1e-3 and 3e-2; NT-Xent on each rank's own negatives
# by 3e-1. The tolerances sit between the two. BYOL agrees to 1e-6 and SimSiam to 5e-5 (its loss,
# a negative cosine, is near 0 in the first epoch: 1e-6 absolute there).
RTOL = {"rotation": 1e-5, "simclr": 1e-3, "byol": 1e-4, "simsiam": 1e-3}


def spec(method: str, *, epochs: int = EPOCHS, state: Any = None) -> RankSpec:
    return RankSpec(method, HP, 0, EncoderConfig(width=4), TrainerConfig(), 1, epochs, "device", state)


def _rank_main(rank: int, world: int, init_method: str, out: str) -> None:
    """One rank of the spawned 2-rank group: every method's epochs, rank 0 saves its curves."""
    torch.set_num_threads(1)
    curves: dict[str, list[float]] = {}
    for i, method in enumerate(METHODS):
        pre, pool = build_rank(spec(method), tiny_data())
        if i == 0:
            connect(pre, init_method, rank, world)
        else:
            join(pre, DistContext(rank, world))
        curves[method] = train_rank(pre, pool)
        leave(pre)
    if rank == 0:
        Path(out).write_text(json.dumps(curves))
    dist.destroy_process_group()


def one_worker_curve(method: str) -> list[float]:
    pre, pool = build_rank(spec(method), tiny_data())
    return [train_one_epoch(pre, pool).loss for _ in range(EPOCHS)]


def test_two_gloo_ranks_give_the_one_worker_loss_curve(tmp_path: Path) -> None:
    """2 CPU ranks (gloo), each training on half of every global batch of 8, give the per-epoch
    pretext loss curve of one worker on the whole batch, within RTOL (fp32 summation order):
    rotation, BYOL, SimSiam (per-sample means) and SimCLR (NT-Xent over the gathered global batch)."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    out = tmp_path / "curves.json"
    mp.spawn(_rank_main, args=(2, f"file://{tmp_path / 'rendezvous'}", str(out)), nprocs=2, join=True)
    two = json.loads(out.read_text())
    for method in METHODS:
        one = one_worker_curve(method)
        print(f"{method}: 1 worker {one}\n{method}: 2 workers {two[method]}")
        assert two[method] == pytest.approx(one, rel=RTOL[method]), method
        assert len(set(one)) == EPOCHS  # the curve moves: a frozen model would compare equal trivially
    print(f"spawned 2 ranks x {len(METHODS)} methods in {time.perf_counter() - t0:.1f} s")


def test_refused_methods_and_batch_sizes_name_resources_workers() -> None:
    """A task with its own optimizer (gan) or per-step draws outside the view augmentation
    (jigsaw) is refused on several workers, as is a global batch that does not split evenly;
    one worker refuses nothing."""
    with pytest.raises(ValueError, match=r"resources.workers = 2: method 'gan' cannot train on several workers"):
        check_distributable("gan", 2)
    with pytest.raises(ValueError, match=r"resources.workers = 2: method 'jigsaw'"):
        check_distributable("jigsaw", 2)
    with pytest.raises(ValueError, match=r"resources.workers = 4: batch_size 30 must be a multiple"):
        check_distributable("simclr", 4, 30)
    check_distributable("gan", 1, 30)
    check_distributable("simclr", 2, 32)
    # the registry allows exactly the methods whose curves the test above compares
    assert {name for name, e in TASKS.items() if e.pretrains and not e.single_worker} == set(METHODS)


def test_leaving_the_group_gives_back_the_one_worker_modules(tmp_path: Path) -> None:
    """After :func:`leave` (rank 0 before the confirm phase fine-tunes copies of its encoder) the
    task has plain batch norm, its own augmentation and no gather, with the same parameters and
    state-dict keys as before :func:`join`; while joined, the keys are unchanged too (a
    multi-worker checkpoint loads in a one-worker trial)."""
    from torch import nn

    from sslsweep.trainables.augment import BatchAugment
    from sslsweep.trainables.distributed import GlobalBatchNorm, ShardedAugment

    pre, _ = build_rank(spec("simclr"), tiny_data())
    before = {k: v.data_ptr() for k, v in pre.task.state_dict().items()}
    kinds = sorted(type(m).__name__ for m in pre.task.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rv'}", rank=0, world_size=1)
    try:
        join(pre, DistContext(0, 1))
        assert any(isinstance(m, GlobalBatchNorm) for m in pre.task.modules())
        assert isinstance(pre.task.augment, ShardedAugment) and pre.task.gather is not None
        assert {k: v.data_ptr() for k, v in pre.task.state_dict().items()} == before
        leave(pre)
    finally:
        dist.destroy_process_group()
    assert sorted(type(m).__name__ for m in pre.task.modules()
                  if isinstance(m, nn.modules.batchnorm._BatchNorm)) == kinds
    assert isinstance(pre.task.augment, BatchAugment) and pre.task.gather is None and pre.dist is None
    assert {k: v.data_ptr() for k, v in pre.task.state_dict().items()} == before  # the same tensors


# ----------------------------------------------------------------------------- through Ray Tune

SETTINGS = TrialSettings(encoder=EncoderConfig(width=4), trainer=TrainerConfig(), eval=EvalConfig(knn_k=3, selection="oracle", compare=()),
                         confirm=ConfirmConfig(), metric="knn_top1", max_epochs=EPOCHS, eval_every=1,
                         num_threads=1, workers=2)
CONFIG = {"method": "rotation", "seed": 0, **HP}


def _trainable(config: dict[str, Any], data: Any, crash_marker: str) -> None:
    """The search trial function; the first time (no marker yet) it dies after its epoch-2 report."""
    from sslsweep.trainables import trial as trial_mod

    if not os.path.exists(crash_marker):
        real = trial_mod._report

        def report_then_die(metrics: dict[str, Any], pre: Any) -> None:
            real(metrics, pre)
            if metrics["epoch"] == 2:
                Path(crash_marker).touch()
                raise RuntimeError("worker lost after epoch 2")

        trial_mod._report = report_then_die
    trial_mod.search_trial(config, data, SETTINGS)


def test_two_worker_trial_resumes_from_its_checkpoint_as_if_never_stopped(ray_local,  # noqa: ANN001
                                                                          tmp_path: Path) -> None:
    """Through Ray Tune, rank 1 started by the trial in its placement group (2 bundles of 1 CPU):
    a 2-worker rotation trial that dies after its epoch-2 checkpoint is restarted by Tune, resumes
    at epoch 3 with both ranks at the restored state, and ends with the loss and weights of an
    uninterrupted run. The uninterrupted run is one worker, in this process (2 workers give its
    curve to 1e-7, the test above): rtol 1e-5 on the loss; on the weights rtol 1e-4, atol
    1e-5 (measured: 1e-6 of a tensor's largest value)."""
    import ray.cloudpickle
    from ray import tune

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers need not import the tests
    t0 = time.perf_counter()
    marker = tmp_path / "crashed"
    fn = tune.with_parameters(_trainable, data=tiny_data(), crash_marker=str(marker))
    tuner = tune.Tuner(tune.with_resources(fn, tune.PlacementGroupFactory([{"CPU": 1}] * 2)), param_space=CONFIG,
                       run_config=tune.RunConfig(name="ddp", storage_path=str(tmp_path), verbose=0,
                                                 failure_config=tune.FailureConfig(max_failures=1)))
    (result,) = list(tuner.fit())
    fit_s = time.perf_counter() - t0
    assert result.error is None, result.error
    assert marker.exists()  # the first attempt did die
    rows = [json.loads(line) for line in (Path(result.path) / "result.json").read_text().splitlines()]
    assert rows[-1]["epoch"] == 3 and rows[-1]["attempt_start_epoch"] == 2
    with result.checkpoint.as_directory() as d:
        resumed = load_checkpoint(Path(d) / "state.pt")

    pre, pool = build_rank(spec("rotation"), tiny_data())
    losses = [train_one_epoch(pre, pool).loss for _ in range(EPOCHS)]
    assert rows[-1]["pretext_loss"] == pytest.approx(losses[-1], rel=1e-5)
    assert resumed["epoch"] == pre.epoch == EPOCHS
    for key, value in pre.task.state_dict().items():
        torch.testing.assert_close(resumed["task"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    worst = max(float((resumed["task"][k] - v).abs().max() / v.abs().max().clamp_min(1e-12))
                for k, v in pre.task.state_dict().items() if v.is_floating_point())
    print(f"2 workers, resumed at epoch 2: epoch-3 loss {rows[-1]['pretext_loss']}; 1 worker: {losses}; "
          f"weights differ by at most {worst:.1e} of a tensor's largest value; Tune fit {fit_s:.1f} s")


def test_a_multi_worker_trial_reserves_one_bundle_per_rank_and_gets_its_worker_count() -> None:
    """``resources.workers`` reaches the trial: Tune reserves a placement group of one
    ``cpu``/``gpu`` bundle per rank (rank 0 runs in bundle 0), and the sweep's trial settings carry
    the count; one worker keeps today's plain resource dict."""
    from ray import tune

    from sslsweep.config import ResourcesConfig
    from sslsweep.search.sweep import Sweep
    from tests.test_config import load
    from sslsweep.search.tuner import resources

    pgf = resources(ResourcesConfig(cpu=2, gpu=1, workers=4))
    assert isinstance(pgf, tune.PlacementGroupFactory)
    assert pgf.bundles == [{"CPU": 2.0, "GPU": 1.0}] * 4
    assert resources(ResourcesConfig(cpu=2, gpu=0.5)) == {"cpu": 2.0, "gpu": 0.5}
    cfg = load("resources.workers=2", "method=[rotation]", "storage=/tmp/unused")
    sweep = Sweep.create(cfg, {})
    data = tiny_data()
    assert sweep._settings(data, confirm=False).workers == sweep._settings(data, confirm=True).workers == 2
    assert sweep._device_count() == 2 * cfg.resources.cpu  # device-seconds count every rank
