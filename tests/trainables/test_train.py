"""The plain-PyTorch loop: resumable state, divergence, checkpoints, the CUDA-style path on CPU."""

from __future__ import annotations

import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from sslsweep.config import ConfirmConfig, DatasetConfig, EncoderConfig, EvalConfig, TrainerConfig
from sslsweep.data import Prepared, Splits, fingerprint, prepare
from sslsweep.trainables.train import (
    DeviceData,
    Diverged,
    HostPool,
    Runtime,
    choose_residency,
    lr_at,
    load_checkpoint,
    make_pretrainer,
    save_checkpoint,
    train_one_epoch,
)
from sslsweep.trainables.scores import evaluate_budgets, selection_metric
from tests.conftest import make_images
from tests.data.conftest import photos, write_shards

CPU = Runtime(torch.device("cpu"), autocast=False, channels_last=False, compile=False)
HP = {"lr": 0.05, "weight_decay": 1e-4, "batch_size": 16, "strength": 0.5, "temperature": 0.5, "crop_min": 0.3,
      "proj_dim": 128, "negatives": "standard"}


def tiny_data(n: int = 64, channels: int = 1) -> Prepared:
    images, labels = make_images(n, classes=4, channels=channels)
    idx = np.arange(n)
    return Prepared(images=images, labels=labels, splits=Splits(train=idx[:40], val=idx[40:52], test=idx[52:]),
                    classes=[str(c) for c in range(4)], fingerprint=fingerprint(images, labels), hflip=False)


def pretrainer(method: str = "simclr", runtime: Runtime = CPU, hp: dict | None = None, seed: int = 0):
    data = tiny_data()
    pre = make_pretrainer(method, hp or HP, data, EncoderConfig(width=4), TrainerConfig(), runtime, max_epochs=4,
                          seed=seed)
    return pre, DeviceData.put(data, runtime.device)


def test_lr_schedule_warms_up_then_decays_to_zero() -> None:
    """Linear warm-up reaches the base lr, cosine decay ends at 0."""
    assert lr_at(0.5, 1.0, 10, 1) == pytest.approx(0.5)
    assert lr_at(1.0, 1.0, 10, 1) == pytest.approx(1.0)
    assert lr_at(10.0, 1.0, 10, 1) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(5.5, 1.0, 10, 1) == pytest.approx(0.5)


def test_resumed_state_continues_exactly_like_an_uninterrupted_run(tmp_path: Path) -> None:
    """Save after epoch 1, load into a fresh pretrainer: epoch 2 gives the same loss as without the break."""
    a, dd = pretrainer()
    train_one_epoch(a, dd.pool())
    save_checkpoint(a.state_dict(), tmp_path)
    expected = train_one_epoch(a, dd.pool()).loss
    b, _ = pretrainer(seed=123)  # different init: everything must come from the checkpoint
    b.load_state_dict(load_checkpoint(tmp_path / "state.pt"))
    assert b.epoch == 1
    assert train_one_epoch(b, dd.pool()).loss == pytest.approx(expected, rel=1e-5)


def test_same_seed_same_loss_different_seed_different_loss() -> None:
    """Seeding fixes weights, batch order and augmentation."""
    losses = [train_one_epoch(*(lambda p: (p[0], p[1].pool()))(pretrainer(seed=s))).loss for s in (0, 0, 1)]
    assert losses[0] == losses[1] != losses[2]


def test_nan_loss_raises_diverged_naming_lr_and_batch_size() -> None:
    """An absurd learning rate makes the loss non-finite: Diverged, naming lr and batch size."""
    pre, dd = pretrainer("rotation", hp={**HP, "lr": 1e12})
    with pytest.raises(Diverged, match=r"pretext loss is (nan|inf).*lr 1e\+12, batch size 16"):
        for _ in range(4):
            train_one_epoch(pre, dd.pool())


def test_bf16_autocast_and_channels_last_path_runs_on_cpu() -> None:
    """The CUDA configuration (bf16 autocast + channels_last) is exercised on CPU: finite loss, views counted."""
    rt = Runtime(torch.device("cpu"), autocast=True, channels_last=True, compile=False)
    pre, dd = pretrainer(runtime=rt)
    stats = train_one_epoch(pre, dd.pool())
    assert np.isfinite(stats.loss) and stats.views == 2 * 16 * 2  # 2 steps of 16 images, 2 views each
    assert 0 <= selection_metric(pre.encoder, dd, EvalConfig(knn_k=3, selection="oracle"), rt) <= 1


def test_runtime_resolves_cpu_defaults_without_cuda() -> None:
    """auto on a machine without CUDA: CPU, fp32, no channels_last; compile as configured."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rt = Runtime.resolve(TrainerConfig())
    assert rt == Runtime(torch.device("cpu"), autocast=False, channels_last=False, compile=False)
    assert Runtime.resolve(TrainerConfig(compile=True)).compile
    with pytest.raises(RuntimeError, match="trainer.device = 'cuda'"):
        Runtime.resolve(TrainerConfig(device="cuda"))


def test_corrupt_checkpoint_names_its_file(tmp_path: Path) -> None:
    """A truncated checkpoint raises ValueError naming the file; loading is weights_only."""
    pre, _ = pretrainer()
    path = save_checkpoint(pre.state_dict(), tmp_path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=rf"checkpoint {path} cannot be loaded"):
        load_checkpoint(path)


def test_pickled_code_in_a_checkpoint_is_refused(tmp_path: Path) -> None:
    """weights_only=True: a checkpoint carrying an arbitrary object is refused, not unpickled."""
    path = tmp_path / "state.pt"
    torch.save({"task": {}, "payload": replace}, path)  # a function object
    with pytest.raises(ValueError, match="cannot be loaded"):
        load_checkpoint(path)


def test_restore_falls_back_to_the_previous_checkpoint(tmp_path: Path) -> None:
    """When the newest checkpoint is corrupt, the trial resumes from the one before it."""
    from ray import tune

    from sslsweep.trainables.trial import restore_latest

    pre, dd = pretrainer()
    train_one_epoch(pre, dd.pool())
    save_checkpoint(pre.state_dict(), tmp_path / "checkpoint_000000")
    train_one_epoch(pre, dd.pool())
    newest = save_checkpoint(pre.state_dict(), tmp_path / "checkpoint_000001")
    newest.write_bytes(b"garbage")
    fresh, _ = pretrainer()
    restore_latest(fresh, tune.Checkpoint.from_directory(str(tmp_path / "checkpoint_000001")))
    assert fresh.epoch == 1
    only_corrupt, _ = pretrainer()
    (tmp_path / "checkpoint_000000" / "state.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="checkpoint_000001/state.pt cannot be loaded"):
        restore_latest(only_corrupt, tune.Checkpoint.from_directory(str(tmp_path / "checkpoint_000001")))



def test_compiled_encoder_trains_like_eager_and_keeps_checkpoint_keys(tmp_path: Path) -> None:
    """trainer.compile=true (torch.compile of the encoder, the path CUDA trials use) on CPU: the
    first epoch's loss equals the eager one's, and the checkpoint has the eager key names, so it
    loads into an uncompiled pretrainer and resumes identically."""
    rt = Runtime.resolve(TrainerConfig(device="cpu", compile=True))
    assert rt.compile, "compile must be honoured on CPU, or this path is CUDA-only and untested"
    compiled, dd = pretrainer(runtime=rt)
    eager, _ = pretrainer()
    assert train_one_epoch(compiled, dd.pool()).loss == pytest.approx(train_one_epoch(eager, dd.pool()).loss, rel=1e-4)
    save_checkpoint(compiled.state_dict(), tmp_path)
    state = load_checkpoint(tmp_path / "state.pt")
    assert set(state["task"]) == set(eager.state_dict()["task"])
    resumed, _ = pretrainer(seed=99)
    resumed.load_state_dict(state)
    expected = train_one_epoch(compiled, dd.pool()).loss
    assert train_one_epoch(resumed, dd.pool()).loss == pytest.approx(expected, rel=1e-4)


def test_a_method_can_fix_its_own_optimizer_dcgans_adam() -> None:
    """gan's config fixes Adam with beta1 0.5 (DCGAN sec. 4) whatever trainer.optimizer says; other
    methods get the trainer's SGD."""
    gan, _ = pretrainer("gan", hp={"lr": 2e-4, "g_lr": 2e-4, "batch_size": 16, "optimizer": "adamw", "beta1": 0.5,
                                   "weight_decay": 0.0, "z_dim": 8, "gen_width": 4})
    assert isinstance(gan.optimizer, torch.optim.AdamW)
    assert gan.optimizer.param_groups[0]["betas"] == (0.5, 0.999)
    simclr, _ = pretrainer("simclr")
    assert isinstance(simclr.optimizer, torch.optim.SGD)


def test_read_only_split_indices_from_the_object_store_select_without_a_warning() -> None:
    """Ray hands trials read-only arrays: selecting by a read-only index array picks the same rows
    and does not make every trial log torch's non-writable-array warning."""
    data = tiny_data()
    dd = DeviceData.put(data, torch.device("cpu"))
    val = data.splits.val.copy()
    val.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        picked = dd.images[dd.idx(val)]
    # torch warns about a non-writable array once per process, so the filter above may see nothing
    # if an earlier test triggered it; what keeps the warning away is that the index is a copy
    assert not np.shares_memory(dd.idx(val).numpy(), val)
    assert torch.equal(picked, torch.from_numpy(data.images[data.splits.val]))


# ----------------------------------------------------------------------------- residency


def streamed_twin(tmp_path: Path) -> tuple[Prepared, Prepared]:
    """The same 60 photos (non-square JPEGs in 3 HF-layout shards) prepared in memory and as a stream."""
    blobs, labels = photos(60)
    write_shards(tmp_path / "ds", blobs, labels, n_shards=3, row_group=8)
    base = DatasetConfig(name="parquet", path=str(tmp_path / "ds"), image_size=16, val_fraction=0.2,
                         test_fraction=0.2, stream_buffer=16, stream_workers=2)
    return prepare(replace(base, residency="device")), prepare(replace(base, residency="stream"))


def test_host_residency_trains_exactly_like_device_residency() -> None:
    """host keeps the pool in host memory and moves each batch per step, with the device path's
    permutation: the same seed gives the same epoch losses."""
    data = tiny_data()
    losses = {}
    for residency in ("device", "host"):
        pre = make_pretrainer("simclr", HP, data, EncoderConfig(width=4), TrainerConfig(), CPU, max_epochs=4, seed=0)
        dd = DeviceData.put(data, CPU.device, residency)
        assert (dd.images.device.type, dd.residency) == ("cpu", residency)
        losses[residency] = [train_one_epoch(pre, dd.pool()).loss for _ in range(2)]
    assert losses["host"] == pytest.approx(losses["device"], rel=1e-6)


@pytest.mark.parametrize("residency", ["host", "device"])
def test_a_trial_shares_the_pool_it_got_from_the_object_store(residency: str) -> None:
    """On the host (``host``, and ``device`` on a CPU trial) a trial uses the array it was handed
    without copying it: Ray's object store gives every trial of a node the same read-only array,
    so the node holds one copy of the pool, not one per trial. The pool a trial trains from
    (``whole=False``, every task but Exemplar on clusters) reads that array, not a copy of the
    train split; the array is never written, and an epoch trains."""
    data = tiny_data()
    images = data.images.copy()
    images.setflags(write=False)  # as ray.get returns it
    data = replace(data, images=images)
    pre = make_pretrainer("simclr", HP, data, EncoderConfig(width=4), TrainerConfig(), CPU, max_epochs=2, seed=0)
    dd = DeviceData.put(data, CPU.device, residency)
    assert np.shares_memory(dd.images.numpy(), images)
    pool = dd.pool(whole=False)
    assert isinstance(pool, HostPool) and np.shares_memory(pool.images.numpy(), images)
    before = images.copy()
    assert np.isfinite(train_one_epoch(pre, pool).loss)
    assert np.array_equal(images, before)


def test_sharing_a_read_only_array_raises_no_warning() -> None:
    """Wrapping the object store's read-only array (:func:`shared_tensor`) does not make every
    trial log torch's non-writable-array warning. torch warns once per process, so each case runs
    in a fresh interpreter with warnings as errors; there the same array through
    ``torch.from_numpy`` does warn (the check can fail)."""
    setup = ("import numpy as np, torch, warnings; warnings.simplefilter('error'); "
             "a = np.zeros((2, 3), np.uint8); a.setflags(write=False); ")
    shared = subprocess.run([sys.executable, "-c", setup + "from sslsweep.trainables.train import shared_tensor; "
                             "assert np.shares_memory(shared_tensor(a).numpy(), a)"],
                            capture_output=True, text=True, timeout=120)
    assert shared.returncode == 0, shared.stderr[-2000:]
    plain = subprocess.run([sys.executable, "-c", setup + "torch.from_numpy(a)"], capture_output=True, text=True,
                           timeout=120)
    assert plain.returncode != 0 and "not writable" in plain.stderr, plain.stderr[-2000:]


def test_a_cpu_pool_read_from_the_shared_array_trains_exactly_like_its_copy() -> None:
    """``device`` on a CPU trial: the pool read a batch at a time from the shared array
    (``whole=False``) gives the same epoch losses as the train split copied into one tensor
    (``whole=True``, what a task that needs the pool at epoch start gets)."""
    data = tiny_data()
    dd = DeviceData.put(data, CPU.device)
    assert isinstance(dd.pool(whole=True), torch.Tensor)
    losses = {}
    for whole in (True, False):
        pre = make_pretrainer("simclr", HP, data, EncoderConfig(width=4), TrainerConfig(), CPU, max_epochs=4, seed=0)
        losses[whole] = [train_one_epoch(pre, dd.pool(whole=whole)).loss for _ in range(2)]
    assert losses[False] == pytest.approx(losses[True], rel=1e-6)


def test_stream_residency_scores_like_memory_and_trains(tmp_path: Path, cache_dir: Path) -> None:
    """Streamed evaluation reads the in-memory path's pixels (shorter side, centre crop), so one
    encoder gets the same selection metric and confirm rows from both; a streamed epoch trains
    (finite loss, whole batches) without the images ever being in memory."""
    mem, st = streamed_twin(tmp_path)
    pre = make_pretrainer("simclr", HP, mem, EncoderConfig(width=4), TrainerConfig(), CPU, max_epochs=2, seed=0)
    on_device, streamed = DeviceData.put(mem, CPU.device), DeviceData.put(st, CPU.device, "stream")
    assert streamed.images is None
    ev = EvalConfig(knn_k=3, selection="oracle")
    assert selection_metric(pre.encoder, streamed, ev, CPU) == selection_metric(pre.encoder, on_device, ev, CPU)
    confirm = ConfirmConfig(finetune_min_steps=2, finetune_max_steps=2, finetune_lrs=(0.01,))
    rows = [evaluate_budgets(pre.encoder, d, confirm, [("fraction", 0.5)], CPU, seed=0) for d in (on_device, streamed)]
    linear = [[r for r in rs if r["protocol"] == "linear"][0] for rs in rows]
    assert linear[0]["test_acc"] == linear[1]["test_acc"] and linear[0]["n_labels"] == linear[1]["n_labels"]
    stats = train_one_epoch(pre, streamed.pool())
    assert np.isfinite(stats.loss) and stats.views == 2 * 16 * (len(st.splits.train) // 16)
    streamed.close()


def test_auto_residency_on_the_cpu_is_device() -> None:
    data = tiny_data()
    assert choose_residency(replace(data, residency="auto"), CPU.device, 0.0) == "device"
    assert choose_residency(replace(data, residency="host"), CPU.device, 0.0) == "host"


@pytest.mark.parametrize("residency", ["host", "stream"])
def test_fine_tuned_models_are_scored_a_batch_at_a_time_with_the_same_accuracy(
        residency: str, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under host and stream residency the confirm rows equal the device path's (linear and
    fine-tune), and only the budget's labelled subset is ever materialized whole: the val and test
    splits are scored from labelled_batches."""
    mem, st = streamed_twin(tmp_path)
    data = st if residency == "stream" else mem
    pre = make_pretrainer("simclr", HP, mem, EncoderConfig(width=4), TrainerConfig(), CPU, max_epochs=1, seed=0)
    on_device, other = DeviceData.put(mem, CPU.device), DeviceData.put(data, CPU.device, residency)
    sizes: list[int] = []
    real = DeviceData.materialize
    monkeypatch.setattr(DeviceData, "materialize", lambda self, idx: (sizes.append(len(idx)), real(self, idx))[1])
    confirm = ConfirmConfig(finetune_min_steps=2, finetune_max_steps=2, finetune_lrs=(0.01,))
    rows = [evaluate_budgets(pre.encoder, d, confirm, [("fraction", 0.5)], CPU, seed=0) for d in (on_device, other)]
    key = [[(r["protocol"], r["n_labels"], r["val_acc"], r["test_acc"]) for r in rs] for rs in rows]
    assert key[0] == key[1]
    assert set(sizes) == {rows[0][0]["n_labels"]}  # the subset, once per path; never val or test
    other.close()
