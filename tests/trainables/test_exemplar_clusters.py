"""Exemplar-CNN on clusters (``surrogate=cluster``): k-means, the targets, the refresh schedule,
checkpoints, the rules, the task contract; and ``surrogate=image`` unchanged."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module

import tests.trainables.test_task_contract as contract
from sslsweep.config import ConfigError, EncoderConfig, TrainerConfig, from_dictconfig
from sslsweep.data import Prepared, Splits, fingerprint
from sslsweep.trainables import augment
from sslsweep.trainables.encoders import build_encoder, small_cnn
from sslsweep.trainables.evaluate import extract_features
from sslsweep.trainables.tasks import exemplar
from sslsweep.trainables.tasks.base import TaskContext
from sslsweep.trainables.tasks.exemplar import Clusters, Exemplar, kmeans, random_affine
from sslsweep.trainables.train import (DeviceData, Runtime, load_checkpoint, make_pretrainer, save_checkpoint,
                                       train_one_epoch)
from tests.conftest import make_images

CPU = Runtime(torch.device("cpu"), autocast=False, channels_last=False, compile=False)
HP = {"surrogate_classes": 8, "strength": 1.0, "num_sampled": 4096, "batch_size": 8, "lr": 0.05,
      "weight_decay": 1e-4, "surrogate": "cluster", "refresh_every": 2}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_data(n: int = 48) -> Prepared:
    """n grey 8x8 images of 4 brightness classes; the first n - 8 are the train pool."""
    images, labels = make_images(n, classes=4, channels=1)
    idx = np.arange(n)
    return Prepared(images=images, labels=labels, splits=Splits(train=idx[:-8], val=idx[-8:-4], test=idx[-4:]),
                    classes=list("abcd"), fingerprint=fingerprint(images, labels), hflip=False)


def pretrainer(hp: dict[str, Any] = HP, *, seed: int = 0, max_epochs: int = 6):
    data = tiny_data()
    pre = make_pretrainer("exemplar", hp, data, EncoderConfig(width=4), TrainerConfig(), CPU,
                          max_epochs=max_epochs, seed=seed)
    return pre, DeviceData.put(data, CPU.device).pool()


# ----------------------------------------------------------------------------- k-means


def blobs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """4 blobs of 30 points in 8-D, centres 10 apart, spread 0.1: (120, 8) points and their blob (120,)."""
    g = gen(seed)
    centres = 10 * torch.eye(8)[:4]
    which = torch.arange(120) % 4
    return centres[which] + 0.1 * torch.randn(120, 8, generator=g), which


def test_kmeans_recovers_well_separated_blobs() -> None:
    x, which = blobs()
    for seed in range(5):
        assign = kmeans(x, 4, gen(seed))
        # a bijection between blobs and clusters: each blob one id, four different ids
        ids = [set(assign[which == b].tolist()) for b in range(4)]
        assert all(len(i) == 1 for i in ids) and len(set.union(*ids)) == 4, ids


def test_kmeans_is_deterministic_given_the_generator() -> None:
    x = torch.randn(200, 5, generator=gen(1))  # no structure: the result hinges on every draw
    a, b = kmeans(x, 7, gen(3)), kmeans(x, 7, gen(3))
    assert torch.equal(a, b)
    assert any(not torch.equal(a, kmeans(x, 7, gen(s))) for s in (4, 5, 6))  # and the generator matters


def test_a_refresh_from_previous_clusters_keeps_their_ids() -> None:
    """Seeded from the previous assignment (blob b = cluster b), the blobs keep their ids, whatever
    the generator (k-means++ from scratch numbers them in draw order); a cluster with no previous
    members starts at a random point."""
    x, which = blobs()
    for seed in range(3):
        assert torch.equal(kmeans(x, 4, gen(seed), previous=which), which)
    assert any(not torch.equal(kmeans(x, 4, gen(seed)), which) for seed in range(3))
    previous = which.clone()
    previous[which == 3] = 2  # cluster 3 empty before the refresh
    assign = kmeans(x, 4, gen(), previous=previous)
    assert torch.equal(assign, kmeans(x, 4, gen(), previous=previous)) and set(assign.tolist()) <= {0, 1, 2, 3}


def test_kmeans_with_more_clusters_than_distinct_points_stays_defined() -> None:
    x = torch.ones(6, 3)
    assign = kmeans(x, 4, gen())
    assert assign.shape == (6,) and ((0 <= assign) & (assign < 4)).all()


# ----------------------------------------------------------------------------- the task


def cluster_task(n: int = 40) -> tuple[Exemplar, torch.Tensor]:
    torch.manual_seed(0)
    ctx = TaskContext(1, 8, hflip=False, num_images=n)
    task = Exemplar(small_cnn(1, 4), {**HP, "refresh_every": 1}, ctx)
    pool = torch.from_numpy(make_images(n, classes=4, channels=1)[0])
    return task, pool


def test_clustering_is_kmeans_of_the_current_encoders_normalised_features() -> None:
    """Epoch 1: k-means++ from scratch; a refresh: k-means seeded with the previous clusters."""
    task, pool = cluster_task()
    task.on_epoch_start(pool, 1, gen(2))
    first = task.assign.clone()
    assert torch.equal(first, kmeans(F.normalize(extract_features(task.encoder, pool), dim=1), task.k, gen(2)))
    with torch.no_grad():
        task.encoder.backbone[0].weight.mul_(-1)  # the encoder has moved on
    task.on_epoch_start(pool, 2, gen(3))
    feats = F.normalize(extract_features(task.encoder, pool), dim=1)
    assert torch.equal(task.assign, kmeans(feats, task.k, gen(3), previous=first))
    assert not torch.equal(task.assign, kmeans(feats, task.k, gen(3)))


def test_cluster_targets_are_the_cluster_ids_of_the_pool_images_drawn() -> None:
    """Replays forward's draws: the images are pool rows, the loss is cross-entropy against their cluster ids."""
    task, pool = cluster_task()
    task.on_epoch_start(pool, 1, gen(2))
    task.eval()  # batch-norm in eval mode: the replay sees the same features
    x = pool[:8]  # the trainer's batch: only its size matters
    out = task(x, gen(5))
    g = gen(5)
    rows, target = task.clusters.draw(8, g)
    assert torch.equal(target, task.assign[rows])
    views = task.colour(random_affine(augment.to_float(pool[rows]), 1.0, g), g)
    logits = task.classifier(task.encoder(views))
    assert out.loss.item() == pytest.approx(F.cross_entropy(logits, task.assign[rows]).item(), rel=1e-6)
    assert out.acc.item() == pytest.approx((logits.argmax(1) == task.assign[rows]).float().mean().item())


def test_batches_draw_clusters_uniformly_not_images() -> None:
    """90 images in cluster 0, 10 in cluster 2, none in 1: clusters 0 and 2 come equally often."""
    assign = torch.cat([torch.zeros(90, dtype=torch.int64), torch.full((10,), 2)])
    clusters = Clusters.of(torch.zeros(100, 1, 2, 2, dtype=torch.uint8), assign, 3)
    rows, target = clusters.draw(20_000, gen())
    assert torch.equal(target, assign[rows])
    share = torch.bincount(target, minlength=3) / 20_000
    assert share[1] == 0 and abs(share[0].item() - 0.5) < 0.02
    assert len(torch.unique(rows[target == 2])) == 10  # every member of a cluster can be drawn


def test_assignments_refresh_at_the_stated_epochs_and_not_in_between(monkeypatch: pytest.MonkeyPatch) -> None:
    """refresh_every = 2: epoch 0 on image surrogates, clustering at the start of epochs 1, 3 and 5."""
    calls: list[int] = []
    real = exemplar.kmeans
    monkeypatch.setattr(exemplar, "kmeans", lambda *a, **k: calls.append(1) or real(*a, **k))
    pre, pool = pretrainer()
    refreshed, kept = [], []
    for _ in range(6):
        before, assign = len(calls), pre.task.assign.clone()
        train_one_epoch(pre, pool)
        refreshed.append(len(calls) > before)
        kept.append(torch.equal(assign, pre.task.assign))
    assert refreshed == [False, True, False, True, False, True]
    assert kept[0] and kept[2] and kept[4]


def test_epoch_zero_trains_on_seed_images_then_on_clusters() -> None:
    pre, pool = pretrainer()
    train_one_epoch(pre, pool)
    assert pre.task.clusters is None and int(pre.task.filled) == pre.task.k
    train_one_epoch(pre, pool)
    assert pre.task.clusters is not None and pre.task.clusters.pool is pool


@pytest.mark.parametrize("epochs_before", [2, 3])  # next epoch: no refresh (assignments from the file) / a refresh
def test_checkpoint_round_trip_then_resume_gives_the_same_next_epoch(epochs_before: int, tmp_path: Path) -> None:
    first, pool = pretrainer()
    for _ in range(epochs_before):
        train_one_epoch(first, pool)
    saved = load_checkpoint(save_checkpoint(first.state_dict(), tmp_path))  # weights_only=True
    resumed, _ = pretrainer(seed=99)  # another init: everything must come from the checkpoint
    resumed.load_state_dict(saved)
    after_resume = train_one_epoch(resumed, pool)
    torch.set_rng_state(saved["torch_rng"])
    uninterrupted = train_one_epoch(first, pool)
    assert (after_resume.loss, after_resume.acc) == (uninterrupted.loss, uninterrupted.acc)
    a, b = first.task.state_dict(), resumed.task.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- surrogate=image unchanged

# Losses and pretext accuracies of 3 seeded epochs with the code before surrogate existed (tiny_data,
# K 16, batch 8, small CNN width 4, seed 0): full softmax and sampled softmax (num_sampled 8).
BEFORE = {
    4096: [(2.6397577285766602, 0.125), (2.680922508239746, 0.15), (2.517374801635742, 0.225)],
    8: [(2.6530261993408204, 0.125), (2.470593070983887, 0.2), (2.3576942443847657, 0.25)],
}


@pytest.mark.parametrize("num_sampled", sorted(BEFORE))
@pytest.mark.parametrize("surrogate", ["default", "image"])
def test_image_surrogate_gives_the_losses_of_the_code_before_it(num_sampled: int, surrogate: str) -> None:
    if surrogate == "default":  # what conf/method/exemplar.yaml sets
        surrogate = contract.method_config("exemplar").space["surrogate"].value
    hp = {"surrogate_classes": 16, "strength": 1.0, "num_sampled": num_sampled, "batch_size": 8, "lr": 0.05,
          "weight_decay": 1e-4, "surrogate": surrogate, "refresh_every": 1}
    pre, pool = pretrainer(hp, max_epochs=3)
    got = [v for s in (train_one_epoch(pre, pool) for _ in range(3)) for v in (s.loss, s.acc)]
    assert got == pytest.approx([v for pair in BEFORE[num_sampled] for v in pair], rel=1e-6)
    assert "assign" not in pre.task.state_dict()  # checkpoints of image surrogates keep their keys


def test_image_surrogate_epoch_hook_draws_nothing() -> None:
    task = Exemplar(small_cnn(1, 4), {**HP, "surrogate": "image"}, TaskContext(1, 8, num_images=40))
    pool = torch.from_numpy(make_images(40, channels=1)[0])
    g = gen(4)
    state = g.get_state()
    task.on_epoch_start(pool, 3, g)
    assert torch.equal(g.get_state(), state) and task.clusters is None


# ----------------------------------------------------------------------------- rules


@pytest.mark.parametrize("override, rule", [
    ("method.exemplar.space.surrogate=foo", "method.exemplar.space.surrogate = 'foo': the surrogate must be "
                                            "image or cluster"),
    ("method.exemplar.space.surrogate={type:categorical,choices:[image,clusters]}",
     "method.exemplar.space.surrogate = 'clusters': the surrogate must be image or cluster"),
    ("method.exemplar.space.refresh_every=0", "method.exemplar.space.refresh_every = 0: the cluster refresh "
                                              "interval must be an integer >= 1"),
    ("method.exemplar.space.refresh_every=1.5", "method.exemplar.space.refresh_every = 1.5: the cluster refresh "
                                                "interval must be an integer >= 1"),
], ids=["surrogate-foo", "surrogate-choice-clusters", "refresh-0", "refresh-1.5"])
def test_rules_reject_bad_surrogate_settings(override: str, rule: str) -> None:
    with initialize_config_module(config_module="sslsweep.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["method=[exemplar]", override])
    with pytest.raises(ConfigError, match=rule.replace("(", r"\(").replace(")", r"\)")):
        from_dictconfig(cfg)


def test_both_surrogates_can_be_searched_side_by_side() -> None:
    with initialize_config_module(config_module="sslsweep.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "method=[exemplar]", "method.exemplar.space.surrogate={type:categorical,choices:[image,cluster]}"])
    assert from_dictconfig(cfg).method("exemplar").space["surrogate"].choices == ("image", "cluster")


def test_the_task_rejects_bad_settings_given_directly() -> None:
    ctx = TaskContext(1, 8, num_images=40)
    with pytest.raises(ConfigError, match="surrogate = 'seed': the surrogate must be image or cluster"):
        Exemplar(small_cnn(1, 4), {**HP, "surrogate": "seed"}, ctx)
    with pytest.raises(ValueError, match="needs the pool size"):
        Exemplar(small_cnn(1, 4), HP, TaskContext(1, 8))


# ----------------------------------------------------------------------------- the task contract, clusters on


@pytest.fixture()
def clusters_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The contract suite's pretraining path with surrogate=cluster and 3 epochs (clustering at epochs 1 and 2)."""
    hp = contract.task_hp("exemplar")
    monkeypatch.setattr(contract, "task_hp", lambda name: {**hp, "surrogate": "cluster", "refresh_every": 1})
    monkeypatch.setattr(contract, "pretrain", functools.partial(contract.pretrain, epochs=3, max_epochs=3))


def test_clusters_never_read_labels(clusters_on: None) -> None:
    contract.check_labels_never_read("exemplar")
    contract.check_pretraining_ignores_labels("exemplar")


@pytest.mark.parametrize("encoder_name, channels, size", [("small_cnn", 1, 8), ("resnet18", 3, 32)])
def test_a_cluster_step_gives_finite_loss_and_gradients_reach_the_encoder(encoder_name: str, channels: int,
                                                                          size: int) -> None:
    torch.manual_seed(0)
    encoder = build_encoder(contract.ENCODERS[encoder_name], channels)
    task = Exemplar(encoder, {**HP, "batch_size": 6}, TaskContext(channels, size, num_images=12)).train()
    pool = contract.images(12, channels, size)
    task.on_epoch_start(pool, 1, gen())
    out = task(pool[:6], gen())
    assert out.loss.ndim == 0 and math.isfinite(out.loss.item()) and 0 <= out.acc.item() <= 1
    out.loss.backward()
    grads = [p.grad for p in encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and sum(g.abs().sum() for g in grads) > 0
