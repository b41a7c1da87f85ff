"""Where a sweep's files live: a local directory or a URI (s3://, gs://), through pyarrow's filesystems.

Parquet tables, the manifest and the report are written here; Ray Tune writes its experiment
directory here itself (it takes the same URI as ``storage_path``).
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sslsweep.config import ConfigError, check_storage


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


class Storage:
    """A sweep directory. ``Storage("runs/demo-1")`` or ``Storage("s3://bucket/runs/demo-1")``."""

    def __init__(self, uri: str) -> None:
        check_storage(uri, "storage")
        if is_remote(uri):
            self.fs, self.root = pafs.FileSystem.from_uri(uri)
            self.uri = uri.rstrip("/")
        else:
            local = uri[len("file://"):] if uri.startswith("file://") else uri
            self.fs, self.root = pafs.LocalFileSystem(), os.path.abspath(local)
            self.uri = self.root

    @property
    def remote(self) -> bool:
        return is_remote(self.uri)

    def path(self, *parts: str) -> str:
        """Filesystem path (for ``self.fs``) of a file inside the sweep."""
        return "/".join([self.root.rstrip("/"), *parts])

    def child_uri(self, *parts: str) -> str:
        """A URI (or local absolute path) inside the sweep, for tools that take one (Ray Tune)."""
        return "/".join([self.uri, *parts])

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write atomically where the filesystem allows it (local: temp file + rename)."""
        target = self.path(rel)
        parent = target.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        if self.remote:  # object stores replace an object atomically on upload
            with self.fs.open_output_stream(target) as f:
                f.write(data)
            return
        tmp = f"{parent}/.{rel.rsplit('/', 1)[-1]}.{os.getpid()}.tmp"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        os.replace(tmp, target)

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


class Mirror:
    """Copies a local append-only log (Optuna's journal) to ``rel`` in ``storage`` every ``every``
    seconds while the ``with`` block runs, and once more when it ends.

    Only whole lines go up: a line being appended at that moment waits for the next copy, so the
    copy is always a journal Optuna can replay. A failed copy while the block runs is logged and
    retried next time; the copy at the end raises (unless the block is already raising), so a
    method is never marked searched with its journal missing from storage. Without it a sweep on
    remote storage kept the journal only on the driver until the method's search ended, and a
    driver lost mid-search took the study with it.
    """

    def __init__(self, storage: Storage, local: Path, rel: str, every: float = 30.0) -> None:
        self.storage, self.local, self.rel, self.every = storage, local, rel, every
        self._sent: bytes | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"mirror {rel}", daemon=True)

    def __enter__(self) -> "Mirror":
        self._try_push()
        self._thread.start()
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        if exc_type is None:
            self.push()
        else:
            self._try_push()

    def _loop(self) -> None:
        # every second until the log first goes up (the study is created just after the block
        # starts: it should not wait a whole interval), then every ``every`` seconds
        while not self._stop.wait(self.every if self._sent else min(1.0, self.every)):
            self._try_push()

    def _try_push(self) -> None:
        try:
            self.push()
        except Exception as exc:  # a network hiccup must not end the search: retried next time
            logging.getLogger(__name__).warning("could not copy %s to %s: %s", self.local, self.rel, exc)

    def push(self) -> None:
        """Upload the whole lines of the log if they changed since the last upload."""
        if not self.local.exists():
            return
        data = self.local.read_bytes()
        data = data[:data.rfind(b"\n") + 1]
        if data and data != self._sent:
            self.storage.write_bytes(self.rel, data)
            self._sent = data


def fetch_log(storage: Storage, rel: str, local: Path) -> None:
    """Bring the local copy of an append-only log (Optuna's journal) up to date with ``rel``.

    The longer of the two wins when one extends the other: the local copy of a driver that died
    on this machine can be newer than its last upload (up to :class:`Mirror`'s interval), and an
    upload can be newer than a local copy left by an earlier driver. If they differ otherwise, the
    stored copy wins: the last driver wrote it."""
    if not storage.exists(rel):
        return
    remote = storage.read_bytes(rel)
    if local.exists() and local.read_bytes().startswith(remote):
        return
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(remote)


def open_sweep_dir(uri: str, key: str = "resume") -> Storage:
    """A storage that must already hold a sweep (its manifest.json)."""
    st = Storage(uri)
    if not st.exists("manifest.json"):
        raise ConfigError(key, uri, "not a sweep directory (no manifest.json there)")
    return st
