"""Benchmark - utilization: how busy a whole sweep keeps its slots (issue 13).

A real sweep through the project's own code path - ``sslsweep.pipeline.run_sweep`` (validation,
``Sweep``: search, confirm, Parquet, report) on a local Ray with ``--slots`` logical CPUs and
``resources.cpu=1`` per trial - where the two trial functions are replaced by fakes that sleep
instead of training and report as the real ones do (the selection metric every ``eval_every``
epochs with a small checkpoint, ``trial_wall_s``, ``epoch``; a confirm trial pretrains, then
"evaluates" and reports its ``budget_rows``). A sleeping trial takes the same time however busy
the machine is, so the figure measures the scheduler - which trials run when - and not the speed
of 2 CPU cores. Everything else is real: Tune, the Optuna searchers, ASHA, the confirm Tuner(s),
storage, and the start-up of each trial's actor process (importing torch and Ray Tune, which
does depend on the load: it is printed per trial).

The fakes replace ``search_trial`` and ``confirm_trial`` in ``sslsweep.trainables.trial`` and in
every loaded ``sslsweep.search`` module that imported them *before* the sweep builds its
trainables (``tune.with_parameters``), and are pickled by value (they live in ``__main__``).
After the sweep every trial in ``trials.parquet`` must have a fake's record, else the benchmark
fails (a design that builds its trainables in another process would run the real trials).

* **busy slot-seconds**: the fakes record their work (each sleep: an epoch, the confirm
  evaluation) as time intervals; report round trips, checkpoints, actor start-up and Tune's
  scheduling are not work. Utilization = busy slot-seconds / (slots x window), for the windows:
  **sweep** (from calling ``run_sweep``, Ray already started, to the end of the last trial's
  work), **after start-up** (from the first work to the end), **search** (from the start to the
  end of the last search trial's work) and **confirm** (from the first confirm work to the end of
  the last); in each window every trial's work counts (in a pipelined design the phases overlap).
* **held**: the same from Tune's side - from ``on_trial_start`` to the trial's completion, stop
  or error (a driver callback added to ``sslsweep.search.tuner.run_config``), i.e. the slots Tune
  had given to trials, whether or not they were working.
* **timeline**: mean busy slots per ``--bin-s`` seconds, and utilization per tenth of the sweep.
* **emulated GPUs** (``--gpus K``): a local Ray with K logical GPUs and ``resources.gpu=1/--per-gpu``;
  per GPU, the share of time at least one of its trials was working. That is what nvidia-smi's
  utilization reports for a GPU that fractional trials share (a kernel running or not), the
  measure of the issue's GPU target (mean >= 85% after start-up); the sleeping trials leave out
  what a real GPU adds (a trial alone may not fill it; CUDA start-up), so it is the scheduler's
  share of that target, not a GPU measurement.
* **ceiling**: work / (slots x max(work / slots, the longest search -> confirm chain of one
  method)), on the run's own workload: no scheduler does better, even with free start-up.
* **slot time**: slots x wall split into work, held by a trial not working, before Tune started
  the first trial, and no trial; **process start-up**: each trial process from its creation (read
  from /proc by the fake) to the first work of its first trial, as a share of the same slot time.
* **start-up bound**: the ceiling less what starting trial processes must cost on this machine's
  cores: the main-thread CPU seconds a new Ray worker spends importing Ray Tune and torch (the
  least of 3 workers, measured on the started Ray before the sweep) for each trial process, the
  first ``slots`` of them sharing the cores.

The sequential design (one method searched after another, then one confirm experiment) cannot
exceed num_samples / slots during the search (8 / 12 by default). Target (issue 13): >= 0.85
over the sweep for the concurrent, pipelined design.

``--repo DIR`` runs the sweep of another checkout (e.g. ``git worktree add /tmp/before HEAD``):
its directory goes first on ``sys.path`` and on ``PYTHONPATH`` (Ray's workers inherit it), and
each fake records which ``sslsweep`` it imported. ``--table A.json B.json`` prints saved results
side by side without running anything.

    python benchmarks/utilization.py                          # 3 methods x 8 trials on 12 slots: ~3-5 min
    python benchmarks/utilization.py --repo /tmp/before --label before --json utilization-before.json
    python benchmarks/utilization.py --table before.json after.json
    python benchmarks/utilization.py --smoke                  # 1 method x 2 short trials on 2 slots
    python benchmarks/utilization.py --gpus 1 --per-gpu 4     # one emulated GPU shared by 4 trials
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import math
import os
import pkgutil
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import ray
from hydra import compose as h_compose
from hydra import initialize_config_dir
from omegaconf import OmegaConf
from ray import tune

from _common import emit, hardware, median, now, print_hardware, rnd

# sslsweep is imported inside functions throughout: ``--repo`` decides which checkout's it is.

# Read by the fake trials; cloudpickle copies the module globals a function uses when the trial
# function is pickled (it lives in __main__), so the workers see the values set in main().
FAKE: dict[str, Any] = {"stamps": "", "epoch_s": 2.0, "eval_s": 4.0}


def _write(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)


def _quality(method: str, hp: dict[str, Any]) -> float:
    """A made-up final score in (0.5, 0.95): best near lr 0.05, deterministic in (method, hp), so
    TPE and ASHA have something to work with."""
    lr = float(hp.get("lr", 0.05))
    noise = int(hashlib.sha256(repr((method, sorted(hp.items()))).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return 0.95 - 0.12 * min(abs(math.log10(lr / 0.05)), 2.0) - 0.05 * noise


def _checkpointed_report(metrics: dict[str, Any]) -> None:
    """``tune.report`` with a small checkpoint, as the real trials report every epoch."""
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "state.bin").write_bytes(b"\0" * 4096)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def _process_created() -> float | None:
    """When this process was created (wall clock, ~10 ms resolution), from /proc; None elsewhere."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - (uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


def _begin(kind: str, method: str) -> tuple[dict[str, Any], Path]:
    import sslsweep

    tid = tune.get_context().get_trial_id()
    rec = {"kind": kind, "method": method, "trial_id": tid, "entry": time.time(), "work": [], "reports": [],
           "pid": os.getpid(), "sslsweep": str(Path(sslsweep.__file__).resolve().parent),
           "gpus": [str(g) for g in ray.get_gpu_ids()],  # the logical GPUs Ray gave the trial (--gpus)
           "torch_imported": "torch" in sys.modules,  # by the trainable's arguments (the data), as in a real trial
           "process_created": _process_created()}
    path = Path(FAKE["stamps"]) / f"{kind}-{tid}-{os.getpid()}-{time.time_ns()}.json"
    _write(path, rec)
    return rec, path


def _work(rec: dict[str, Any], path: Path, seconds: float) -> None:
    a = time.time()
    time.sleep(seconds)
    rec["work"].append([a, time.time()])
    rec["reports"].append(time.time())  # a report follows every piece of work
    _write(path, rec)


def _progress(epoch: int, t0: float) -> dict[str, Any]:
    return {"epoch": epoch, "pretext_loss": 1.0 / (1 + epoch), "pretext_acc": float("nan"),
            "epoch_time_s": FAKE["epoch_s"], "throughput": 0.0, "trial_wall_s": time.time() - t0,
            "node_id": "fake", "diverged": 0, "error": ""}


def fake_search_trial(config: dict[str, Any], data: Any, settings: Any) -> None:
    """Stands in for ``search_trial``: ``eval_every`` epochs of sleep per report, the selection
    metric rising towards a score set by the configuration."""
    t0 = time.time()
    method = str(config["method"])
    hp = {k: v for k, v in config.items() if k not in ("method", "seed", "run", "source_trial_id")}
    rec, path = _begin("search", method)
    q = _quality(method, hp)
    epoch = 0
    while epoch < settings.max_epochs:
        step = min(settings.eval_every, settings.max_epochs - epoch)
        _work(rec, path, FAKE["epoch_s"] * step)
        epoch += step
        _checkpointed_report(_progress(epoch, t0) | {settings.metric: q * (1 - math.exp(-epoch / 2)),
                                                     "attempt_start_epoch": 0})
    rec["exit"] = time.time()
    _write(path, rec)


def fake_confirm_trial(config: dict[str, Any], data: Any, settings: Any) -> None:
    """Stands in for ``confirm_trial``: pretrain (sleep, a report per ``eval_every`` epochs), then
    evaluate every label budget (``eval_s`` of sleep) and report the budget rows."""
    t0 = time.time()
    run = config.get("run", config)
    method, seed = str(run["method"]), int(run.get("seed", 0))
    rec, path = _begin("confirm", method)
    epoch = 0
    while epoch < settings.max_epochs:
        step = min(settings.eval_every, settings.max_epochs - epoch)
        _work(rec, path, FAKE["epoch_s"] * step)
        epoch += step
        _checkpointed_report(_progress(epoch, t0) | {"attempt_start_epoch": 0})
    pretrain_s = time.time() - t0
    a = time.time()
    time.sleep(FAKE["eval_s"])
    rec["work"].append([a, time.time()])
    n_train = len(data.splits.train)
    rows = []
    for kind, value in settings.budgets:
        n = max(1, round(n_train * value)) if kind == "fraction" else int(value) * data.num_classes
        for selection in getattr(settings, "selections", ("random",)):
            for protocol in ("linear", "finetune"):
                acc = 0.5 + 0.4 * min(1.0, n / n_train) + 0.001 * seed
                rows.append(dict(budget_kind=kind, budget=float(value), n_labels=int(n), protocol=protocol,
                                 selection=selection, val_acc=acc, test_acc=acc - 0.01,
                                 eval_time_s=FAKE["eval_s"] / max(1, 2 * len(settings.budgets)),
                                 pretrain_epochs=epoch, pretrain_time_s=pretrain_s,
                                 **({"finetune_lr": 0.01, "finetune_lr_chosen": True} if protocol == "finetune" else {})))
    rec["reports"].append(time.time())
    _write(path, rec)
    tune.report(_progress(epoch, t0) | {"budget_rows": json.dumps(rows)})
    rec["exit"] = time.time()
    _write(path, rec)


# ----------------------------------------------------------------------------- set-up


def use_repo(repo: Path) -> None:
    """Import ``sslsweep`` from ``repo`` here and in Ray's workers (they inherit PYTHONPATH)."""
    repo = repo.resolve()
    if not (repo / "sslsweep" / "__init__.py").exists():
        raise SystemExit(f"--repo {repo}: no sslsweep package there")
    if "sslsweep" in sys.modules and not sys.modules["sslsweep"].__file__.startswith(str(repo)):
        raise SystemExit("sslsweep was imported before --repo took effect")
    sys.path.insert(0, str(repo))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(repo), *filter(None, [os.environ.get("PYTHONPATH")])])


def patch_trials() -> list[str]:
    """Point every loaded sslsweep module's ``search_trial``/``confirm_trial`` at the fakes
    (before ``sslsweep.search.sweep`` is imported too, so a later ``from ... import`` gets them)."""
    import sslsweep.search
    import sslsweep.trainables.trial as trial_mod

    real = {"search_trial": trial_mod.search_trial, "confirm_trial": trial_mod.confirm_trial}
    fakes = {"search_trial": fake_search_trial, "confirm_trial": fake_confirm_trial}
    for name, fn in fakes.items():
        setattr(trial_mod, name, fn)
    for info in pkgutil.iter_modules(sslsweep.search.__path__, "sslsweep.search."):
        importlib.import_module(info.name)  # every search module, so each binds the fakes or is patched
    patched = [f"sslsweep.trainables.trial.{name}" for name in fakes]
    for modname, mod in list(sys.modules.items()):
        if not modname.startswith("sslsweep") or mod is None:
            continue
        for name, fn in fakes.items():
            if getattr(mod, name, None) is fn and mod is not trial_mod:
                patched.append(f"{modname}.{name}")  # imported after the patch: bound the fake
            elif getattr(mod, name, None) is real[name]:
                setattr(mod, name, fn)
                patched.append(f"{modname}.{name}")
    return patched


def install_clock(stamps: Path) -> bool:
    """Add a driver callback recording each trial's start and end (Tune's view) to every RunConfig
    the project builds; False if ``sslsweep.search.tuner.run_config`` is not there to wrap."""
    import sslsweep.search.tuner as tuner_mod

    if not hasattr(tuner_mod, "run_config"):
        return False

    class Clock(tune.Callback):
        def _stamp(self, trial: Any, what: str) -> None:
            path = stamps / f"tune-{trial.trial_id}.json"
            rec = json.loads(path.read_text()) if path.exists() else {"trial_id": trial.trial_id}
            rec.setdefault(what, time.time())
            _write(path, rec)

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._stamp(trial, "start")

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._stamp(trial, "end")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._stamp(trial, "end")

    orig = tuner_mod.run_config

    def run_config_with_clock(*a: Any, **k: Any) -> Any:
        rc = orig(*a, **k)
        rc.callbacks = list(rc.callbacks or []) + [Clock()]
        return rc

    tuner_mod.run_config = run_config_with_clock
    return True


def compose(overrides: list[str]) -> tuple[Any, dict[str, Any]]:
    """The validated config and its raw dict, as ``sslsweep sweep`` composes them (from the conf/
    of the sslsweep that is imported, i.e. of ``--repo``)."""
    import sslsweep
    from sslsweep.config import from_dictconfig

    conf = Path(sslsweep.__file__).resolve().parent / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = h_compose(config_name="config", overrides=overrides)
    raw = OmegaConf.to_container(cfg, resolve=True)
    raw.pop("hydra", None)
    return from_dictconfig(raw), raw


# ----------------------------------------------------------------------------- analysis


def busy_in(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Slot-seconds of ``intervals`` inside [lo, hi]."""
    return sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in intervals)


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    cur = peak = 0
    for _, d in events:
        cur += d
        peak = max(peak, cur)
    return peak


def union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The intervals merged where they overlap: when at least one of them was running."""
    merged: list[list[float]] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def device_busy(trials: list[dict[str, Any]], devices: list[str], t0: float, first: float, end: float,
                bin_s: float) -> dict[str, Any]:
    """``--gpus``: per logical GPU, the share of time at least one of its trials was working - what
    nvidia-smi's utilization reports for a GPU shared by fractional trials (a kernel running or
    not) - over the sweep and after start-up (from the first work anywhere); the mean over GPUs;
    and the timeline of busy GPUs."""
    busy = {g: union([(a, b) for t in trials if g in t.get("gpus", []) for a, b in t["work"]]) for g in devices}
    out: dict[str, Any] = {"count": len(devices),
                           "trials_without_gpu": sum(1 for t in trials if not t.get("gpus"))}
    for name, lo in (("sweep", t0), ("after_startup", first)):
        per = {g: busy_in(iv, lo, end) / (end - lo) for g, iv in busy.items()}
        out[name] = {"mean": round(sum(per.values()) / len(per), 3), "per_gpu": {g: round(v, 3) for g, v in per.items()}}
    every = [iv for g in devices for iv in busy[g]]
    n_bins = max(1, int((end - t0) // bin_s + (1 if (end - t0) % bin_s else 0)))
    out["timeline_busy_gpus"] = [rnd(busy_in(every, t0 + i * bin_s, min(end, t0 + (i + 1) * bin_s)) / bin_s, 2)
                                 for i in range(n_bins)]
    return out


def analyse(trials: list[dict[str, Any]], marks: list[dict[str, Any]], t0: float, slots: int,
            bin_s: float, import_cpu_s: dict[str, Any] | None = None, cores: int = 1) -> dict[str, Any]:
    held = [(m["start"], m["end"]) for m in marks if "start" in m and "end" in m]
    work = [(a, b) for t in trials for a, b in t["work"]]
    search = [(a, b) for t in trials if t["kind"] == "search" for a, b in t["work"]]
    confirm = [(a, b) for t in trials if t["kind"] == "confirm" for a, b in t["work"]]
    end = max(b for _, b in work)
    first = min(a for a, _ in work)
    windows = {"sweep": (t0, end), "after_startup": (first, end),
               "search": (t0, max(b for _, b in search)) if search else None,
               "confirm": (min(a for a, _ in confirm), max(b for _, b in confirm)) if confirm else None}
    out: dict[str, Any] = {}
    for name, w in windows.items():
        if w is None:
            continue
        lo, hi = w
        out[name] = {"start_s": rnd(lo - t0, 2), "end_s": rnd(hi - t0, 2), "wall_s": rnd(hi - lo, 2),
                     "busy_slot_s": rnd(busy_in(work, lo, hi), 1),
                     "utilization": round(busy_in(work, lo, hi) / (slots * (hi - lo)), 3),
                     "held_utilization": round(busy_in(held, lo, hi) / (slots * (hi - lo)), 3) if held else None}
    n_bins = max(1, int((end - t0) // bin_s + (1 if (end - t0) % bin_s else 0)))
    timeline = [rnd(busy_in(work, t0 + i * bin_s, min(end, t0 + (i + 1) * bin_s)) / bin_s, 1) for i in range(n_bins)]
    tenth = (end - t0) / 10
    deciles = [round(busy_in(work, t0 + i * tenth, t0 + (i + 1) * tenth) / (slots * tenth), 2) for i in range(10)]
    out["timeline_bin_s"] = bin_s
    out["timeline_busy_slots"] = timeline
    out["utilization_per_tenth"] = deciles
    devices = sorted({g for t in trials for g in t.get("gpus", [])})
    if devices:
        out["devices"] = device_busy(trials, devices, t0, first, end, bin_s)
    out["max_busy_slots"] = max_overlap(work)
    # trial processes started (one per Ray actor; a reused actor runs several trials in one process):
    # each imports Ray Tune and torch, which on a small machine is most of the start-up
    out["actor_processes"] = {k: len({t["pid"] for t in trials if t["kind"] == k}) for k in ("search", "confirm")}
    out["actor_processes"]["all"] = len({t["pid"] for t in trials})
    out["max_held_slots"] = max_overlap(held) if held else None
    if held:  # where the sweep's slot-seconds went, as shares of slots x its wall time
        total_slot_s = slots * (end - t0)
        first_start = min(a for a, _ in held)
        busy_s, held_s = busy_in(work, t0, end), busy_in(held, t0, end)
        before = slots * (first_start - t0)
        # Tune's on_trial_start comes when the trial's actor is ready: a new process has been
        # started, has imported Ray Tune and unpickled the trainable. That part of its start-up falls
        # in the last two shares; the torch import (the data arrives in the function) in the second.
        out["slot_time"] = {"work": round(busy_s / total_slot_s, 3),
                            "held_not_working": round((held_s - busy_s) / total_slot_s, 3),
                            "before_first_trial_start": round(before / total_slot_s, 3),
                            "no_trial_after_first_start": round((total_slot_s - held_s - before) / total_slot_s, 3)}
        starting = process_start_up(trials, marks, t0)
        if starting is not None:
            out["process_start_up"] = {
                "slot_share": round(starting["slot_s"] / total_slot_s, 3),
                "outside_held_share": round(starting["outside_held_slot_s"] / total_slot_s, 3),
                "per_process_s": {"median": rnd(median(starting["per_process_s"]), 2),
                                  "max": rnd(max(starting["per_process_s"]), 2)}}
    out["first_work_s"] = rnd(first - t0, 2)
    # What no scheduler could beat on this run's workload (the trials ASHA let run this long): the
    # slots cannot do more than all the work in parallel, and a method's confirm trials start only
    # after its last search trial, so the wall time is at least the longest search + confirm chain.
    total = sum(b - a for a, b in work)
    chain = {}
    for m in {t["method"] for t in trials}:
        longest = {k: max((sum(b - a for a, b in t["work"]) for t in trials if t["method"] == m and t["kind"] == k),
                          default=0.0) for k in ("search", "confirm")}
        chain[m] = longest["search"] + longest["confirm"]
    floor = max(total / slots, max(chain.values()))
    out["ceiling"] = {"work_slot_s": rnd(total, 1), "work_per_slot_s": rnd(total / slots, 1),
                      "longest_chain_s": rnd(max(chain.values()), 1), "utilization": round(total / (slots * floor), 3)}
    if import_cpu_s is not None:
        # torch's import is charged only if every trial process made it (the fakes do not need
        # torch; the data they are given does)
        with_torch = all(t.get("torch_imported") for t in trials)
        cpu_s = import_cpu_s["ray.tune"] + (import_cpu_s["torch"] if with_torch else 0.0)
        chains = [(chain[m], any(t["method"] == m and t["kind"] == "confirm" for t in trials)) for m in chain]
        out["startup_bound"] = startup_bound(total, chains, slots, cores, cpu_s, out["actor_processes"]["all"])
        out["startup_bound"]["imports_cpu_s"] = import_cpu_s
        out["startup_bound"]["trials_imported_torch"] = with_torch
    # per trial: Tune's start -> the function's first line (actor start-up, arguments) -> first work
    starts = {m["trial_id"]: m["start"] for m in marks if "start" in m}
    startup = [t["entry"] - starts[t["trial_id"]] for t in trials if t["trial_id"] in starts]
    to_work = [t["work"][0][0] - t["entry"] for t in trials if t["work"]]
    gaps = [b[0] - a[1] for t in trials for a, b in zip(t["work"], t["work"][1:])]
    out["trial_startup_s"] = {"median": rnd(median(startup), 2), "max": rnd(max(startup), 2)} if startup else None
    out["entry_to_first_work_s"] = {"median": rnd(median(to_work), 2), "max": rnd(max(to_work), 2)}
    out["report_gap_s"] = {"median": rnd(median(gaps), 3), "max": rnd(max(gaps), 3)} if gaps else None
    # per method, seconds after the start: its search's first and last work, when Tune started its
    # first confirm trial and when that trial's work began (the hand-over from search to confirm)
    per_method = {}
    for m in sorted({t["method"] for t in trials}):
        mine = {k: [t for t in trials if t["method"] == m and t["kind"] == k and t["work"]] for k in ("search", "confirm")}
        row: dict[str, Any] = {}
        if mine["search"]:
            row["search_first_work_s"] = rnd(min(t["work"][0][0] for t in mine["search"]) - t0, 1)
            row["search_end_s"] = rnd(max(t["work"][-1][1] for t in mine["search"]) - t0, 1)
        if mine["confirm"]:
            tune_start = [starts[t["trial_id"]] for t in mine["confirm"] if t["trial_id"] in starts]
            row["confirm_tune_start_s"] = rnd(min(tune_start) - t0, 1) if tune_start else None
            row["confirm_first_work_s"] = rnd(min(t["work"][0][0] for t in mine["confirm"]) - t0, 1)
            row["confirm_end_s"] = rnd(max(t["work"][-1][1] for t in mine["confirm"]) - t0, 1)
        per_method[m] = row
    out["per_method"] = per_method
    return out


def process_start_up(trials: list[dict[str, Any]], marks: list[dict[str, Any]], t0: float) -> dict[str, Any] | None:
    """Each trial process's start-up as its slot saw it: from the process's creation (clipped to
    ``t0``: Ray may have started an idle worker before the sweep) to the first work of the first
    trial it ran. ``outside_held_slot_s`` is the part before Tune's ``on_trial_start`` of that
    trial (in the slot-time shares it falls in "before the first trial" or "no trial"). None when
    a record has no creation time (not Linux)."""
    starts = {m["trial_id"]: m["start"] for m in marks if "start" in m}
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for t in trials:
        if t["work"]:
            by_pid.setdefault(t["pid"], []).append(t)
    per_process, outside = [], 0.0
    for runs in by_pid.values():
        first = min(runs, key=lambda t: t["work"][0][0])
        if first.get("process_created") is None:
            return None
        created, first_work = max(first["process_created"], t0), first["work"][0][0]
        per_process.append(max(0.0, first_work - created))
        held_from = min(max(starts.get(first["trial_id"], created), created), first_work)
        outside += held_from - created
    return {"slot_s": sum(per_process), "outside_held_slot_s": outside, "per_process_s": per_process}


def process_startup_cpu_s(runs: int = 3) -> dict[str, Any]:
    """CPU seconds the main thread of a new Ray worker spends to import Ray Tune, then torch: the
    least of ``runs`` workers (each a new process: ``max_calls=1``), on the Ray already started.

    A trial's actor process is such a worker and does at least this on its main thread before its
    first work (it also unpickles its trainable and data), so the least of the runs is a lower bound
    of what each new trial process costs. Main-thread CPU time (``RUSAGE_THREAD``), not wall time:
    it does not grow with the load, and threads working beside the import do not count. Where the
    platform has no per-thread usage, the whole process's is taken (then it is an estimate).
    """
    @ray.remote(num_cpus=0, max_calls=1)
    def imports() -> dict[str, Any]:
        import resource

        who = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)

        def cpu() -> float:
            r = resource.getrusage(who)
            return r.ru_utime + r.ru_stime

        preloaded = [m for m in ("ray.tune", "torch") if m in sys.modules]
        a = cpu()
        importlib.import_module("ray.tune")
        b = cpu()
        importlib.import_module("torch")
        return {"ray.tune": b - a, "torch": cpu() - b, "preloaded": preloaded,
                "per_thread": who != resource.RUSAGE_SELF}

    got = [ray.get(imports.remote()) for _ in range(runs)]
    return {"ray.tune": round(min(g["ray.tune"] for g in got), 3), "torch": round(min(g["torch"] for g in got), 3),
            "preloaded": sorted({m for g in got for m in g["preloaded"]}), "per_thread": all(g["per_thread"] for g in got)}


def startup_bound(work: float, chains: list[tuple[float, bool]], slots: int, cores: int, cpu_s: float,
                  processes: int) -> dict[str, Any]:
    """What start-up on this machine's cores leaves of the ceiling: an upper bound on utilization.

    ``work`` = the run's busy slot-seconds; ``chains`` = per method, its longest search trial plus
    its longest confirm trial (seconds of work), and whether it had confirm trials. The first
    ``min(slots, processes)`` trial processes start together and share ``cores``: the k-th one to
    be ready cannot be ready before ``ceil(k / cores) * cpu_s``, and until then its slot does no
    work. Every process started later (this design starts one per Ray actor: a new experiment's
    trials do not reuse another's) leaves its slot idle at least ``cpu_s``. Utilization is at most
    work / (work + those slot-seconds), and at most work / (slots x (a method's chain + the start-up
    of its first search process and, for this design, of its confirm process)). ``any_design``
    counts only the first processes and one start-up per chain (a design that reused processes
    across experiments would still start those). Valid as long as ``cpu_s`` is a lower bound of a
    new trial process's serial start-up work (see ``process_startup_cpu_s``).
    """
    first = min(slots, processes)
    lost_first = sum(math.ceil(k / cores) for k in range(1, first + 1)) * cpu_s
    lost_later = max(0, processes - first) * cpu_s

    def bound(lost: float, per_chain: int) -> float:
        chain_s = max(c + cpu_s * (1 + (per_chain if confirms else 0)) for c, confirms in chains)
        return round(work / max(work + lost, slots * chain_s), 3)

    return {"cores": cores, "process_cpu_s": rnd(cpu_s, 3), "processes": processes,
            "idle_slot_s_first": rnd(lost_first, 1), "idle_slot_s_later": rnd(lost_later, 1),
            "any_design": bound(lost_first, 0), "this_design": bound(lost_first + lost_later, 1)}


def print_table(results: list[dict[str, Any]]) -> None:
    """Saved results side by side (one column per run)."""
    def cell(r: dict[str, Any], key: str, field: str = "utilization") -> str:
        w = r["analysis"].get(key)
        if not w:
            return "-"
        if field != "utilization":
            return f"{w[field]:.1f}"
        held = w.get("held_utilization")
        return f"**{w[field]:.3f}**" + (f" (held {held:.3f})" if held is not None else "")

    heads = [f"{r.get('label') or r['repo']} ({r['git_commit'][:7]}{'+' if r['git_commit'].endswith('+uncommitted') else ''}"
             f"{', sweep.py ' + r['sweep_py_sha256'][:7] if r.get('sweep_py_sha256') else ''})" for r in results]
    print("| | " + " | ".join(heads) + " |")
    print("|---|" + "---|" * len(results))
    for key, name in (("sweep", "whole sweep (from run_sweep, Ray up)"), ("after_startup", "after start-up"),
                      ("search", "search phase"), ("confirm", "confirm phase")):
        print(f"| utilization, {name} | " + " | ".join(cell(r, key) for r in results) + " |")
    for key, name in (("sweep", "sweep"), ("search", "search phase"), ("confirm", "confirm phase")):
        print(f"| wall s, {name} | " + " | ".join(cell(r, key, "wall_s") for r in results) + " |")
    print("| ceiling on the run's workload | " + " | ".join(f"{r['analysis']['ceiling']['utilization']:.3f}"
                                                          for r in results) + " |")
    print("| bound with start-up on this machine's cores: any design / this design | " + " | ".join(
        f"{r['analysis']['startup_bound']['any_design']:.3f} / {r['analysis']['startup_bound']['this_design']:.3f}"
        if r["analysis"].get("startup_bound") else "-" for r in results) + " |")
    print("| slot time: work / held, not working / before the first trial / no trial | " + " | ".join(
        " / ".join(f"{v:.3f}" for v in r["analysis"]["slot_time"].values()) if r["analysis"].get("slot_time") else "-"
        for r in results) + " |")
    print("| trial processes starting: share of slot time (of it before Tune's trial start) | " + " | ".join(
        f"{r['analysis']['process_start_up']['slot_share']:.3f} ({r['analysis']['process_start_up']['outside_held_share']:.3f})"
        if r["analysis"].get("process_start_up") else "-" for r in results) + " |")
    print("| first work after s | " + " | ".join(f"{r['analysis']['first_work_s']:.1f}" for r in results) + " |")
    print("| trial start-up s, median / max | " + " | ".join(
        f"{r['analysis']['trial_startup_s']['median']:.1f} / {r['analysis']['trial_startup_s']['max']:.1f}"
        if r["analysis"].get("trial_startup_s") else "-" for r in results) + " |")
    print("| max busy slots | " + " | ".join(str(r["analysis"]["max_busy_slots"]) for r in results) + " |")
    print("| trials (search + confirm) | " + " | ".join(f"{r['trials_search']} + {r['trials_confirm']}"
                                                       for r in results) + " |")
    print("| load average 1 min, before / after | " + " | ".join(f"{r['load_before'][0]:.2f} / {r['load_after'][0]:.2f}"
                                                                 for r in results) + " |")
    for r in results:
        a = r["analysis"]
        print(f"{heads[results.index(r)]}: busy slots per {a['timeline_bin_s']:g} s: "
              + " ".join(f"{x:g}" for x in a["timeline_busy_slots"]))
        print(f"{heads[results.index(r)]}: utilization per tenth of the sweep: "
              + " ".join(f"{x:.2f}" for x in a["utilization_per_tenth"]))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repo", type=Path, default=None, help="checkout whose sslsweep runs the sweep (default: this one)")
    p.add_argument("--label", default="", help="name of this run in the table (e.g. before, after)")
    p.add_argument("--slots", type=int, default=12, help="logical CPUs of the local Ray = trial slots (default 12)")
    p.add_argument("--gpus", type=int, default=0,
                   help="emulate GPUs: a local Ray with this many logical GPUs, --per-gpu trials on each "
                        "(resources.gpu=1/per-gpu; slots = gpus x per-gpu) and each GPU's busy share reported")
    p.add_argument("--per-gpu", type=int, default=4, help="trials per logical GPU with --gpus (default 4)")
    p.add_argument("--methods", nargs="+", default=["simclr", "rotation", "byol"])
    p.add_argument("--num-samples", type=int, default=8, help="search trials per method (default 8)")
    p.add_argument("--max-epochs", type=int, default=8, help="search.max_epochs (default 8)")
    p.add_argument("--grace-period", type=int, default=2)
    p.add_argument("--reduction-factor", type=int, default=3)
    p.add_argument("--confirm-seeds", type=int, default=3)
    p.add_argument("--epoch-s", type=float, default=3.0, help="seconds of sleep per fake epoch (default 3)")
    p.add_argument("--eval-s", type=float, default=6.0, help="seconds of a confirm trial's fake evaluation (default 6)")
    p.add_argument("--bin-s", type=float, default=5.0, help="timeline resolution in seconds (default 5)")
    p.add_argument("--overrides", nargs="*", default=[], help="extra Hydra overrides")
    p.add_argument("--json", default="utilization.json", help="file name of the JSON result under $OUT")
    p.add_argument("--table", nargs="+", type=Path, default=None,
                   help="print saved results (JSON files of earlier runs) side by side and exit")
    p.add_argument("--smoke", action="store_true", help="1 method x 2 trials of 2 short epochs on 2 slots")
    p.add_argument("--keep", type=Path, default=None,
                   help="copy the trials' records and the sweep's manifest to this folder (for a closer look)")
    args = p.parse_args(argv)
    if args.table:
        results = [json.loads(f.read_text().strip().splitlines()[-1]) for f in args.table]
        print_table(results)
        return {"benchmark": "utilization", "table": [str(f) for f in args.table]}
    if args.smoke:
        args.slots, args.methods, args.num_samples, args.max_epochs = 2, ["rotation"], 2, 2
        args.grace_period, args.reduction_factor, args.confirm_seeds = 1, 2, 1
        args.epoch_s, args.eval_s, args.bin_s = 0.3, 0.3, 1.0
    if args.gpus:
        args.slots = args.gpus * args.per_gpu
    repo = (args.repo or Path(__file__).resolve().parents[1]).resolve()
    use_repo(repo)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    load_before = os.getloadavg()
    hw = hardware()
    print_hardware(hw)

    from sslsweep.search.manifest import git_commit

    patched = patch_trials()
    res = [f"resources.gpu={1 / args.per_gpu:g}", "resources.cpu=1"] if args.gpus else ["resources.cpu=1",
                                                                                         "resources.gpu=0"]
    overrides = [f"method=[{','.join(args.methods)}]", "dataset=digits", *res,
                 f"search.num_samples={args.num_samples}", f"search.max_epochs={args.max_epochs}",
                 f"search.grace_period={args.grace_period}", f"search.reduction_factor={args.reduction_factor}",
                 "search.max_concurrent=0", "search.eval_every=1", f"confirm.seeds={args.confirm_seeds}",
                 "name=utilization", *args.overrides]
    with tempfile.TemporaryDirectory(prefix="utilization-") as tmp:
        stamps = Path(tmp) / "stamps"
        stamps.mkdir()
        FAKE.update(stamps=str(stamps), epoch_s=args.epoch_s, eval_s=args.eval_s)
        clock = install_clock(stamps)
        cfg, raw = compose([*overrides, f"storage={tmp}/runs"])
        from sslsweep.pipeline import run_sweep

        commit = git_commit() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "sslsweep"], capture_output=True, text=True,
                               cwd=repo).stdout.strip()
        commit += "+uncommitted" if dirty else ""  # the working tree under test, not HEAD alone
        sweep_sha = hashlib.sha256((repo / "sslsweep" / "search" / "sweep.py").read_bytes()).hexdigest()[:12]
        print(f"utilization: sslsweep from {repo} (commit {commit[:10]}{'+uncommitted' if dirty else ''}, "
              f"sweep.py sha256 {sweep_sha}); {len(args.methods)} methods "
              f"({', '.join(args.methods)}) x {args.num_samples} trials, max_epochs {args.max_epochs} "
              f"(grace {args.grace_period}, rf {args.reduction_factor}), confirm {args.confirm_seeds} seeds; "
              f"{args.slots} slots (logical CPUs), resources.cpu=1; fake epoch {args.epoch_s} s, evaluation "
              f"{args.eval_s} s; patched {patched}; Tune clock {'on' if clock else 'not installed'}", flush=True)
        t = time.time()
        ray.init(address="local", num_cpus=args.slots, num_gpus=args.gpus, include_dashboard=False, configure_logging=False,
                 log_to_driver=False, object_store_memory=300 * 1024 * 1024)
        ray_init_s = time.time() - t
        try:
            import_cpu_s = process_startup_cpu_s(runs=1 if args.smoke else 3)  # before the window opens
            t0 = time.time()
            uri = run_sweep(cfg, raw)
            run_s = time.time() - t0
        finally:
            ray.shutdown()
        load_after = os.getloadavg()
        trials = [json.loads(f.read_text()) for f in sorted(stamps.glob("*.json"))
                  if f.name.startswith(("search-", "confirm-"))]
        tune_marks = [json.loads(f.read_text()) for f in stamps.glob("tune-*.json")]
        table = pd.read_parquet(Path(uri) / "trials.parquet")
        if args.keep:
            shutil.copytree(stamps, args.keep / "stamps", dirs_exist_ok=True)
            shutil.copy(Path(uri) / "manifest.json", args.keep / "manifest.json")
            (args.keep / "t0.txt").write_text(repr(t0))
        budget = pd.read_parquet(Path(uri) / "budget.parquet")
    faked = {t["trial_id"] for t in trials if t["kind"] == "search"}
    unfaked = sorted(set(table["trial_id"].astype(str)) - faked)
    if unfaked:
        raise SystemExit(f"{len(unfaked)} search trials have no fake record (they ran the real trial function: the "
                         f"sweep builds its trainables where this benchmark's patch does not reach): {unfaked[:5]}")
    where = sorted({t["sslsweep"] for t in trials})
    if where != [str(repo / "sslsweep")]:
        raise SystemExit(f"the trials imported sslsweep from {where}, not from {repo / 'sslsweep'}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    a = analyse(trials, tune_marks, t0, args.slots, args.bin_s, import_cpu_s, cores)
    n_search = sum(1 for t in trials if t["kind"] == "search")
    n_confirm = sum(1 for t in trials if t["kind"] == "confirm")
    statuses = table.groupby("trial_id")["status"].last().value_counts().to_dict()
    print(f"ray.init {ray_init_s:.1f} s (not counted); run_sweep {run_s:.1f} s (search, confirm, Parquet, report); "
          f"{n_search} search trials ({statuses}), {n_confirm} confirm trials, {len(budget)} budget rows; "
          f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}", flush=True)
    for key in ("sweep", "after_startup", "search", "confirm"):
        w = a.get(key)
        if w:
            print(f"  {key:>13}: {w['start_s']:6.1f} to {w['end_s']:6.1f} s ({w['wall_s']:.1f} s): "
                  f"{w['busy_slot_s']:.0f} busy slot-s of {args.slots} x {w['wall_s']:.1f} -> utilization "
                  f"{w['utilization']:.3f}" + (f" (held by Tune {w['held_utilization']:.3f})"
                                               if w['held_utilization'] is not None else ""), flush=True)
    print(f"  per trial: Tune start -> function's first line {a['trial_startup_s']} s, first line -> first work "
          f"{a['entry_to_first_work_s']} s, between two pieces of work (report + checkpoint) {a['report_gap_s']} s",
          flush=True)
    for m, row in a["per_method"].items():
        print(f"  {m}: search work {row.get('search_first_work_s')} to {row.get('search_end_s')} s; confirm: Tune "
              f"started it at {row.get('confirm_tune_start_s')} s, work {row.get('confirm_first_work_s')} to "
              f"{row.get('confirm_end_s')} s", flush=True)
    c = a["ceiling"]
    print(f"  ceiling of any scheduler on this workload, without start-up: {c['utilization']:.3f} ({c['work_slot_s']:.0f} "
          f"slot-s of work = {c['work_per_slot_s']:.1f} s per slot; longest search -> confirm chain of one method "
          f"{c['longest_chain_s']:.1f} s)", flush=True)
    print(f"  trial processes (Ray actors) started: {a['actor_processes']}", flush=True)
    if a.get("slot_time"):
        st = a["slot_time"]
        print(f"  slot time: work {st['work']:.3f}, held by a trial not working (its torch import, reports, "
              f"checkpoints) {st['held_not_working']:.3f}, before Tune started the first trial "
              f"{st['before_first_trial_start']:.3f}, no trial after that (a new actor's process start until it is "
              f"ready, hand-overs, nothing left to run) {st['no_trial_after_first_start']:.3f}", flush=True)
    if a.get("process_start_up"):
        ps = a["process_start_up"]
        print(f"  trial processes starting (creation -> first work): {ps['slot_share']:.3f} of the slot time, "
              f"{ps['outside_held_share']:.3f} of it before Tune saw the trial start; per process "
              f"{ps['per_process_s']}", flush=True)
    b = a["startup_bound"]
    imp = b["imports_cpu_s"]
    print(f"  start-up on {b['cores']} cores: a new Ray worker's main thread spends at least {imp['ray.tune']:.2f} CPU-s "
          f"importing Ray Tune and {imp['torch']:.2f} torch (least of the workers measured; per thread: "
          f"{imp['per_thread']}; already imported there: {imp['preloaded'] or 'none'}; every trial process imported "
          f"torch: {b['trials_imported_torch']}), so the first {min(args.slots, b['processes'])} trial processes leave "
          f"at least {b['idle_slot_s_first']:.0f} slot-s idle and the {b['processes'] - min(args.slots, b['processes'])} "
          f"later ones {b['idle_slot_s_later']:.0f}: utilization is at most {b['any_design']:.3f} for any design that "
          f"starts a process per slot, {b['this_design']:.3f} for this one (a new process per experiment's actor)",
          flush=True)
    print(f"  first work {a['first_work_s']:.1f} s after run_sweep; max busy slots {a['max_busy_slots']} "
          f"(held {a['max_held_slots']}); bound of a sequential search: {min(args.num_samples, args.slots)}/"
          f"{args.slots} = {min(args.num_samples, args.slots) / args.slots:.3f}", flush=True)
    print(f"  busy slots per {args.bin_s:g} s: " + " ".join(f"{x:g}" for x in a["timeline_busy_slots"]), flush=True)
    print("  utilization per tenth of the sweep: " + " ".join(f"{x:.2f}" for x in a["utilization_per_tenth"]),
          flush=True)
    if a.get("devices"):
        d = a["devices"]
        print(f"  emulated GPUs ({d['count']} x {args.per_gpu} trials): busy share (at least one trial working) over "
              f"the sweep {d['sweep']['mean']:.3f}, after start-up {d['after_startup']['mean']:.3f} "
              f"(per GPU {d['after_startup']['per_gpu']}); GPU target >= 0.85 after start-up: "
              f"{'met' if d['after_startup']['mean'] >= 0.85 else 'NOT met'}", flush=True)
        print(f"  busy GPUs per {args.bin_s:g} s: " + " ".join(f"{x:g}" for x in d["timeline_busy_gpus"]), flush=True)
    met = a["sweep"]["utilization"] >= 0.85
    print(f"target >= 0.85 over the sweep: {'met' if met else 'NOT met'} ({a['sweep']['utilization']:.3f})", flush=True)
    return emit({"benchmark": "utilization", "date": now(), **hw, "label": args.label, "repo": str(repo),
                 "git_commit": commit, "sweep_py_sha256": sweep_sha, "methods": args.methods, "slots": args.slots,
                 "gpus": args.gpus, "per_gpu": args.per_gpu if args.gpus else None, "num_samples": args.num_samples,
                 "max_epochs": args.max_epochs, "grace_period": args.grace_period,
                 "reduction_factor": args.reduction_factor, "confirm_seeds": args.confirm_seeds,
                 "epoch_s": args.epoch_s, "eval_s": args.eval_s, "overrides": overrides,
                 "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in load_after],
                 "ray_init_s": rnd(ray_init_s, 2), "run_sweep_s": rnd(run_s, 2), "trials_search": n_search,
                 "trials_confirm": n_confirm, "search_statuses": statuses, "analysis": a, "target": 0.85,
                 "target_met": met}, args.json)


if __name__ == "__main__":
    main()
