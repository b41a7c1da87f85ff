"""Reading sweep directories (local, file://, and a non-local pyarrow filesystem) and combining them."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pandas as pd
import pyarrow.fs as pafs
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from sslsweep.analysis import io as sio


def test_open_sweep_reads_parquet_tables_and_manifest(sweep_dir: str, trials: pd.DataFrame) -> None:
    """The tables come back as written; the manifest as a dict; the filesystem is local."""
    sweep = sio.open_sweep(sweep_dir)
    assert len(sweep.trials) == len(trials)
    assert sweep.trials["trial_id"].tolist() == trials["trial_id"].tolist()
    assert set(sweep.budget["method"]) == {"simclr", "rotation", "none"}
    assert sweep.manifest["sweep_id"] == "sw1"
    assert sweep.is_local and sweep.notes == []


def test_open_sweep_accepts_a_file_uri(sweep_dir: str) -> None:
    """file:///abs/path goes through FileSystem.from_uri and reads the same data."""
    sweep = sio.open_sweep(Path(sweep_dir).as_uri())
    assert sweep.manifest["sweep_id"] == "sw1" and len(sweep.budget) == 36


def test_open_sweep_without_manifest_is_not_a_sweep(tmp_path: Path) -> None:
    """A directory without manifest.json -> ValueError naming the path and the rule."""
    with pytest.raises(ValueError, match=rf"{tmp_path} is not a sweep directory: manifest.json missing"):
        sio.open_sweep(str(tmp_path))


def test_open_sweep_with_broken_manifest_says_it_must_be_json(make_sweep: Callable[..., str]) -> None:
    """A manifest that is not a JSON object -> ValueError with the rule."""
    directory = make_sweep("bad")
    Path(directory, "manifest.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="manifest.json must be a JSON object"):
        sio.open_sweep(directory)


def test_open_sweep_notes_missing_tables_instead_of_failing(make_sweep: Callable[..., str],
                                                            build: SimpleNamespace) -> None:
    """An interrupted sweep (no budget.parquet yet) still opens, with a note saying what is missing."""
    sweep = sio.open_sweep(make_sweep("partial", trials=build.search_trials(), manifest=build.manifest()))
    assert sweep.budget.empty and "method" in sweep.budget.columns
    assert any("budget.parquet missing" in n for n in sweep.notes)


def test_open_sweep_loads_optuna_journal_studies_of_local_sweeps(sweep_dir: str) -> None:
    """optuna/<method>.journal with study_name = method is loaded into SweepResults.studies."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.makedirs(os.path.join(sweep_dir, "optuna"))
    storage = JournalStorage(JournalFileBackend(os.path.join(sweep_dir, "optuna", "simclr.journal")))
    study = optuna.create_study(study_name="simclr", storage=storage, direction="maximize")
    study.optimize(lambda t: t.suggest_float("lr", 1e-3, 1.0, log=True), n_trials=3)
    sweep = sio.open_sweep(sweep_dir)
    assert set(sweep.studies) == {"simclr"}
    assert len(sweep.studies["simclr"].trials) == 3


class _MemoryFS:
    """A non-local pyarrow filesystem (fsspec's in-memory one) standing in for s3:// in tests."""

    def __init__(self) -> None:
        mem = MemoryFileSystem(skip_instance_cache=True)
        mem.store.clear()
        self.fs = pafs.PyFileSystem(pafs.FSSpecHandler(mem))

    def resolve(self, location: str) -> tuple[pafs.FileSystem, str]:
        return self.fs, "/" + location.split("://", 1)[1].strip("/")


def test_remote_sweep_is_read_through_pyarrow_and_skips_journals(sweep_dir: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep on a non-local filesystem reads like a local one; journals are not read, with a note;
    write_text writes back to that filesystem and returns a URI."""
    mem = _MemoryFS()
    monkeypatch.setattr(sio, "resolve", mem.resolve)
    mem.fs.create_dir("/bucket/run")
    for name in ("manifest.json", "trials.parquet", "budget.parquet"):
        with mem.fs.open_output_stream(f"/bucket/run/{name}") as out:
            out.write(Path(sweep_dir, name).read_bytes())
    sweep = sio.open_sweep("s3://bucket/run")
    assert not sweep.is_local and sweep.studies == {}
    assert len(sweep.budget) == 36
    assert any("remote" in n and "Optuna journals are not read" in n for n in sweep.notes)
    assert sio.write_text("s3://bucket/run", "report.md", "# hi") == "s3://bucket/run/report.md"
    with mem.fs.open_input_stream("/bucket/run/report.md") as stream:
        assert stream.read() == b"# hi"


def test_write_text_writes_locally_and_returns_the_path(tmp_path: Path) -> None:
    """A local directory (created if needed) gets the file; no temporary file is left behind."""
    target = tmp_path / "new" / "dir"
    path = sio.write_text(str(target), "report.md", "héllo")
    assert path == str(target / "report.md")
    assert Path(path).read_text(encoding="utf-8") == "héllo"
    assert os.listdir(target) == ["report.md"]


def test_write_text_to_a_file_uri_returns_a_uri(tmp_path: Path) -> None:
    """file:// is written on the local filesystem, and where it went is said the way it was asked: as a URI."""
    uri = (tmp_path / "out").as_uri()
    assert sio.write_text(uri, "report.md", "x") == uri + "/report.md"
    assert (tmp_path / "out" / "report.md").read_text(encoding="utf-8") == "x"


def test_write_text_rejects_names_with_a_slash(tmp_path: Path) -> None:
    """The name is a file name, not a path."""
    with pytest.raises(ValueError, match=r"file name '../x' is not a plain file name"):
        sio.write_text(str(tmp_path), "../x", "")


# ----------------------------------------------------------------------------- combine


def _two(make_sweep: Callable[..., str], build: SimpleNamespace, **second: Any) -> list[sio.SweepResults]:
    man2 = build.manifest("sw2", second.pop("fingerprint", build.fingerprint))
    man2.update(second)
    a = make_sweep("a", trials=build.search_trials("sw1"), budget=build.confirm_budget("sw1"),
                   manifest=build.manifest("sw1"))
    rows = build.budget_rows("simclr", {(0.01, "linear"): [0.61, 0.62]}, [10, 11], sweep_id="sw2")
    b = make_sweep("b", trials=build.search_trials("sw2"), budget=pd.DataFrame(rows), manifest=man2)
    return [sio.open_sweep(a), sio.open_sweep(b)]


def test_combine_with_different_dataset_fingerprints_names_both(make_sweep: Callable[..., str],
                                                                build: SimpleNamespace) -> None:
    """Sweeps of different datasets cannot be compared: both fingerprints are in the message."""
    sweeps = _two(make_sweep, build, fingerprint="sha256:bbbb")
    with pytest.raises(ValueError, match=r"sha256:aaaa.*sha256:bbbb.*must share a dataset"):
        sio.combine(sweeps)


def test_combine_accepts_a_sweep_that_names_the_other_ones_fingerprint_as_an_alias(
        make_sweep: Callable[..., str], build: SimpleNamespace) -> None:
    """A sweep whose data is named by its source files (src-...) and an older sweep of the same
    data named by its pixels (the newer one's alias) share a dataset; without the alias they do not."""
    sweeps = _two(make_sweep, build, fingerprint="src-1234")
    with pytest.raises(ValueError, match="must share a dataset"):
        sio.combine(sweeps)
    sweeps[1].manifest["dataset"]["fingerprint_aliases"] = ["sha256:aaaa"]
    assert sio.fingerprint_names(sweeps[1].manifest) == {"src-1234", "sha256:aaaa"}
    sio.combine(sweeps)


def test_combine_with_different_splits_of_the_same_data_is_rejected(make_sweep: Callable[..., str],
                                                                   build: SimpleNamespace) -> None:
    """Same pixels (same fingerprint), other split seed, or other split sizes (a test_fraction in
    use): other test images, so no pairing by seed. A test_fraction that changed nothing (the
    dataset has its own test set: same split sizes) combines."""
    dataset = {"split_seed": 0, "val_fraction": 0.15, "test_fraction": 0.2, "max_images": None}
    first, second = build.manifest("sw1"), build.manifest("sw2")
    first["config"]["dataset"] = dict(dataset)
    second["config"]["dataset"] = {**dataset, "split_seed": 1}
    a = make_sweep("a", trials=build.search_trials("sw1"), budget=build.confirm_budget("sw1"), manifest=first)
    rows = build.budget_rows("simclr", {(0.01, "linear"): [0.61, 0.62]}, [10, 11], sweep_id="sw2")
    b = make_sweep("b", trials=build.search_trials("sw2"), budget=pd.DataFrame(rows), manifest=second)
    with pytest.raises(ValueError, match=r"manifest config.dataset.split_seed is 0 in .* and 1 in .*: combined "
                                         r"sweeps must split the dataset the same way"):
        sio.combine([sio.open_sweep(a), sio.open_sweep(b)])
    second["config"]["dataset"] = {**dataset, "test_fraction": 0.3}
    c = make_sweep("c", trials=build.search_trials("sw2"), budget=pd.DataFrame(rows), manifest=second)
    assert len(sio.combine([sio.open_sweep(a), sio.open_sweep(c)]).parts) == 2  # the same split sizes
    second["dataset"] = {**second["dataset"], "n_test": 700, "n_train": 897}  # where it is used, sizes differ
    d = make_sweep("d", trials=build.search_trials("sw2"), budget=pd.DataFrame(rows), manifest=second)
    with pytest.raises(ValueError, match=r"manifest dataset.n_train is 1000 in .* and 897 in "):
        sio.combine([sio.open_sweep(a), sio.open_sweep(d)])


def test_combine_with_different_metrics_is_rejected(make_sweep: Callable[..., str], build: SimpleNamespace) -> None:
    """Selection on different metrics is not comparable."""
    with pytest.raises(ValueError, match=r"manifest metric differs.*same metric"):
        sio.combine(_two(make_sweep, build, metric="linear_top1"))


def test_combine_concatenates_tables_and_keeps_every_manifest(make_sweep: Callable[..., str],
                                                              build: SimpleNamespace) -> None:
    """Rows of both sweeps are kept (trials of equal id stay apart by sweep_id)."""
    sweeps = _two(make_sweep, build)
    both = sio.combine(sweeps)
    assert len(both.trials) == 2 * len(sweeps[0].trials)
    assert len(both.budget) == len(sweeps[0].budget) + 2
    assert [m["sweep_id"] for m in both.manifests] == ["sw1", "sw2"]


def test_combine_rejects_the_same_sweep_twice(sweep_dir: str) -> None:
    """Combining a sweep with itself would double its rows."""
    with pytest.raises(ValueError, match=r"sweep_id repeated in \['sw1', 'sw1'\]"):
        sio.combine([sio.open_sweep(sweep_dir), sio.open_sweep(sweep_dir)])


def test_combine_rejects_repeated_method_seed_budget_rows(make_sweep: Callable[..., str],
                                                         build: SimpleNamespace) -> None:
    """Two sweeps that both report simclr seed 0 at 1% linear cannot be paired by seed."""
    a = make_sweep("a", budget=build.confirm_budget("sw1"), manifest=build.manifest("sw1"))
    b = make_sweep("b", budget=build.confirm_budget("sw2"), manifest=build.manifest("sw2"))
    with pytest.raises(ValueError, match=r"method=.* seed=0 .*appears in sweeps \['sw1', 'sw2'\]"):
        sio.combine([sio.open_sweep(a), sio.open_sweep(b)])


def test_manifest_json_round_trip_keeps_fingerprint(sweep_dir: str) -> None:
    """fingerprint() reads dataset.fingerprint from the manifest as written."""
    with open(os.path.join(sweep_dir, "manifest.json"), encoding="utf-8") as handle:
        assert sio.fingerprint(json.load(handle)) == "sha256:aaaa"


def test_open_sweep_of_a_missing_directory_says_it_does_not_exist(tmp_path: Path) -> None:
    """A typo in the path is reported as such, not as a directory without a manifest."""
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match=rf"{missing} does not exist: a sweep directory holds manifest.json"):
        sio.open_sweep(str(missing))
