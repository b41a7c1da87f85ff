"""Crash recovery of a sweep's search: what lets a new driver continue where an old one died.

- The Optuna journal of a running search is copied to remote storage while it runs
  (:class:`Mirror`) and brought back by the next driver (:func:`fetch_log`).
- A restored searcher reads this machine's copy of the journal, and Optuna trials a crashed
  driver asked for and never ran are closed as FAIL (:func:`restorable_search`).
- A restored Tune experiment can come back with fewer trials than it was given: the missing
  ones run as top-ups in the same study, with ASHA told what the earlier trials reported
  (:func:`with_top_ups`), so every method keeps the same trial budget.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from sslsweep.search.searcher import HonestOptunaSearch, fail_orphaned_trials
from sslsweep.search.tuner import journal_storage
from sslsweep.storage import Storage

log = logging.getLogger("sslsweep")

MAX_TOP_UPS = 3  # rounds of topping up a search that a crash left short
JOURNAL_UPLOAD_S = 30.0  # how often a running search's Optuna journal is copied to remote storage

History = list[tuple[str, list[dict[str, Any]]]]


class Mirror:
    """Copies a local append-only log (Optuna's journal) to ``rel`` in ``storage`` every ``every``
    seconds while the ``with`` block runs, and once more when it ends.

    Only whole lines go up: a line being appended at that moment waits for the next copy, so the
    copy is always a journal Optuna can replay. A failed copy while the block runs is logged and
    retried next time; the copy at the end raises (unless the block is already raising), so a
    method is never marked searched with its journal missing from storage, and a driver lost
    mid-search loses at most ``every`` seconds of its study.
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
            log.warning("could not copy %s to %s: %s", self.local, self.rel, exc)

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


@contextlib.contextmanager
def journal_synced(storage: Storage, rel: str, local: Path, *, running: bool) -> Iterator[None]:
    """Keep the local journal ``local`` and its copy ``rel`` in remote ``storage`` in step: fetched
    before the block, copied up while it runs a search (``running``). A local sweep needs neither."""
    if not storage.remote:
        yield
        return
    fetch_log(storage, rel, local)
    with Mirror(storage, local, rel, JOURNAL_UPLOAD_S) if running else contextlib.nullcontext():
        yield


@contextlib.contextmanager
def restorable_search(method: str, journal: Path, *, searched: bool) -> Iterator[None]:
    """While the block runs, a searcher restored from a Tune snapshot reads this machine's copy of
    ``method``'s journal (the snapshot holds the old driver's path). After it, Optuna trials asked
    for by a driver that crashed before running them are closed as FAIL."""
    HonestOptunaSearch.journal_paths[method] = journal
    try:
        yield
    finally:
        HonestOptunaSearch.journal_paths.pop(method, None)
    if searched and journal.exists():
        closed = fail_orphaned_trials(journal_storage(journal), method)
        if closed:
            log.warning("%s: %d Optuna trial(s) asked before a driver crash and never run marked FAIL", method, closed)


def with_top_ups(fit: Callable[..., list[Any]], *, method: str, num_samples: int, searched: bool, done: bool,
                 history_of: Callable[[list[Any]], History]) -> list[Any]:
    """The results of a method's search experiment (``fit(name)``) and of the top-ups it needs.

    A restored experiment can come back with fewer trials than it was given (Tune's searcher
    snapshot counted trials its trial list did not hold yet). The missing ones run in the same
    Optuna study, ``fit(name, num_samples=k, top_up=i, history=...)``, where ``history`` is what
    ASHA saw of the earlier trials; a top-up can be cut short the same way, hence a few rounds.
    An already searched method (``done``) only reads its top-ups back."""
    grid = fit(f"search-{method}")
    for top_up in range(1, MAX_TOP_UPS + 1):
        missing = num_samples - len(grid) if searched else 0
        if missing <= 0:
            break
        history: History = []
        if not done:
            log.warning("%s: the search ended with %d of %d trials; running the %d missing",
                        method, len(grid), num_samples, missing)
            history = history_of(grid)
        grid += fit(top_up_name(method, top_up), num_samples=missing, top_up=top_up, history=history)
    return grid


def top_up_name(method: str, top_up: int) -> str:
    """The experiment of a method's ``top_up``-th top-up: ``search-<method>-more``, then ``-more2``, ..."""
    return f"search-{method}-more" + (str(top_up) if top_up > 1 else "")


def asha_history(rows: list[dict[str, Any]], metric: str) -> History:
    """Per trial, its reported (epoch, metric) in epoch order: what ASHA saw of it."""
    by_trial: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: (r["trial_id"], r["epoch"])):
        if r.get("metric") is not None and r["epoch"] > 0:
            by_trial.setdefault(r["trial_id"], []).append({"epoch": r["epoch"], metric: r["metric"]})
    return list(by_trial.items())
