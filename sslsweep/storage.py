"""Where files live: local paths and URIs (``s3://``, ``gs://``, ``file://``) through pyarrow's
filesystems, with atomic writes. The one module that knows what a URI is.

A sweep directory (:class:`Storage`) holds the Parquet tables, the manifest and the report;
Ray Tune writes its experiment directory there itself (it takes the same URI as ``storage_path``).
Datasets and sweeps to report on are opened through :func:`resolve` too.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sslsweep.rules import ConfigError, require
from sslsweep.schema import MANIFEST

SCHEMES = ("", "file", "s3", "gs", "gcs")


def scheme(location: str) -> str:
    """``s3`` for ``s3://b/k``, ``file`` for ``file:///x``, ``''`` for a plain path."""
    return location.split("://", 1)[0].lower() if "://" in location else ""


def is_remote(location: str) -> bool:
    """Whether ``location`` is on a remote filesystem (any URI but ``file://``)."""
    return scheme(location) not in ("", "file")


def local_path(location: str) -> str:
    """A plain or ``file://`` location as a local path (``file://`` stripped)."""
    return location[len("file://"):] if location.startswith("file://") else location


def check_scheme(location: str, key: str) -> None:
    """The rule on every storage location: a local path, ``file://``, ``s3://`` or ``gs://``."""
    require(scheme(location) in SCHEMES, key, location, "unknown URI scheme; use a local path, file://, s3:// or gs://")


def resolve(location: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and in-filesystem path of a local path, ``file://`` path or URI.

    Local paths are made absolute (``~`` expanded); a remote URI goes through
    ``pyarrow.fs.FileSystem.from_uri`` and raises what it raises (unknown scheme, no credentials)."""
    if not is_remote(location):
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(local_path(location)))
    fs, path = pafs.FileSystem.from_uri(location)
    return fs, path.rstrip("/") or "/"


def join(location: str, *parts: str) -> str:
    """``location/part/...`` for a URI or a local path alike."""
    return "/".join([location.rstrip("/"), *parts])


def atomic_write(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never half.

    Local: a temporary file beside the target, then a rename. Object stores replace an object
    atomically on upload, so a remote file is written directly."""
    parent = path.rsplit("/", 1)[0] if "/" in path else "."
    fs.create_dir(parent, recursive=True)
    if not isinstance(fs, pafs.LocalFileSystem):
        with fs.open_output_stream(path) as f:
            f.write(data)
        return
    with atomic_local_file(path) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def atomic_local_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside the local file ``path`` for the block to write; renamed over ``path``
    when the block ends without error, removed otherwise. For writers that stream to a file
    (``np.savez``) rather than hold the bytes in memory."""
    target = Path(path).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp{target.suffix}"
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


class Storage:
    """A sweep directory. ``Storage("runs/demo-1")`` or ``Storage("s3://bucket/runs/demo-1")``."""

    def __init__(self, uri: str, key: str = "storage") -> None:
        check_scheme(uri, key)
        try:
            self.fs, self.root = resolve(uri)
        except (OSError, ValueError) as exc:  # no credentials, bad bucket, endpoint unreachable
            first = (str(exc).strip().splitlines() or [""])[0]
            raise ConfigError(key, uri, f"cannot open ({type(exc).__name__}: {first})") from None
        self.uri = uri.rstrip("/") if is_remote(uri) else self.root

    @property
    def remote(self) -> bool:
        return is_remote(self.uri)

    def path(self, *parts: str) -> str:
        """Filesystem path (for ``self.fs``) of a file inside the sweep."""
        return join(self.root, *parts)

    def child_uri(self, *parts: str) -> str:
        """A URI (or local absolute path) inside the sweep, for tools that take one (Ray Tune)."""
        return join(self.uri, *parts)

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def write_bytes(self, rel: str, data: bytes) -> None:
        atomic_write(self.fs, self.path(rel), data)

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=2, default=str).encode())

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def write_table(self, rel: str, table: pa.Table) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf)
        self.write_bytes(rel, buf.getvalue())


def open_sweep_dir(uri: str, key: str = "resume") -> Storage:
    """A storage that must already hold a sweep (its manifest.json)."""
    st = Storage(uri, key)
    if not st.exists(MANIFEST):
        raise ConfigError(key, uri, "not a sweep directory (no manifest.json there)")
    return st
