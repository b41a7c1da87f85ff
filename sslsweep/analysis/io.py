"""Read sweep directories (local path or ``s3://``/``gs://``/``file://`` URI) and write report files.

A sweep directory holds ``manifest.json``, ``trials.parquet``, ``budget.parquet`` and, beside
them, ``optuna/<method>.journal`` (see docs/schema.md). Locations are resolved by
:mod:`sslsweep.storage` to ``pyarrow.fs`` filesystems, so that a sweep written to object storage
reads exactly like a local one.

Example::

    sweep = open_sweep("s3://bucket/run")
    both = combine([sweep, open_sweep("/data/runs/rotation")])

Selection rules: a sweep confirms the search trial chosen by its own rule (``eval.selection``,
its *headline rule*) and, for comparison, those chosen by ``eval.compare``; ``budget.parquet``
names each row's rule in ``chosen_by`` (a run chosen by several rules has its rows once per rule).
:attr:`SweepResults.budget_all` keeps every row; :attr:`SweepResults.budget` only the headline
rule's, so that every method table counts each run once and means what it meant before.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from sslsweep import storage
from sslsweep.schema import (
    BUDGET,
    BUDGET_COLUMNS,
    MANIFEST,
    OPTUNA_DIR,
    SELECTION_DEFAULT,
    SELECTION_RULE_DEFAULT,
    SELECTION_RULES,
    TRIAL_COLUMNS,
    TRIALS,
)


@dataclass
class SweepResults:
    """One sweep directory (or several combined), loaded into memory.

    Args:
        uri: where it was read from, as given (for a combined sweep: the uris joined by ", ").
        trials: ``trials.parquet`` as a DataFrame (empty with the schema's columns if missing).
        budget: the rows of ``budget.parquet`` chosen by the sweep's headline rule
            (``chosen_by == headline_rule(manifest)``; for a combined sweep, each sweep's own rows by
            its own rule): one row per method x seed x selection x budget x protocol, what every
            method table and plot of the report reads.
        manifest: ``manifest.json`` as a dict (for a combined sweep: the first sweep's).
        budget_all: every row of ``budget.parquet`` (empty with the schema's columns if missing),
            ``chosen_by`` filled where the file lacks it (:func:`with_chosen_by`): the rows of the
            compared rules too, so a run chosen by several rules appears once per rule.
        fs: the pyarrow filesystem the directory lives on (None for a combined sweep).
        path: the directory's path inside ``fs``.
        studies: Optuna studies loaded from ``optuna/<method>.journal`` (local directories only).
        notes: things the reader should know (files missing, studies skipped, ...).
        parts: for a combined sweep, the sweeps it was made from; empty otherwise.
    """

    uri: str
    trials: pd.DataFrame
    budget: pd.DataFrame
    manifest: dict[str, Any]
    budget_all: pd.DataFrame
    fs: pafs.FileSystem | None = None
    path: str = ""
    studies: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    parts: tuple[SweepResults, ...] = ()

    @property
    def manifests(self) -> list[dict[str, Any]]:
        """The manifest of every sweep this one is made of (one entry for a single sweep)."""
        return [p.manifest for p in self.parts] if self.parts else [self.manifest]

    @property
    def headline_rules(self) -> dict[str, str]:
        """The headline rule of every sweep this one is made of, by sweep id (:func:`headline_rule`)."""
        return {str(m.get("sweep_id")): headline_rule(m) for m in self.manifests}

    @property
    def is_local(self) -> bool:
        """Whether the directory is on the local filesystem."""
        return isinstance(self.fs, pafs.LocalFileSystem)


def resolve(location: str) -> tuple[pafs.FileSystem, str]:
    """Filesystem and in-filesystem path of a sweep location (:func:`sslsweep.storage.resolve`),
    with a ``ValueError`` naming the location when it is empty or its filesystem cannot be opened."""
    if not location:
        raise ValueError("sweep location is '': it must be a local path or a URI such as s3://bucket/run")
    try:
        return storage.resolve(location)
    except (ValueError, OSError, NotImplementedError) as err:  # ArrowInvalid is a ValueError
        raise ValueError(f"sweep location {location!r} cannot be opened: {err}") from err


def _exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.File


def _read_parquet(fs: pafs.FileSystem, path: str) -> pd.DataFrame | None:
    """The Parquet file as a DataFrame, or None when it does not exist."""
    if not _exists(fs, path):
        return None
    return pq.read_table(path, filesystem=fs).to_pandas()


def _empty(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})


def _read_manifest(fs: pafs.FileSystem, directory: str, location: str) -> dict[str, Any]:
    path = storage.join(directory, MANIFEST)
    try:
        kind = fs.get_file_info(directory).type
        present = _exists(fs, path)
    except OSError as err:  # e.g. missing credentials or an unreachable bucket
        raise ValueError(f"{location} cannot be read ({err}): a sweep directory must be readable") from err
    if kind == pafs.FileType.NotFound:
        raise ValueError(f"{location} does not exist: a sweep directory holds {MANIFEST}")
    if not present:
        raise ValueError(f"{location} is not a sweep directory: {MANIFEST} missing")
    with fs.open_input_stream(path) as stream:
        raw = stream.read()
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}): {MANIFEST} must be a JSON object") from err
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} holds a {type(manifest).__name__}: {MANIFEST} must be a JSON object")
    return manifest


def load_journal_studies(directory: str, methods: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """Load ``<directory>/optuna/<method>.journal`` for each method (local directories only).

    Returns the studies found (keyed by method) and a note for each journal that could not be read.
    Missing journals are silent: a sweep may simply not have kept them.
    """
    studies: dict[str, Any] = {}
    notes: list[str] = []
    for method in methods:
        path = os.path.join(directory, OPTUNA_DIR, f"{method}.journal")
        if not os.path.isfile(path):
            continue
        try:
            journal = JournalStorage(JournalFileBackend(path))
            studies[method] = optuna.load_study(study_name=method, storage=journal)
        except Exception as err:  # noqa: BLE001 - a broken journal must not stop the report
            notes.append(f"Optuna journal {path} could not be read ({type(err).__name__}: {err}); "
                         f"importances for {method} come from trials.parquet instead.")
    return studies, notes


def headline_rule(manifest: dict[str, Any]) -> str:
    """The rule a sweep's confirmed configurations were chosen by: ``config.eval.selection``, or
    ``oracle`` (SELECTION_RULE_DEFAULT) for a sweep whose config names none (written before rules)."""
    config = manifest.get("config")
    ev = config.get("eval") if isinstance(config, dict) else None
    rule = ev.get("selection") if isinstance(ev, dict) else None
    if rule is None:
        return SELECTION_RULE_DEFAULT
    if rule not in SELECTION_RULES:
        raise ValueError(f"manifest config.eval.selection is {rule!r} in sweep {manifest.get('sweep_id')!r}: "
                         f"it must be one of {list(SELECTION_RULES)}")
    return str(rule)


def with_chosen_by(budget: pd.DataFrame, rule: str) -> pd.DataFrame:
    """``budget`` with a ``chosen_by`` on every row: a file (or row) without one was chosen by the
    sweep's headline ``rule``. Raises ``ValueError`` naming a value that is not a selection rule."""
    if "chosen_by" not in budget.columns:
        budget = budget.assign(chosen_by=rule)
    elif budget["chosen_by"].isna().any():
        budget = budget.assign(chosen_by=budget["chosen_by"].fillna(rule))
    unknown = sorted(set(budget["chosen_by"].astype(str)) - set(SELECTION_RULES))
    if unknown:
        raise ValueError(f"budget.parquet chosen_by holds {unknown}: it must be one of {list(SELECTION_RULES)}")
    return budget


def _headline_rows(budget_all: pd.DataFrame, rule: str) -> pd.DataFrame:
    return budget_all[budget_all["chosen_by"].astype(str) == rule].reset_index(drop=True)


def _methods(trials: pd.DataFrame, budget: pd.DataFrame) -> list[str]:
    names = set(trials["method"].dropna().astype(str)) | set(budget["method"].dropna().astype(str))
    return sorted(names)


def open_sweep(location: str, *, load_studies: bool = True) -> SweepResults:
    """Load one sweep directory given as a local path or a URI.

    Raises:
        ValueError: when the directory has no ``manifest.json`` ("... is not a sweep directory").
    """
    fs, directory = resolve(location)
    manifest = _read_manifest(fs, directory, location)
    notes: list[str] = []
    trials = _read_parquet(fs, storage.join(directory, TRIALS))
    if trials is None:
        notes.append(f"{location}: {TRIALS} missing: no search results to report.")
        trials = _empty(list(TRIAL_COLUMNS))
    budget_all = _read_parquet(fs, storage.join(directory, BUDGET))
    if budget_all is None:
        notes.append(f"{location}: {BUDGET} missing: no confirm-phase (test accuracy) results.")
        budget_all = _empty(list(BUDGET_COLUMNS))
    elif "selection" not in budget_all.columns:  # written without label selections: every subset was random
        budget_all["selection"] = SELECTION_DEFAULT
    rule = headline_rule(manifest)
    budget_all = with_chosen_by(budget_all, rule)
    budget = _headline_rows(budget_all, rule)
    if budget.empty and not budget_all.empty:
        others = sorted(set(budget_all["chosen_by"].astype(str)))
        notes.append(f"{location}: {BUDGET} holds no row chosen by the headline rule {rule} (eval.selection), "
                     f"only by {others}: the accuracy tables are empty.")
    studies: dict[str, Any] = {}
    if load_studies and isinstance(fs, pafs.LocalFileSystem):
        studies, more = load_journal_studies(directory, _methods(trials, budget))
        notes.extend(more)
    elif load_studies:
        notes.append(f"{location} is remote: Optuna journals are not read; hyperparameter "
                     f"importances come from trials.parquet.")
    return SweepResults(uri=location, trials=trials, budget=budget, manifest=manifest, budget_all=budget_all,
                        fs=fs, path=directory, studies=studies, notes=notes)


def fingerprint(manifest: dict[str, Any]) -> str | None:
    """The dataset fingerprint recorded in a manifest, or None."""
    dataset = manifest.get("dataset") or {}
    value = dataset.get("fingerprint") if isinstance(dataset, dict) else None
    return None if value is None else str(value)


def fingerprint_names(manifest: dict[str, Any]) -> set[str]:
    """Every name the manifest gives its dataset: the fingerprint and its aliases (what an older
    sslsweep called the same data, e.g. the pixel hash of data now named by its source files)."""
    dataset = manifest.get("dataset") or {}
    aliases = dataset.get("fingerprint_aliases") if isinstance(dataset, dict) else None
    return {str(v) for v in [fingerprint(manifest), *(aliases or [])] if v is not None}


def _check_same(sweeps: Sequence[SweepResults], key: str, rule: str) -> None:
    values = {s.uri: s.manifest.get(key) for s in sweeps}
    if len({json.dumps(v, sort_keys=True, default=str) for v in values.values()}) > 1:
        shown = ", ".join(f"{uri}: {key}={v!r}" for uri, v in values.items())
        raise ValueError(f"manifest {key} differs between sweeps ({shown}): {rule}")


def _check_fingerprints(sweeps: Sequence[SweepResults]) -> None:
    for s in sweeps:
        if fingerprint(s.manifest) is None:
            raise ValueError(f"{s.uri}: manifest dataset.fingerprint is None: combined sweeps must "
                             f"share a dataset, and without a fingerprint that cannot be checked")
    first = sweeps[0]
    for other in sweeps[1:]:
        if not fingerprint_names(other.manifest) & fingerprint_names(first.manifest):
            raise ValueError(
                f"dataset fingerprint {fingerprint(first.manifest)} ({first.uri}) != "
                f"{fingerprint(other.manifest)} ({other.uri}): combined sweeps must share a dataset")


# What decides the train/val/test split and the label subsets drawn from it, besides the pixels:
# the config's split settings and the split sizes the sweep recorded. (test_fraction is left out:
# with a test set of the dataset's own it is unused; where it is used the test size shows it.)
SPLIT_KEYS = ("config.dataset.split_seed", "config.dataset.val_fraction", "config.dataset.max_images",
              "dataset.n_train", "dataset.n_val", "dataset.n_test")


def _split_settings(manifest: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key in SPLIT_KEYS:
        value: Any = manifest
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        out[key] = value
    return out


def _check_same_splits(sweeps: Sequence[SweepResults]) -> None:
    """The same pixels split differently give other test sets: a seed-paired comparison across
    such sweeps would pair accuracies measured on different images."""
    first = _split_settings(sweeps[0].manifest)
    for other in sweeps[1:]:
        theirs = _split_settings(other.manifest)
        if theirs != first:
            key = next(k for k in SPLIT_KEYS if theirs[k] != first[k])
            raise ValueError(f"manifest {key} is {first[key]!r} in {sweeps[0].uri} and {theirs[key]!r} in "
                             f"{other.uri}: combined sweeps must split the dataset the same way")


def _check_no_duplicate_rows(budget: pd.DataFrame, by_rule: bool = False) -> None:
    """No method x seed x selection x budget x protocol twice (``by_rule``: twice under one
    ``chosen_by``, for the table of every rule, where a run chosen by several rules repeats)."""
    key = ["method", "seed", "budget_kind", "budget", "protocol", "selection"] + (["chosen_by"] if by_rule else [])
    if budget.empty:
        return
    dup = budget[budget.duplicated(subset=key, keep=False)]
    if not dup.empty:
        row = dup.iloc[0]
        where = sorted(set(dup.loc[(dup[key] == row[key]).all(axis=1), "sweep_id"].astype(str)))
        rule = f" chosen_by={row['chosen_by']}" if by_rule else ""
        raise ValueError(
            f"budget row method={row['method']} seed={row['seed']} budget={row['budget']} "
            f"protocol={row['protocol']} selection={row['selection']}{rule} appears in sweeps {where}: combined "
            f"sweeps must not repeat a method x seed x selection x budget x protocol"
            f"{' under one selection rule' if by_rule else ''}")


def combine(sweeps: Sequence[SweepResults]) -> SweepResults:
    """Concatenate several sweeps of the same dataset into one.

    Rules (each a ``ValueError`` naming the values): the sweeps share the dataset fingerprint,
    the split (:data:`SPLIT_KEYS`), the selection ``metric`` and ``mode``; sweep ids are distinct;
    no method x seed x selection x budget x protocol row appears twice, neither among the headline
    rules' rows nor under one ``chosen_by``. Each sweep keeps its own headline rule's rows in
    ``budget`` (a note says so when the sweeps' headline rules differ). A method present in several
    sweeps has its Optuna study dropped (importances then come from the combined trials table).
    """
    if not sweeps:
        raise ValueError("sweeps is empty: combine needs at least one sweep")
    if len(sweeps) == 1:
        return sweeps[0]
    _check_fingerprints(sweeps)
    _check_same_splits(sweeps)
    _check_same(sweeps, "metric", "combined sweeps must select on the same metric")
    _check_same(sweeps, "mode", "combined sweeps must optimise in the same mode")
    ids = [str(s.manifest.get("sweep_id")) for s in sweeps]
    if len(set(ids)) != len(ids):
        raise ValueError(f"sweep_id repeated in {ids}: each sweep can be combined only once")
    trials = pd.concat([s.trials for s in sweeps], ignore_index=True)
    budget = pd.concat([s.budget for s in sweeps], ignore_index=True)
    budget_all = pd.concat([s.budget_all for s in sweeps], ignore_index=True)
    _check_no_duplicate_rows(budget)
    _check_no_duplicate_rows(budget_all, by_rule=True)
    studies, notes = _merge_studies(sweeps)
    rules = {str(s.manifest.get("sweep_id")): headline_rule(s.manifest) for s in sweeps}
    if len(set(rules.values())) > 1:
        shown = ", ".join(f"{k}: {v}" for k, v in rules.items())
        notes.append(f"The sweeps' headline selection rules differ ({shown}): the accuracy tables compare "
                     f"configurations chosen by different rules.")
    return SweepResults(uri=", ".join(s.uri for s in sweeps), trials=trials, budget=budget,
                        manifest=sweeps[0].manifest, budget_all=budget_all, fs=None, path="", studies=studies,
                        notes=[n for s in sweeps for n in s.notes] + notes, parts=tuple(sweeps))


def _merge_studies(sweeps: Sequence[SweepResults]) -> tuple[dict[str, Any], list[str]]:
    seen: dict[str, int] = {}
    for s in sweeps:
        for method in s.studies:
            seen[method] = seen.get(method, 0) + 1
    studies = {m: st for s in sweeps for m, st in s.studies.items() if seen[m] == 1}
    notes = [f"{m}: present in {k} sweeps; its importances come from the combined trials table."
             for m, k in sorted(seen.items()) if k > 1]
    return studies, notes


def write_text(location: str, name: str, text: str) -> str:
    """Write ``text`` (UTF-8) to ``<location>/<name>`` atomically (:func:`sslsweep.storage.atomic_write`)
    and return where it went: a local path for a plain path, ``<location>/<name>`` for a URI
    (``file://`` included).
    """
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"file name {name!r} is not a plain file name: it must not contain '/'")
    fs, directory = resolve(location)
    target = storage.join(directory, name)
    storage.atomic_write(fs, target, text.encode("utf-8"))
    return target if not storage.scheme(location) else storage.join(location, name)
