"""Benchmark - schedule model: how busy could any slot-allocation policy keep a sweep (issue 13)?

A model, not a measurement: an event simulation of a sweep's trials on ``--slots`` slots, with
the structure that bounds utilization and nothing of Ray:

* every method has ``--num-samples`` search trials of ``--epoch-s`` per epoch up to
  ``--max-epochs``, stopped by asynchronous successive halving as Tune's ASHA does (rungs at
  ``grace_period x reduction_factor^k``; at a rung a trial stops when its score is below the
  ``1 - 1/rf`` percentile of the scores recorded there before it; the first one there goes on);
  a trial's score is a random quality drawn once, so each run is one draw of which trials survive;
* a method's confirm runs (``--confirm-seeds`` of them: ``--confirm-epochs`` epochs then
  ``--eval-s`` of evaluation) can start only when its search has ended (the choice reads every
  search trial);
* a trial that starts in a new process waits ``--startup-s`` (importing torch and Ray Tune, a
  CUDA context) before its work; a slot handed to the next trial of the same experiment reuses
  its process (Tune's ``reuse_actors``) and waits nothing. ``--confirm-reuses-search`` models a
  design this project does not have: a method's confirm run taking over a process of its search.

Policies (who gets a slot when one frees):

* ``sticky`` - the project's design: the same experiment's next trial if it has one (reuse_actors),
  else the method with the fewest trials running;
* ``priority`` - methods in a fixed order, each finished as early as possible (searched at full
  width first), confirm before search within a method;
* ``most_left`` - the method with the most work left (search trials not started, confirm runs).

Utilization = work / (slots x makespan), work = the trials' epochs and evaluations. The measured
runs (``utilization.py``, RESULTS.md) can be set beside it: same workload, real Tune.

    python benchmarks/schedule_model.py                        # 3 methods x 8 trials on 12 slots, 3 s epochs
    python benchmarks/schedule_model.py --methods 6 --startup-s 3
    python benchmarks/schedule_model.py --smoke
"""

from __future__ import annotations

import argparse
import heapq
import random
from dataclasses import dataclass, field
from typing import Sequence

from _common import emit, hardware, median, now, print_hardware, rnd

POLICIES = ("sticky", "priority", "most_left")


@dataclass(frozen=True)
class Workload:
    """The trials of one sweep (the defaults are ``utilization.py``'s)."""

    slots: int = 12
    methods: int = 3
    num_samples: int = 8
    max_epochs: int = 8
    grace_period: int = 2
    reduction_factor: int = 3
    confirm_seeds: int = 3
    confirm_epochs: int = 8
    epoch_s: float = 3.0
    eval_s: float = 6.0
    startup_s: float = 0.0
    confirm_reuses_search: bool = False  # a method's confirm run may take over a process its search ends with

    def rungs(self) -> list[int]:
        """ASHA's milestones below ``max_epochs``, smallest first (Tune: grace x rf^k)."""
        out, r = [], self.grace_period
        while r < self.max_epochs:
            out.append(r)
            r *= self.reduction_factor
        return out


def _percentile(values: Sequence[float], q: float) -> float:
    """numpy's default (linear) percentile, as Tune's ASHA takes it with ``np.nanpercentile``."""
    s = sorted(values)
    k = q / 100 * (len(s) - 1)
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@dataclass
class _Method:
    qualities: list[float]
    started: int = 0
    finished: int = 0
    running: int = 0
    confirm_left: int | None = None  # None until the search has ended
    rung_scores: dict[int, list[float]] = field(default_factory=dict)


def simulate(w: Workload, policy: str, qualities: list[list[float]]) -> dict[str, float]:
    """One sweep: ``qualities[m][i]`` is search trial i of method m's score at every rung."""
    if policy not in POLICIES:
        raise ValueError(f"policy={policy!r}: must be one of {', '.join(POLICIES)}")
    rungs = w.rungs()
    ms = [_Method(list(q), rung_scores={r: [] for r in rungs}) for q in qualities]
    confirm_s = w.confirm_epochs * w.epoch_s + w.eval_s
    events: list[tuple[float, int, str, int, int, int]] = []  # (time, order, kind, method, trial, rung index)
    order = 0
    t, free, work, end = 0.0, w.slots, 0.0, 0.0

    def wants(m: int) -> str | None:
        if ms[m].confirm_left:
            return "confirm"
        return "search" if ms[m].started < len(ms[m].qualities) else None

    def pick(freed: tuple[int, str] | None) -> tuple[int, str] | None:
        cands = [(m, k) for m in range(len(ms)) if (k := wants(m))]
        if not cands:
            return None
        if policy == "sticky":
            if freed in cands:
                return freed
            return min(cands, key=lambda c: (ms[c[0]].running, c[0]))
        if policy == "priority":
            return min(cands, key=lambda c: c[0])
        return max(cands, key=lambda c: ((len(ms[c[0]].qualities) - ms[c[0]].started) * w.max_epochs * w.epoch_s
                                         + (w.confirm_seeds if ms[c[0]].confirm_left is None else ms[c[0]].confirm_left)
                                         * confirm_s, -c[0]))

    def push(at: float, kind: str, m: int, i: int, ri: int) -> None:
        nonlocal order
        heapq.heappush(events, (at, order, kind, m, i, ri))
        order += 1

    def fill(freed: tuple[int, str] | None) -> None:
        nonlocal free
        while free > 0 and (c := pick(freed)) is not None:
            m, kind = c
            # no start-up when the freed slot's process serves the same experiment (reuse_actors), or,
            # in the variant, the same method's confirm after its search
            same = c == freed or (w.confirm_reuses_search and freed is not None and c[0] == freed[0])
            delay = 0.0 if same else w.startup_s
            free -= 1
            ms[m].running += 1
            if kind == "confirm":
                ms[m].confirm_left -= 1
                push(t + delay + confirm_s, "confirm_end", m, -1, -1)
            else:
                i = ms[m].started
                ms[m].started += 1
                first = rungs[0] if rungs else w.max_epochs
                push(t + delay + first * w.epoch_s, "rung" if rungs else "search_end", m, i, 0)
            freed = None

    def release(m: int, kind: str) -> None:
        nonlocal free
        ms[m].running -= 1
        free += 1
        fill((m, kind))

    fill(None)
    while events:
        t, _, kind, m, i, ri = heapq.heappop(events)
        if kind == "confirm_end":
            work += confirm_s
            end = max(end, t)
            release(m, "confirm")
            continue
        if kind == "rung":
            r = rungs[ri]
            work += (r - (rungs[ri - 1] if ri else 0)) * w.epoch_s
            recorded = ms[m].rung_scores[r]
            score = ms[m].qualities[i]
            stop = bool(recorded) and score < _percentile(recorded, (1 - 1 / w.reduction_factor) * 100)
            recorded.append(score)
            if not stop:
                nxt = rungs[ri + 1] if ri + 1 < len(rungs) else w.max_epochs
                push(t + (nxt - r) * w.epoch_s, "rung" if ri + 1 < len(rungs) else "search_end", m, i, ri + 1)
                continue
        else:  # search_end: the trial ran to max_epochs
            work += (w.max_epochs - (rungs[-1] if rungs else 0)) * w.epoch_s
        ms[m].finished += 1
        end = max(end, t)
        if ms[m].finished == len(ms[m].qualities):
            ms[m].confirm_left = w.confirm_seeds
        release(m, "search")
    return {"work_slot_s": work, "makespan_s": end, "utilization": work / (w.slots * end)}


def model(w: Workload, runs: int, seed: int = 0) -> dict[str, dict[str, float]]:
    """Every policy on the same ``runs`` draws of trial qualities: median and 10th / 90th percentile."""
    rng = random.Random(seed)
    draws = [[[rng.random() for _ in range(w.num_samples)] for _ in range(w.methods)] for _ in range(runs)]
    out = {}
    for policy in POLICIES:
        res = [simulate(w, policy, d) for d in draws]
        util = [r["utilization"] for r in res]
        out[policy] = {"utilization_median": round(median(util), 3), "utilization_p10": round(_percentile(util, 10), 3),
                       "utilization_p90": round(_percentile(util, 90), 3),
                       "makespan_s_median": rnd(median([r["makespan_s"] for r in res]), 1)}
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    d = Workload()
    p.add_argument("--slots", type=int, nargs="+", default=[4, 8, 12])
    p.add_argument("--methods", type=int, default=d.methods)
    p.add_argument("--num-samples", type=int, default=d.num_samples)
    p.add_argument("--max-epochs", type=int, default=d.max_epochs)
    p.add_argument("--grace-period", type=int, default=d.grace_period)
    p.add_argument("--reduction-factor", type=int, default=d.reduction_factor)
    p.add_argument("--confirm-seeds", type=int, default=d.confirm_seeds)
    p.add_argument("--confirm-epochs", type=int, default=None, help="default: --max-epochs")
    p.add_argument("--epoch-s", type=float, default=d.epoch_s)
    p.add_argument("--eval-s", type=float, default=d.eval_s)
    p.add_argument("--startup-s", type=float, nargs="+", default=[0.0, 3.0],
                   help="seconds a trial in a new process waits before its work (one table per value)")
    p.add_argument("--confirm-reuses-search", action="store_true",
                   help="model confirm runs that take over their search's processes (not this design)")
    p.add_argument("--runs", type=int, default=300, help="draws of trial qualities (default 300)")
    p.add_argument("--smoke", action="store_true", help="20 draws")
    args = p.parse_args(argv)
    if args.smoke:
        args.runs = 20
    hw = hardware()
    print_hardware(hw)
    rows = []
    for startup in args.startup_s:
        for slots in args.slots:
            w = Workload(slots=slots, methods=args.methods, num_samples=args.num_samples, max_epochs=args.max_epochs,
                         grace_period=args.grace_period, reduction_factor=args.reduction_factor,
                         confirm_seeds=args.confirm_seeds, confirm_epochs=args.confirm_epochs or args.max_epochs,
                         epoch_s=args.epoch_s, eval_s=args.eval_s, startup_s=startup,
                         confirm_reuses_search=args.confirm_reuses_search)
            rows.append({"slots": slots, "startup_s": startup, "policies": model(w, args.runs)})
    print(f"schedule model: {args.methods} methods x {args.num_samples} trials, max_epochs {args.max_epochs} (grace "
          f"{args.grace_period}, rf {args.reduction_factor}), {args.confirm_seeds} confirm seeds; epoch {args.epoch_s} s, "
          f"evaluation {args.eval_s} s; confirm reuses search processes: {args.confirm_reuses_search}; {args.runs} draws of trial qualities. Utilization, median [10th, 90th "
          f"percentile]; makespan median:")
    print("| slots | start-up s | " + " | ".join(POLICIES) + " |")
    print("|---|---|" + "---|" * len(POLICIES))
    for r in rows:
        print(f"| {r['slots']} | {r['startup_s']:g} | " + " | ".join(
            f"{v['utilization_median']:.3f} [{v['utilization_p10']:.2f}, {v['utilization_p90']:.2f}], "
            f"{v['makespan_s_median']:.0f} s" for v in r["policies"].values()) + " |")
    return emit({"benchmark": "schedule_model", "date": now(), **hw, "methods": args.methods,
                 "num_samples": args.num_samples, "max_epochs": args.max_epochs, "grace_period": args.grace_period,
                 "reduction_factor": args.reduction_factor, "confirm_seeds": args.confirm_seeds,
                 "epoch_s": args.epoch_s, "eval_s": args.eval_s, "confirm_reuses_search": args.confirm_reuses_search,
                 "runs": args.runs, "rows": rows},
                "schedule_model.json")


if __name__ == "__main__":
    main()
