"""Benchmark 2 - tune_overhead: what Ray Tune adds to a sweep of short trials.

A real sweep through the project's own pieces: the composed Hydra config (``conf/``, validated by
``sslsweep.config``), ``data.prepare`` once on the driver, ``tune.with_parameters(search_trial, ...)``
as ``search/sweep.py`` does it, and ``search.tuner.search_tuner`` (HonestOptunaSearch + TPE, ASHA,
``reuse_actors=True``, a checkpoint with every per-epoch report: the project's report rate).

* **overhead** = sweep wall time (``tuner.fit()``) / ideal, where ideal = (sum of the trials' own
  wall times) / concurrency. The trials' own times are their last reported ``trial_wall_s``
  (measured by ``search_trial`` from its first line) and, more completely, entry-to-exit of the
  function as stamped by a thin wrapper around ``search_trial``. Ray's own bar: <= 1.2x.
* **trial start-up** = time from Tune starting the trial (driver callback ``on_trial_start``) to
  the first line of the trial function (the wrapper's stamp): actor creation or reuse, fetching
  ``data``/``settings`` from the object store, calling the function. Target <= 2 s with reused
  actors. The first trial of each concurrent slot pays a new worker process (``import torch``),
  so figures are given for first and later trials separately.
* With ``--compare`` (default) the same sweep runs again with ``reuse_actors=False``.

    python benchmarks/tune_overhead.py             # digits, small CNN widths 16/32/48: ~5 min on 2 cores
    python benchmarks/tune_overhead.py --smoke     # fewer, shorter trials, no comparison

Tune's costs are fixed per sweep and per worker process, so the ratio depends on how long the
trials are: one sweep per encoder width (16: trials of 1-7 s; 32, the project's default encoder;
48) shows where the 1.2x bar is crossed, and the target is judged at the project's default width.

Prints the hardware, per-trial start-up, the ratios and a final JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import emit, hardware, median, now, print_hardware, rnd

def stamped_search_trial(config: dict[str, Any], data: Any, settings: Any, stamps: str) -> None:
    """``search_trial`` unchanged, with its entry and exit times written to a file per trial."""
    entry = time.time()
    from ray import tune

    from sslsweep.trainables.trial import search_trial

    path = Path(stamps) / f"{tune.get_context().get_trial_id()}.json"
    path.write_text(json.dumps({"entry": entry, "pid": os.getpid()}))  # now: a stopped trial's process may be killed
    try:
        search_trial(config, data, settings)
    finally:
        path.write_text(json.dumps({"entry": entry, "exit": time.time(), "pid": os.getpid()}))


def compose(overrides: list[str]):
    from hydra import compose as h_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from sslsweep.config import from_dictconfig

    conf = Path(__file__).resolve().parents[1] / "sslsweep" / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = h_compose(config_name="config", overrides=overrides)
    raw = OmegaConf.to_container(cfg, resolve=True)
    raw.pop("hydra", None)
    return from_dictconfig(raw)


def _settings(cfg: Any) -> Any:
    """The trial settings exactly as ``Sweep._settings(confirm=False)`` builds them."""
    from sslsweep.data import budgets
    from sslsweep.trainables.trial import TrialSettings

    metric = f"{cfg.eval.metric}_top1"
    ev = dataclasses.replace(cfg.eval, selection="oracle", compare=())  # the kNN metric these figures were measured with
    return TrialSettings(encoder=cfg.encoder, trainer=cfg.trainer, eval=ev, confirm=cfg.confirm, metric=metric,
                         max_epochs=cfg.search.max_epochs, eval_every=cfg.search.eval_every,
                         num_threads=cfg.trainer.num_threads or int(cfg.resources.cpu),
                         budgets=tuple(budgets(cfg.dataset)))


def sweep_once(cfg: Any, data: Any, reuse: bool, workdir: Path, num_to_keep: int | None = -1) -> dict[str, Any]:
    """One sweep; ``num_to_keep`` >= 0 replaces the project's CheckpointConfig(num_to_keep) (0 = keep all)."""
    from ray import tune

    import sslsweep.search.tuner as tuner_mod

    stamps = workdir / f"stamps-{'reuse' if reuse else 'noreuse'}-{num_to_keep}"
    stamps.mkdir(parents=True, exist_ok=True)
    starts: dict[str, float] = {}
    results: dict[str, list[tuple[float, dict[str, Any]]]] = {}

    class Clock(tune.Callback):
        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            starts.setdefault(trial.trial_id, time.time())

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            results.setdefault(trial.trial_id, []).append((time.time(), dict(result)))

    orig_run_config = tuner_mod.run_config

    def run_config_with_clock(*a: Any, **k: Any) -> Any:
        rc = orig_run_config(*a, **k)
        rc.callbacks = list(rc.callbacks or []) + [Clock()]
        rc.verbose = 0
        if num_to_keep is not None and num_to_keep >= 0:
            rc.checkpoint_config = tune.CheckpointConfig(num_to_keep=num_to_keep or None)
        return rc

    settings = _settings(cfg)
    method = cfg.methods[0]
    trainable = tune.with_parameters(stamped_search_trial, data=data, settings=settings, stamps=str(stamps))
    tuner_mod.run_config = run_config_with_clock
    try:
        tuner = tuner_mod.search_tuner(trainable, method, cfg.search, cfg.resources, metric=settings.metric,
                                       seed=cfg.seed, storage_path=str(workdir / "tune"),
                                       journal=workdir / f"optuna-{reuse}-{num_to_keep}.journal")
    finally:
        tuner_mod.run_config = orig_run_config
    if not reuse:  # the project hard-codes reuse_actors=True; flip it on this Tuner for the comparison
        tuner._local_tuner._tune_config.reuse_actors = False
    t0 = time.time()
    grid = tuner.fit()
    wall = time.time() - t0

    trials = []
    for tid, t_start in starts.items():
        f = stamps / f"{tid}.json"
        st = json.loads(f.read_text()) if f.exists() else {}
        res = results.get(tid, [])
        last = res[-1][1] if res else {}
        trials.append({"trial_id": tid, "start": t_start, "entry": st.get("entry"), "exit": st.get("exit"),
                       "pid": st.get("pid"), "startup_s": (st["entry"] - t_start) if "entry" in st else None,
                       "fn_s": (st["exit"] - st["entry"]) if "exit" in st else None,
                       "trial_wall_s": float(last.get("trial_wall_s", 0.0)), "epochs": int(last.get("epoch", 0)),
                       "results": len(res)})
    trials.sort(key=lambda t: t["start"])
    seen_pids: set[Any] = set()
    for t in trials:  # a trial is "first" in its worker process when its pid was not seen before
        t["new_process"] = t["pid"] not in seen_pids
        seen_pids.add(t["pid"])
    conc = cfg.search.max_concurrent or int((os.cpu_count() or 1) // cfg.resources.cpu)
    sum_wall = sum(t["trial_wall_s"] for t in trials)
    sum_fn = sum(t["fn_s"] or t["trial_wall_s"] for t in trials)
    n_results = sum(t["results"] for t in trials)
    first = [t["startup_s"] for t in trials if t["new_process"] and t["startup_s"] is not None]
    later = [t["startup_s"] for t in trials if not t["new_process"] and t["startup_s"] is not None]
    errors = sum(1 for r in grid if r.error is not None)
    # Where the wall time goes, per concurrent slot: trial time + start-ups + the function's tail after its
    # last trial_wall_s stamp (last selection metric + checkpoint + report) + the rest (scheduling, syncing).
    startup_sum = sum(t["startup_s"] or 0.0 for t in trials)
    tail_sum = sum(max(0.0, (t["fn_s"] or 0.0) - t["trial_wall_s"]) for t in trials)
    breakdown = {"trial_s_per_slot": rnd(sum_wall / conc, 2), "startup_s_per_slot": rnd(startup_sum / conc, 2),
                 "function_tail_s_per_slot": rnd(tail_sum / conc, 2),
                 "rest_s": rnd(wall - (sum_wall + startup_sum + tail_sum) / conc, 2)}
    # Two parts of "rest" that are not per-result costs: Tune's set-up before the first trial starts,
    # and the sweep's end, when fewer trials are left than slots and a slot waits for the last one.
    ends = sorted((t["exit"] or (results[t["trial_id"]][-1][0] if results.get(t["trial_id"]) else t["start"]))
                  for t in trials)
    t_end = t0 + wall
    breakdown["setup_before_first_trial_s"] = rnd(min(starts.values()) - t0, 2) if starts else None
    breakdown["idle_slots_at_end_s_per_slot"] = rnd(sum(t_end - e for e in ends[-conc:]) / conc, 2) if ends else None
    return {
        "reuse_actors": reuse, "num_to_keep": "project" if num_to_keep is None or num_to_keep < 0 else num_to_keep,
        "trials": len(trials), "errors": errors, "concurrency": conc, "wall_s": rnd(wall, 2),
        "sum_trial_wall_s": rnd(sum_wall, 2), "sum_function_s": rnd(sum_fn, 2),
        "ideal_s": rnd(sum_wall / conc, 2), "overhead": round(wall / (sum_wall / conc), 3) if sum_wall else None,
        "overhead_vs_function_time": round(wall / (sum_fn / conc), 3) if sum_fn else None,
        "results": n_results, "results_per_s": rnd(n_results / wall, 2), "breakdown": breakdown,
        "epochs_total": sum(t["epochs"] for t in trials),
        "startup_first_in_process_s": [rnd(x, 2) for x in first],
        "startup_reused_median_s": rnd(median(later), 2) if later else None,
        "startup_reused_max_s": rnd(max(later), 2) if later else None,
        "startup_all_median_s": rnd(median(first + later), 2) if (first or later) else None,
        "per_trial": [{k: (rnd(v, 3) if isinstance(v, float) else v) for k, v in t.items()
                       if k in ("trial_id", "startup_s", "fn_s", "trial_wall_s", "epochs", "new_process")}
                      for t in trials],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-samples", type=int, default=10)
    p.add_argument("--max-epochs", type=int, default=8)
    p.add_argument("--grace-period", type=int, default=2)
    p.add_argument("--reduction-factor", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=2, help="search.max_concurrent (default 2: one trial per core)")
    p.add_argument("--widths", type=int, nargs="+", default=[16, 32, 48],
                   help="small_cnn widths, one sweep each: the trial length grows with the width (default 16 32 48; "
                        "32 is the project's default encoder and the one the target is judged on)")
    p.add_argument("--target-width", type=int, default=32, help="the width whose sweep is held to the targets")
    p.add_argument("--overrides", nargs="*", default=[], help="extra Hydra overrides, e.g. dataset.max_images=600")
    p.add_argument("--no-compare", action="store_true", help="skip the reuse_actors=False sweep")
    p.add_argument("--num-to-keep", type=int, default=-1,
                   help="also run a reused-actor sweep with CheckpointConfig(num_to_keep=N) (0 = keep all), to see "
                        "what the project's num_to_keep=2 costs in forced experiment snapshots (default: no)")
    p.add_argument("--smoke", action="store_true", help="4 trials of 2 epochs, width 16 only, no comparison")
    args = p.parse_args(argv)
    if args.smoke:
        args.num_samples, args.max_epochs, args.grace_period, args.no_compare = 4, 2, 1, True
        args.widths, args.target_width = [16], 16
        args.overrides = args.overrides + ["dataset.max_images=300"]
    if args.target_width not in args.widths:
        p.error(f"--target-width {args.target_width} must be one of --widths {args.widths}")

    hw = hardware()
    print_hardware(hw)

    def overrides_for(width: int) -> list[str]:
        return ["method=[simclr]", "dataset=digits", "encoder=small_cnn", f"encoder.width={width}",
                f"search.num_samples={args.num_samples}", f"search.max_epochs={args.max_epochs}",
                f"search.grace_period={args.grace_period}", f"search.reduction_factor={args.reduction_factor}",
                f"search.max_concurrent={args.concurrency}", "search.n_startup_trials=3", "search.eval_every=1",
                "resources.cpu=1", "resources.gpu=0", "eval.knn_k=5", *args.overrides]

    cfg = compose(overrides_for(args.widths[0]))
    from sslsweep.data import prepare

    data = prepare(cfg.dataset)
    import ray

    from sslsweep.search.ray_init import init_ray

    t0 = time.time()
    init_ray()
    ray_init_s = time.time() - t0
    print(f"ray.init: {ray_init_s:.1f} s (not counted in the sweeps)", flush=True)
    runs = []
    try:
        with tempfile.TemporaryDirectory(prefix="tune_overhead-") as tmp:
            plan = [(w, True, -1) for w in args.widths]
            plan += [] if args.no_compare else [(args.target_width, False, -1)]
            plan += [(args.target_width, True, args.num_to_keep)] if args.num_to_keep >= 0 else []
            for width, reuse, keep in plan:
                r = sweep_once(compose(overrides_for(width)), data, reuse, Path(tmp) / f"w{width}", keep)
                r["width"] = width
                r["mean_trial_s"] = rnd(r["sum_trial_wall_s"] / max(r["trials"], 1), 2)
                r["fixed_s_per_slot"] = rnd(r["wall_s"] - r["ideal_s"], 2)
                runs.append(r)
                if r["overhead"] is None:
                    print(f"width {width} reuse_actors={reuse} num_to_keep={r['num_to_keep']}: no trial reported "
                          f"({r['errors']} errors)", flush=True)
                    continue
                print(f"width {width} reuse_actors={reuse} num_to_keep={r['num_to_keep']}: {r['trials']} trials "
                      f"(mean {r['mean_trial_s']:.1f} s, {r['epochs_total']} epochs, {r['results']} results, "
                      f"{r['errors']} errors), concurrency {r['concurrency']}: wall {r['wall_s']:.1f} s vs ideal "
                      f"{r['ideal_s']:.1f} s (sum of trial_wall_s {r['sum_trial_wall_s']:.1f} s) -> overhead "
                      f"{r['overhead']:.2f}x ({r['overhead_vs_function_time']:.2f}x against function entry-to-exit); "
                      f"start-up: new process {r['startup_first_in_process_s']} s, reused median "
                      f"{r['startup_reused_median_s']} s (max {r['startup_reused_max_s']} s); wall per slot = "
                      f"{r['breakdown']}", flush=True)
    finally:
        ray.shutdown()
    print("\n| width | trials | mean trial s | wall s | ideal s | fixed s per slot | overhead |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        if r["overhead"] is not None and r["reuse_actors"] and r["num_to_keep"] == "project":
            print(f"| {r['width']} | {r['trials']} | {r['mean_trial_s']:.1f} | {r['wall_s']:.1f} | {r['ideal_s']:.1f} | "
                  f"{r['fixed_s_per_slot']:.1f} | {r['overhead']:.2f}x |")
    main_run = next(r for r in runs if r["width"] == args.target_width and r["reuse_actors"])
    met_overhead = main_run["overhead"] is not None and main_run["overhead"] <= 1.2
    met_startup = main_run["startup_reused_median_s"] is not None and main_run["startup_reused_median_s"] <= 2.0
    print(f"targets (width {args.target_width}): overhead <= 1.2x {'met' if met_overhead else 'NOT met'} "
          f"({main_run['overhead']}x); start-up <= 2 s with reused actors {'met' if met_startup else 'NOT met'}",
          flush=True)
    return emit({"benchmark": "tune_overhead", "date": now(), **hw, "ray_init_s": rnd(ray_init_s, 2),
                 "overrides": overrides_for(args.target_width), "runs": runs, "target_width": args.target_width,
                 "target_overhead": 1.2, "target_startup_s": 2.0,
                 "target_overhead_met": met_overhead, "target_startup_met": met_startup}, "tune_overhead.json")


if __name__ == "__main__":
    main()
