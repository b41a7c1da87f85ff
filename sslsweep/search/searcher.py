"""Ray Tune's Optuna searcher, telling Optuna the truth about how each trial ended."""

from __future__ import annotations

import logging
from typing import Any

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

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
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
