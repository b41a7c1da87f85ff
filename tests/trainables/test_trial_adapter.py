"""The Tune adapter, with Ray's reporting replaced by a recorder: what a trial reports and when."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from sslsweep.config import ConfirmConfig, EncoderConfig, EvalConfig, TrainerConfig
from sslsweep.search.results import outcome
from sslsweep.trainables import trial as trial_mod
from sslsweep.trainables.trial import TrialSettings, confirm_trial, search_trial
from tests.trainables.test_train import tiny_data

SETTINGS = TrialSettings(encoder=EncoderConfig(width=4), trainer=TrainerConfig(), eval=EvalConfig(knn_k=3, selection="oracle", compare=()),
                         confirm=ConfirmConfig(finetune_min_steps=3, finetune_max_steps=3), metric="knn_top1",
                         max_epochs=3, eval_every=1,
                         num_threads=1, budgets=(("fraction", 0.5), ("per_class", 2.0)))
CONFIG = {"method": "rotation", "seed": 0, "lr": 0.05, "weight_decay": 0.0, "batch_size": 16, "strength": 0.0,
          "crop_min": 0.6}


class Recorder:
    """Stands in for ``ray.tune``: records reports and keeps the last checkpoint for a restart."""

    def __init__(self, checkpoint: Any = None) -> None:
        self.reports: list[dict[str, Any]] = []
        self.with_checkpoint: list[bool] = []  # per report: did it carry a checkpoint?
        self.checkpoint = checkpoint
        self.Checkpoint = _Checkpoint

    def report(self, metrics: dict[str, Any], checkpoint: Any = None) -> None:
        self.reports.append(dict(metrics))
        self.with_checkpoint.append(checkpoint is not None)
        if checkpoint is not None:
            self.checkpoint = checkpoint

    def get_checkpoint(self) -> Any:
        return self.checkpoint


class _Checkpoint:
    """A directory checkpoint copied away (Tune persists the reported directory the same way)."""

    counter = 0

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def from_directory(cls, path: str) -> "_Checkpoint":
        import shutil
        import tempfile

        cls.counter += 1
        dest = Path(tempfile.mkdtemp()) / f"checkpoint_{cls.counter:06d}"
        shutil.copytree(path, dest)
        return cls(str(dest))

    @property
    def filesystem(self):  # noqa: ANN201
        import pyarrow.fs

        return pyarrow.fs.LocalFileSystem()

    def as_directory(self):  # noqa: ANN201
        import contextlib

        return contextlib.nullcontext(self.path)


@pytest.fixture()
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(trial_mod, "tune", rec)
    return rec


def test_search_trial_reports_every_epoch_with_a_checkpoint(recorder: Recorder) -> None:
    """One report per epoch with the selection metric in [0, 1]; the last one ends the trial as completed."""
    search_trial(dict(CONFIG), tiny_data(), SETTINGS)
    assert [r["epoch"] for r in recorder.reports] == [1, 2, 3]
    assert all(0 <= r["knn_top1"] <= 1 and r["attempt_start_epoch"] == 0 for r in recorder.reports)
    assert recorder.with_checkpoint == [True, True, True]  # every report, not just one
    assert outcome(recorder.reports[-1], False, SETTINGS.max_epochs) == "completed"


def test_restarted_trial_resumes_after_its_checkpoint(recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second attempt given the first attempt's epoch-2 checkpoint reports epoch 3 only, as resumed from 2."""
    first = Recorder()
    monkeypatch.setattr(trial_mod, "tune", first)
    short = TrialSettings(**{**SETTINGS.__dict__, "max_epochs": 3})
    calls = {"n": 0}
    real = trial_mod.train_epochs

    def crash_after_two(*a, **k):  # noqa: ANN002, ANN003
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("worker killed")
        return real(*a, **k)

    monkeypatch.setattr(trial_mod, "train_epochs", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        search_trial(dict(CONFIG), tiny_data(), short)
    second = Recorder(checkpoint=first.checkpoint)
    monkeypatch.setattr(trial_mod, "tune", second)
    monkeypatch.setattr(trial_mod, "train_epochs", real)
    search_trial(dict(CONFIG), tiny_data(), short)
    assert [r["epoch"] for r in second.reports] == [3]
    assert second.reports[0]["attempt_start_epoch"] == 2


def test_out_of_memory_ends_the_trial_naming_the_batch_size(recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA OOM in one trial: it reports a failure naming its batch size and returns (no crash, no retry)."""

    def oom(*a, **k):  # noqa: ANN002, ANN003
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(trial_mod, "train_epochs", oom)
    search_trial(dict(CONFIG), tiny_data(), SETTINGS)
    (last,) = recorder.reports
    assert last["error"] == "out of GPU memory at batch size 16" and last["diverged"] == 0
    assert outcome(last, False, SETTINGS.max_epochs) == "failed"


def test_out_of_memory_frees_the_trial_before_it_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the OOM result is reported the trial's model and the failed step's tensors are gone:
    a trial sharing the GPU can have the memory while this one winds down. (Inside the except
    block the exception's traceback kept both alive until the trial returned.)"""
    import weakref

    from sslsweep.trainables import train as train_mod

    refs: dict[str, Any] = {}
    real_make = trial_mod.make_pretrainer

    def make(*a, **k):  # noqa: ANN002, ANN003
        pre = real_make(*a, **k)
        refs["task"] = weakref.ref(pre.task)
        return pre

    def oom_step(pre, images):  # noqa: ANN001
        activations = torch.empty(1000)  # what the failing step had allocated
        refs["step"] = weakref.ref(activations)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    alive_at_report: list[tuple[bool, bool]] = []

    class Watching(Recorder):
        def report(self, metrics: dict[str, Any], checkpoint: Any = None) -> None:
            alive_at_report.append((refs["task"]() is not None, refs["step"]() is not None))
            super().report(metrics, checkpoint)

    monkeypatch.setattr(trial_mod, "tune", Watching())
    monkeypatch.setattr(trial_mod, "make_pretrainer", make)
    monkeypatch.setattr(train_mod, "train_one_epoch", oom_step)
    search_trial(dict(CONFIG), tiny_data(), SETTINGS)
    assert alive_at_report == [(False, False)]


def test_diverged_trial_reports_once_as_diverged(recorder: Recorder) -> None:
    """A NaN loss: one final report flagged diverged, with the message; outcome 'diverged'."""
    search_trial({**CONFIG, "lr": 1e30}, tiny_data(), SETTINGS)
    last = recorder.reports[-1]
    assert [r["diverged"] for r in recorder.reports].count(1) == 1  # once, and nothing after it
    assert last["diverged"] == 1 and "pretext loss is" in last["error"]
    assert outcome(last, False, SETTINGS.max_epochs) == "diverged"


def test_random_init_reports_once_at_epoch_zero(recorder: Recorder) -> None:
    """`none` is not pretrained: one report at epoch 0 with the selection metric."""
    search_trial({"method": "none", "seed": 0}, tiny_data(), SETTINGS)
    (r,) = recorder.reports
    assert r["epoch"] == 0 and 0 <= r["knn_top1"] <= 1


def test_confirm_trial_evaluates_every_budget_and_protocol(recorder: Recorder) -> None:
    """Confirm: after pretraining, rows for each budget x (linear, finetune) with val and test accuracy."""
    import json

    confirm_trial({"run": {**CONFIG, "source_trial_id": "abc"}}, tiny_data(), SETTINGS)
    rows = json.loads(recorder.reports[-1]["budget_rows"])
    assert {(r["budget_kind"], r["budget"], r["protocol"]) for r in rows} == {
        ("fraction", 0.5, "linear"), ("fraction", 0.5, "finetune"),
        ("per_class", 2.0, "linear"), ("per_class", 2.0, "finetune")}
    assert all(0 <= r["test_acc"] <= 1 and r["pretrain_epochs"] == 3 for r in rows)
    assert {r["n_labels"] for r in rows if r["budget_kind"] == "per_class"} == {8}  # 2 per class x 4 classes
    # each finetune row records the lr chosen from the grid on a held-out part of its labels
    grid = ConfirmConfig().finetune_lrs
    assert all(r["finetune_lr"] in grid and r["finetune_lr_chosen"] for r in rows if r["protocol"] == "finetune")
    assert all(r.get("finetune_lr") is None for r in rows if r["protocol"] == "linear")


def test_trial_wall_time_includes_the_selection_metric(recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """trial_wall_s is stamped after the evaluation: a selection metric that takes 0.3 s shows in
    every report's trial time (it is the trial's work, not Tune's overhead)."""
    import time

    real = trial_mod.search_metrics
    monkeypatch.setattr(trial_mod, "search_metrics", lambda *a, **k: (time.sleep(0.3), real(*a, **k))[1])
    search_trial(dict(CONFIG), tiny_data(), SETTINGS)
    walls = [r["trial_wall_s"] for r in recorder.reports]
    assert all(w >= 0.3 * (i + 1) for i, w in enumerate(walls)), walls


def test_worker_objects_are_frozen_once_not_again_by_later_trials() -> None:
    """The first trial in a process freezes what is alive (imports, data) out of the collector's
    reach; a later trial on the same reused actor must not freeze the earlier trial's leftovers."""
    import gc

    gc.unfreeze()
    try:
        trial_mod._freeze_imports_once()
        frozen = gc.get_freeze_count()
        assert frozen > 0
        leftovers = [[i] for i in range(1000)]  # objects made after the first trial started
        trial_mod._freeze_imports_once()
        # A frozen object that dies leaves the permanent generation, so the count may drop (Ray's
        # threads free things concurrently); it must not grow, and the leftovers must still be in
        # the collector's generations (gc.get_objects() lists those, never the frozen ones).
        assert gc.get_freeze_count() <= frozen
        tracked = {id(o) for o in gc.get_objects()}
        assert id(leftovers) in tracked and id(leftovers[0]) in tracked
    finally:
        gc.unfreeze()


def test_node_outside_ray_is_local_and_starts_no_ray() -> None:
    """Run outside Ray (the loop's tests, a notebook), a trial's node is 'local': asking Ray's
    runtime context for it would start a local Ray instance as a side effect."""
    import subprocess
    import sys

    code = "import ray; from sslsweep.trainables.trial import _node; print(_node(), ray.is_initialized())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["local", "False"], out.stderr[-2000:]


def test_confirm_trial_evaluates_each_label_selection_of_the_settings(recorder: Recorder) -> None:
    """dataset.label_selection reaches the confirm rows: both selections, as many labels each."""
    import json
    from dataclasses import replace

    settings = replace(SETTINGS, selections=("random", "typical"))
    confirm_trial({"run": {**CONFIG, "source_trial_id": "abc"}}, tiny_data(), settings)
    rows = json.loads(recorder.reports[-1]["budget_rows"])
    assert {r["selection"] for r in rows} == {"random", "typical"} and len(rows) == 8
    counts = {(r["selection"], r["budget_kind"]): r["n_labels"] for r in rows}
    assert all(counts[("random", k)] == counts[("typical", k)] for k in ("fraction", "per_class"))


def test_a_confirm_run_evaluates_only_the_budgets_it_was_chosen_at(recorder: Recorder) -> None:
    """A run whose ``budgets`` names one budget reports rows at that budget only; one naming none
    (made before the budget rule) at every budget of the settings."""
    import json
    from dataclasses import replace

    from sslsweep.trainables.trial import run_budgets

    budgets = (("fraction", 0.5), ("per_class", 2.0))
    assert run_budgets({"run": {"budgets": {"per_class_2": ["budget"]}}}, budgets) == [("per_class", 2.0)]
    assert run_budgets({"run": {"method": "none"}}, budgets) == list(budgets)
    confirm_trial({"run": {**CONFIG, "budgets": {"per_class_2": ["oracle"]}}}, tiny_data(),
                  replace(SETTINGS, budgets=budgets))
    rows = json.loads(recorder.reports[-1]["budget_rows"])
    assert {(r["budget_kind"], r["budget"]) for r in rows} == {("per_class", 2.0)}
