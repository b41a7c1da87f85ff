"""Where a sweep's files live: a local directory or a URI (s3://, gs://), through pyarrow's filesystems.

Parquet tables, the manifest and the report are written here; Ray Tune writes its experiment
directory here itself (it takes the same URI as ``storage_path``).
"""

from __future__ import annotations

import io
import json
import os
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

    def upload(self, local: Path, rel: str) -> None:
        self.write_bytes(rel, local.read_bytes())

    def download(self, rel: str, local: Path) -> bool:
        if not self.exists(rel):
            return False
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(self.read_bytes(rel))
        return True


def open_sweep_dir(uri: str, key: str = "resume") -> Storage:
    """A storage that must already hold a sweep (its manifest.json)."""
    st = Storage(uri)
    if not st.exists("manifest.json"):
        raise ConfigError(key, uri, "not a sweep directory (no manifest.json there)")
    return st
