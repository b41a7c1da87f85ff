"""Task-specific checks: each loss, label and geometry against a hand-written reference, every
task rule rejected with its one-line message, and the loading of pretrained weights."""

from __future__ import annotations

import copy
import itertools
import math
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from hydra import compose, initialize_config_module
from torch import nn

from sslsweep.config import ConfigError, EncoderConfig, TrainerConfig, from_dictconfig
from sslsweep.data import Prepared, Splits, fingerprint
from sslsweep.trainables.encoders import build_encoder, small_cnn
from sslsweep.trainables.tasks.autoencoder import AutoEncoder, ConvDecoder, corrupt
from sslsweep.trainables.tasks.base import TaskContext
from sslsweep.trainables.tasks.byol import BYOL, byol_loss
from sslsweep.trainables.tasks.context import NEIGHBOURS, Context, crop_patches, patch_layout
from sslsweep.trainables.tasks.exemplar import Exemplar, random_affine
from sslsweep.trainables.tasks.gan import DCGAN, frozen_bn_stats
from sslsweep.trainables.tasks.jigsaw import Jigsaw, hamming_permutations, tile_layout
from sslsweep.trainables.tasks.simsiam import SimSiam, negative_cosine
from sslsweep.trainables.train import (DeviceData, Runtime, backward_and_step, load_checkpoint, make_pretrainer,
                                       save_checkpoint, train_one_epoch)
from tests.trainables.test_train import CPU, tiny_data


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def uint8_images(n: int, c: int, s: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, s, s), generator=gen(seed), dtype=torch.uint8)


# ----------------------------------------------------------------------------- autoencoder


def test_masking_noise_zeroes_the_given_fraction_of_pixels_in_every_channel() -> None:
    x = torch.ones(64, 3, 16, 16)
    out = corrupt(x, "mask", 0.25, gen())
    zero = out == 0
    assert torch.equal(zero[:, 0], zero[:, 1]) and torch.equal(zero[:, 0], zero[:, 2])  # whole pixels
    assert abs(zero.float().mean().item() - 0.25) < 0.01


def test_gaussian_noise_has_the_given_std_and_none_is_the_identity() -> None:
    x = torch.full((64, 1, 16, 16), 0.5)
    assert abs((corrupt(x, "gaussian", 0.1, gen()) - x).std().item() - 0.1) < 0.005
    assert corrupt(x, "none", 0.3, gen()) is x and corrupt(x, "mask", 0.0, gen()) is x


@pytest.mark.parametrize("size", [4, 10, 16, 32])
def test_decoder_returns_images_of_the_input_size_in_unit_range(size: int) -> None:
    out = ConvDecoder(16, 3, size, 8)(torch.randn(2, 16))
    assert out.shape == (2, 3, size, size) and 0 <= out.min() and out.max() <= 1


def test_autoencoder_targets_the_clean_image() -> None:
    """Loss = MSE(decoder(encoder(noisy)), clean): recomputed by hand with the same noise draw."""
    torch.manual_seed(0)
    task = AutoEncoder(small_cnn(1, 4), {"noise": "mask", "noise_level": 0.5, "decoder_width": 8},
                       TaskContext(1, 8)).eval()
    x = uint8_images(4, 1, 8)
    clean = x.float() / 255
    expected = F.mse_loss(task.decoder(task.encoder(corrupt(clean, "mask", 0.5, gen(3)))), clean)
    assert torch.allclose(task(x, gen(3)).loss, expected)


# ----------------------------------------------------------------------------- exemplar


def test_affine_at_strength_zero_is_the_identity() -> None:
    x = torch.rand(3, 3, 16, 16)
    assert torch.allclose(random_affine(x, 0.0, gen()), x, atol=1e-5)


def test_exemplar_seeds_are_the_first_k_images_and_k_is_capped_at_the_pool() -> None:
    task = Exemplar(small_cnn(1, 4), {"surrogate_classes": 5000, "strength": 1.0, "num_sampled": 4096,
                                      "surrogate": "image", "refresh_every": 1, "batch_size": 128},
                    TaskContext(1, 8, num_images=10))
    assert task.k == 10 and task.classifier.out_features == 10
    a, b = uint8_images(6, 1, 8, seed=1), uint8_images(6, 1, 8, seed=2)
    task(a, gen())
    assert int(task.filled) == 6 and torch.equal(task.seeds[:6], a)
    task(b, gen())
    assert int(task.filled) == 10 and torch.equal(task.seeds[6:], b[:4])  # full: later images are not stored


def test_exemplar_sampled_softmax_matches_its_reference_and_masks_accidental_hits() -> None:
    """K > num_sampled: cross-entropy over the batch's classes + sampled ones, the own class once."""
    torch.manual_seed(0)
    task = Exemplar(small_cnn(1, 4), {"surrogate_classes": 100_000, "strength": 1.0, "num_sampled": 8,
                                      "surrogate": "image", "refresh_every": 1},
                    TaskContext(1, 8)).eval()
    x = uint8_images(4, 1, 8)
    task.seeds[:4] = x
    task.filled.fill_(4)  # seeds 0..3 stored, and forward stores x again: targets repeat, hits are frequent
    out = task(x, gen(5))
    assert int(task.filled) == 8
    # replay the draws of forward: targets, transforms (affine, colour), negatives
    g = gen(5)
    target = torch.randint(8, (4,), generator=g)
    views = task.colour(random_affine(task.seeds[target].float() / 255, 1.0, g), g)
    neg = torch.randint(100_000, (8,), generator=g)
    feats, weight, bias = task.encoder(views).detach(), task.classifier.weight.detach(), task.classifier.bias.detach()
    cand = torch.cat([target, neg])
    total = 0.0
    for i in range(4):
        logits = [float(feats[i] @ weight[c] + bias[c])
                  for j, c in enumerate(cand.tolist()) if j == i or c != int(target[i])]
        own = float(feats[i] @ weight[target[i]] + bias[target[i]])
        total += -own + math.log(sum(math.exp(v) for v in logits))
    assert abs(out.loss.item() - total / 4) < 1e-4


def test_exemplar_with_a_hundred_thousand_classes_still_steps() -> None:
    task = Exemplar(small_cnn(3, 4), {"surrogate_classes": 100_000, "strength": 1.0, "num_sampled": 64,
                                      "surrogate": "image", "refresh_every": 1},
                    TaskContext(3, 8))
    out = task(uint8_images(8, 3, 8), gen())
    out.loss.backward()
    assert math.isfinite(out.loss.item()) and task.classifier.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- context


@pytest.mark.parametrize("size, gap, jitter, expected", [(32, 0.5, 0.07, (8, 4, 0)), (16, 0.5, 0.07, (4, 2, 0)),
                                                         (64, 0.5, 0.07, (15, 7, 1)), (16, 1.0, 0.25, (3, 3, 0))])
def test_patch_layout_fits_three_patches_two_gaps_and_jitter(size: int, gap: float, jitter: float,
                                                             expected: tuple[int, int, int]) -> None:
    p, g, j = patch_layout(size, gap, jitter)
    assert (p, g, j) == expected and 3 * p + 2 * g + 2 * j <= size


def test_patch_layout_rejects_too_small_images() -> None:
    with pytest.raises(ValueError, match="image_size = 8: too small"):
        patch_layout(8, 0.5, 0.07)


def test_context_label_is_the_sampled_neighbour_position() -> None:
    """The second patch sits at NEIGHBOURS[label] * (patch + gap) from the centre, +- the two jitters."""
    task = Context(small_cnn(1, 4), {"gap": 0.5, "jitter": 0.25}, TaskContext(1, 64))
    p, g, j = task.patch, task.gap, task.jitter
    assert j >= 1
    label, centre, other = task.sample(2000, torch.device("cpu"), gen())
    assert set(label.tolist()) == set(range(8))
    expected = torch.tensor(NEIGHBOURS)[label] * (p + g)
    assert ((other - centre - expected).abs() <= 2 * j).all()
    for corner in (centre, other):
        assert (corner >= 0).all() and (corner + p <= 64).all()


def test_crop_patches_equals_slicing() -> None:
    x = torch.rand(3, 2, 10, 10)
    top, left = torch.tensor([0, 3, 7]), torch.tensor([5, 0, 7])
    out = crop_patches(x, top, left, 3)
    for i in range(3):
        assert torch.equal(out[i], x[i, :, top[i]:top[i] + 3, left[i]:left[i] + 3])


# ----------------------------------------------------------------------------- jigsaw


def test_hamming_permutations_follow_algorithm_1() -> None:
    """Distinct permutations of 0..8, deterministic, each (after the first) maximising the summed
    Hamming distance to those chosen before it."""
    perms = hamming_permutations(30)
    assert perms.shape == (30, 9) and len({tuple(p) for p in perms}) == 30
    assert all(sorted(p) == list(range(9)) for p in perms.tolist())
    assert np.array_equal(perms, hamming_permutations(30))
    every = np.array(list(itertools.permutations(range(9))))
    code = lambda p: p @ (9 ** np.arange(9))  # noqa: E731 - a permutation as one integer
    for k in (1, 5, 29):
        summed = (every[:, None, :] != perms[None, :k, :]).sum((1, 2))
        summed[np.isin(code(every), code(perms[:k]))] = -1  # already chosen
        assert summed[code(every) == code(perms[k])][0] == summed.max()
    dist = (perms[:, None] != perms[None]).sum(-1)
    assert dist[np.triu_indices(30, 1)].mean() > 8.0  # the paper's "maximal" sets average ~8


def test_jigsaw_tiles_come_from_the_permuted_cells() -> None:
    """Paint cell k with the value k: position i of puzzle ``label`` then shows perms[label][i]."""
    task = Jigsaw(small_cnn(1, 4), {"num_perms": 10, "tile_frac": 0.85, "crop_min": 0.6, "strength": 0.0},
                  TaskContext(1, 30))
    cell, tile = tile_layout(30, 0.85)
    assert (cell, tile) == (task.cell, task.tile) == (10, 8)
    img = torch.arange(9).view(3, 3).repeat_interleave(10, 0).repeat_interleave(10, 1).float()[None, None]
    label = torch.tensor([0, 3, 9])
    shift = torch.randint(cell - tile + 1, (3, 9, 2), generator=gen())
    tiles = task.shuffled_tiles(img.repeat(3, 1, 1, 1), label, shift)  # (27, 1, 8, 8)
    values = tiles.amin(dim=(1, 2, 3)).view(3, 9)
    assert torch.equal(values, tiles.amax(dim=(1, 2, 3)).view(3, 9))  # every tile inside one cell
    assert torch.equal(values.long(), task.perms[label])


def test_tile_layout_keeps_a_gap_and_a_minimum_tile() -> None:
    assert tile_layout(12, 0.85) == (4, 3) and tile_layout(32, 0.85) == (10, 8) and tile_layout(32, 1.0) == (10, 9)
    with pytest.raises(ValueError, match="image_size = 9: too small"):
        tile_layout(9, 0.85)


# ----------------------------------------------------------------------------- gan


GAN_HP = {"lr": 2e-4, "weight_decay": 0.0, "batch_size": 10, "optimizer": "adamw", "beta1": 0.5,
          "g_lr": 1e-3, "z_dim": 8, "gen_width": 4}


def gan_pretrainer(seed: int = 0):
    return make_pretrainer("gan", GAN_HP, tiny_data(), EncoderConfig(width=4), TrainerConfig(), CPU, max_epochs=2,
                           seed=seed)


def test_gan_generator_trains_with_torch_adam_at_g_lr_and_dcgans_beta1() -> None:
    """The generator's own optimizer: torch's Adam over exactly the generator's parameters, lr
    ``g_lr``, betas (0.5, 0.999) (DCGAN sec. 4), eps 1e-8."""
    task = DCGAN(small_cnn(1, 4), {"g_lr": 1e-3, "z_dim": 8, "gen_width": 4}, TaskContext(1, 16))
    (name, opt), = task.extra_optimizers().items()
    assert name == "generator" and type(opt) is torch.optim.Adam and len(opt.param_groups) == 1
    group = opt.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"]) == (1e-3, (0.5, 0.999), 1e-8)
    assert [id(p) for p in group["params"]] == [id(p) for p in task.generator.parameters()]


def test_frozen_bn_stats_normalise_but_do_not_track() -> None:
    """Inside the context batch norm normalises with the *batch's* statistics (output mean ~0 for
    inputs around 10, not the ~10 that running statistics at init would give) and leaves its running
    statistics and momentum as they were."""
    bn = nn.BatchNorm2d(3).train()
    x = torch.randn(4, 3, 5, 5) + 10
    with frozen_bn_stats(bn):
        y = bn(x)
    torch.testing.assert_close(y, F.batch_norm(x, None, None, bn.weight, bn.bias, training=True))
    assert torch.equal(bn.running_mean, torch.zeros(3)) and bn.momentum == 0.1


def test_gan_step_trains_the_generator_privately_and_the_discriminator_through_the_loss() -> None:
    """The discriminator's loss reaches the encoder and not the generator; the generator's loss,
    stepped by the trainer with the task's own Adam, moves the generator and not the discriminator;
    generated images leave the encoder's running statistics alone."""
    torch.manual_seed(0)
    pre = gan_pretrainer()
    task, g_opt = pre.task, pre.extra_optimizers["generator"]
    x = uint8_images(6, 1, 8)
    alone = copy.deepcopy(task)  # the same weights, stepped by nothing
    out = alone(x, gen())
    assert all(p.grad is None for p in alone.parameters())  # nothing on .grad before the trainer's backward
    out.loss.backward()
    assert all(p.grad is None for p in alone.generator.parameters())  # the D loss does not reach G
    assert alone.encoder.backbone[0].weight.grad.abs().sum() > 0
    d_grads = {k: p.grad for k, p in alone.named_parameters() if p.grad is not None}

    trainer_params = {id(p) for group in pre.optimizer.param_groups for p in group["params"]}
    assert trainer_params.isdisjoint(id(p) for p in task.generator.parameters())  # G is not the trainer's
    before = {k: v.clone() for k, v in task.generator.state_dict().items()}
    running = task.encoder.backbone[1].running_mean.clone()
    backward_and_step(pre, task(x, gen()))  # the trainer's step on the same batch and draws
    assert any(not torch.equal(before[k], v) for k, v in task.generator.state_dict().items())  # G stepped
    assert [int(g_opt.state[p]["step"]) for p in task.generator.parameters()] == [1] * len(g_opt.state)
    assert "generator" in pre.state_dict()["extra_optimizers"]  # its Adam state is checkpointed
    grads = dict(task.named_parameters())
    assert all(torch.equal(grads[k].grad, g) for k, g in d_grads.items())  # the G loss does not reach D
    # the real batch updates the running statistics (the fake ones do not: test_frozen_bn_stats...)
    assert not torch.equal(task.encoder.backbone[1].running_mean, running)


def test_gan_generator_adam_state_survives_a_checkpoint_and_resumes_the_same_step(tmp_path: Path) -> None:
    """Epoch 2 after save + weights_only load into a fresh pretrainer (another seed) moves the
    generator exactly as the uninterrupted run does, moments included; without the saved Adam
    state the same epoch moves it elsewhere (so the state is what carries the resume)."""
    data = tiny_data()
    pool = torch.from_numpy(data.images[data.splits.train])
    first = gan_pretrainer(seed=1)
    train_one_epoch(first, pool)
    saved = load_checkpoint(save_checkpoint(first.state_dict(), tmp_path))
    steps = len(pool) // GAN_HP["batch_size"]
    adam = saved["extra_optimizers"]["generator"]
    assert adam["state"] and all(int(s["step"]) == steps for s in adam["state"].values())

    def resume(keep_adam: bool = True):
        pre = gan_pretrainer(seed=99)
        pre.load_state_dict(saved)
        if not keep_adam:
            pre.extra_optimizers["generator"].state.clear()  # a fresh Adam: no moments, step 0
        torch.set_rng_state(saved["torch_rng"])
        return pre, train_one_epoch(pre, pool)

    resumed, after_resume = resume()
    torch.set_rng_state(saved["torch_rng"])  # the uninterrupted run continues from the same global RNG
    uninterrupted = train_one_epoch(first, pool)
    assert after_resume.loss == uninterrupted.loss and after_resume.acc == uninterrupted.acc
    a, b = first.task.state_dict(), resumed.task.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    moments = [(first.extra_optimizers["generator"].state[p], resumed.extra_optimizers["generator"].state[q])
               for p, q in zip(first.task.generator.parameters(), resumed.task.generator.parameters())]
    assert all(torch.equal(s[k], t[k]) for s, t in moments for k in ("step", "exp_avg", "exp_avg_sq"))

    fresh, _ = resume(keep_adam=False)
    assert not all(torch.equal(a[k], fresh.task.state_dict()[k]) for k in a if k.startswith("generator."))


# ----------------------------------------------------------------------------- byol / simsiam


def test_byol_loss_is_two_minus_two_cosine() -> None:
    q, z = torch.randn(4, 6, generator=gen(1)), torch.randn(4, 6, generator=gen(2))
    ref = sum(float(((q[i] / q[i].norm() - z[i] / z[i].norm()) ** 2).sum()) for i in range(4)) / 4
    assert abs(byol_loss(q, z).item() - ref) < 1e-5


def test_byol_target_is_a_moving_average_without_gradient() -> None:
    torch.manual_seed(0)
    task = BYOL(small_cnn(1, 4), {"ema": 0.9, "proj_dim": 8, "hidden_dim": 16, "crop_min": 0.2, "strength": 0.5},
                TaskContext(1, 8)).train()
    with torch.no_grad():
        for p in task.encoder.parameters():
            p.add_(1.0)  # the online weights moved since the target was copied
    online_w = task.encoder.backbone[0].weight.detach().clone()
    target_w = task.target[0].backbone[0].weight.detach().clone()
    task(uint8_images(4, 1, 8), gen()).loss.backward()
    assert torch.allclose(task.target[0].backbone[0].weight, 0.9 * target_w + 0.1 * online_w)
    assert all(not p.requires_grad and p.grad is None for p in task.target.parameters())


def test_byol_target_decay_follows_the_cosine_schedule_from_tau_base_to_one() -> None:
    """BYOL sec. 3.2: tau = 1 - (1 - tau_base)(cos(pi k/K) + 1)/2 - tau_base at the start, halfway
    to 1 at mid-training, 1 at the end; the update at half way uses that tau."""
    task = BYOL(small_cnn(1, 4), {"ema": 0.9, "proj_dim": 8, "hidden_dim": 16, "crop_min": 0.2, "strength": 0.5},
                TaskContext(1, 8)).train()
    taus = []
    for progress in (0.0, 0.5, 1.0):
        task.progress = progress
        taus.append(task.current_tau())
    assert taus == pytest.approx([0.9, 0.95, 1.0])
    task.progress = 0.5
    with torch.no_grad():
        for p in task.encoder.parameters():
            p.add_(1.0)
    online_w = task.encoder.backbone[0].weight.detach().clone()
    target_w = task.target[0].backbone[0].weight.detach().clone()
    task(uint8_images(4, 1, 8), gen())
    assert torch.allclose(task.target[0].backbone[0].weight, 0.95 * target_w + 0.05 * online_w)


def test_training_loop_tells_the_task_how_far_training_is() -> None:
    """The loop sets ``progress`` = (epoch + step / steps) / max_epochs before each step."""
    data = tiny_data()
    pre = make_pretrainer("byol", {"lr": 0.05, "weight_decay": 0.0, "batch_size": 10, "ema": 0.99, "proj_dim": 8,
                                   "hidden_dim": 16, "strength": 0.5, "crop_min": 0.2}, data, EncoderConfig(width=4), TrainerConfig(), CPU,
                          max_epochs=4, seed=0)
    seen: list[float] = []
    pre.task.register_forward_pre_hook(lambda task, args: seen.append(task.progress))
    train_one_epoch(pre, torch.from_numpy(data.images[data.splits.train]))
    train_one_epoch(pre, torch.from_numpy(data.images[data.splits.train]))
    assert seen == pytest.approx([0.0, 0.0625, 0.125, 0.1875, 0.25, 0.3125, 0.375, 0.4375])


def test_simsiam_loss_is_minus_cosine_with_stop_gradient() -> None:
    p = torch.randn(4, 6, generator=gen(1), requires_grad=True)
    z = torch.randn(4, 6, generator=gen(2), requires_grad=True)
    loss = negative_cosine(p, z)
    ref = -sum(float(p[i].detach() @ z[i].detach() / (p[i].norm() * z[i].norm()).detach()) for i in range(4)) / 4
    assert abs(loss.item() - ref) < 1e-5
    loss.backward()
    assert p.grad is not None and z.grad is None


def test_simsiam_step_is_finite_and_trains_projector_and_predictor() -> None:
    task = SimSiam(small_cnn(3, 4), {"proj_dim": 16, "pred_hidden": 8, "crop_min": 0.2, "strength": 0.5},
                   TaskContext(3, 8))
    out = task(uint8_images(4, 3, 8), gen())
    out.loss.backward()
    assert -1 <= out.loss.item() <= 1
    assert task.projector[0].weight.grad.abs().sum() > 0 and task.predictor[0].weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- rules (one line each)


def load(*overrides: str):
    with initialize_config_module(config_module="sslsweep.conf", version_base="1.3"):
        return from_dictconfig(compose(config_name="config", overrides=["dataset.image_size=32", *overrides]))


RULES = [
    ("method=[autoencoder]", "method.autoencoder.space.noise=salt", "the noise must be none, mask or gaussian"),
    ("method=[autoencoder]", "method.autoencoder.space.noise_level.high=1.5", "the noise level must be in"),
    ("method=[autoencoder]", "method.autoencoder.space.decoder_width=1", "the decoder width must be an integer"),
    ("method=[exemplar]", "method.exemplar.space.surrogate_classes.low=1", "number of surrogate classes must be"),
    ("method=[exemplar]", "method.exemplar.space.num_sampled=0", "the sampled-softmax size must be"),
    ("method=[context]", "method.context.space.gap.high=1.5", "the gap must be in \\[0, 1\\]"),
    ("method=[context]", "method.context.space.jitter=0.5", "the jitter must be in \\[0, 0.25\\]"),
    ("method=[context]", "method.context.space.color_drop=2", "the colour-dropping probability"),
    ("method=[jigsaw]", "method.jigsaw.space.num_perms.choices=[1,100]", "the permutation set size must be"),
    ("method=[jigsaw]", "method.jigsaw.space.tile_frac=0", "the tile fraction must be in \\(0, 1\\]"),
    ("method=[gan]", "method.gan.space.g_lr.low=-1", "must be > 0 for a loguniform range"),
    ("method=[gan]", "method.gan.space.g_lr=-1", "the generator learning rate must be > 0"),
    ("method=[gan]", "method.gan.space.z_dim=0.5", "the noise dimension must be an integer"),
    ("method=[gan]", "method.gan.space.gen_width=0", "the generator width must be an integer"),
    ("method=[gan]", "method.gan.space.optimizer=adam", "the optimizer must be sgd or adamw"),
    ("method=[gan]", "method.gan.space.beta1=1.0", "Adam's beta1 must be in \\[0, 1\\)"),
    ("method=[byol]", "method.byol.space.ema.high=1.5", "the target decay \\(ema\\) must be in"),
    ("method=[byol]", "method.byol.space.hidden_dim=0", "the hidden dimension must be an integer"),
    ("method=[simsiam]", "method.simsiam.space.pred_hidden=0", "the predictor's hidden dimension"),
]


@pytest.mark.parametrize("method, override, rule", RULES, ids=[r[1].split("=")[0].split(".", 1)[1] for r in RULES])
def test_each_task_rule_names_key_value_and_rule(method: str, override: str, rule: str) -> None:
    key = override.split("=")[0].removesuffix(".low").removesuffix(".high").removesuffix(".choices")
    with pytest.raises(ConfigError, match=rf"^{key}[.a-z]* = .*: .*{rule}"):
        load(method, override)


# ----------------------------------------------------------------------------- transfer (encoder.weights)


def test_weights_from_an_sslsweep_checkpoint_or_an_encoder_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(1)
    src = build_encoder(EncoderConfig("small_cnn", 4), 1)
    torch.save({"task": {f"encoder.{k}": v for k, v in src.state_dict().items()} | {"head.weight": torch.ones(2)},
                "epoch": 3}, tmp_path / "state.pt")
    torch.save(src.state_dict(), tmp_path / "encoder.pt")
    for name in ("state.pt", "encoder.pt"):
        torch.manual_seed(2)
        loaded = build_encoder(EncoderConfig("small_cnn", 4, weights=str(tmp_path / name)), 1)
        assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in src.state_dict().items())


def test_torchvision_resnet18_weights_are_adapted_to_the_cifar_stem(tmp_path: Path, monkeypatch) -> None:
    """A cached torchvision file is used without network; its 7x7 RGB conv1 becomes a 3x3 grey one
    with the same response to flat input; fc is dropped; every other tensor is loaded as it is."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _offline)
    imagenet = torchvision.models.resnet18(weights=None).state_dict()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(imagenet, cache / Path(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url).name)
    enc = build_encoder(EncoderConfig("resnet18", 64, weights="ResNet18_Weights.IMAGENET1K_V1"), 1)
    own = enc.state_dict()
    conv1 = own["backbone.conv1.weight"]
    assert conv1.shape == (64, 1, 3, 3)
    assert torch.allclose(conv1.sum((1, 2, 3)), imagenet["conv1.weight"].sum((1, 2, 3)), atol=1e-4)
    assert torch.equal(own["backbone.layer4.1.conv2.weight"], imagenet["layer4.1.conv2.weight"])
    assert enc(torch.rand(2, 1, 32, 32)).shape == (2, 512)


def _offline(*args, **kwargs):
    raise urllib.error.URLError("[Errno -2] Name or service not known")


def test_offline_without_cached_weights_fails_naming_what_to_provide(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _offline)
    cfg = EncoderConfig("resnet18", 64, weights="ResNet18_Weights.IMAGENET1K_V1")
    with pytest.raises(ConfigError) as err:
        build_encoder(cfg, 3)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("encoder.weights = 'ResNet18_Weights.IMAGENET1K_V1': ")
    assert f"{tmp_path}/hub/checkpoints/resnet18-f37072fd.pth" in msg and "encoder.weights=/path/to/file.pt" in msg


@pytest.mark.parametrize("cfg, rule", [
    (EncoderConfig("small_cnn", 8, weights="ResNet18_Weights.IMAGENET1K_V1"), "need encoder=resnet18 with encoder.width"),
    (EncoderConfig("resnet18", 64, weights="ResNet50_Weights.IMAGENET1K_V2"), "need encoder=resnet50 with encoder.width"),
    (EncoderConfig("resnet18", 64, weights="ResNet34_Weights.IMAGENET1K_V1"), "only ResNet18_Weights"),
    (EncoderConfig("resnet18", 64, weights="ResNet18_Weights.NOPE"), "unknown torchvision weights"),
    (EncoderConfig("small_cnn", 8, weights="/no/such/file.pt"), "no such file"),
])
def test_bad_weights_are_one_line_errors(cfg: EncoderConfig, rule: str) -> None:
    with pytest.raises(ConfigError, match=rf"^encoder.weights = .*{rule}"):
        build_encoder(cfg, 1)


def test_weights_of_another_encoder_are_rejected_naming_the_mismatch(tmp_path: Path) -> None:
    torch.save(build_encoder(EncoderConfig("small_cnn", 8), 1).state_dict(), tmp_path / "w8.pt")
    with pytest.raises(ConfigError, match=r"does not fit encoder small_cnn \(width 4\): shapes differ: backbone"):
        build_encoder(EncoderConfig("small_cnn", 4, weights=str(tmp_path / "w8.pt")), 1)
    torch.save({"optimizer": {}}, tmp_path / "junk.pt")
    with pytest.raises(ConfigError, match="no encoder weights in it"):
        build_encoder(EncoderConfig("small_cnn", 4, weights=str(tmp_path / "junk.pt")), 1)


def test_exemplar_seeds_are_distinct_images_when_k_exceeds_what_one_epoch_shows() -> None:
    """100 distinct images in batches of 64: an epoch shows 64 of them (the partial batch is
    dropped), so K = 64, and two epochs of the real loop store 64 different seed images; the
    uncapped K = 100 would fill from the second epoch's permutation and store some image twice."""
    images = np.arange(100, dtype=np.uint8)[:, None, None, None].repeat(8, 2).repeat(8, 3)  # image i = all i
    labels = np.zeros(100, dtype=np.int64)
    data = Prepared(images=images, labels=labels, splits=Splits(train=np.arange(100), val=np.arange(0),
                    test=np.arange(0)), classes=["0"], fingerprint=fingerprint(images, labels), hflip=False)
    cpu = Runtime(torch.device("cpu"), autocast=False, channels_last=False, compile=False)
    pre = make_pretrainer("exemplar", {"surrogate_classes": 5000, "strength": 1.0, "num_sampled": 4096,
                                       "surrogate": "image", "refresh_every": 1, "batch_size": 64, "lr": 0.01,
                                       "weight_decay": 0.0}, data, EncoderConfig(width=4), TrainerConfig(), cpu,
                          max_epochs=2, seed=0)
    assert pre.task.k == 64
    pool = DeviceData.put(data, cpu.device).pool()
    for _ in range(2):
        train_one_epoch(pre, pool)
    seeds = pre.task.seeds[: int(pre.task.filled)]
    assert int(pre.task.filled) == 64 and len(torch.unique(seeds[:, 0, 0, 0])) == 64
