"""The stages of a sweep after its data passed the checks (:mod:`sslsweep.pipeline`): prepare the
data once -> search per method -> confirm -> Parquet -> report.

Each stage records its progress in ``manifest.json`` so ``sslsweep resume DIR`` (or
``sslsweep sweep resume=DIR``) continues an interrupted sweep: finished methods are not searched
again, interrupted Tune experiments are restored (their trials from their checkpoints), and the
Optuna studies keep their history in their journal files (:mod:`sslsweep.search.recovery`).
"""

from __future__ import annotations

import datetime as dt
import getpass
import logging
import secrets
import time
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune

from sslsweep.analysis.report import build_report
from sslsweep.config import ConfigError, SweepConfig, to_dict
from sslsweep.data import budgets, prepare
from sslsweep.schema import BUDGET, MANIFEST, OPTUNA_DIR, TRIALS, TUNE_DIR
from sslsweep.search import recovery
from sslsweep.search.manifest import git_commit, hardware, now, versions
from sslsweep.search.ray_init import check_storage_shared, init_ray
from sslsweep.search.results import best_configs, budget_rows, budget_table, trial_rows, trials_table
from sslsweep.search.tuner import confirm_tuner, restore_or_new, search_tuner
from sslsweep.storage import Storage
from sslsweep.trainables.trial import TrialSettings, confirm_trial, search_trial

log = logging.getLogger("sslsweep")


class Sweep:
    """A sweep directory and its manifest; :meth:`run` executes (or continues) every stage."""

    def __init__(self, cfg: SweepConfig, raw: dict[str, Any], storage: Storage, manifest: dict[str, Any]) -> None:
        self.cfg, self.raw, self.st, self.manifest = cfg, raw, storage, manifest
        self.metric = cfg.metric_name
        self.configs: dict[str, dict[str, Any]] = {}  # search trial id -> its sampled config
        self.trials = pd.DataFrame()
        self.created = False  # True for a sweep this process started (not a resume)
        self.local = Path(storage.root) if not storage.remote else \
            Path.home() / ".cache" / "sslsweep" / "sweeps" / manifest["sweep_id"]

    # ------------------------------------------------------------------ creation

    @staticmethod
    def create(cfg: SweepConfig, raw: dict[str, Any]) -> "Sweep":
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        sweep_id = f"{cfg.name or 'sweep'}-{stamp}-{secrets.token_hex(2)}"
        st = Storage(f"{cfg.storage.rstrip('/')}/{sweep_id}")
        manifest = {
            "sweep_id": sweep_id, "metric": cfg.metric_name, "mode": "max", "started": now(),
            "finished": None, "config": raw, "spaces": to_dict(cfg)["methods"], "versions": versions(),
            "git_commit": git_commit(), "user": getpass.getuser(),
            "seeds": {"search": cfg.seed, "confirm": list(range(cfg.confirm.seeds))},
            "resources": {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu},
            "phases": {}, "cost": {}, "progress": {"searched": [], "confirmed": False, "reported": False},
        }
        sweep = Sweep(cfg, raw, st, manifest)
        sweep.created = True
        return sweep

    def save_manifest(self) -> None:
        self.st.write_json(MANIFEST, self.manifest)

    # ------------------------------------------------------------------ stages

    def run(self) -> str:
        """Run every stage not yet done; returns the sweep's URI."""
        data = prepare(self.cfg.dataset)
        if self.manifest.get("dataset", {}).get("fingerprint") not in (None, data.fingerprint):
            raise ValueError(f"resume: the dataset changed since the sweep started (fingerprint "
                             f"{self.manifest['dataset']['fingerprint']} -> {data.fingerprint})")
        self.manifest["dataset"] = {
            "name": self.cfg.dataset.name, "path": self.cfg.dataset.path, "fingerprint": data.fingerprint,
            "n_train": int(len(data.splits.train)), "n_val": int(len(data.splits.val)),
            "n_test": int(len(data.splits.test)), "num_classes": data.num_classes, "shape": list(data.shape)}
        self.save_manifest()
        log.info("sweep %s: %s, %d train / %d val / %d test images %s", self.manifest["sweep_id"],
                 self.cfg.dataset.name, len(data.splits.train), len(data.splits.val), len(data.splits.test),
                 data.shape)
        init_ray()
        try:
            check_storage_shared(self.st)  # multi-node: every node must see the sweep directory
        except ConfigError:
            if self.created:  # refused before anything was computed: leave no half-made sweep behind
                self.st.fs.delete_dir(self.st.root)
            raise
        self.manifest["hardware"] = hardware()
        search_fn = tune.with_parameters(search_trial, data=data, settings=self._settings(confirm=False))
        confirm_fn = tune.with_parameters(confirm_trial, data=data, settings=self._settings(confirm=True))
        self._search(search_fn)
        self._confirm(confirm_fn)
        self.manifest["finished"] = now()
        self.save_manifest()
        self._report()
        return self.st.uri

    def _settings(self, *, confirm: bool) -> TrialSettings:
        c = self.cfg
        return TrialSettings(encoder=c.encoder, trainer=c.trainer, eval=c.eval, confirm=c.confirm,
                             metric=self.metric, max_epochs=c.confirm_epochs if confirm else c.search.max_epochs,
                             eval_every=c.search.eval_every, num_threads=c.trainer.num_threads or int(c.resources.cpu),
                             budgets=tuple(budgets(c.dataset)), selections=c.dataset.label_selection)

    def _device_count(self) -> float:
        return self.cfg.resources.gpu if self.cfg.resources.gpu > 0 else self.cfg.resources.cpu

    def _search(self, trainable: Any) -> None:
        """Search every method in turn; its trials table and cost are saved after each method."""
        phase = self.manifest["phases"].setdefault("search", {"started": now()})
        all_rows: list[dict[str, Any]] = []
        for method in self.cfg.methods:
            t0 = time.time()
            done = method.name in self.manifest["progress"]["searched"]
            grid = self._search_method(trainable, method, done=done)
            rows = trial_rows(self.manifest["sweep_id"], self.metric, self.cfg.search.max_epochs, grid)
            all_rows += rows
            self.configs.update({r.metrics.get("trial_id"): dict(r.config) for r in grid if r.metrics})
            if not done:
                cost = self.manifest["cost"].setdefault(method.name, {})
                cost["search_wall_s"] = cost.get("search_wall_s", 0.0) + time.time() - t0
                cost["search_device_s"] = sum(r.metrics.get("trial_wall_s", 0.0) for r in grid if r.metrics) \
                    * self._device_count()
                self.manifest["progress"]["searched"].append(method.name)
            self.st.write_table(TRIALS, trials_table(all_rows))  # after every method: nothing lost
            self.save_manifest()
        phase["finished"] = now()
        phase["wall_s"] = sum(v.get("search_wall_s", 0.0) for v in self.manifest["cost"].values())
        self.trials = pd.DataFrame(all_rows)

    def _search_method(self, trainable: Any, method: Any, *, done: bool) -> list[Any]:
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

    def _fit_search(self, trainable: Any, method: Any, journal: Path, name: str, *, done: bool,
                    num_samples: int | None = None, top_up: int = 0,
                    history: list[tuple[str, list[dict[str, Any]]]] | None = None) -> list[Any]:
        """The results of the search experiment ``name`` of ``method``: run, or resumed where an
        earlier driver left it; read only if the method was already searched (none if it never ran)."""
        path = self.st.child_uri(TUNE_DIR, name)
        if done and not tune.Tuner.can_restore(path):
            return []
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

    def _confirm(self, trainable: Any) -> None:
        best = best_configs(self.trials)
        self.manifest["best"] = best
        runs = []
        for method in self.cfg.methods:
            if method.name not in best:
                log.warning("method %s: no trial finished; it is left out of the confirm phase", method.name)
                continue
            b = best[method.name]
            config = self.configs.get(b["trial_id"], {"method": method.name, **b["hp"]})
            for seed in range(self.cfg.confirm.seeds):
                runs.append({**config, "seed": seed, "source_trial_id": b["trial_id"]})
        phase = self.manifest["phases"].setdefault("confirm", {"started": now()})
        if not runs:  # every method's trials failed or diverged: nothing to confirm, the report says why
            log.warning("no method has a finished trial: the confirm phase is skipped")
            self.st.write_table(BUDGET, budget_table([]))
            phase["finished"], phase["wall_s"] = now(), 0.0
            self.manifest["progress"]["confirmed"] = True
            self.save_manifest()
            return
        t0 = time.time()
        tune_root = self.st.child_uri(TUNE_DIR)
        tuner = restore_or_new(f"{tune_root}/confirm", trainable, self.cfg.resources,
                               lambda: confirm_tuner(trainable, runs, self.cfg.resources,
                                                     max_concurrent=self.cfg.search.max_concurrent,
                                                     storage_path=tune_root, max_failures=self.cfg.search.max_failures,
                                                     tracking=self.cfg.tracking, sweep_dir=self.local),
                               param_space={"run": tune.grid_search(runs)})
        grid = tuner.fit() if not self.manifest["progress"]["confirmed"] else tuner.get_results()
        trial_s: dict[str, float] = {}
        for r in grid:
            if r.metrics and r.config:
                m = r.config["run"]["method"]
                trial_s[m] = trial_s.get(m, 0.0) + float(r.metrics.get("trial_wall_s", 0.0))
            if r.error is not None:
                log.error("confirm trial %s failed: %s", r.config, str(r.error).strip().splitlines()[-1])
        for m, seconds in trial_s.items():  # trial-seconds: the phase's wall time is shared by methods
            cost = self.manifest["cost"].setdefault(m, {})
            cost["confirm_wall_s"], cost["confirm_device_s"] = seconds, seconds * self._device_count()
        rows = budget_rows(self.manifest["sweep_id"], grid)
        if not rows:  # runs existed but none produced results: fail loudly, keep what is stored for a resume
            raise RuntimeError("the confirm phase produced no results (every confirm trial failed; see the errors "
                               f"above and {tune_root}/confirm); fix the cause and run `sslsweep resume {self.st.uri}`")
        self.st.write_table(BUDGET, budget_table(rows))
        phase["finished"] = now()
        phase["wall_s"] = phase.get("wall_s", 0.0) + time.time() - t0
        self.manifest["progress"]["confirmed"] = True
        self.save_manifest()

    def _report(self) -> None:
        build_report([self.st.uri])
        self.manifest["progress"]["reported"] = True
        self.save_manifest()
