"""Ray Tune's Optuna searcher, telling Optuna the truth about how each trial ended."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import optuna
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from sslsweep.search.results import outcome

log = logging.getLogger(__name__)


class HonestOptunaSearch(OptunaSearch):
    """:class:`OptunaSearch` whose ``on_trial_complete`` records a trial ASHA stopped as PRUNED
    (its intermediate values already reported), a diverged or failed one as FAIL, and only a trial
    that reached ``max_epochs`` as COMPLETE.

    Ray's stock searcher tells Optuna COMPLETE with the last value of a stopped trial, so TPE
    learns from partial-budget scores as if they were final and is biased toward configurations
    that look good early.

    Args:
        max_epochs: the full budget of a trial (the ``epoch`` a completed trial reaches).
        **kwargs: passed to :class:`OptunaSearch` (space, sampler, storage, study_name, seed ...).
    """

    def __init__(self, *args: Any, max_epochs: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_epochs = max_epochs

    # Where this process keeps each study's journal (study name -> path), set by the sweep before
    # it restores a search: the snapshot holds the path of the driver that wrote it, which can
    # be another machine's (another $HOME).
    journal_paths: ClassVar[dict[str, Path]] = {}

    def restore(self, checkpoint_path: str) -> None:
        """Tune's snapshot of the searcher, reading this machine's journal file as it is now.

        Optuna's journal backend pickles its file's path and the byte offset of every log line
        it had read. The file here can be another one (a copy fetched from remote storage, older
        than the lost local one), so the backend is reopened on :attr:`journal_paths`' path (or
        its own), offsets read afresh. Trials the snapshot knows but the journal lacks were
        asked after its last upload: they are set aside at once (their results go unrecorded),
        before a new trial can be given the same id in the study."""
        super().restore(checkpoint_path)
        storage = getattr(self._ot_study, "_storage", None)
        backend = getattr(storage, "_backend", None)
        if isinstance(backend, JournalFileBackend):
            path = self.journal_paths.get(self._study_name, Path(backend._file_path))
            storage._backend = JournalFileBackend(str(path))
        for trial_id, ot_trial in self._ot_trials.items():
            if trial_id in self._completed_trials:
                continue
            try:
                self._ot_study._storage.get_trial(ot_trial._trial_id)
            except KeyError:
                log.warning("trial %s is not in the Optuna journal (lost with the previous driver's copy): "
                            "its results are not recorded in the study", trial_id)
                self._completed_trials.add(trial_id)

    def _finished_in_study(self, trial_id: str) -> bool:
        """Whether the study's storage already holds this trial as finished.

        After a driver crash the searcher is restored from Tune's last experiment snapshot, which
        can be older than the Optuna journal: a trial told PRUNED/COMPLETE just before the crash
        is still running as far as Tune knows, and is resumed. The journal is the truth; the
        resumed trial's further results are not reported to Optuna again.
        """
        finished = self._ot_study._storage.get_trial(self._ot_trials[trial_id]._trial_id).state.is_finished()
        if finished:
            self._completed_trials.add(trial_id)
        return finished

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if self._finished_in_study(trial_id):
            log.info("trial %s already finished in the Optuna study (recorded before a restart)", trial_id)
            return
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if self._finished_in_study(trial_id):
            return
        ot_trial = self._ot_trials[trial_id]
        state = {"completed": TrialState.COMPLETE, "stopped": TrialState.PRUNED,
                 "diverged": TrialState.FAIL, "failed": TrialState.FAIL}[outcome(result, error, self.max_epochs)]
        value = result.get(self.metric) if (result and state == TrialState.COMPLETE) else None
        if state == TrialState.COMPLETE and value is None:
            state = TrialState.FAIL
        if result and result.get("error"):
            ot_trial.set_user_attr("error", str(result["error"]))
        try:
            self._ot_study.tell(ot_trial, value, state=state)
        except Exception as exc:  # never let bookkeeping kill the sweep
            log.warning("could not record trial %s in Optuna: %s", trial_id, exc)
        self._completed_trials.add(trial_id)


def fail_orphaned_trials(storage: Any, study_name: str) -> int:
    """Mark as FAIL the trials of a finished search that Optuna still lists as RUNNING.

    Only a driver crash leaves them: the searcher asked Optuna for a trial, then the driver died
    before Tune's experiment snapshot included it, so the restored experiment never runs it and
    suggests a replacement instead. Call after the method's Tuner has returned (every trial Tune
    knows has ended). Returns how many were closed.
    """
    study = optuna.load_study(study_name=study_name, storage=storage)
    orphans = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in orphans:
        storage.set_trial_user_attr(t._trial_id, "error", "asked before a driver crash, never run")
        study.tell(t.number, state=TrialState.FAIL)
    return len(orphans)
