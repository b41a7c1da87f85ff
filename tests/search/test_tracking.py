"""``tracking``: Ray Tune's own logger callbacks in every Tuner, a missing package refused before Ray starts."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from ray.tune.logger import TBXLoggerCallback

from sslsweep.config import ConfigError, MethodConfig, ResourcesConfig, SearchConfig, from_dictconfig
from sslsweep.search.concurrency import DriverEvents
from sslsweep.search.tuner import confirm_tuner, run_config, search_tuner, tracking_callbacks


def load(*overrides: str):
    with initialize_config_module(config_module="sslsweep.conf", version_base="1.3"):
        return from_dictconfig(compose(config_name="config", overrides=list(overrides)))


def without(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``importlib.util.find_spec`` answers as if ``module`` were not installed."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))


def test_tracking_defaults_to_none_and_adds_no_callback() -> None:
    """The default config tracks nothing of its own: no logger callback in the run config."""
    assert load().tracking == "none"
    assert run_config("search-simclr", "/tmp/x", 0).callbacks == []


def test_tensorboard_run_config_holds_tune_tbx_callback() -> None:
    """tracking=tensorboard composes from the command line and puts exactly one TBXLoggerCallback in the run config."""
    cfg = load("tracking=tensorboard")
    assert cfg.tracking == "tensorboard"
    callbacks = run_config("search-simclr", "/tmp/x", 0, tracking=cfg.tracking).callbacks
    assert len(callbacks) == 1 and isinstance(callbacks[0], TBXLoggerCallback)


def test_search_and_confirm_tuners_carry_the_callback(tmp_path: Path) -> None:
    """Both Tuner builders thread ``tracking`` into their RunConfig."""
    method = MethodConfig(name="none")
    trainable = lambda config: None  # noqa: E731
    tuners = [search_tuner(trainable, method, SearchConfig(scheduler="fifo"), ResourcesConfig(), metric="knn_top1",
                           seed=0, storage_path=str(tmp_path), journal=tmp_path / "j.journal",
                           tracking="tensorboard", sweep_dir=tmp_path),
              confirm_tuner(trainable, [{"method": "none", "seed": 0}], ResourcesConfig(), name="confirm-none",
                            max_concurrent=0, storage_path=str(tmp_path), max_failures=0, tracking="tensorboard",
                            sweep_dir=tmp_path)]
    for tuner in tuners:  # the sweep's own DriverEvents (start-up times, start gate) first, then the tracker
        callbacks = tuner._local_tuner.get_run_config().callbacks
        assert [type(c) for c in callbacks] == [DriverEvents, TBXLoggerCallback]


def test_mlflow_uses_a_file_store_in_the_sweep_unless_the_environment_names_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without MLFLOW_TRACKING_URI the store is ``file:<sweep>/mlruns``; with it, that URI; one MLflow
    experiment per Tune experiment, named after the sweep (mlflow is stubbed: the callback only imports it
    when built)."""
    if importlib.util.find_spec("mlflow") is None:
        monkeypatch.setitem(sys.modules, "mlflow", types.ModuleType("mlflow"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sweep = tmp_path / "demo-20260101-000000-abcd"
    (cb,) = tracking_callbacks("mlflow", "confirm", sweep)
    assert cb.tracking_uri == f"file:{sweep.resolve() / 'mlruns'}"
    assert cb.experiment_name == "demo-20260101-000000-abcd/confirm"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    (cb,) = tracking_callbacks("mlflow", "confirm", sweep)
    assert cb.tracking_uri == "http://127.0.0.1:5000"


def test_unknown_tracking_value_is_one_line_config_error() -> None:
    """An unknown backend names the key, the value and the accepted values, on one line."""
    with pytest.raises(ConfigError, match=r"^tracking = 'comet': must be one of none, tensorboard, mlflow, wandb$"):
        load("tracking=comet")


@pytest.mark.parametrize("backend", ["mlflow", "wandb"])
def test_missing_package_gives_install_hint(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Choosing mlflow/wandb without its package fails validation with the pip command of the extra."""
    without(backend, monkeypatch)
    with pytest.raises(ConfigError) as e:
        load(f"tracking={backend}")
    msg = str(e.value)
    assert "\n" not in msg and e.value.key == "tracking" and e.value.value == backend
    assert f"needs the {backend} package" in msg and f"pip install 'sslsweep[{backend}]'" in msg


def test_installed_package_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The package check reads find_spec: a backend whose module is found validates."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "mlflow" else real(name, *a))
    assert load("tracking=mlflow").tracking == "mlflow"


@pytest.mark.slow
@pytest.mark.parametrize("tracking", ["tensorboard", "none"])
def test_real_run_writes_events_only_when_asked(ray_local, tracking: str, tmp_path: Path,  # noqa: ANN001
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A real Tune run of the search Tuner, with Tune's automatic loggers off: the trial's directory
    under ``tune/`` holds a TensorBoard events file with tracking=tensorboard, and none without."""
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

    def _report_twice(config: dict) -> None:  # defined here: pickled by value, Ray's workers cannot import tests
        from ray import tune

        for epoch in (1, 2):
            tune.report({"knn_top1": 0.5 * epoch, "epoch": epoch})

    tune_dir = tmp_path / "tune"
    tuner = search_tuner(_report_twice, MethodConfig(name="none"), SearchConfig(scheduler="fifo"),
                         ResourcesConfig(), metric="knn_top1", seed=0, storage_path=str(tune_dir),
                         journal=tmp_path / "optuna" / "none.journal", tracking=tracking, sweep_dir=tmp_path)
    (result,) = tuner.fit()
    assert result.error is None and result.metrics["epoch"] == 2
    events = list((tune_dir / "search-none").glob("*/events.out.tfevents.*"))
    assert len(events) == (1 if tracking == "tensorboard" else 0)


def test_sweep_passes_tracking_and_its_directory_to_both_tuners(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep hands ``cfg.tracking`` and its local directory to the search and the confirm Tuner builders."""
    import pandas as pd

    from sslsweep.search import sweep as sweep_mod

    cfg = load("tracking=tensorboard", "method=[none]", f"storage={tmp_path}")
    sweep = sweep_mod.Sweep.create(cfg, {})
    seen: dict[str, dict] = {}

    class Stop(Exception):
        pass

    class FakeTuner:
        def fit(self):  # noqa: ANN201
            raise Stop

    def capture(kind: str):  # noqa: ANN202
        def build(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            seen[kind] = kwargs
            return FakeTuner()
        return build

    monkeypatch.setattr(sweep_mod, "restore_or_new", lambda path, trainable, res, make, param_space=None: make())
    monkeypatch.setattr(sweep_mod, "search_tuner", capture("search"))
    monkeypatch.setattr(sweep_mod, "confirm_tuner", capture("confirm"))
    with pytest.raises(Stop):
        sweep._fit_search(None, cfg.methods[0], tmp_path / "none.journal", "search-none", done=False)
    sweep.trials = pd.DataFrame([dict(method="none", trial_id="t0", seed=0, epoch=0, metric=1.0, status="completed")])
    with pytest.raises(Stop):
        sweep._confirm(None)
    for kind in ("search", "confirm"):
        assert seen[kind]["tracking"] == "tensorboard" and seen[kind]["sweep_dir"] == sweep.local
