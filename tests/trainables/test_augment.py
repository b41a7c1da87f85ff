"""BatchAugment against torchvision's reference transforms: distributions, per-op maths, contracts."""

from __future__ import annotations

import dataclasses
import itertools
import math
import re

import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.v2.functional as TF
from scipy import stats

from sslsweep.trainables.augment import AugmentConfig, AugmentParams, BatchAugment, to_float

KS_P = 0.01  # two-sample KS tests must not reject "same distribution" at this level


def _uint8(n: int, c: int = 3, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)


def _float(n: int, c: int = 3, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def _params(cfg: AugmentConfig, n: int, h: int = 32, w: int = 32, seed: int = 0) -> AugmentParams:
    g = torch.Generator().manual_seed(seed)
    return BatchAugment(cfg).make_params(n, h, w, generator=g, device="cpu")


def _binomial_ok(hits: torch.Tensor, p: float) -> bool:
    """The observed rate is within 5 standard errors of p (exact at p = 0 and 1)."""
    n = hits.numel()
    rate = hits.float().mean().item()
    return abs(rate - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-12


# ------------------------------------------------------------------ parameter distributions


@pytest.mark.parametrize(
    ("height", "width", "scale"),
    [(32, 32, (0.2, 1.0)), (12, 48, (0.08, 1.0))],  # 12x48: about 9% of draws take the central fallback
)
def test_crop_distribution_matches_random_resized_crop(
    height: int, width: int, scale: tuple[float, float]
) -> None:
    n = 2000
    ratio = (3 / 4, 4 / 3)
    cfg = AugmentConfig(size=32, crop_scale=scale, crop_ratio=ratio)
    ours = _params(cfg, n, height, width).crop.double()  # (N, 4) top, left, h, w
    img = torch.empty(1, height, width)
    with torch.random.fork_rng():  # torchvision draws from the global generator
        torch.manual_seed(0)
        draws = [T.RandomResizedCrop.get_params(img, list(scale), list(ratio)) for _ in range(n)]
    ref = torch.tensor(draws).double()  # (N, 4) top, left, h, w

    top, left, h, w = ours.unbind(1)
    assert bool(((top >= 0) & (left >= 0) & (h >= 1) & (w >= 1)).all())
    assert bool(((top + h <= height) & (left + w <= width)).all())
    for name, a, b in [
        ("area fraction", h * w / (height * width), ref[:, 2] * ref[:, 3] / (height * width)),
        ("aspect ratio", w / h, ref[:, 3] / ref[:, 2]),
        ("top", top, ref[:, 0]),
        ("left", left, ref[:, 1]),
    ]:
        p = stats.ks_2samp(a.numpy(), b.numpy()).pvalue
        assert p > KS_P, f"{name}: KS p = {p:.2g}"


def test_flip_jitter_gray_blur_rates() -> None:
    cfg = AugmentConfig(size=32, flip_p=0.3, jitter_p=0.6, gray_p=0.1, blur_p=0.4)
    params = _params(cfg, 20000)
    assert _binomial_ok(params.flip, 0.3)
    assert _binomial_ok(params.jitter, 0.6)
    assert _binomial_ok(params.gray, 0.1)
    assert _binomial_ok(params.blur, 0.4)
    sigma = params.sigma
    assert 0.1 <= sigma.min().item() and sigma.max().item() <= 2.0
    assert stats.kstest(sigma.numpy(), stats.uniform(0.1, 1.9).cdf).pvalue > KS_P


def test_probability_zero_and_one_are_exact() -> None:
    cfg = AugmentConfig(size=32, flip_p=1.0, jitter_p=0.0, gray_p=1.0, blur_p=0.0)
    params = _params(cfg, 1000)
    assert bool(params.flip.all()) and bool(params.gray.all())
    assert not bool(params.jitter.any()) and not bool(params.blur.any())


@pytest.mark.parametrize("strength", [0.5, 1.0, 3.0])
def test_jitter_factors_match_color_jitter(strength: float) -> None:
    n = 2000
    cfg = AugmentConfig(size=32, strength=strength)
    s = strength
    jitter = T.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, min(0.2 * s, 0.5))
    ranges = [jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue]
    for got, want in zip(cfg.jitter_ranges(), ranges):
        assert got == pytest.approx(tuple(want))

    with torch.random.fork_rng():
        torch.manual_seed(0)
        draws = [T.ColorJitter.get_params(*ranges) for _ in range(n)]
    ref = torch.tensor([d[1:] for d in draws], dtype=torch.float64)  # (N, 4)
    ours = _params(cfg, n).factors.double()
    for k, name in enumerate(["brightness", "contrast", "saturation", "hue"]):
        low, high = ranges[k]
        assert low <= ours[:, k].min().item() and ours[:, k].max().item() <= high, name
        p = stats.ks_2samp(ours[:, k].numpy(), ref[:, k].numpy()).pvalue
        assert p > KS_P, f"{name}: KS p = {p:.2g}"


def test_jitter_order_is_a_uniform_permutation() -> None:
    """Like torchvision's ``fn_idx = torch.randperm(4)``: each of the 24 orders equally likely."""
    order = _params(AugmentConfig(size=32), 24000).order
    assert bool((order.sort(dim=1).values == torch.arange(4)).all())
    counts = torch.bincount((order * torch.tensor([64, 16, 4, 1])).sum(dim=1), minlength=256)
    counts = counts[counts > 0]
    assert counts.numel() == 24
    assert stats.chisquare(counts.numpy()).pvalue > KS_P


def test_parameters_differ_across_the_batch() -> None:
    params = _params(AugmentConfig(size=32), 256)
    assert len({tuple(row) for row in params.crop.tolist()}) > 128
    assert 0 < int(params.flip.sum()) < 256
    assert params.factors[:, 0].unique().numel() == 256
    assert len({tuple(row) for row in params.order.tolist()}) == 24  # all permutations appear
    # One image repeated: every view differs from every other.
    x = _uint8(1).expand(64, -1, -1, -1)
    out = BatchAugment(AugmentConfig(size=32))(x, torch.Generator().manual_seed(1)).flatten(1)
    assert torch.cdist(out, out).add(torch.eye(64) * 1e9).min().item() > 1e-3


def test_a_seeded_generator_gives_the_same_params_every_time() -> None:
    """Two generators with the same seed draw identical parameters (the trial's augmentation is
    reproducible from its seed); that a CPU generator gives the same parameters for a CUDA batch is
    test_cuda_matches_cpu_for_the_same_cpu_generator, which needs a GPU."""
    cfg = AugmentConfig(size=32)
    a = _params(cfg, 64, seed=3)
    g = torch.Generator().manual_seed(3)
    b = BatchAugment(cfg).make_params(64, 32, 32, generator=g, device=torch.device("cpu"))
    for field in ("crop", "flip", "jitter", "factors", "order", "gray", "blur", "sigma"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


# ------------------------------------------------------------------ geometry


@pytest.mark.parametrize("channels", [1, 3])
def test_full_crop_without_flip_is_the_input(channels: int) -> None:
    x = _uint8(8, channels)
    aug = BatchAugment(AugmentConfig(size=32))
    out = aug.apply(x, AugmentParams.identity(8, 32, 32))
    torch.testing.assert_close(out, x.float() / 255, rtol=0, atol=1e-5)
    # The same through the config: a full crop and every other op off.
    still = AugmentConfig(
        size=32, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0, jitter_p=0, gray_p=0
    )
    out = BatchAugment(still)(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x.float() / 255, rtol=0, atol=1e-5)


def test_flip_only_reproduces_torch_flip() -> None:
    x = _uint8(64, 3, 24, 24)
    cfg = AugmentConfig(size=24, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), jitter_p=0, gray_p=0)
    aug = BatchAugment(cfg)
    params = aug.make_params(64, 24, 24, generator=torch.Generator().manual_seed(0), device="cpu")
    flip = params.flip
    assert 0 < int(flip.sum()) < 64
    out = aug.apply(x, params)
    as_uint8 = (out * 255).round().to(torch.uint8)
    assert torch.equal(as_uint8[flip], torch.flip(x[flip], dims=[-1]))
    assert torch.equal(as_uint8[~flip], x[~flip])
    # In float: bilinear weights at exact pixel centres, up to float32 rounding of the grid.
    torch.testing.assert_close(out[flip], torch.flip(x[flip], dims=[-1]).float() / 255, rtol=0, atol=1e-5)


def test_crop_at_output_size_is_slicing() -> None:
    x = _uint8(16, 3, 32, 48)
    cfg = AugmentConfig(size=16)
    tops = torch.randint(0, 17, (16,), generator=torch.Generator().manual_seed(1))
    lefts = torch.randint(0, 33, (16,), generator=torch.Generator().manual_seed(2))
    crop = torch.stack((tops, lefts, torch.full_like(tops, 16), torch.full_like(tops, 16)), dim=1)
    params = dataclasses.replace(AugmentParams.identity(16, 32, 48), crop=crop)
    out = BatchAugment(cfg).apply(x, params)
    for k, (i, j, _, _) in enumerate(crop.tolist()):
        torch.testing.assert_close(out[k], x[k, :, i : i + 16, j : j + 16].float() / 255, rtol=0, atol=1e-5)


def test_crop_matches_torchvision_resized_crop() -> None:
    """Up- and downscaled crops equal F.resized_crop (bilinear, no antialias) to float precision."""
    x = _float(6, 3, 40, 40)
    crops = [(0, 0, 40, 40), (3, 5, 10, 17), (10, 0, 30, 21), (0, 20, 40, 20), (7, 9, 2, 3), (1, 2, 37, 38)]
    crop = torch.tensor(crops)
    flip = torch.tensor([False, True, False, True, False, False])
    params = dataclasses.replace(AugmentParams.identity(6, 40, 40), crop=crop, flip=flip)
    out = BatchAugment(AugmentConfig(size=24)).apply(x, params)
    for k, (i, j, h, w) in enumerate(crops):
        ref = TF.resized_crop(x[k], i, j, h, w, [24, 24], antialias=False)
        if flip[k]:
            ref = TF.horizontal_flip(ref)
        torch.testing.assert_close(out[k], ref, rtol=0, atol=1e-5)


# ------------------------------------------------------------------ colour


def _jitter_params(n: int, h: int, w: int, factors: torch.Tensor, order: torch.Tensor) -> AugmentParams:
    base = AugmentParams.identity(n, h, w)
    return dataclasses.replace(base, jitter=torch.ones(n, dtype=torch.bool), factors=factors, order=order)


@pytest.mark.parametrize(
    ("op", "reference", "values", "atol"),
    [
        (0, TF.adjust_brightness, [0.0, 0.3, 0.9, 1.0, 1.4, 1.8], 1e-3),
        (1, TF.adjust_contrast, [0.0, 0.3, 0.9, 1.0, 1.4, 1.8], 1e-3),
        (2, TF.adjust_saturation, [0.0, 0.3, 0.9, 1.0, 1.4, 1.8], 1e-3),
        (3, TF.adjust_hue, [-0.5, -0.37, -0.1, 0.0, 0.23, 0.5], 2e-3),
    ],
)
def test_single_colour_op_matches_torchvision(op: int, reference, values: list[float], atol: float) -> None:
    n = len(values)
    x = _float(n)
    factors = torch.tensor([1.0, 1.0, 1.0, 0.0]).repeat(n, 1)
    factors[:, op] = torch.tensor(values)
    order = torch.arange(4).repeat(n, 1)
    aug = BatchAugment(AugmentConfig(size=16, strength=1.0))
    out = aug.apply(x, _jitter_params(n, 16, 16, factors, order))
    for k, v in enumerate(values):
        torch.testing.assert_close(out[k], reference(x[k], v), rtol=0, atol=atol, msg=f"factor {v}")


def test_colour_jitter_follows_each_samples_order() -> None:
    """All four ops in a per-sample random order == torchvision applying them one by one in that order."""
    n = 24
    x = _float(n, seed=1)
    g = torch.Generator().manual_seed(2)
    factors = torch.stack(
        (
            0.4 + 1.2 * torch.rand(n, generator=g),
            0.4 + 1.2 * torch.rand(n, generator=g),
            0.4 + 1.2 * torch.rand(n, generator=g),
            -0.3 + 0.6 * torch.rand(n, generator=g),
        ),
        dim=1,
    )
    order = torch.tensor(list(itertools.permutations(range(4))))  # all 24 orders
    aug = BatchAugment(AugmentConfig(size=16, strength=1.0))
    out = aug.apply(x, _jitter_params(n, 16, 16, factors, order))
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for k in range(n):
        ref = x[k]
        for op in order[k].tolist():
            ref = ops[op](ref, factors[k, op].item())
        torch.testing.assert_close(out[k], ref, rtol=0, atol=2e-3, msg=f"order {order[k].tolist()}")


def test_colour_jitter_is_skipped_where_not_drawn() -> None:
    n = 8
    x = _float(n)
    factors = torch.tensor([1.5, 0.5, 1.7, 0.3]).repeat(n, 1)
    params = _jitter_params(n, 16, 16, factors, torch.arange(4).repeat(n, 1))
    params = dataclasses.replace(params, jitter=torch.arange(n) % 2 == 0)
    out = BatchAugment(AugmentConfig(size=16)).apply(x, params)
    torch.testing.assert_close(out[1::2], x[1::2], rtol=0, atol=1e-5)
    assert (out[0::2] - x[0::2]).abs().max() > 0.1


def test_grey_images_get_brightness_and_contrast_only() -> None:
    n = 4
    x = _float(n, c=1)
    factors = torch.tensor(
        [[1.3, 1.0, 1.0, 0.0], [1.0, 0.6, 1.0, 0.0], [1.0, 1.0, 0.2, 0.4], [0.7, 1.5, 1.8, -0.4]]
    )
    order = torch.tensor([[0, 1, 2, 3], [2, 1, 3, 0], [3, 2, 1, 0], [1, 3, 0, 2]])
    cfg = AugmentConfig(size=16, gray_p=1.0)
    params = _jitter_params(n, 16, 16, factors, order)
    params = dataclasses.replace(params, gray=torch.ones(n, dtype=torch.bool))
    out = BatchAugment(cfg).apply(x, params)
    assert out.shape == (n, 1, 16, 16)
    expected = [
        TF.adjust_brightness(x[0], 1.3),
        TF.adjust_contrast(x[1], 0.6),
        x[2],  # saturation, hue and grayscale leave one channel alone
        TF.adjust_brightness(TF.adjust_contrast(x[3], 1.5), 0.7),
    ]
    for k in range(n):
        torch.testing.assert_close(out[k], expected[k], rtol=0, atol=1e-5)


def test_grayscale_matches_torchvision() -> None:
    n = 6
    x = _float(n)
    params = dataclasses.replace(AugmentParams.identity(n, 16, 16), gray=torch.arange(n) < 4)
    out = BatchAugment(AugmentConfig(size=16, gray_p=0.5)).apply(x, params)
    ref = TF.rgb_to_grayscale(x[:4], num_output_channels=3)
    torch.testing.assert_close(out[:4], ref, rtol=0, atol=1e-3)  # ITU-R 601's 0.299 vs torchvision's 0.2989
    assert torch.equal(out[:4, 0], out[:4, 1]) and torch.equal(out[:4, 1], out[:4, 2])
    torch.testing.assert_close(out[4:], x[4:], rtol=0, atol=1e-5)


def test_blur_matches_torchvision_gaussian_blur() -> None:
    n = 5
    x = _float(n, h=64, w=64)
    cfg = AugmentConfig(size=64, blur_p=0.5)
    assert cfg.blur_kernel == 7  # 10% of 64, made odd
    assert AugmentConfig(size=224).blur_kernel == 23  # the paper's kernel at 224 px
    sigma = torch.tensor([0.1, 0.5, 1.0, 1.7, 2.0])
    blur = torch.tensor([True, True, True, True, False])
    params = dataclasses.replace(AugmentParams.identity(n, 64, 64), blur=blur, sigma=sigma)
    out = BatchAugment(cfg).apply(x, params)
    for k in range(4):
        ref = TF.gaussian_blur(x[k], kernel_size=[7, 7], sigma=[sigma[k].item()] * 2)
        torch.testing.assert_close(out[k], ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(out[4], x[4], rtol=0, atol=1e-5)


# ------------------------------------------------------------------ contracts


@pytest.mark.parametrize(("channels", "height", "width"), [(3, 32, 32), (1, 28, 20), (3, 40, 64)])
def test_output_shape_dtype_range(channels: int, height: int, width: int) -> None:
    x = _uint8(16, channels, height, width)
    aug = BatchAugment(AugmentConfig(size=24, strength=1.5, blur_p=0.5))
    out = aug(x, torch.Generator().manual_seed(0))
    assert out.shape == (16, channels, 24, 24) and out.dtype == torch.float32
    assert out.min().item() >= 0.0 and out.max().item() <= 1.0
    assert bool(torch.isfinite(out).all())


def test_same_seed_same_views_different_seed_different_views() -> None:
    x = _uint8(32)
    aug = BatchAugment(AugmentConfig(size=32, blur_p=0.5))
    a = aug(x, torch.Generator().manual_seed(7))
    b = aug(x, torch.Generator().manual_seed(7))
    c = aug(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert (a - c).abs().amax(dim=(1, 2, 3)).min().item() > 1e-3  # every image differs


def test_apply_rejects_mismatched_params_and_bad_images() -> None:
    aug = BatchAugment(AugmentConfig(size=32))
    params = _params(aug.cfg, 4)
    with pytest.raises(ValueError, match="params drawn for 4 images of 32x32"):
        aug.apply(_uint8(5), params)
    with pytest.raises(ValueError, match="but must be \\(N, C, H, W\\) with C = 1 or 3"):
        aug(_uint8(2, 2))
    with pytest.raises(ValueError, match="dtype torch.int64"):
        aug(torch.zeros(2, 3, 8, 8, dtype=torch.int64))


def test_to_float_converts_and_resizes_without_randomness() -> None:
    x = _uint8(4, 3, 48, 40)
    torch.testing.assert_close(to_float(x), x.float() / 255, rtol=0, atol=0)
    out = to_float(x, 32)
    assert out.shape == (4, 3, 32, 32) and torch.equal(out, to_float(x, 32))
    ref = TF.resize(x.float() / 255, [32, 32], antialias=True)
    torch.testing.assert_close(out, ref.clamp(0, 1), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="size = 0"):
        to_float(x, 0)


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("size", 0, "an integer >= 1"),
        ("size", 32.0, "an integer >= 1"),
        ("crop_scale", (0.5, 0.2), "0 < low <= high <= 1"),
        ("crop_scale", (0.0, 1.0), "0 < low <= high <= 1"),
        ("crop_scale", (0.2, 1.5), "0 < low <= high <= 1"),
        ("crop_scale", (0.2,), "a pair"),
        ("crop_ratio", (4 / 3, 3 / 4), "0 < low <= high < inf"),
        ("crop_ratio", (0.0, 1.0), "0 < low <= high < inf"),
        ("flip_p", 1.5, "0 <= flip_p <= 1"),
        ("flip_p", float("nan"), "0 <= flip_p <= 1"),
        ("jitter_p", -0.1, "0 <= jitter_p <= 1"),
        ("gray_p", 2.0, "0 <= gray_p <= 1"),
        ("blur_p", -1.0, "0 <= blur_p <= 1"),
        ("strength", -0.5, "finite and >= 0"),
        ("strength", float("inf"), "finite and >= 0"),
        ("blur_sigma", (0.0, 2.0), "0 < low <= high < inf"),
        ("blur_sigma", (2.0, 0.1), "0 < low <= high < inf"),
    ],
)
def test_bad_config_names_field_value_and_rule(field: str, value: object, rule: str) -> None:
    kwargs: dict[str, object] = {"size": 32, field: value}
    with pytest.raises(ValueError, match=re.escape(f"{field} = {value!r}, but must be {rule}")):
        AugmentConfig(**kwargs)  # type: ignore[arg-type]


def test_config_accepts_lists_from_yaml() -> None:
    cfg = AugmentConfig(size=32, crop_scale=[0.3, 1.0], blur_sigma=[0.5, 1])  # type: ignore[arg-type]
    assert cfg.crop_scale == (0.3, 1.0) and cfg.blur_sigma == (0.5, 1.0)


# ------------------------------------------------------------------ CUDA (runs where there is one)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_for_the_same_cpu_generator() -> None:
    x = _uint8(64)
    aug = BatchAugment(AugmentConfig(size=32, blur_p=0.5))
    cpu = aug(x, torch.Generator().manual_seed(0))
    cuda = aug(x.cuda(), torch.Generator().manual_seed(0))
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=0, atol=1e-4)
    g = torch.Generator(device="cuda").manual_seed(0)
    out = aug(x.cuda(), g)
    assert out.shape == (64, 3, 32, 32) and out.min().item() >= 0 and out.max().item() <= 1
