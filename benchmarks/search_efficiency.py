"""Benchmark 4 - search_efficiency: epochs TPE + ASHA needs to match random search at full budget.

Method (in-process Optuna; Ray Tune sweeps of 5 seeds x 2 strategies are too slow for 2 CPU cores):

* Both strategies search the project's SimCLR space (``conf/search/default.yaml`` +
  ``conf/method/simclr.yaml``, validated by ``sslsweep.config`` and sampled by
  ``sslsweep.search.spaces.DefineByRun``, as a sweep does) on scikit-learn's digits (the embedded
  default, 8x8) with the small CNN, and every trial runs the project's own functions:
  ``make_pretrainer`` + ``train_one_epoch`` per epoch and ``selection_metric`` (kNN top-1 on the
  validation split) reported after every epoch. As in a sweep (``DefineByRun`` gives every trial
  the search seed), all trials of a study share one init seed; it is s in both strategies (common
  random numbers: the init seed moves a configuration's final score by more than the top
  configurations differ, see RESULTS.md), while the samplers are seeded s (random) and 100 + s
  (TPE, so its random start-up trials do not replay random search's first configurations).
  ``--init-seed per-study`` gives the TPE study's trials init seed 100 + s (the earlier runs).
* **random**: ``RandomSampler(seed)``, no early stopping, ``num_samples`` trials of ``max_epochs``
  epochs (the full budget B = num_samples x max_epochs epochs). Its best score R is the best final
  validation score of its trials (the project's ``best_trials`` rule: completed trials, last value).
* **TPE + ASHA**: ``TPESampler(seed, n_startup_trials)`` (the project's ``search.tuner.sampler``) with
  Optuna's ``SuccessiveHalvingPruner(min_resource=grace_period, reduction_factor, min_early_stopping_rate=0)``,
  which applies the same rule as Ray's ``ASHAScheduler(time_attr="epoch", grace_period,
  reduction_factor, max_t=max_epochs)``: at rungs grace x rf^k a trial goes on only if it is in the
  top 1/rf of the trials that reached that rung. Trials run one after another until the epochs
  spent reach B. Recorded: the epochs spent when a trial first *completes* with a final score >= R
  (the figure), when one first completes within one validation image of R (the metric moves in
  steps of 1/n_val), and when any report first reaches R (looser readings).

Ratio = those epochs / B, median over the seeds (not reached within B counts as > 1). Target <= 1/3.
The seeds' studies run in ``--jobs`` processes with one thread each.

    python benchmarks/search_efficiency.py            # 5 seeds: ~2 min idle, ~13 min on 2 busy cores
    python benchmarks/search_efficiency.py --smoke    # 2 seeds, tiny budget
"""

from __future__ import annotations

import argparse
import math
import random
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

from _common import emit, hardware, median, now, print_hardware, rnd


TPE_SEED_OFFSET = 100


def median_interval(xs: list[float], level: float = 0.95, n: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the median over seeds (resampling the seeds): how far the
    median of this many seeds moves with the draw of seeds. A seed that never matched counts as inf."""
    rng = random.Random(seed)
    meds = sorted(median(rng.choices(xs, k=len(xs))) for _ in range(n))
    k = int((1 - level) / 2 * n)
    lo, hi = meds[k], meds[n - 1 - k]
    return lo, hi


def _cfg(args: argparse.Namespace):
    from tune_overhead import compose

    return compose(["method=[simclr]", "dataset=digits", "encoder=small_cnn", f"encoder.width={args.width}",
                    f"search.max_epochs={args.max_epochs}", f"search.grace_period={args.grace_period}",
                    f"search.reduction_factor={args.reduction_factor}", f"search.num_samples={args.num_samples}",
                    f"search.n_startup_trials={args.n_startup}", *args.overrides])


def run_study(job: dict[str, Any]) -> dict[str, Any]:
    """One strategy, one seed: returns every trial's learning curve and the epochs it cost."""
    import optuna
    import torch

    from sslsweep.search.spaces import DefineByRun
    from sslsweep.search.tuner import sampler as project_sampler
    from sslsweep.data import prepare
    from sslsweep.trainables.train import DeviceData, Runtime, make_pretrainer, selection_metric, train_one_epoch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = job["cfg"]
    seed, strategy, E = job["seed"], job["strategy"], cfg.search.max_epochs
    # Two independent sweeps: the TPE study gets its own seed (with the same seed its random start-up
    # trials would replay the random study's first configurations and match them trivially).
    seed = seed if strategy == "random" else TPE_SEED_OFFSET + seed
    method = cfg.methods[0]
    data = prepare(cfg.dataset)
    rt = Runtime.resolve(cfg.trainer, 1)
    dd = DeviceData.put(data, rt.device)
    pool = dd.pool()
    # the trials' init seed (weights, augmentation stream): the study's seed unless the job names one
    space = DefineByRun(method, job.get("train_seed", seed))
    if strategy == "random":
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    else:
        search = cfg.search.__class__(**{**cfg.search.__dict__, "searcher": "tpe"})
        study = optuna.create_study(direction="maximize", sampler=project_sampler(search, seed),
                                    pruner=optuna.pruners.SuccessiveHalvingPruner(
                                        min_resource=cfg.search.grace_period,
                                        reduction_factor=cfg.search.reduction_factor, min_early_stopping_rate=0))
    target = job.get("target")
    smooth = job.get("smooth", 1)
    budget = job["budget_epochs"]
    # also: within one validation image of the target (the selection metric moves in steps of 1/n_val)
    loose = None if target is None else target - 1.0 / len(data.splits.val) - 1e-9
    state = {"epochs": 0, "reach_final": None, "reach_any": None, "reach_final_loose": None}
    trials: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        config = space(trial)
        hp = {k: v for k, v in {**trial.params, **config}.items() if k not in ("method", "seed")}
        pre = make_pretrainer(method.name, hp, data, cfg.encoder, cfg.trainer, rt, max_epochs=E, seed=config["seed"])
        curve: list[float] = []
        raw: list[float] = []
        rec = {"number": trial.number, "hp": hp, "curve": curve, "pruned": False}
        trials.append(rec)
        for epoch in range(1, E + 1):
            train_one_epoch(pre, pool)
            state["epochs"] += 1
            raw.append(selection_metric(pre.encoder, dd, cfg.eval, rt, seed=0))
            value = sum(raw[-smooth:]) / len(raw[-smooth:])  # the score both strategies see
            curve.append(value)
            if target is not None and state["reach_any"] is None and value >= target:
                state["reach_any"] = state["epochs"]
            trial.report(value, epoch)
            if strategy != "random" and epoch < E and trial.should_prune():
                rec["pruned"] = True
                raise optuna.TrialPruned()
        if target is not None and state["reach_final"] is None and curve[-1] >= target:
            state["reach_final"] = state["epochs"]
        if loose is not None and state["reach_final_loose"] is None and curve[-1] >= loose:
            state["reach_final_loose"] = state["epochs"]
        return curve[-1]

    t0 = time.time()
    if strategy == "random":
        study.optimize(objective, n_trials=cfg.search.num_samples)
    else:
        while state["epochs"] < budget and state["reach_final"] is None:
            study.optimize(objective, n_trials=1)
    finals = [t["curve"][-1] for t in trials if not t["pruned"] and len(t["curve"]) == E]
    return {"strategy": strategy, "seed": job["seed"], "study_seed": seed, "trials": trials, "epochs": state["epochs"],
            "best_final": max(finals) if finals else None, "reach_final_epochs": state["reach_final"],
            "reach_any_epochs": state["reach_any"], "reach_final_loose_epochs": state["reach_final_loose"],
            "seconds": time.time() - t0, "n_val": int(len(data.splits.val))}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed ... first-seed + seeds - 1")
    p.add_argument("--num-samples", type=int, default=12, help="random search trials (default 12)")
    p.add_argument("--max-epochs", type=int, default=9, help="full budget of a trial (default 9)")
    p.add_argument("--grace-period", type=int, default=1, help="ASHA grace period (default 1)")
    p.add_argument("--reduction-factor", type=int, default=3, help="ASHA reduction factor (default 3: rungs 1, 3)")
    p.add_argument("--n-startup", type=int, default=3, help="TPE random start-up trials (default 3)")
    p.add_argument("--smooth", type=int, default=1,
                   help="score = mean of the last K validation readings (default 1: the last one)")
    p.add_argument("--init-seed", choices=("shared", "per-study"), default="shared",
                   help="the trials' init seed: shared = seed s in both strategies (default; only the search "
                        "differs), per-study = each study's own seed (s and 100 + s; the first sessions' runs)")
    p.add_argument("--width", type=int, default=8, help="small_cnn width (default 8)")
    p.add_argument("--jobs", type=int, default=2, help="studies in parallel, one thread each (default 2)")
    p.add_argument("--overrides", nargs="*", default=[], help="extra Hydra overrides")
    p.add_argument("--json", default="search_efficiency.json", help="file name of the JSON result under $OUT")
    p.add_argument("--smoke", action="store_true", help="2 seeds, 3 trials of 2 epochs")
    args = p.parse_args(argv)
    if args.smoke:
        args.seeds, args.num_samples, args.max_epochs, args.grace_period, args.reduction_factor = 2, 3, 2, 1, 2
        args.overrides = args.overrides + ["dataset.max_images=300", "eval.knn_k=5"]
    hw = hardware()
    print_hardware(hw)
    cfg = _cfg(args)
    budget = args.num_samples * args.max_epochs
    print(f"search_efficiency (in-process Optuna, not Ray): digits, small_cnn width {args.width}; random: "
          f"{args.num_samples} trials x {args.max_epochs} epochs = {budget} epochs; TPE (n_startup {args.n_startup}) + "
          f"successive halving (grace {args.grace_period}, rf {args.reduction_factor}) until it matches random's best "
          f"final score or spends {budget} epochs; {args.seeds} seeds; trials' init seed: {args.init_seed}", flush=True)
    t0 = time.time()
    ctx = get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as ex:
        shared = args.init_seed == "shared"
        rand = list(ex.map(run_study, [{"cfg": cfg, "seed": s, "strategy": "random", "budget_epochs": budget,
                                        "smooth": args.smooth, **({"train_seed": s} if shared else {})}
                                       for s in range(args.first_seed, args.first_seed + args.seeds)]))
        for r in rand:
            print(f"  seed {r['seed']}: random best final {r['best_final']:.4f} ({r['epochs']} epochs, "
                  f"{r['seconds']:.0f} s)", flush=True)
        tpe = list(ex.map(run_study, [{"cfg": cfg, "seed": r["seed"], "strategy": "tpe_asha", "budget_epochs": budget,
                                       "target": r["best_final"], "smooth": args.smooth,
                                       **({"train_seed": r["seed"]} if shared else {})} for r in rand]))
    per_seed = []
    for r, t in zip(rand, tpe):
        ratio = (t["reach_final_epochs"] / budget) if t["reach_final_epochs"] else math.inf
        ratio_any = (t["reach_any_epochs"] / budget) if t["reach_any_epochs"] else math.inf
        ratio_loose = (t["reach_final_loose_epochs"] / budget) if t["reach_final_loose_epochs"] else math.inf
        per_seed.append({"seed": r["seed"], "random_best": round(r["best_final"], 4), "random_epochs": r["epochs"],
                         "tpe_trials": len(t["trials"]),
                         "tpe_pruned": sum(1 for x in t["trials"] if x["pruned"]), "tpe_epochs_spent": t["epochs"],
                         "tpe_best_final": round(t["best_final"], 4) if t["best_final"] is not None else None,
                         "tpe_epochs_to_match": t["reach_final_epochs"], "ratio": ratio,
                         "tpe_epochs_to_match_any_report": t["reach_any_epochs"], "ratio_any_report": ratio_any,
                         "tpe_epochs_within_one_val_image": t["reach_final_loose_epochs"],
                         "ratio_within_one_val_image": ratio_loose,
                         "curves": {"random": [[round(v, 4) for v in x["curve"]] for x in r["trials"]],
                                    "tpe_asha": [[round(v, 4) for v in x["curve"]] for x in t["trials"]]}})
        print(f"  seed {r['seed']}: TPE+ASHA {len(t['trials'])} trials ({per_seed[-1]['tpe_pruned']} pruned), "
              f"matched {r['best_final']:.4f} after {t['reach_final_epochs'] or 'never (>' + str(budget) + ')'} epochs "
              f"(any report: {t['reach_any_epochs'] or 'never'}) -> ratio {ratio:.3f}", flush=True)
    med = median(s["ratio"] for s in per_seed)
    med_any = median(s["ratio_any_report"] for s in per_seed)
    med_loose = median(s["ratio_within_one_val_image"] for s in per_seed)
    met = med <= 1 / 3
    lo, hi = median_interval([s["ratio"] for s in per_seed])
    print(f"median epochs ratio TPE+ASHA / random full budget: {med:.3f} (95% bootstrap interval over seeds "
          f"{lo:.3f} to {hi:.3f}; any report: {med_any:.3f}; "
          f"final within one validation image: {med_loose:.3f}); "
          f"target <= 0.333: {'met' if met else 'NOT met'}; {time.time() - t0:.0f} s", flush=True)

    def _fin(x: float) -> Any:
        return round(x, 4) if math.isfinite(x) else "inf"

    for s in per_seed:
        s["ratio"], s["ratio_any_report"] = _fin(s["ratio"]), _fin(s["ratio_any_report"])
        s["ratio_within_one_val_image"] = _fin(s["ratio_within_one_val_image"])
    return emit({"benchmark": "search_efficiency", "date": now(), **hw,
                 "method": "in-process Optuna (not Ray): RandomSampler without pruning vs TPESampler + "
                           "SuccessiveHalvingPruner mirroring ASHA; project's make_pretrainer/train_one_epoch/"
                           "selection_metric on digits",
                 "num_samples": args.num_samples, "max_epochs": args.max_epochs, "grace_period": args.grace_period,
                 "reduction_factor": args.reduction_factor, "n_startup_trials": args.n_startup, "width": args.width,
                 "smooth": args.smooth, "init_seed": args.init_seed,
                 "budget_epochs": budget, "seeds": per_seed, "median_ratio": _fin(med),
                 "median_ratio_interval95": [_fin(lo), _fin(hi)], "median_ratio_any_report": _fin(med_any), "median_ratio_within_one_val_image": _fin(med_loose),
                 "target": round(1 / 3, 4), "target_met": met,
                 "seconds": rnd(time.time() - t0)}, args.json)


if __name__ == "__main__":
    main()
