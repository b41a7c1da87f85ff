"""The linear probe: the torch solver against scikit-learn's on real data, and which one runs when."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import sslsweep.trainables.evaluate as evaluate_mod
from sslsweep.trainables.evaluate import (TORCH_PROBE_MIN_ENTRIES, linear_probe, probe_backend,
                                          sklearn_linear_probe, torch_linear_probe)


def _digits(classes: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits pixels (64 features, some constant 0), a seeded 1200 / rest split."""
    x, y = load_digits(return_X_y=True)
    keep = y < classes
    x, y = x[keep], y[keep]
    order = np.random.default_rng(0).permutation(len(y))
    cut = int(len(y) * 0.67)
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


@pytest.mark.parametrize("classes, c", [(10, 1.0), (10, 0.01), (2, 1.0)])
def test_torch_probe_is_within_a_point_of_scikit_learn_on_digits(classes: int, c: float) -> None:
    """Same C, same standardisation, same objective: test accuracy within 1 point (they agree
    exactly on this split). Two classes exercise the binary (one-logit) model scikit-learn fits."""
    xtr, ytr, xte, yte = _digits(classes)
    evals = {"train": (xtr, ytr), "test": (xte, yte)}
    ref = sklearn_linear_probe(xtr, ytr, evals, c=c)
    got = torch_linear_probe(xtr, ytr, evals, c=c)
    assert ref["test"] > 0.9
    for name in evals:
        assert abs(got[name] - ref[name]) <= 0.01, (name, got, ref)


def test_torch_probe_standardises_features_as_scikit_learn_does() -> None:
    """A feature multiplied by 1000 and another shifted by 500 change nothing (the scaler undoes
    them), labels need not be 0..K-1, and torch tensors are taken as they are."""
    xtr, ytr, xte, yte = _digits()
    base = torch_linear_probe(xtr, ytr, {"test": (xte, yte)})["test"]
    warp = np.ones(xtr.shape[1])
    warp[10], shift = 1000.0, np.zeros(xtr.shape[1])
    shift[20] = 500.0
    moved = torch_linear_probe(torch.tensor(xtr * warp + shift), torch.tensor(ytr * 3 + 7),
                               {"test": (torch.tensor(xte * warp + shift), torch.tensor(yte * 3 + 7))})["test"]
    assert abs(moved - base) <= 1 / len(yte)


def test_probe_backend_is_torch_on_an_accelerator_from_the_threshold() -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert probe_backend(TORCH_PROBE_MIN_ENTRIES // 2048, 2048, cuda) == "torch"
    assert probe_backend(TORCH_PROBE_MIN_ENTRIES // 2048 - 1, 2048, cuda) == "sklearn"
    assert probe_backend(5000, 512, cuda) == "sklearn"     # CIFAR-10 10% with ResNet-18 features
    assert probe_backend(128_000, 2048, cuda) == "torch"   # ImageNet 10% with ResNet-50 features
    assert probe_backend(128_000, 2048, cpu) == "sklearn"  # on the CPU scikit-learn is as fast


def test_linear_probe_dispatches_by_size_and_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """From the threshold on, on an accelerator (given, or the features' own), the torch probe
    runs there; below it, or on the CPU, scikit-learn does, with numpy arrays."""
    calls: list[tuple[str, object]] = []
    monkeypatch.setattr(evaluate_mod, "TORCH_PROBE_MIN_ENTRIES", 100)
    monkeypatch.setattr(evaluate_mod, "sklearn_linear_probe",
                        lambda x, *a, **k: calls.append(("sklearn", type(x).__name__)) or {})
    monkeypatch.setattr(evaluate_mod, "torch_linear_probe", lambda *a, **k: calls.append(("torch", k["device"])) or {})
    y = np.arange(10) % 2
    linear_probe(np.zeros((10, 10)), y, {}, device="cuda")  # 100 entries, on a GPU
    linear_probe(np.zeros((9, 10)), y[:9], {}, device="cuda")  # 90
    linear_probe(torch.zeros(10, 10), y, {})                   # the features' device: the CPU
    assert calls == [("torch", torch.device("cuda")), ("sklearn", "ndarray"), ("sklearn", "ndarray")]


def test_a_single_labelled_class_is_predicted_everywhere() -> None:
    out = linear_probe(np.random.default_rng(0).normal(size=(5, 3)), np.full(5, 2),
                       {"val": (np.zeros((4, 3)), np.array([2, 2, 0, 1]))})
    assert out == {"val": 0.5}
