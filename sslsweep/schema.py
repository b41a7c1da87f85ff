"""The files of a sweep directory and the columns of its Parquet tables, defined once.

The writers (:mod:`sslsweep.search.results`) build their pyarrow schemas from these dicts and
the readers (:mod:`sslsweep.analysis`) check and fill columns from them; ``docs/schema.md``
documents the same columns and a test holds the two together.
"""

from __future__ import annotations

import pyarrow as pa

MANIFEST = "manifest.json"
TRIALS = "trials.parquet"
BUDGET = "budget.parquet"
OPTUNA_DIR = "optuna"
TUNE_DIR = "tune"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"

# trials.parquet: one row per reported result of a search trial, then one ``hp_<name>`` column
# per hyperparameter (its type follows the values: bool, int64, float64 or string).
TRIAL_COLUMNS: dict[str, pa.DataType] = {
    "sweep_id": pa.string(), "method": pa.string(), "trial_id": pa.string(), "seed": pa.int64(),
    "epoch": pa.int64(), "metric": pa.float64(), "pretext_loss": pa.float64(), "pretext_acc": pa.float64(),
    "wall_time_s": pa.float64(), "epoch_time_s": pa.float64(), "throughput": pa.float64(),
    "status": pa.string(), "error": pa.string(), "node_id": pa.string(),
}
HP_PREFIX = "hp_"

# budget.parquet: one row per method x seed x label selection x label budget x protocol of the
# confirm phase. A file without ``selection`` reads as all ``random`` (SELECTION_DEFAULT).
BUDGET_COLUMNS: dict[str, pa.DataType] = {
    "sweep_id": pa.string(), "method": pa.string(), "seed": pa.int64(), "trial_id": pa.string(),
    "source_trial_id": pa.string(), "budget_kind": pa.string(), "budget": pa.float64(), "n_labels": pa.int64(),
    "protocol": pa.string(), "selection": pa.string(), "val_acc": pa.float64(), "test_acc": pa.float64(),
    "pretrain_epochs": pa.int64(), "pretrain_time_s": pa.float64(), "eval_time_s": pa.float64(),
    "finetune_lr": pa.float64(), "finetune_lr_chosen": pa.bool_(), "chosen_by": pa.string(),
}

# The ``selection`` of a budget row that names none: the random subsets a sweep draws by default.
SELECTION_DEFAULT = "random"
SELECTIONS = ("random", "typical")  # values of budget.parquet ``selection`` and dataset.label_selection

# Rules that choose, per method and label budget, the search trial the confirm phase retrains
# (eval.selection, eval.compare; docs/selection.md). budget.parquet ``chosen_by`` names the rule a
# row's run was chosen by (a run chosen by several rules has its rows once per rule); a file
# without the column was chosen by its sweep's ``eval.selection`` (``oracle`` when that is absent).
SELECTION_RULES = ("budget", "label_free", "oracle")
SELECTION_RULE_DEFAULT = "oracle"  # what a sweep that names no eval.selection was selected by

# manifest.json ``choices``: one dict per method x rule x label budget x confirm seed
# (sslsweep.search.choice); ``seed`` is absent in sweeps made before per-seed choices.
CHOICE_FIELDS = ("method", "rule", "budget_kind", "budget", "seed", "trial_id", "score", "signal")


def search_rule(selection: str) -> str:
    """The rule whose signal a sweep's search maximises (its trials' ``metric``): the oracle's under
    ``eval.selection = oracle``; RankMe (``label_free``) under label_free and budget, whose searches
    read no label."""
    return "oracle" if selection == "oracle" else "label_free"


# trials.parquet score columns: every selection signal a search trial reported besides ``metric``
# (float64): ``score_oracle``, ``score_label_free`` and ``score_budget_<kind>_<value>_s<seed>`` per
# label budget and confirm seed.
SCORE_PREFIX = "score_"


def budget_label(kind: str, value: float) -> str:
    """A label budget's short name: ``fraction_0.01``, ``per_class_5``."""
    return f"{kind}_{value:g}"


def score_column(rule: str, kind: str | None = None, value: float | None = None, seed: int | None = None) -> str:
    """The trials.parquet column of a selection signal: ``score_oracle``, ``score_label_free``,
    ``score_budget_fraction_0.01_s0`` (the ``budget`` rule has one per label budget and confirm
    seed: each seed draws its own labelled subset)."""
    if rule == "budget":
        assert kind is not None and value is not None and seed is not None, "the budget rule's score is per budget and seed"
        return f"{SCORE_PREFIX}budget_{budget_label(kind, value)}_s{seed}"
    return f"{SCORE_PREFIX}{rule}"


# Trial statuses (trials.parquet ``status``).
STATUSES = ("completed", "stopped", "failed", "diverged")

# Keys a trial's config holds besides its hyperparameters: a search space may not use them as
# names, and they never become ``hp_`` columns (confirm trials nest their config under ``run``).
TRIAL_KEYS = ("method", "seed", "run", "source_trial_id", "budgets")


def hp_column(name: str) -> str:
    """The trials.parquet column of hyperparameter ``name``."""
    return f"{HP_PREFIX}{name}"
