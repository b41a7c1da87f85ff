"""Several Tune experiments of one sweep driven at once, from threads of the driver process.

A sweep runs one Tune experiment per method and phase (``search-<method>``, ``confirm-<method>``),
each in its own driver thread (:func:`run_concurrently`), so every method's search shares the
cluster with the others' and a method's confirm starts when its own search ends. Ray Tune supports
``Tuner.fit()`` outside the main thread (it then installs no SIGINT handler). Two pieces of Ray's
process-wide state are not thread-safe, and this module guards them:

- Tune registers an experiment's trainable in a process-wide registry when the experiment starts
  (``ray.tune.registry._Registry``: a dict iterated while it is flushed to Ray's key-value store);
  a second experiment starting at that moment can change the dict under the iteration.
  :func:`start_gate` lets one experiment at a time through its start-up, and
  :class:`DriverEvents` opens the gate as soon as the experiment is set up (Tune calls
  ``Callback.setup`` after the registration), so experiments only queue for a fraction of a second.
- When the first trial of the sweep starts and reports is seen by whichever experiment gets there
  first: :class:`DriverEvents` notes it in this process's :data:`first events <first_events>`.

See docs/concurrency.md for why threads and one Tuner per method rather than one Tuner for all.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, Callable, Iterator, Mapping

from ray.tune import Callback

log = logging.getLogger("sslsweep")

_start_lock = threading.Lock()  # held by the thread whose experiment is starting
_holder = threading.local()  # .holding: whether this thread holds _start_lock
_events_lock = threading.Lock()
_first: dict[str, float] = {}  # event name -> time.time() of its first occurrence in this process


@contextlib.contextmanager
def start_gate() -> Iterator[None]:
    """Hold the start-up gate while the block builds (or restores) a Tuner and calls ``fit()``:
    it opens when the experiment is set up (:class:`DriverEvents`), or at the end of the block for
    an experiment that never got that far (an error, a read-back, a Tuner without the callback)."""
    _start_lock.acquire()
    _holder.holding = True
    try:
        yield
    finally:
        open_gate()


def open_gate() -> None:
    """Let the next experiment start, if this thread holds the gate (else nothing)."""
    if getattr(_holder, "holding", False):
        _holder.holding = False
        _start_lock.release()


class DriverEvents(Callback):
    """Tune callback of every experiment of a sweep (runs in the driver, in the thread that called
    ``fit()``): opens the :func:`start_gate` once the experiment is set up, and notes when this
    process first saw a trial start and a trial result (:func:`first_events`).

    It holds no state of its own: Tune pickles it into the experiment's ``tuner.pkl``, and a
    restored experiment's copy must reach the same process-wide gate and events."""

    def setup(self, **info: Any) -> None:
        open_gate()

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        note_first("trial_start")

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        note_first("trial_result")


def note_first(event: str) -> None:
    """Record the time of ``event`` unless it was already seen in this process since the last reset."""
    with _events_lock:
        _first.setdefault(event, time.time())


def first_events() -> dict[str, float]:
    """Per event (``trial_start``, ``trial_result``), when this process first saw it (epoch seconds)."""
    with _events_lock:
        return dict(_first)


def reset_first_events() -> None:
    """Forget the events seen so far: a sweep's start-up is timed from its own first trial."""
    with _events_lock:
        _first.clear()


def run_concurrently(tasks: Mapping[str, Callable[[], None]]) -> None:
    """Run each task (name -> callable) in its own thread and wait for all of them.

    A task that raises does not stop the others: their work is finished and recorded. After every
    task ended, the error of the first failed task (in ``tasks`` order) is raised; the others are
    logged. The threads are daemons: an interrupted driver (Ctrl-C) exits without waiting for
    trials, which a resume continues from their checkpoints."""
    errors: dict[str, BaseException] = {}

    def run(name: str, task: Callable[[], None]) -> None:
        try:
            task()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread below
            errors[name] = exc

    threads = [threading.Thread(target=run, args=(name, task), name=f"sslsweep {name}", daemon=True)
               for name, task in tasks.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = [name for name in tasks if name in errors]
    for name in failed[1:]:
        log.error("%s failed as well: %s: %s", name, type(errors[name]).__name__, errors[name])
    if failed:
        raise errors[failed[0]]
