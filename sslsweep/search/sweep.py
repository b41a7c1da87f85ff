"""The stages of a sweep after its data passed the checks (:mod:`sslsweep.pipeline`): prepare the
data once -> search and confirm every method, all methods at once -> Parquet -> report.

Each method runs in its own driver thread (:mod:`sslsweep.search.concurrency`): its search (its
own Tune experiment, Optuna study and ASHA rungs), then at once its confirm runs, while the other
methods' searches go on; see docs/concurrency.md. Each method records its progress in
``manifest.json`` as it goes, so ``sslsweep resume DIR`` (or ``sslsweep sweep resume=DIR``)
continues an interrupted sweep: searched methods are not searched again, confirmed methods not
confirmed again, interrupted Tune experiments are restored (their trials from their checkpoints),
and the Optuna studies keep their history in their journal files (:mod:`sslsweep.search.recovery`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import getpass
import logging
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd
import pyarrow.parquet as pq
from ray import tune

from sslsweep.analysis.report import build_report
from sslsweep.config import ConfigError, MethodConfig, SweepConfig, to_dict
from sslsweep.data import Prepared, budget_subset, budgets, prepare
from sslsweep.schema import BUDGET, MANIFEST, OPTUNA_DIR, TRIAL_COLUMNS, TRIALS, TUNE_DIR
from sslsweep.search import recovery
from sslsweep.search.choice import choices, confirm_plan
from sslsweep.search.concurrency import first_events, reset_first_events, run_concurrently, start_gate
from sslsweep.search.manifest import git_commit, hardware, now, process_age_s, versions
from sslsweep.search.ray_init import check_storage_shared, init_ray
from sslsweep.search.results import best_configs, budget_rows, budget_table, trial_rows, trials_table
from sslsweep.search.tuner import confirm_tuner, restore_or_new, search_tuner
from sslsweep.storage import Storage
from sslsweep.trainables.scores import BudgetSubset
from sslsweep.trainables.trial import TrialSettings, confirm_trial, search_trial

log = logging.getLogger("sslsweep")


def confirm_name(method: str) -> str:
    """The Tune experiment of ``method``'s confirm runs (``tune/confirm-<method>``)."""
    return f"confirm-{method}"


class Sweep:
    """A sweep directory and its manifest; :meth:`run` executes (or continues) every stage.

    The methods' threads share this object: the manifest, the tables' rows and the trial configs
    are read and written under :attr:`lock`, and each file is rewritten whole under it.

    Args:
        started: when the sweep command began (``time.time()``; default: now), the zero of the
            start-up times in ``manifest["startup"]``.
    """

    def __init__(self, cfg: SweepConfig, raw: dict[str, Any], storage: Storage, manifest: dict[str, Any],
                 *, started: float | None = None) -> None:
        self.cfg, self.raw, self.st, self.manifest = cfg, raw, storage, manifest
        self.metric = cfg.metric_name
        self.started = time.time() if started is None else started
        self.lock = threading.RLock()
        self.configs: dict[str, dict[str, Any]] = {}  # search trial id -> its sampled config
        self.rows: dict[str, list[dict[str, Any]]] = {}  # method -> its trials.parquet rows
        self.trials = pd.DataFrame()  # every method's rows read so far (what the confirm runs choose from)
        self.budget: dict[str, list[dict[str, Any]]] = {}  # method -> its budget.parquet rows
        self.busy: dict[str, tuple[int, float]] = {}  # phase -> (methods in it now, since when)
        self.to_ray_s: float | None = None  # seconds from ``started`` to Ray ready
        self.created = False  # True for a sweep this process started (not a resume)
        self.local = Path(storage.root) if not storage.remote else \
            Path.home() / ".cache" / "sslsweep" / "sweeps" / manifest["sweep_id"]

    # ------------------------------------------------------------------ creation

    @staticmethod
    def create(cfg: SweepConfig, raw: dict[str, Any], *, started: float | None = None) -> "Sweep":
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        sweep_id = f"{cfg.name or 'sweep'}-{stamp}-{secrets.token_hex(2)}"
        st = Storage(f"{cfg.storage.rstrip('/')}/{sweep_id}")
        manifest = {
            "sweep_id": sweep_id, "metric": cfg.metric_name, "mode": "max", "started": now(),
            "finished": None, "config": raw, "spaces": to_dict(cfg)["methods"], "versions": versions(),
            "git_commit": git_commit(), "user": getpass.getuser(),
            "seeds": {"search": cfg.seed, "confirm": list(range(cfg.confirm.seeds))},
            "resources": {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu, "workers": cfg.resources.workers},
            "phases": {}, "cost": {},
            "progress": {"searched": [], "confirmed_methods": [], "confirmed": False, "reported": False},
        }
        sweep = Sweep(cfg, raw, st, manifest, started=started)
        sweep.created = True
        return sweep

    def save_manifest(self) -> None:
        """Write the manifest, with the start-up times known so far once Ray is up (:meth:`_startup`)."""
        with self.lock:
            if self.to_ray_s is not None:
                self.manifest["startup" if self.created else "startup_resume"] = self._startup()
            self.st.write_json(MANIFEST, self.manifest)

    # ------------------------------------------------------------------ stages

    def run(self) -> str:
        """Run every stage not yet done; returns the sweep's URI."""
        reset_first_events()
        data = self._prepare()  # before Ray: data that fails to decode fails with Ray never started
        init_ray()
        self.to_ray_s = time.time() - self.started
        try:
            check_storage_shared(self.st)  # multi-node: every node must see the sweep directory
        except ConfigError:
            if self.created:  # refused before anything was computed: leave no half-made sweep behind
                self.st.fs.delete_dir(self.st.root)
            raise
        self.manifest["hardware"] = hardware()
        self._upgrade_progress()
        search_fn = tune.with_parameters(search_trial, data=data, settings=self._settings(data, confirm=False))
        confirm_fn = tune.with_parameters(confirm_trial, data=data, settings=self._settings(data, confirm=True))
        try:
            run_concurrently({m.name: functools.partial(self._run_method, search_fn, confirm_fn, m)
                              for m in self.cfg.methods})
        finally:
            self.save_manifest()  # the start-up times, also when a method failed
        self._all_confirmed()
        self.manifest["finished"] = now()
        self.save_manifest()
        self._report()
        return self.st.uri

    def _prepare(self) -> Prepared:
        """The data, decoded once; checked against the fingerprint a resumed sweep started with
        (or the name an older sslsweep gave the same data: ``Prepared.fingerprint_aliases``)."""
        started = self.manifest.get("dataset", {}).get("fingerprint")
        stream = None  # a resumed sweep under residency=auto reads its data as it started
        if started is not None and self.cfg.dataset.residency == "auto":
            was = self.manifest["dataset"].get("residency")
            stream = was == "stream" if was is not None else started.startswith("stream-")
        data = prepare(self.cfg.dataset, stream=stream)
        if started not in (None, data.fingerprint, *data.fingerprint_aliases):
            raise ValueError(f"resume: the dataset changed since the sweep started (fingerprint "
                             f"{self.manifest['dataset']['fingerprint']} -> {data.fingerprint})")
        names = [data.fingerprint, *data.fingerprint_aliases]
        self.manifest["dataset"] = {
            "name": self.cfg.dataset.name, "path": self.cfg.dataset.path,
            "fingerprint": started or data.fingerprint,  # a resumed sweep keeps the name it started with
            "fingerprint_aliases": [f for f in names if f != (started or data.fingerprint)],
            "n_train": int(len(data.splits.train)), "n_val": int(len(data.splits.val)),
            "n_test": int(len(data.splits.test)), "num_classes": data.num_classes, "shape": list(data.shape),
            "residency": data.residency}
        self.save_manifest()
        log.info("sweep %s: %s, %d train / %d val / %d test images %s", self.manifest["sweep_id"],
                 self.cfg.dataset.name, len(data.splits.train), len(data.splits.val), len(data.splits.test),
                 data.shape)
        return data

    def _settings(self, data: Prepared, *, confirm: bool) -> TrialSettings:
        c = self.cfg
        subsets: tuple[BudgetSubset, ...] = ()
        if "budget" in c.eval.rules and not confirm:  # every confirm seed's subsets, drawn here: a trial reads only theirs
            subsets = tuple((kind, value, seed, budget_subset(data.labels, data.splits.train, kind, value, seed=seed))
                            for seed in range(c.confirm.seeds) for kind, value in budgets(c.dataset))
        return TrialSettings(encoder=c.encoder, trainer=c.trainer, eval=c.eval, confirm=c.confirm,
                             metric=self.metric, max_epochs=c.confirm_epochs if confirm else c.search.max_epochs,
                             eval_every=c.search.eval_every, num_threads=c.trainer.num_threads or int(c.resources.cpu),
                             budgets=tuple(budgets(c.dataset)), selections=c.dataset.label_selection,
                             workers=c.resources.workers, subsets=subsets)

    def _device_count(self) -> float:
        """Devices one trial holds: its GPUs (else CPUs) per rank, times its ranks."""
        r = self.cfg.resources
        return (r.gpu if r.gpu > 0 else r.cpu) * r.workers

    def _run_method(self, search_fn: Any, confirm_fn: Any, method: MethodConfig) -> None:
        """One method's thread: its search, then at once its confirm runs."""
        self._search(search_fn, method)
        self._confirm(confirm_fn, [method])

    def _in_order(self, names: Sequence[str]) -> list[str]:
        """``names`` in the order of ``methods=[...]``: the manifest reads the same whichever method ended first."""
        return [m.name for m in self.cfg.methods if m.name in set(names)]

    @contextlib.contextmanager
    def _phase(self, phase: str) -> Iterator[None]:
        """Count the block as time of ``phase`` in ``manifest["phases"]``: started when the first
        method enters it, finished when the last one leaves; ``wall_s`` adds up the time at least
        one method was in it (over every driver of a resumed sweep)."""
        with self.lock:
            info = self.manifest["phases"].setdefault(phase, {"started": now()})
            n, since = self.busy.get(phase, (0, time.time()))
            self.busy[phase] = (n + 1, since)
            if n == 0:
                self.save_manifest()
        try:
            yield
        finally:
            with self.lock:
                n, since = self.busy[phase]
                self.busy[phase] = (n - 1, since)
                if n == 1:
                    del self.busy[phase]
                    info["finished"] = now()
                    info["wall_s"] = info.get("wall_s", 0.0) + time.time() - since

    # ------------------------------------------------------------------ search

    def _search(self, trainable: Any, method: MethodConfig) -> None:
        """Search ``method`` (or read its finished search back); trials.parquet then holds the
        rows of every method done so far, and the manifest its cost."""
        t0 = time.time()
        done = method.name in self.manifest["progress"]["searched"]
        with self._phase("search") if not done else contextlib.nullcontext():
            grid = self._search_method(trainable, method, done=done)
        rows = trial_rows(self.manifest["sweep_id"], self.metric, self.cfg.search.max_epochs, grid)
        with self.lock:
            self.rows[method.name] = rows
            self.configs.update({r.metrics.get("trial_id"): dict(r.config) for r in grid if r.metrics})
            every = [r for name in self._in_order(list(self.rows)) for r in self.rows[name]]
            self.trials = pd.DataFrame(every)
            if not done:
                cost = self.manifest["cost"].setdefault(method.name, {})
                cost["search_wall_s"] = cost.get("search_wall_s", 0.0) + time.time() - t0
                cost["search_device_s"] = sum(r.metrics.get("trial_wall_s", 0.0) for r in grid if r.metrics) \
                    * self._device_count()
                progress = self.manifest["progress"]
                progress["searched"] = self._in_order([*progress["searched"], method.name])
            self.st.write_table(TRIALS, trials_table(every))  # after every method: nothing lost
            self.save_manifest()

    def _search_method(self, trainable: Any, method: MethodConfig, *, done: bool) -> list[Any]:
        """The results of one method's search, run, resumed or read back (see :mod:`recovery`)."""
        rel = f"{OPTUNA_DIR}/{method.name}.journal"
        journal = self.local / rel

        def fit(name: str, **top_up: Any) -> list[Any]:
            return self._fit_search(trainable, method, journal, name, done=done, **top_up)

        def history_of(grid: list[Any]) -> recovery.History:
            rows = trial_rows(self.manifest["sweep_id"], self.metric, self.cfg.search.max_epochs, grid)
            return recovery.asha_history(rows, self.metric)

        with recovery.journal_synced(self.st, rel, journal, running=not done), \
                recovery.restorable_search(method.name, journal, searched=bool(method.searched)):
            return recovery.with_top_ups(fit, method=method.name, num_samples=self.cfg.search.num_samples,
                                         searched=bool(method.searched), done=done, history_of=history_of)

    def _fit_search(self, trainable: Any, method: MethodConfig, journal: Path, name: str, *, done: bool,
                    num_samples: int | None = None, top_up: int = 0,
                    history: list[tuple[str, list[dict[str, Any]]]] | None = None) -> list[Any]:
        """The results of the search experiment ``name`` of ``method``: run, or resumed where an
        earlier driver left it; read only if the method was already searched (none if it never ran)."""
        path = self.st.child_uri(TUNE_DIR, name)
        if done and not tune.Tuner.can_restore(path):
            return []
        with start_gate():
            tuner = restore_or_new(path, trainable, self.cfg.resources,
                                   lambda: search_tuner(trainable, method, self.cfg.search, self.cfg.resources,
                                                        metric=self.metric, seed=self.cfg.seed,
                                                        storage_path=self.st.child_uri(TUNE_DIR), journal=journal,
                                                        name=name, num_samples=num_samples, top_up=top_up,
                                                        history=history or (), tracking=self.cfg.tracking,
                                                        sweep_dir=self.local),
                                   # Tune's saved state drops param_space: give it back for a plain run
                                   param_space=None if method.searched else
                                   {"method": method.name, "seed": self.cfg.seed, **method.fixed})
            return list(tuner.get_results() if done else tuner.fit())

    # ------------------------------------------------------------------ confirm

    def _confirm(self, trainable: Any, methods: Sequence[MethodConfig] | None = None) -> None:
        """Retrain the best configuration of each of ``methods`` (default: every method) with every
        confirm seed, one Tune experiment per method; budget.parquet then holds the rows of every
        method confirmed so far. A method already confirmed is skipped."""
        for method in self.cfg.methods if methods is None else methods:
            if method.name in self.manifest["progress"]["confirmed_methods"]:
                continue
            runs = self._confirm_runs(method)
            grid: list[Any] = []
            if runs:
                with self._phase("confirm"):
                    grid = self._fit_confirm(trainable, method.name, runs)
            self._record_confirm(method.name, grid, has_runs=bool(runs))

    def _confirm_runs(self, method: MethodConfig) -> list[dict[str, Any]]:
        """The configs of ``method``'s confirm runs: one per search trial and confirm seed at which a
        selection rule chose that trial for some label budget (:mod:`sslsweep.search.choice`; the
        budget rule chooses per seed, with that seed's labelled subset), each with the budgets it is
        evaluated at and the rules that chose it there (none if no trial of it finished)."""
        with self.lock:
            trials = self.trials  # every method's rows so far; the choice is per method
        trials = trials if len(trials) else pd.DataFrame(columns=list(TRIAL_COLUMNS))
        chosen = choices(trials[trials["method"] == method.name], self.cfg.eval.rules, budgets(self.cfg.dataset),
                         range(self.cfg.confirm.seeds))
        if chosen.empty:
            log.warning("method %s: no trial finished; it is left out of the confirm phase", method.name)
            return []
        plan = confirm_plan(chosen)
        with self.lock:
            kept = [r for r in self.manifest.get("choices", []) if r["method"] != method.name]
            self.manifest["choices"] = kept + chosen.to_dict("records")
            configs = [self.configs[t] if t in self.configs else {"method": method.name, **self._hp_of(t)}
                       for (t, _), _ in plan]
        log.info("method %s: %d confirm runs of %d chosen trials (%d seeds)", method.name, len(plan),
                 len({t for (t, _), _ in plan}), self.cfg.confirm.seeds)
        return [{**config, "seed": seed, "source_trial_id": t, "budgets": at}
                for ((t, seed), at), config in zip(plan, configs)]

    def _hp_of(self, trial_id: str) -> dict[str, Any]:
        """The hyperparameters of a search trial as trials.parquet holds them (a resumed sweep whose
        trial configs Tune did not give back)."""
        return best_configs(self.trials[self.trials["trial_id"] == trial_id]).popitem()[1]["hp"]

    def _fit_confirm(self, trainable: Any, method: str, runs: list[dict[str, Any]]) -> list[Any]:
        """The results of ``method``'s confirm experiment: run, or resumed where an earlier driver left it."""
        tune_root = self.st.child_uri(TUNE_DIR)
        name = confirm_name(method)
        with start_gate():
            tuner = restore_or_new(f"{tune_root}/{name}", trainable, self.cfg.resources,
                                   lambda: confirm_tuner(trainable, runs, self.cfg.resources, name=name,
                                                         max_concurrent=self.cfg.search.max_concurrent,
                                                         storage_path=tune_root, max_failures=self.cfg.search.max_failures,
                                                         tracking=self.cfg.tracking, sweep_dir=self.local),
                                   param_space={"run": tune.grid_search(runs)})
            grid = list(tuner.fit())
        for r in grid:
            if r.error is not None:
                log.error("confirm trial %s failed: %s", r.config, str(r.error).strip().splitlines()[-1])
        return grid

    def _record_confirm(self, method: str, grid: list[Any], *, has_runs: bool) -> None:
        """Write budget.parquet with ``method``'s rows added, its confirm cost, and mark it confirmed.

        ``confirm_wall_s`` is the sum of the method's confirm trials' own seconds (its trials can
        share the cluster with other methods' trials)."""
        rows = budget_rows(self.manifest["sweep_id"], grid, self.cfg.eval.selection)
        if has_runs and not rows:  # runs existed but none produced results: fail loudly, keep what is stored
            raise RuntimeError(f"the confirm runs of {method} produced no results (every one failed; see the errors "
                               f"above and {self.st.child_uri(TUNE_DIR, confirm_name(method))}); fix the cause and "
                               f"run `sslsweep resume {self.st.uri}`")
        seconds = sum(float(r.metrics.get("trial_wall_s", 0.0)) for r in grid if r.metrics)
        with self.lock:
            if grid:
                cost = self.manifest["cost"].setdefault(method, {})
                cost["confirm_wall_s"], cost["confirm_device_s"] = seconds, seconds * self._device_count()
            self.budget[method] = rows
            self.st.write_table(BUDGET, budget_table(self._budget_union()))
            progress = self.manifest["progress"]
            progress["confirmed_methods"] = self._in_order([*progress["confirmed_methods"], method])
            self.save_manifest()

    def _budget_union(self) -> list[dict[str, Any]]:
        """The budget rows of every confirmed method: this driver's, and those an earlier one wrote."""
        with self.lock:
            return [r for name in self._in_order(list(self.budget)) for r in self.budget[name]]

    def _all_confirmed(self) -> None:
        """Mark the confirm phase done (budget.parquet exists even if no method had a run to confirm)."""
        with self.lock:
            self.st.write_table(BUDGET, budget_table(self._budget_union()))
            self.manifest["progress"]["confirmed"] = True
            self.save_manifest()

    # ------------------------------------------------------------------ resume, start-up, report

    def _upgrade_progress(self) -> None:
        """Read what earlier drivers confirmed: ``progress.confirmed_methods`` and their budget rows.

        A sweep made before methods were confirmed one by one records only ``progress.confirmed``
        (every method or none) and one ``tune/confirm`` experiment: confirmed, its methods' rows
        are read from budget.parquet; unconfirmed, each method's confirm runs start afresh in
        ``confirm-<method>`` (runs of the old experiment are not reused)."""
        progress = self.manifest["progress"]
        if "confirmed_methods" not in progress:
            progress["confirmed_methods"] = [m.name for m in self.cfg.methods] if progress.get("confirmed") else []
            if not progress["confirmed_methods"] and self.st.exists(TUNE_DIR, "confirm"):
                log.warning("the confirm runs of the earlier driver (%s) are not reused: each method's confirm "
                            "runs start again", self.st.child_uri(TUNE_DIR, "confirm"))
        confirmed = set(progress["confirmed_methods"])
        if confirmed and self.st.exists(BUDGET):
            table = pq.read_table(self.st.path(BUDGET), filesystem=self.st.fs)
            for row in table.to_pylist():
                if row["method"] in confirmed:
                    self.budget.setdefault(row["method"], []).append(row)

    def _startup(self) -> dict[str, float | None]:
        """``manifest["startup"]`` (a resume's: ``startup_resume``): seconds from the sweep command's
        start to Ray being ready, to the first trial started and to the first trial result the
        driver received (null until one came); ``before_sweep_s``: the process's own start-up
        before that (interpreter, imports, configuration)."""
        events = first_events()
        age = process_age_s()

        def since(event: str) -> float | None:
            return round(events[event] - self.started, 3) if event in events else None

        return {"before_sweep_s": None if age is None else round(age - (time.time() - self.started), 3),
                "to_ray_s": None if self.to_ray_s is None else round(self.to_ray_s, 3),
                "to_first_trial_s": since("trial_start"), "to_first_result_s": since("trial_result")}

    def _report(self) -> None:
        build_report([self.st.uri])
        self.manifest["progress"]["reported"] = True
        self.save_manifest()
