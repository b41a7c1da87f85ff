"""SimCLR's false-negative options against the papers' formulas written out anchor by anchor,
their special cases, the fp32 path under bf16 autocast, and the rules on their knobs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module

from sslsweep.config import ConfigError, EncoderConfig, TrainerConfig, from_dictconfig
from sslsweep.trainables.tasks.contrastive import debiased_nt_xent, fnc_nt_xent, pair_logits, top_k_negatives
from sslsweep.trainables.tasks.simclr import nt_xent
from sslsweep.trainables.train import DeviceData, Runtime, make_pretrainer, train_one_epoch
from tests.trainables.test_simclr_rotation import nt_xent_reference
from tests.trainables.test_train import HP, tiny_data

VARIANTS = {"debiased": {"tau_plus": 0.1}, "eliminate": {"fne_k": 2}, "attract": {"fne_k": 2}}


# ----------------------------------------------------------------------------- references (loops, float64)


def unit_views(z1: torch.Tensor, z2: torch.Tensor) -> list[torch.Tensor]:
    """The 2N views, L2-normalised, in float64: view i's positive is view (i + N) mod 2N."""
    return [F.normalize(v.double(), dim=0) for v in torch.cat([z1, z2])]


def debiased_terms(z1: torch.Tensor, z2: torch.Tensor, t: float, tau_plus: float) -> list[tuple[float, float]]:
    """Per anchor: (loss_i, M * g_i) of Chuang et al.'s debiased estimator, sec. 3, one positive."""
    z = unit_views(z1, z2)
    n2, n = len(z), len(z) // 2
    m = n2 - 2
    out = []
    for i in range(n2):
        p = (i + n) % n2
        pos = math.exp(float(z[i] @ z[p]) / t)
        negs = [math.exp(float(z[i] @ z[k]) / t) for k in range(n2) if k not in (i, p)]
        g = max((sum(negs) / m - tau_plus * pos) / (1 - tau_plus), math.exp(-1 / t))
        out.append((-math.log(pos / (pos + m * g)), m * g))
    return out


def debiased_reference(z1: torch.Tensor, z2: torch.Tensor, t: float, tau_plus: float) -> float:
    terms = debiased_terms(z1, z2, t, tau_plus)
    return sum(loss for loss, _ in terms) / len(terms)


def false_negatives_reference(z: list[torch.Tensor], i: int, p: int, k: int) -> list[int]:
    """The k negatives of anchor i with the highest cosine similarity to it."""
    negs = [j for j in range(len(z)) if j not in (i, p)]
    return sorted(negs, key=lambda j: float(z[i] @ z[j]), reverse=True)[:k]


def fnc_reference(z1: torch.Tensor, z2: torch.Tensor, t: float, k: int, attract: bool) -> float:
    """Huynh et al.'s elimination / attraction losses, with F_i the anchor's k most similar negatives."""
    z = unit_views(z1, z2)
    n2, n = len(z), len(z) // 2
    total = 0.0
    for i in range(n2):
        p = (i + n) % n2
        fn = false_negatives_reference(z, i, p, k)
        e = {j: math.exp(float(z[i] @ z[j]) / t) for j in range(n2) if j != i}
        if attract:
            den = sum(e.values())
            total += -sum(math.log(e[f] / den) for f in [p, *fn]) / (1 + k)
        else:
            total += -math.log(e[p] / sum(v for j, v in e.items() if j not in fn))
    return total / n2


def embeddings(n: int = 6, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two views whose positives are closer than chance, as after some training."""
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=g)
    return z1, z1 + 0.7 * torch.randn(n, d, generator=g)


# ----------------------------------------------------------------------------- debiased


def test_debiased_equals_the_papers_estimator() -> None:
    """The loss equals the paper's objective anchor by anchor, for several temperatures (0.01: e^{1/t} = e^100
    overflows fp32, so this also checks the per-row shift) and class priors."""
    z1, z2 = embeddings()
    for t in (0.01, 0.1, 0.5, 1.0):
        for tau_plus in (0.05, 0.1, 0.3):
            assert debiased_nt_xent(z1, z2, t, tau_plus).item() == pytest.approx(
                debiased_reference(z1, z2, t, tau_plus), rel=1e-5, abs=1e-5)


def test_debiased_with_tau_plus_zero_is_nt_xent() -> None:
    """With tau_plus = 0 the estimator M g_i is the mean of the negatives' e^{s/t} times M, i.e.
    their sum, and the clip at e^{-1/t} never binds (each term is >= e^{-1/t}): every anchor's
    term is NT-Xent's (eq. 1 of SimCLR), so the losses agree."""
    z1, z2 = embeddings()
    t = 0.5
    z = unit_views(z1, z2)
    n2, n = len(z), len(z) // 2
    for i, (_, m_g) in enumerate(debiased_terms(z1, z2, t, 0.0)):
        p = (i + n) % n2
        assert m_g == pytest.approx(sum(math.exp(float(z[i] @ z[k]) / t) for k in range(n2) if k not in (i, p)),
                                    rel=1e-12)
    # nt_xent_reference normalises in float32: agreement to float32 precision
    assert debiased_reference(z1, z2, t, 0.0) == pytest.approx(nt_xent_reference(z1, z2, t), rel=1e-6)
    assert debiased_nt_xent(z1, z2, t, 0.0).item() == pytest.approx(nt_xent(z1, z2, t).item(), rel=1e-6)


def test_debiased_clips_the_estimate_at_exp_minus_one_over_t() -> None:
    """Identical positives (s = 1), orthogonal negatives (s = 0), t = 0.5, tau_plus = 0.2: the
    unclipped estimate (1 - 0.2 e^2) / 0.8 is negative, so g = e^{-2} and every anchor's loss is
    -log(e^2 / (e^2 + M e^{-2})) with M = 6 negatives."""
    eye = torch.eye(4)
    assert (1 - 0.2 * math.e ** 2) / 0.8 < 0
    expected = -math.log(math.e ** 2 / (math.e ** 2 + 6 * math.e ** -2))
    assert debiased_reference(eye, eye, 0.5, 0.2) == pytest.approx(expected, rel=1e-12)
    assert debiased_nt_xent(eye, eye, 0.5, 0.2).item() == pytest.approx(expected, rel=1e-6)


# ----------------------------------------------------------------------------- false negative cancellation


def test_eliminate_and_attract_equal_the_papers_losses() -> None:
    """Both losses equal their formulas with F_i = the anchor's k most similar negatives."""
    z1, z2 = embeddings(n=8)
    for t in (0.1, 0.5):
        for k in (1, 3, 13):  # 13 = 2N - 3: a single negative left
            for attract in (False, True):
                assert fnc_nt_xent(z1, z2, t, k, attract=attract).item() == pytest.approx(
                    fnc_reference(z1, z2, t, k, attract), rel=1e-5, abs=1e-6), (t, k, attract)


def test_eliminate_removes_exactly_a_duplicate_of_the_anchor() -> None:
    """Image 3's first view is a copy of image 0's first view (views 0 and 3, cosine 1): with
    fne_k = 1 view 0 loses exactly view 3 from its denominator and view 3 exactly view 0, so
    their terms are NT-Xent's without that one negative."""
    z1, z2 = embeddings(n=6, seed=2)
    z1[3] = z1[0]
    t = 0.5
    sim, pos = pair_logits(z1, z2, t)
    removed = top_k_negatives(sim, pos, 1)
    assert removed.sum(dim=1).tolist() == [1] * 12
    assert removed[0].nonzero().flatten().tolist() == [3] and removed[3].nonzero().flatten().tolist() == [0]
    z = unit_views(z1, z2)
    for anchor, dup, p in ((0, 3, 6), (3, 0, 9)):
        assert false_negatives_reference(z, anchor, p, 1) == [dup]
    assert fnc_nt_xent(z1, z2, t, 1).item() == pytest.approx(fnc_reference(z1, z2, t, 1, False), rel=1e-5)
    assert fnc_nt_xent(z1, z2, t, 1).item() < nt_xent(z1, z2, t).item()  # fewer negatives, lower loss


def test_fne_k_must_leave_at_least_one_negative_and_be_at_least_one() -> None:
    """A batch of 4 images gives each anchor 6 negatives: k = 6 would leave none; k = 0 is refused."""
    z1, z2 = embeddings(n=4)
    with pytest.raises(ConfigError, match=r"fne_k = 6: must leave at least one negative: a batch of 4 images "
                                          r"gives each anchor 6 negatives"):
        fnc_nt_xent(z1, z2, 0.5, 6)
    with pytest.raises(ConfigError, match=r"fne_k = 0: the number of false negatives per anchor fne_k must be"):
        fnc_nt_xent(z1, z2, 0.5, 0)
    with pytest.raises(ConfigError, match=r"tau_plus = 1.0: the class prior tau_plus must be in \[0, 1\)"):
        debiased_nt_xent(z1, z2, 0.5, 1.0)


# ----------------------------------------------------------------------------- the task, fp32 under autocast


def losses_of_every_variant(z1: torch.Tensor, z2: torch.Tensor, t: float) -> dict[str, torch.Tensor]:
    return {"standard": nt_xent(z1, z2, t), "debiased": debiased_nt_xent(z1, z2, t, 0.1),
            "eliminate": fnc_nt_xent(z1, z2, t, 3), "attract": fnc_nt_xent(z1, z2, t, 3, attract=True)}


def test_every_variant_stays_fp32_under_bf16_autocast() -> None:
    """Under bf16 autocast (CPU here, the CUDA rule) each loss is float32 and equals its fp32 value."""
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(64, 128, generator=g)
    z2 = z1 + 0.3 * torch.randn(64, 128, generator=g)
    for t in (0.05, 0.5):
        plain = losses_of_every_variant(z1, z2, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cast = losses_of_every_variant(z1, z2, t)
        for name, loss in cast.items():
            assert loss.dtype == torch.float32, name
            assert loss.item() == pytest.approx(plain[name].item(), abs=1e-5), name


def test_every_variant_trains_with_finite_gradients_on_the_bf16_path() -> None:
    """The task with each option, small CNN, bf16 autocast + channels_last on CPU: finite gradients
    on every encoder parameter after a step, then a finite epoch loss."""
    rt = Runtime(torch.device("cpu"), autocast=True, channels_last=True, compile=False)
    data = tiny_data()
    dd = DeviceData.put(data, rt.device)
    for name, extra in VARIANTS.items():
        pre = make_pretrainer("simclr", {**HP, "negatives": name, **extra}, data, EncoderConfig(width=4),
                              TrainerConfig(), rt, max_epochs=2, seed=0)
        x = dd.pool()[:16]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = pre.task(x).loss
        loss.backward()
        grads = [p.grad for p in pre.task.encoder.parameters()]
        assert all(gr is not None and torch.isfinite(gr).all() for gr in grads), name
        assert any(gr.abs().sum() > 0 for gr in grads), name
        pre.optimizer.zero_grad()
        assert np.isfinite(train_one_epoch(pre, dd.pool()).loss), name


def test_standard_is_nt_xent_bit_for_bit() -> None:
    """negatives = standard (given, and as conf/method/simclr.yaml sets it) runs nt_xent itself."""
    data = tiny_data()
    rt = Runtime(torch.device("cpu"), autocast=False, channels_last=False, compile=False)
    z1, z2 = embeddings(n=16, d=8)
    for negatives in ("standard", load().method("simclr").fixed["negatives"]):
        task = make_pretrainer("simclr", {**HP, "negatives": negatives}, data, EncoderConfig(width=4), TrainerConfig(), rt, max_epochs=1,
                               seed=0).task
        assert torch.equal(task.loss(z1, z2), nt_xent(z1, z2, HP["temperature"]))


# ----------------------------------------------------------------------------- config


def load(*overrides: str):
    with initialize_config_module(config_module="sslsweep.conf", version_base="1.3"):
        return from_dictconfig(compose(config_name="config", overrides=["method=[simclr]", *overrides]))


def test_negatives_is_fixed_to_standard_by_default_and_searched_by_an_override() -> None:
    """The shipped config fixes negatives = standard; the documented override makes it a searched
    categorical and fne_k a searched integer range."""
    default = load().method("simclr")
    assert default.fixed["negatives"] == "standard" and not default.searched.keys() & {"negatives", "tau_plus", "fne_k"}
    searched = load("method.simclr.space.negatives={type: categorical, choices: [standard, debiased, eliminate]}",
                    "method.simclr.space.fne_k={type: intlog, low: 1, high: 32}").method("simclr")
    assert searched.space["negatives"].choices == ("standard", "debiased", "eliminate")
    fne_k = searched.space["fne_k"]
    assert (fne_k.type, fne_k.low, fne_k.high) == ("intlog", 1, 32)
    assert searched.fixed["tau_plus"] == 0.1


@pytest.mark.parametrize("override,message", [
    ("method.simclr.space.negatives={type: categorical, choices: [standard, hard]}",
     r"method.simclr.space.negatives = 'hard': negatives must be standard, debiased, eliminate or attract$"),
    ("method.simclr.space.tau_plus=1.0",
     r"method.simclr.space.tau_plus = 1.0: the class prior tau_plus must be in \[0, 1\)$"),
    ("method.simclr.space.fne_k=0",
     r"method.simclr.space.fne_k = 0: the number of false negatives per anchor fne_k must be an integer >= 1$"),
])
def test_rules_on_the_false_negative_knobs(override: str, message: str) -> None:
    """Each rule rejects a bad value with one line naming the key, the value and the rule."""
    with pytest.raises(ConfigError, match=message):
        load(override)
