"""Benchmark: what launching a 2-worker (DDP) trial costs, two ways (issue 13, docs/distributed.md).

* **ranks in the trial's placement group** (the project's design): ``search_trial`` with
  ``TrialSettings.workers = 2`` under ``tune.with_resources(..., PlacementGroupFactory([{"CPU": 1}] * 2))``;
  the trial function is rank 0 and starts rank 1 in bundle 1.
* **Ray Train V2 inside Tune** (the alternative the issue names): a Tune trial whose function runs a
  ``TorchTrainer`` with 2 workers of 1 CPU and ``TuneReportCallback``; each Train worker builds the
  same pretrainer and joins it the same way (``build_rank`` + ``join``), so only the launch differs.

Both train rotation on the same random data for the same epochs; the figure is the wall time of
``Tuner.fit()`` (one trial), and the last epoch's loss shows both trained the same. One local Ray
with 3 CPUs serves both (Train needs one more CPU than the trial's two bundles: its trial function
holds a CPU of its own outside the Train workers).

    python benchmarks/ddp_launch.py              # 3 fits each
    python benchmarks/ddp_launch.py --smoke      # 1 fit each
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

from _common import ROOT, emit, hardware, median, now, print_hardware, random_prepared, rnd

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)

import ray  # noqa: E402
from ray import tune  # noqa: E402

from sslsweep.config import ConfirmConfig, EncoderConfig, EvalConfig, TrainerConfig  # noqa: E402
from sslsweep.trainables.trial import TrialSettings, search_trial  # noqa: E402

HP = {"method": "rotation", "seed": 0, "lr": 0.05, "weight_decay": 1e-4, "batch_size": 32, "strength": 0.5,
      "crop_min": 0.3}


def settings(epochs: int) -> TrialSettings:
    return TrialSettings(encoder=EncoderConfig(width=16), trainer=TrainerConfig(), eval=EvalConfig(knn_k=3, selection="oracle", compare=()),
                         confirm=ConfirmConfig(), metric="knn_top1", max_epochs=epochs, eval_every=1, num_threads=1,
                         workers=2)


def placement_group_fit(data: Any, epochs: int, storage: str) -> tuple[float, float]:
    fn = tune.with_parameters(search_trial, data=data, settings=settings(epochs))
    tuner = tune.Tuner(tune.with_resources(fn, tune.PlacementGroupFactory([{"CPU": 1}] * 2)), param_space=HP,
                       run_config=tune.RunConfig(name=f"pg-{time.time_ns()}", storage_path=storage, verbose=0))
    t0 = time.perf_counter()
    (result,) = list(tuner.fit())
    return time.perf_counter() - t0, float(result.metrics["pretext_loss"])


def _train_worker(cfg: dict[str, Any]) -> None:
    import ray.train

    from sslsweep.trainables.distributed import DistContext, RankSpec, build_rank, join
    from sslsweep.trainables.train import train_one_epoch

    s = cfg["settings"]
    spec = RankSpec("rotation", HP, 0, s.encoder, s.trainer, 1, s.max_epochs, "device", None)
    pre, pool = build_rank(spec, cfg["data"])
    ctx = ray.train.get_context()
    join(pre, DistContext(ctx.get_world_rank(), ctx.get_world_size()))
    while pre.epoch < pre.max_epochs:
        stats = train_one_epoch(pre, pool)
        ray.train.report({"epoch": pre.epoch, "pretext_loss": stats.loss})


def _train_driver(config: dict[str, Any], data: Any, epochs: int, storage: str) -> None:
    import ray.train
    import ray.train.torch
    from ray.tune.integration.ray_train import TuneReportCallback

    ray.train.torch.TorchTrainer(
        _train_worker, train_loop_config={"data": data, "settings": settings(epochs)},
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(name=f"train-{time.time_ns()}", storage_path=storage,
                                       callbacks=[TuneReportCallback()])).fit()


def torch_trainer_fit(data: Any, epochs: int, storage: str) -> tuple[float, float]:
    fn = tune.with_parameters(_train_driver, data=data, epochs=epochs, storage=storage)
    tuner = tune.Tuner(tune.with_resources(fn, {"cpu": 1}), param_space={},
                       run_config=tune.RunConfig(name=f"tt-{time.time_ns()}", storage_path=storage, verbose=0))
    t0 = time.perf_counter()
    (result,) = list(tuner.fit())
    return time.perf_counter() - t0, float(result.metrics["pretext_loss"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    repeats = 1 if args.smoke else args.repeats
    hw = hardware()
    print_hardware(hw)
    data = random_prepared(640, channels=3, size=16)
    ray.init(address="local", num_cpus=3, include_dashboard=False, configure_logging=False, log_to_driver=False)
    storage = tempfile.mkdtemp(prefix="ddp_launch-")
    runs: dict[str, list[tuple[float, float]]] = {"placement_group": [], "torch_trainer": []}
    for _ in range(repeats):  # alternated, so load from other work on the machine hits both alike
        runs["placement_group"].append(placement_group_fit(data, args.epochs, storage))
        runs["torch_trainer"].append(torch_trainer_fit(data, args.epochs, storage))
        for name, r in runs.items():
            print(f"{name:16s} fit {r[-1][0]:6.1f} s   last epoch's loss {r[-1][1]:.6f}", flush=True)
    ray.shutdown()
    result = {name: {"fit_s": [rnd(t) for t, _ in r], "median_fit_s": rnd(median(t for t, _ in r)),
                     "last_loss": r[-1][1]} for name, r in runs.items()}
    emit({"benchmark": "ddp_launch", "date": now(), "epochs": args.epochs, "workers": 2, **hw, **result},
         "ddp_launch.json")


if __name__ == "__main__":
    main()
