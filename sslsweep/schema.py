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
    "finetune_lr": pa.float64(), "finetune_lr_chosen": pa.bool_(),
}

# The ``selection`` of a budget row that names none: the random subsets a sweep draws by default.
SELECTION_DEFAULT = "random"
SELECTIONS = ("random", "typical")  # values of budget.parquet ``selection`` and dataset.label_selection

# Trial statuses (trials.parquet ``status``).
STATUSES = ("completed", "stopped", "failed", "diverged")

# Keys a trial's config holds besides its hyperparameters: a search space may not use them as
# names, and they never become ``hp_`` columns (confirm trials nest their config under ``run``).
TRIAL_KEYS = ("method", "seed", "run", "source_trial_id")


def hp_column(name: str) -> str:
    """The trials.parquet column of hyperparameter ``name``."""
    return f"{HP_PREFIX}{name}"
