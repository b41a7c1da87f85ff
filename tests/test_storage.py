"""sslsweep.storage: what a location is, and writes a reader never sees half done."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from sslsweep.rules import ConfigError
from sslsweep.storage import Storage, atomic_local_file, check_scheme, is_remote, resolve


def test_file_uris_and_plain_paths_are_local_and_resolve_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert not is_remote("runs/x") and not is_remote(f"file://{tmp_path}") and is_remote("s3://b/k")
    fs, path = resolve(f"file://{tmp_path}/a")
    assert isinstance(fs, pafs.LocalFileSystem) and path == f"{tmp_path}/a"
    assert resolve("~/a")[1] == f"{tmp_path}/a"


def test_an_unknown_scheme_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"storage = 'ftp://x/y': unknown URI scheme"):
        check_scheme("ftp://x/y", "storage")


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    """The block raises half way: the target keeps its old content and nothing else is left."""
    target = tmp_path / "cache.npz"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_local_file(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["cache.npz"]
    with atomic_local_file(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["cache.npz"]


def test_a_sweep_directory_round_trips_json_and_bytes(tmp_path: Path) -> None:
    st = Storage(str(tmp_path / "sweep"))
    st.write_json("a/manifest.json", {"k": 1})
    assert st.read_json("a/manifest.json") == {"k": 1} and st.exists("a", "manifest.json")
    assert sorted(os.listdir(tmp_path / "sweep" / "a")) == ["manifest.json"]


def test_a_location_pyarrow_cannot_open_is_one_line_naming_the_key() -> None:
    """An s3:// URI pyarrow refuses: the key it was given as, the URI and why, not a traceback."""
    with pytest.raises(ConfigError, match=r"^resume = 's3://b/run\?bad=1': cannot open \(ArrowInvalid: .*'bad'\)$"):
        Storage("s3://b/run?bad=1", "resume")
