"""The pipeline of one sweep: data once -> search per method -> confirm -> Parquet -> report.

Each stage records its progress in ``manifest.json`` so ``sslsweep resume DIR`` (or
``sslsweep sweep resume=DIR``) continues an interrupted sweep: finished methods are not searched
again, interrupted Tune experiments are restored (their trials from their checkpoints), and the
Optuna studies keep their history in their journal files.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import logging
import os
import platform
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import pandas as pd

from sslsweep import __version__
from sslsweep.config import ConfigError, SweepConfig, check_image_shape, from_dictconfig, to_dict
from sslsweep.search.ray_init import check_storage_shared, init_ray
from sslsweep.search.results import best_configs, budget_rows, budget_table, trial_rows, trials_table
from sslsweep.search.storage import Mirror, Storage, fetch_log, open_sweep_dir
from sslsweep.trainables.data import budgets, check_data, prepare

log = logging.getLogger("sslsweep")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except Exception:
        return None


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "sslsweep": __version__}
    for pkg in ("torch", "torchvision", "ray", "optuna", "pyarrow", "hydra-core", "scikit-learn", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _hardware() -> dict[str, Any]:
    gpus: list[str] = []
    try:
        import torch

        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:
        pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import ray

    cluster = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU", "memory")}
    return {"cpu": cpu, "cpus": os.cpu_count(), "gpus": gpus, "host": platform.node(),
            "ray_nodes": len(ray.nodes()), "ray_resources": cluster}


class Sweep:
    """A sweep directory and its manifest; :meth:`run` executes (or continues) every stage."""

    def __init__(self, cfg: SweepConfig, raw: dict[str, Any], storage: Storage, manifest: dict[str, Any]) -> None:
        self.cfg, self.raw, self.st, self.manifest = cfg, raw, storage, manifest
        self.metric = f"{cfg.eval.metric}_top1"
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
            "sweep_id": sweep_id, "metric": f"{cfg.eval.metric}_top1", "mode": "max", "started": _now(),
            "finished": None, "config": raw, "spaces": to_dict(cfg)["methods"], "versions": _versions(),
            "git_commit": _git_commit(), "user": getpass.getuser(),
            "seeds": {"search": cfg.seed, "confirm": list(range(cfg.confirm.seeds))},
            "resources": {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu},
            "phases": {}, "cost": {}, "progress": {"searched": [], "confirmed": False, "reported": False},
        }
        sweep = Sweep(cfg, raw, st, manifest)
        sweep.created = True
        return sweep

    @staticmethod
    def resume(uri: str) -> "Sweep":
        st = open_sweep_dir(uri)
        manifest = st.read_json("manifest.json")
        cfg = from_dictconfig(manifest["config"])
        return Sweep(cfg, manifest["config"], st, manifest)

    def save_manifest(self) -> None:
        self.st.write_json("manifest.json", self.manifest)

    # ------------------------------------------------------------------ stages

    def run(self) -> str:
        """Run every stage not yet done; returns the sweep's URI."""
        check_data(self.cfg)
        data = prepare(self.cfg.dataset)
        check_image_shape(self.cfg, data.shape)
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
        self.manifest["hardware"] = _hardware()
        from ray import tune

        from sslsweep.trainables.trial import confirm_trial, search_trial

        search_fn = tune.with_parameters(search_trial, data=data, settings=self._settings(confirm=False))
        confirm_fn = tune.with_parameters(confirm_trial, data=data, settings=self._settings(confirm=True))
        self._search(search_fn)
        self._confirm(confirm_fn)
        self.manifest["finished"] = _now()
        self.save_manifest()
        self._report()
        return self.st.uri

    def _settings(self, *, confirm: bool) -> Any:
        from sslsweep.trainables.trial import TrialSettings

        c = self.cfg
        return TrialSettings(encoder=c.encoder, trainer=c.trainer, eval=c.eval, confirm=c.confirm,
                             metric=self.metric, max_epochs=c.confirm_epochs if confirm else c.search.max_epochs,
                             eval_every=c.search.eval_every, num_threads=c.trainer.num_threads or int(c.resources.cpu),
                             budgets=tuple(budgets(c.dataset)))

    def _device_count(self) -> float:
        return self.cfg.resources.gpu if self.cfg.resources.gpu > 0 else self.cfg.resources.cpu

    def _search(self, trainable: Any) -> None:
        """Search every method in turn; its trials table and cost are saved after each method."""
        phase = self.manifest["phases"].setdefault("search", {"started": _now()})
        all_rows: list[dict[str, Any]] = []
        for method in self.cfg.methods:
            journal = self.local / "optuna" / f"{method.name}.journal"
            if self.st.remote:
                fetch_log(self.st, f"optuna/{method.name}.journal", journal)
            t0 = time.time()
            done = method.name in self.manifest["progress"]["searched"]
            # remote storage: the journal goes up while the search runs, so a new driver can resume it
            with Mirror(self.st, journal, f"optuna/{method.name}.journal", JOURNAL_UPLOAD_S) \
                    if self.st.remote and not done else contextlib.nullcontext():
                grid = self._search_method(trainable, method, journal, done=done)
            rows = trial_rows(self.manifest["sweep_id"], self.metric, self.cfg.search.max_epochs, grid)
            all_rows += rows
            self.configs.update({r.metrics.get("trial_id"): dict(r.config) for r in grid if r.metrics})
            if not done:
                cost = self.manifest["cost"].setdefault(method.name, {})
                cost["search_wall_s"] = cost.get("search_wall_s", 0.0) + time.time() - t0
                cost["search_device_s"] = sum(r.metrics.get("trial_wall_s", 0.0) for r in grid if r.metrics) \
                    * self._device_count()
                self.manifest["progress"]["searched"].append(method.name)
            self.st.write_table("trials.parquet", trials_table(all_rows))  # after every method: nothing lost
            self.save_manifest()
        phase["finished"] = _now()
        phase["wall_s"] = sum(v.get("search_wall_s", 0.0) for v in self.manifest["cost"].values())
        self.trials = pd.DataFrame(all_rows)

    def _search_method(self, trainable: Any, method: Any, journal: Path, *, done: bool) -> list[Any]:
        """The results of one method's search: its experiment, then top-ups until it has its full
        trial budget; Optuna trials a crashed driver asked for and never ran are closed as FAIL."""
        from sslsweep.search.searcher import HonestOptunaSearch, fail_orphaned_trials
        from sslsweep.search.tuner import journal_storage

        HonestOptunaSearch.journal_paths[method.name] = journal  # a restored search reads this machine's copy
        try:
            grid = self._fit_searches(trainable, method, journal, done=done)
        finally:
            HonestOptunaSearch.journal_paths.pop(method.name, None)
        if method.searched and journal.exists():
            closed = fail_orphaned_trials(journal_storage(journal), method.name)
            if closed:
                log.warning("%s: %d Optuna trial(s) asked before a driver crash and never run marked FAIL",
                            method.name, closed)
        return grid

    def _fit_searches(self, trainable: Any, method: Any, journal: Path, *, done: bool) -> list[Any]:
        """The search experiment of ``method``, then its top-ups."""
        grid = self._fit_search(trainable, method, journal, f"search-{method.name}", done=done)
        # A restored experiment can come back with fewer trials than it was given (Tune's
        # searcher snapshot counted trials its trial list did not hold yet): run the missing
        # ones in the same Optuna study, so every method keeps the same budget. A top-up can
        # be cut short the same way, hence a few rounds.
        for top_up in range(1, MAX_TOP_UPS + 1):
            missing = self.cfg.search.num_samples - len(grid) if method.searched else 0
            if missing <= 0:
                break
            history = []  # an already searched method only reads its top-ups back
            if not done:
                log.warning("%s: the search ended with %d of %d trials; running the %d missing",
                            method.name, len(grid), self.cfg.search.num_samples, missing)
                history = _history(trial_rows(self.manifest["sweep_id"], self.metric,
                                              self.cfg.search.max_epochs, grid), self.metric)
            grid += self._fit_search(trainable, method, journal, _top_up_name(method.name, top_up), done=done,
                                     num_samples=missing, top_up=top_up, history=history)
        return grid

    def _fit_search(self, trainable: Any, method: Any, journal: Path, name: str, *, done: bool,
                    num_samples: int | None = None, top_up: int = 0,
                    history: list[tuple[str, list[dict[str, Any]]]] | None = None) -> list[Any]:
        """The results of the search experiment ``name`` of ``method``: run, or resumed where an
        earlier driver left it; read only if the method was already searched (none if it never ran)."""
        from ray import tune

        from sslsweep.search.tuner import restore_or_new, search_tuner

        path = f"{self.st.child_uri('tune')}/{name}"
        if done and not tune.Tuner.can_restore(path):
            return []
        tuner = restore_or_new(path, trainable, self.cfg.resources,
                               lambda: search_tuner(trainable, method, self.cfg.search, self.cfg.resources,
                                                    metric=self.metric, seed=self.cfg.seed,
                                                    storage_path=self.st.child_uri("tune"), journal=journal,
                                                    name=name, num_samples=num_samples, top_up=top_up,
                                                    history=history or ()),
                               # Tune's saved state drops param_space: give it back for a plain run
                               param_space=None if method.searched else
                               {"method": method.name, "seed": self.cfg.seed, **method.fixed})
        return list(tuner.get_results() if done else tuner.fit())

    def _confirm(self, trainable: Any) -> None:
        from ray import tune

        from sslsweep.search.tuner import confirm_tuner, restore_or_new

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
        phase = self.manifest["phases"].setdefault("confirm", {"started": _now()})
        if not runs:  # every method's trials failed or diverged: nothing to confirm, the report says why
            log.warning("no method has a finished trial: the confirm phase is skipped")
            self.st.write_table("budget.parquet", budget_table([]))
            phase["finished"], phase["wall_s"] = _now(), 0.0
            self.manifest["progress"]["confirmed"] = True
            self.save_manifest()
            return
        t0 = time.time()
        tune_root = self.st.child_uri("tune")
        tuner = restore_or_new(f"{tune_root}/confirm", trainable, self.cfg.resources,
                               lambda: confirm_tuner(trainable, runs, self.cfg.resources,
                                                     max_concurrent=self.cfg.search.max_concurrent,
                                                     storage_path=tune_root, max_failures=self.cfg.search.max_failures),
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
        self.st.write_table("budget.parquet", budget_table(rows))
        phase["finished"] = _now()
        phase["wall_s"] = phase.get("wall_s", 0.0) + time.time() - t0
        self.manifest["progress"]["confirmed"] = True
        self.save_manifest()

    def _report(self) -> None:
        from sslsweep.analysis.report import build_report

        build_report([self.st.uri])
        self.manifest["progress"]["reported"] = True
        self.save_manifest()


MAX_TOP_UPS = 3  # rounds of topping up a search that a crash left short
JOURNAL_UPLOAD_S = 30.0  # how often a running search's Optuna journal is copied to remote storage


def _top_up_name(method: str, top_up: int) -> str:
    """The experiment of a method's ``top_up``-th top-up: ``search-<method>-more``, then ``-more2``, ..."""
    return f"search-{method}-more" + (str(top_up) if top_up > 1 else "")


def _history(rows: list[dict[str, Any]], metric: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """Per trial, its reported (epoch, metric) in epoch order: what ASHA saw of it."""
    by_trial: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: (r["trial_id"], r["epoch"])):
        if r.get("metric") is not None and r["epoch"] > 0:
            by_trial.setdefault(r["trial_id"], []).append({"epoch": r["epoch"], metric: r["metric"]})
    return list(by_trial.items())


def run_sweep(cfg: SweepConfig, raw: dict[str, Any]) -> str:
    """Run a new sweep (or continue ``cfg.resume``); returns the sweep's URI."""
    if cfg.resume:
        return resume_sweep(cfg.resume)
    return Sweep.create(cfg, raw).run()


def resume_sweep(uri: str) -> str:
    """Continue the interrupted sweep at ``uri`` with the configuration it was started with."""
    return Sweep.resume(uri).run()
