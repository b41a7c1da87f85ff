"""The contract every registered pretext task must meet, like Optuna's shared sampler tests.

Tasks are picked up from the registry (``TASKS``): registering a new task adds it to every test
here. Each task runs with the hyperparameters of its own ``conf/method/<name>.yaml`` (searched
keys at their lower bound or first choice) on tiny made-up data. The contract:

* a step gives a finite scalar loss, the pretext accuracy the task declares, and gradients that
  reach every encoder parameter; the encoder stays the task's encoder and its output is
  ``(N, encoder.out_dim)`` on full images, as the evaluator uses it;
* with the small CNN, ResNet-18 and ResNet-50, grey and colour, at the task's ``min_size`` and
  at 32x32 (the ResNets' CIFAR stem), and the ResNets in colour at ``LARGE`` px (ImageNet's stem);
* labels are never read during pretraining: the pretraining path runs on a dataset whose labels
  are a guard that records any access, and pretraining on relabeled data gives bit-identical
  weights; a deliberately cheating task shows that both checks catch a task that reads labels;
* the same seed gives the same loss (and another seed another loss);
* a checkpoint (``save_checkpoint`` / ``load_checkpoint`` of ``Pretrainer.state_dict()``) resumes
  exactly: the resumed run's next epoch equals the uninterrupted run's (small CNN and ResNet-50);
* the method config composes and validates, declares the task's required keys, has a
  temperature only if the task is contrastive, and ``min_size`` is enforced before Ray starts.
"""

from __future__ import annotations

import functools
import gc
import math
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module

from sslsweep.config import ConfigError, EncoderConfig, TrainerConfig, from_dictconfig
from sslsweep.data import Prepared, Splits
from sslsweep.rules import HP_RULES
from sslsweep.trainables.encoders import SMALL_IMAGE, build_encoder
from sslsweep.trainables.evaluate import extract_features
from sslsweep.trainables.tasks import TASKS, TaskEntry, get_task
from sslsweep.trainables.tasks.base import PretextTask, TaskContext, TaskOutput
from sslsweep.trainables.train import (Runtime, load_checkpoint, make_pretrainer, save_checkpoint,
                                       train_one_epoch)

PRETRAINING = sorted(name for name, entry in TASKS.items() if entry.pretrains)
ENCODERS = {"small_cnn": EncoderConfig("small_cnn", width=4), "resnet18": EncoderConfig("resnet18", width=4),
            "resnet50": EncoderConfig("resnet50", width=4)}
LARGE = SMALL_IMAGE + 8  # a side over SMALL_IMAGE: the ResNets switch to ImageNet's stem (7x7 stride 2, max-pool)
BATCH = 6  # images per step
POOL = 12  # unlabeled pool of the pretraining-loop tests: 2 steps per epoch
CPU = Runtime(torch.device("cpu"), autocast=False, channels_last=False, compile=False)
TRAINER = TrainerConfig(device="cpu", precision="fp32")


# ----------------------------------------------------------------------------- helpers


@functools.lru_cache(maxsize=None)
def method_config(name: str) -> Any:
    """The validated method config of ``name`` from ``conf/method/<name>.yaml`` + the shared space."""
    size = max(32, TASKS[name].min_size)
    overrides = [f"method=[{name}]", f"dataset.image_size={size}"]
    if TASKS[name].loads_weights:  # validation requires weights that exist; any file will do here
        overrides.append(f"encoder.weights={__file__}")
    with initialize_config_module(config_module="sslsweep.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return from_dictconfig(cfg).method(name)


def task_hp(name: str) -> dict[str, Any]:
    """Fixed values as configured; searched ones at their lower bound (first choice); tiny batches,
    and head widths (``*_dim``, ``*_width``, ``*hidden*``) capped at 32 to keep the suite fast."""
    hp: dict[str, Any] = {}
    for key, spec in method_config(name).space.items():
        if not spec.searched:
            small = isinstance(spec.value, int) and (key.endswith(("_dim", "_width")) or "hidden" in key)
            hp[key] = min(spec.value, 32) if small else spec.value
        elif spec.type == "categorical":
            hp[key] = spec.choices[0]
        else:
            hp[key] = int(spec.low) if spec.type in ("int", "intlog") else spec.low
    hp["batch_size"] = BATCH
    hp["lr"] = min(float(hp["lr"]), 0.01)  # the shared space always sets lr
    return hp


def images(n: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)


def prepared(labels: Any, classes: Any, channels: int = 3, size: int = 16) -> Prepared:
    """A dataset of POOL train images (+ 2 val, 2 test) whose labels and classes are whatever is given."""
    x = images(POOL + 4, channels, size).numpy()
    splits = Splits(train=np.arange(POOL), val=np.arange(POOL, POOL + 2), test=np.arange(POOL + 2, POOL + 4))
    return Prepared(images=x, labels=labels, splits=splits, classes=classes, fingerprint="contract", hflip=True)


def pool_size(name: str) -> int:
    return max(16, TASKS[name].min_size)


def pretrain(name: str, data: Prepared, *, seed: int, epochs: int = 1, max_epochs: int = 2,
             encoder: str = "small_cnn"):
    """The pretraining path of a trial: make_pretrainer + train_one_epoch on the unlabeled pool."""
    pre = make_pretrainer(name, task_hp(name), data, ENCODERS[encoder], TRAINER, CPU,
                          max_epochs=max_epochs, seed=seed)
    pool = torch.from_numpy(data.images[data.splits.train])  # what DeviceData.pool() hands over
    stats = [train_one_epoch(pre, pool) for _ in range(epochs)]
    return pre, stats


class LabelRead(AssertionError):
    """Raised by :class:`LabelGuard` on any access."""


class LabelGuard:
    """Stands in for a label array (or class list): records and refuses every access."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.reads: list[str] = []

    def _read(self, how: str) -> Any:
        self.reads.append(how)
        raise LabelRead(f"{self.what} read during pretraining ({how})")

    def __getitem__(self, key: Any) -> Any:
        return self._read(f"[{key!r}]")

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        return self._read("__array__")

    def __len__(self) -> int:
        return self._read("len()")

    def __iter__(self) -> Any:
        return self._read("iter()")

    def __getattr__(self, attr: str) -> Any:  # .shape, .max(), .tolist(), ...
        return self._read(f".{attr}")

    def __repr__(self) -> str:
        return f"LabelGuard({self.what})"


def check_labels_never_read(name: str) -> None:
    """Pretraining on a dataset whose labels and class names are guards: no access at all."""
    labels, classes = LabelGuard("labels"), LabelGuard("classes")
    data = prepared(labels, classes, size=pool_size(name))
    try:
        pretrain(name, data, seed=0)
    except LabelRead:
        pass  # recorded below (a task may also swallow the exception: the record stays)
    assert not labels.reads and not classes.reads, \
        f"{name} read labels during pretraining: {labels.reads + classes.reads}"


def check_pretraining_ignores_labels(name: str) -> None:
    """Pretraining on the same images with other labels gives bit-identical weights."""
    states = []
    for labels in (np.arange(POOL + 4) % 2, (np.arange(POOL + 4) + 1) % 2):
        data = prepared(labels.astype(np.int64), ["a", "b"], size=pool_size(name))
        pre, _ = pretrain(name, data, seed=0)
        states.append({k: v.clone() for k, v in pre.task.state_dict().items()})
        del data, pre
        gc.collect()  # only one dataset alive at a time
    different = [k for k in states[0] if not torch.equal(states[0][k], states[1][k])]
    assert not different, f"{name}: pretraining depends on the labels ({different[:3]} differ)"


# ----------------------------------------------------------------------------- one step, every shape


def step_cases() -> list[Any]:
    """Every task x encoder x grey/colour at its ``min_size`` and 32x32 (the ResNets' CIFAR stem);
    the ResNets also in colour at ``LARGE`` px (ImageNet's stem)."""
    cases = []
    for name in PRETRAINING:
        for enc in ENCODERS:
            for channels in (1, 3):
                sizes = {TASKS[name].min_size, 32} | ({LARGE} if enc != "small_cnn" and channels == 3 else set())
                for size in sorted(sizes):
                    cases.append(pytest.param(name, enc, channels, size, id=f"{name}-{enc}-c{channels}-{size}px"))
    return cases


@pytest.mark.parametrize("name, encoder_name, channels, size", step_cases())
def test_a_step_gives_finite_loss_and_gradients_reach_the_encoder(name: str, encoder_name: str, channels: int,
                                                                  size: int) -> None:
    torch.manual_seed(0)
    encoder = build_encoder(ENCODERS[encoder_name], channels, size)
    ctx = TaskContext(in_channels=channels, image_size=size, hflip=True, num_images=POOL)
    task = get_task(name)(encoder, task_hp(name), ctx)
    task.train()
    x = images(BATCH, channels, size)
    out = task(x, torch.Generator().manual_seed(0))

    assert isinstance(out, TaskOutput) and out.loss.ndim == 0 and math.isfinite(out.loss.item())
    assert out.views >= BATCH
    if type(task).has_pretext_acc:
        assert out.acc is not None and 0.0 <= out.acc.item() <= 1.0
    else:
        assert out.acc is None
    out.loss.backward()
    grads = {n: p.grad for n, p in encoder.named_parameters()}
    assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None][:3]
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert sum(g.abs().sum().item() for g in grads.values()) > 0
    # the evaluator gets this very encoder and reads (N, out_dim) features of full images
    assert task.encoder is encoder
    assert extract_features(encoder, x).shape == (BATCH, encoder.out_dim)


# ----------------------------------------------------------------------------- the pretraining loop


@pytest.mark.parametrize("name", PRETRAINING)
def test_labels_are_never_read(name: str) -> None:
    check_labels_never_read(name)


@pytest.mark.parametrize("name", PRETRAINING)
def test_pretraining_does_not_depend_on_labels(name: str) -> None:
    check_pretraining_ignores_labels(name)


@pytest.mark.parametrize("name", PRETRAINING)
def test_same_seed_gives_the_same_loss(name: str) -> None:
    data = prepared(np.zeros(POOL + 4, dtype=np.int64), ["a"], size=pool_size(name))
    (_, a), (_, b), (_, c) = (pretrain(name, data, seed=s) for s in (7, 7, 8))
    assert a[0].loss == b[0].loss and a[0].acc == b[0].acc
    assert a[0].loss != c[0].loss  # and the seed matters


@pytest.mark.parametrize("encoder", ["small_cnn", "resnet50"])
@pytest.mark.parametrize("name", PRETRAINING)
def test_checkpoint_round_trip_resumes_exactly(name: str, encoder: str, tmp_path: Path) -> None:
    """Epoch 2 after save + load into a fresh pretrainer (another seed) equals epoch 2 uninterrupted,
    with the small CNN and with ResNet-50 (bottleneck blocks, 53 batch-norm layers of running stats)."""
    data = prepared(np.zeros(POOL + 4, dtype=np.int64), ["a"], size=pool_size(name))
    pool = torch.from_numpy(data.images[data.splits.train])
    first, _ = pretrain(name, data, seed=1, encoder=encoder)
    path = save_checkpoint(first.state_dict(), tmp_path)
    saved = load_checkpoint(path)

    resumed = make_pretrainer(name, task_hp(name), data, ENCODERS[encoder], TRAINER, CPU, max_epochs=2, seed=99)
    resumed.load_state_dict(saved)
    assert resumed.epoch == 1
    after_resume = train_one_epoch(resumed, pool)
    torch.set_rng_state(saved["torch_rng"])  # the uninterrupted run continues from the same global RNG
    uninterrupted = train_one_epoch(first, pool)

    assert after_resume.loss == uninterrupted.loss and after_resume.acc == uninterrupted.acc
    a, b = first.task.state_dict(), resumed.task.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- the suite catches a cheat


class LabelPeekingTask(PretextTask):
    """A cheating task: reaches every dataset in memory and mixes its labels into the loss."""

    has_pretext_acc: ClassVar[bool] = False

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> TaskOutput:
        feats = self.encoder(x.float() / 255)
        with warnings.catch_warnings():  # isinstance on every live object touches deprecated torch attributes
            warnings.simplefilter("ignore")
            found = [o for o in gc.get_objects() if isinstance(o, Prepared)]
        hint = sum(float(np.asarray(o.labels[:1])[0]) for o in found)
        return TaskOutput(loss=feats.pow(2).mean() * (1 + hint), views=len(x))


@pytest.fixture()
def cheat(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(TASKS, "cheat", TaskEntry(f"{__name__}:LabelPeekingTask"))
    monkeypatch.setattr(f"{__name__}.task_hp", lambda name: {"batch_size": BATCH, "lr": 0.01, "weight_decay": 0.0})
    return "cheat"


def test_the_suite_detects_a_task_that_reads_labels(cheat: str) -> None:
    with pytest.raises(AssertionError, match="read labels during pretraining"):
        check_labels_never_read(cheat)
    with pytest.raises(AssertionError, match="depends on the labels"):
        check_pretraining_ignores_labels(cheat)


def test_a_newly_registered_task_joins_the_suite() -> None:
    """The suite is built from the registry: every pretraining task is in every parametrized test."""
    ids = {p.values[0] for p in step_cases()}
    assert ids == set(PRETRAINING) and {"none", "transfer"}.isdisjoint(ids)


# ----------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("name", sorted(TASKS))
def test_method_config_composes_with_the_tasks_own_space(name: str) -> None:
    entry = TASKS[name]
    assert (Path(__file__).parents[2] / "sslsweep" / "conf" / "method" / f"{name}.yaml").exists()
    method = method_config(name)
    if not entry.pretrains:
        assert method.space == {}
        return
    assert set(entry.required) <= set(method.space)
    assert ("temperature" in method.space) == entry.contrastive  # temperature only for contrastive tasks
    for key in method.space:  # every knob of the space is checked by a rule
        assert key in HP_RULES, f"{name}: {key!r} is in conf/method/{name}.yaml but has no rule in sslsweep.rules"


def test_every_hyperparameter_rule_names_a_knob_some_method_reads() -> None:
    """A rule for a name no method's space holds would check nothing (a renamed knob, a typo)."""
    read = set().union(*(set(method_config(n).space) for n in TASKS if TASKS[n].pretrains))
    assert set(HP_RULES) <= read | {"optimizer", "beta1"}, sorted(set(HP_RULES) - read)


@pytest.mark.parametrize("name", [n for n in PRETRAINING if TASKS[n].min_size > 8])
def test_min_size_is_enforced_before_ray_starts(name: str) -> None:
    size = TASKS[name].min_size
    with initialize_config_module(config_module="sslsweep.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"method=[{name}]", f"dataset.image_size={size - 1}"])
    with pytest.raises(ConfigError, match=f"dataset.image_size = {size - 1}: method {name} needs images of at least"):
        from_dictconfig(cfg)
