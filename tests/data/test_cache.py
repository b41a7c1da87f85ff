"""The decoded-array cache: a source is decoded once per file and options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sslsweep.config import DatasetConfig
from sslsweep.data import prepare, sources
from tests.conftest import make_images
from tests.data.conftest import write_parquet


def test_second_prepare_reads_the_cache_not_the_images(tmp_path: Path, cache_dir: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding happens once per file: a second prepare() gets identical arrays without decoding."""
    images, labels = make_images(30)
    write_parquet(tmp_path / "d.parquet", images, labels)
    cfg = DatasetConfig(name="parquet", path=str(tmp_path / "d.parquet"), image_column="img")
    first = prepare(cfg)

    def no_decode(*a, **k):  # noqa: ANN002, ANN003
        raise AssertionError("decoded again")

    monkeypatch.setattr(sources, "decode_images", no_decode)
    second = prepare(cfg)
    assert np.array_equal(first.images, second.images) and first.fingerprint == second.fingerprint


def test_the_cache_holds_one_complete_file_per_source(tmp_path: Path, cache_dir: Path) -> None:
    """After a prepare the cache directory holds exactly the finished .npz (no temporary file),
    and a torn cache file is decoded again rather than trusted."""
    images, labels = make_images(20)
    write_parquet(tmp_path / "d.parquet", images, labels)
    cfg = DatasetConfig(name="parquet", path=str(tmp_path / "d.parquet"), image_column="img")
    first = prepare(cfg)
    files = list(cache_dir.iterdir())
    assert len(files) == 1 and files[0].name.startswith("parquet-") and files[0].suffix == ".npz"
    files[0].write_bytes(files[0].read_bytes()[:100])
    assert prepare(cfg).fingerprint == first.fingerprint
