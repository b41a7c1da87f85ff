"""Search spaces: the YAML specs of a method turned into an Optuna define-by-run function.

The function only reads the validated :class:`~sslsweep.config.MethodConfig`; what a method
searches is configuration, not code. Only the method's own keys exist in its trials (a
temperature only for contrastive methods).
"""

from __future__ import annotations

from typing import Any

import optuna

from sslsweep.config import MethodConfig, ParamSpec


def suggest(trial: optuna.Trial, spec: ParamSpec) -> Any:
    """One ``trial.suggest_*`` call for a searched :class:`ParamSpec`."""
    if spec.type == "categorical":
        return trial.suggest_categorical(spec.name, list(spec.choices or ()))
    if spec.type in ("int", "intlog"):
        return trial.suggest_int(spec.name, int(spec.low), int(spec.high), log=spec.type == "intlog")  # type: ignore[arg-type]
    return trial.suggest_float(spec.name, spec.low, spec.high, log=spec.type == "loguniform")  # type: ignore[arg-type]


class DefineByRun:
    """The define-by-run space of one method: suggests every searched key and returns the fixed
    ones plus ``method`` and ``seed`` (Ray merges the returned dict into the trial's config).
    A class, not a closure, so Ray can pickle the searcher into its experiment checkpoint."""

    def __init__(self, method: MethodConfig, seed: int) -> None:
        self.method, self.seed = method, seed

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        for spec in self.method.searched.values():
            suggest(trial, spec)
        return {"method": self.method.name, "seed": self.seed, **self.method.fixed}
