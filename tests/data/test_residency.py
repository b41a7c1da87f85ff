"""Residency by size (``dataset.residency``): the estimate comes from the facts (no decoding),
``auto`` picks device, then host, then stream and says why in one line, a residency that cannot
fit is refused before Ray starts naming the key, the estimate and the limit, and a sweep whose
decoded size exceeds the host cap set for it runs to a report streaming."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from sslsweep.config import ConfigError, DatasetConfig, from_dictconfig
from sslsweep.data import plan_residency, read_facts
from sslsweep.data.residency import GB, decoded_bytes
from sslsweep.pipeline import run_sweep
from sslsweep.validate import validate_against_data
from tests.data.conftest import photos, write_shards

SIZE = 16


@pytest.fixture()
def shards_dir(tmp_path: Path) -> Path:
    blobs, labels = photos(120)
    write_shards(tmp_path / "ds", blobs, labels, n_shards=3, row_group=16)
    return tmp_path / "ds"


def compose_cfg(*overrides: str):
    with initialize_config_module(config_module="sslsweep.conf", version_base="1.3"):
        raw = compose(config_name="config", overrides=list(overrides))
    return from_dictconfig(raw), OmegaConf.to_container(raw, resolve=True)


def dataset(path: Path, **kw) -> DatasetConfig:
    return DatasetConfig(name="parquet", path=str(path), image_size=SIZE, **kw)


def test_the_estimate_is_images_times_the_decoded_shape(shards_dir: Path) -> None:
    facts = read_facts(dataset(shards_dir))
    assert facts.image_shape == (3, SIZE, SIZE)
    assert decoded_bytes(facts) == 120 * 3 * SIZE * SIZE


def test_auto_picks_device_then_host_then_stream_saying_why(shards_dir: Path) -> None:
    est = 120 * 3 * SIZE * SIZE
    facts = read_facts(dataset(shards_dir))
    big, small = 2 * est / GB, 0.5 * est / GB
    plan = plan_residency(dataset(shards_dir, host_memory_gb=big, device_memory_gb=big), facts, gpu_share=0.5)
    assert plan.residency == "device" and plan.estimate == est and "fits the GPU share" in plan.reason
    plan = plan_residency(dataset(shards_dir, host_memory_gb=big, device_memory_gb=small), facts, gpu_share=0.5)
    assert plan.residency == "host" and "exceeds the GPU share" in plan.reason and "fits the host cap" in plan.reason
    plan = plan_residency(dataset(shards_dir, host_memory_gb=small), facts)
    assert plan.residency == "stream" and "exceeds the host cap" in plan.reason
    # a GPU trial's share is the GPU's memory x resources.gpu, when the driver sees the GPU
    plan = plan_residency(dataset(shards_dir, host_memory_gb=big), facts, gpu_share=0.25, gpu_total=2 * est)
    assert plan.residency == "host" and plan.device_limit == est // 2
    # where the driver cannot see the GPU: planned device, the trial checks its share
    plan = plan_residency(dataset(shards_dir, host_memory_gb=big), facts, gpu_share=0.25, gpu_total=None)
    assert plan.residency == "device" and "the trial checks its GPU share" in plan.reason


def test_a_residency_that_cannot_fit_is_refused_naming_key_estimate_and_limit(shards_dir: Path) -> None:
    facts = read_facts(dataset(shards_dir))
    tiny = 0.00001  # GiB: 10.5 kB, below the 92 kB estimate
    with pytest.raises(ConfigError, match=r"^dataset.residency = 'device': the decoded images need 0.09 MiB, more "
                                          r"than the trial's GPU share \(0.01 MiB\): use host or stream, or auto$"):
        plan_residency(dataset(shards_dir, residency="device", device_memory_gb=tiny), facts, gpu_share=1)
    with pytest.raises(ConfigError, match=r"^dataset.residency = 'host': the decoded images need 0.09 MiB, more than "
                                          r"the host memory cap \(0.01 MiB, dataset.host_memory_gb\): use stream"):
        plan_residency(dataset(shards_dir, residency="host", host_memory_gb=tiny), facts)
    assert plan_residency(dataset(shards_dir, residency="stream", host_memory_gb=tiny), facts).residency == "stream"


@pytest.mark.parametrize(("override", "message"), [
    ("dataset.residency=memory", r"dataset.residency = 'memory': must be one of auto, device, host, stream"),
    ("dataset.host_memory_gb=0", r"dataset.host_memory_gb = 0: must be a number of GiB > 0, or null"),
    ("dataset.stream_buffer=0", r"dataset.stream_buffer = 0: must be an integer >= 1"),
])
def test_residency_keys_are_checked(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        compose_cfg(override)


def test_digits_cannot_stream() -> None:
    with pytest.raises(ConfigError, match=r"dataset.residency = 'stream': stream reads dataset=parquet or imagefolder"):
        compose_cfg("dataset.residency=stream")


def test_validate_logs_the_choice_and_refuses_a_pool_task_under_stream(shards_dir: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """One log line names the residency, the estimate and the limit; exemplar on cluster
    surrogates (which needs the whole pool on the device each epoch) is refused under stream."""
    base = ("dataset=parquet", f"dataset.path={shards_dir}", "dataset.image_column=image", f"dataset.image_size={SIZE}",
            "dataset.host_memory_gb=0.00001", "experiment=smoke")
    cfg, _ = compose_cfg(*base, "method=[simclr]")
    with caplog.at_level(logging.INFO, logger="sslsweep.validate"):
        validate_against_data(cfg, read_facts(cfg.dataset))
    lines = [r.getMessage() for r in caplog.records if r.name == "sslsweep.validate"]
    assert lines == ["dataset.residency = stream (auto): 0.09 MiB decoded exceeds the host cap (0.01 MiB)"]
    cfg, _ = compose_cfg(*base, "method=[exemplar]", "method.exemplar.space.surrogate=cluster")
    with pytest.raises(ConfigError, match=r"^method.exemplar.space.surrogate = 'cluster': needs the whole train pool "
                                          r"on the device at every epoch start; dataset.residency is stream \(auto: "):
        validate_against_data(cfg, read_facts(cfg.dataset))


@pytest.mark.slow
def test_a_sweep_larger_than_the_host_cap_runs_to_a_report_streaming(ray_local, shards_dir: Path,  # noqa: ANN001
                                                                     tmp_path: Path) -> None:
    """host_memory_gb below the decoded size: auto streams, the sweep searches, confirms and reports,
    and the manifest records the stream fingerprint."""
    cfg, raw = compose_cfg("experiment=smoke", "dataset=parquet", f"dataset.path={shards_dir}",
                           "dataset.image_column=image", f"dataset.image_size={SIZE}", "dataset.host_memory_gb=0.00001",
                           "dataset.stream_workers=1", "dataset.stream_buffer=32", "method=[simclr]",
                           f"storage={tmp_path / 'runs'}", "search.num_samples=1", "search.max_epochs=1",
                           "search.grace_period=1", "confirm.seeds=1", "dataset.label_fractions=[1.0]",
                           "search.space.batch_size.choices=[16]")
    assert cfg.dataset.residency == "auto"
    root = Path(run_sweep(cfg, raw))
    assert (root / "report.md").exists()
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["dataset"]["residency"] == "stream" and manifest["dataset"]["fingerprint"].startswith("src-")
    budget = pd.read_parquet(root / "budget.parquet")
    assert set(budget.protocol) == {"linear", "finetune"} and budget.test_acc.between(0, 1).all()
    trials = pd.read_parquet(root / "trials.parquet")
    assert len(trials) >= 1 and trials["metric"].notna().all()


def test_a_host_plan_made_against_device_memory_gb_reaches_the_trials(shards_dir: Path, cache_dir: Path) -> None:
    """``auto`` with ``dataset.device_memory_gb`` below the decoded size (and the host cap above it):
    the prepared data says ``host``, so no trial puts the array on its GPU; without the device cap
    the driver leaves the choice to each trial (``auto``: it checks its own GPU share)."""
    from sslsweep.data import prepare

    est = 120 * 3 * SIZE * SIZE
    assert prepare(dataset(shards_dir, host_memory_gb=2 * est / GB, device_memory_gb=0.5 * est / GB)).residency == "host"
    assert prepare(dataset(shards_dir, host_memory_gb=2 * est / GB)).residency == "auto"
