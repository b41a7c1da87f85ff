"""Keeping a remote copy of a running search's Optuna journal: Mirror and fetch_log, on a local
directory standing in for the bucket (tests/search/test_storage_s3.py runs Mirror against S3)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sslsweep.search.recovery import Mirror, fetch_log
from sslsweep.storage import Storage

REL = "optuna/simclr.journal"


class Flaky(Storage):
    """A storage whose uploads fail while ``down`` is set."""

    down = True

    def write_bytes(self, rel: str, data: bytes) -> None:
        if self.down:
            raise OSError("503 Slow Down")
        super().write_bytes(rel, data)


def test_fetch_keeps_the_longer_log_when_one_extends_the_other(tmp_path: Path) -> None:
    """A driver that died on this machine left a local journal newer than its last upload: the
    resume keeps it (copying the upload over it lost up to 30 s of the study). An upload newer
    than a local copy replaces it, and with no local copy the upload is fetched."""
    st, local = Storage(str(tmp_path / "bucket")), tmp_path / "cache" / "simclr.journal"
    st.write_bytes(REL, b"a\nb\n")
    fetch_log(st, REL, local)
    assert local.read_bytes() == b"a\nb\n"
    local.write_bytes(b"a\nb\nc\n")  # written after the last upload
    fetch_log(st, REL, local)
    assert local.read_bytes() == b"a\nb\nc\n"
    st.write_bytes(REL, b"a\nb\nc\nd\n")  # another machine resumed and went on
    fetch_log(st, REL, local)
    assert local.read_bytes() == b"a\nb\nc\nd\n"
    local.write_bytes(b"a\nx\n")  # diverged: the stored copy is the last driver's
    fetch_log(st, REL, local)
    assert local.read_bytes() == b"a\nb\nc\nd\n"
    fetch_log(Storage(str(tmp_path / "empty")), REL, local)  # nothing stored: the local copy stays
    assert local.read_bytes() == b"a\nb\nc\nd\n"


def test_mirror_retries_while_running_and_raises_if_the_last_copy_fails(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """Failed copies during the search are logged and retried; the copy at the end must succeed,
    or the method would be marked searched with its journal missing from storage."""
    journal = tmp_path / "simclr.journal"
    journal.write_bytes(b"a\n")
    st = Flaky(str(tmp_path / "bucket"))
    with caplog.at_level(logging.WARNING):
        with pytest.raises(OSError, match="503"):
            with Mirror(st, journal, REL, every=0.01):
                pass
    assert "could not copy" in caplog.text and not st.exists(REL)
    st.down = False
    with Mirror(st, journal, REL, every=3600):
        journal.write_bytes(b"a\nb\n")
    assert st.read_bytes(REL) == b"a\nb\n"


def test_mirror_thread_survives_a_failed_read(tmp_path: Path) -> None:
    """A read error of the local journal (here: it is briefly a directory) does not end the
    background copies: the next one still goes up."""
    import time

    journal = tmp_path / "simclr.journal"
    journal.mkdir()
    st = Storage(str(tmp_path / "bucket"))
    with Mirror(st, journal, REL, every=0.02) as mirror:
        time.sleep(0.1)
        journal.rmdir()
        journal.write_bytes(b"a\n")
        deadline = time.time() + 10
        while not st.exists(REL) and time.time() < deadline:
            time.sleep(0.02)
        assert mirror._thread.is_alive() and st.read_bytes(REL) == b"a\n"
