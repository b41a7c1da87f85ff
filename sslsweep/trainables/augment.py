"""Batched, device-side SimCLR augmentation.

The data stays uint8 ``(N, C, H, W)`` on the device (C = 1 grey or 3 colour). A whole batch is
augmented with per-sample random parameters, one tensor pass per op and no Python loop over
samples, so the same code feeds a GPU at hundreds of thousands of views per second (benchmarks/RESULTS.md)
and runs unchanged on CPU in the tests.

Randomness is drawn once (:meth:`BatchAugment.make_params`) and applied after
(:meth:`BatchAugment.apply`), like torchvision v2's ``make_params`` / ``transform``: the tests pin
parameters to check each op against torchvision, and a caller can reuse the drawn parameters.

Differences from the torchvision pipeline it mirrors (all deliberate, all small):

* Resizing the crop is bilinear without antialiasing (``grid_sample``); torchvision v2 antialiases
  when it *downscales* a crop. For CIFAR-sized inputs (crop <= output) the two agree.
* Grayscale, contrast and saturation use the ITU-R 601 luma weights (0.299, 0.587, 0.114);
  torchvision uses 0.2989 for red (a difference of at most 1e-4 on [0, 1] images).
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["AugmentConfig", "AugmentParams", "BatchAugment", "to_float"]

# ITU-R BT.601 luma weights, as in PIL's ``convert("L")``.
_LUMA = (0.299, 0.587, 0.114)
# Colour-jitter op ids, as in torchvision's ``ColorJitter`` (its ``fn_idx``).
_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE = 0, 1, 2, 3
# Columns of make_params' one (N, 35) draw of uniforms. RandomResizedCrop.get_params tries 10
# (area, ratio) candidates; the four coins are flip, jitter, gray, blur.
_AREA, _LOG_RATIO, _TOP_LEFT = slice(0, 10), slice(10, 20), slice(20, 22)
_COINS, _FACTORS, _ORDER, _SIGMA_SLICE = slice(22, 26), slice(26, 30), slice(30, 34), slice(34, 35)
_SIGMA = 34
_N_UNIFORMS = 35
# Colour-jitter slots when hue runs once in the middle: slots 0-2 before it, 1-3 after it.
_SLOT_POSITIONS = (0, 1, 2, 1, 2, 3)
_SLOT_BEFORE_HUE = (True, True, True, False, False, False)


@functools.lru_cache(maxsize=512)
def _const(values: object, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A small constant tensor, made once per device: ``torch.tensor(..., device=cuda)`` on every
    call would copy from the host and wait for the device each time. Never modify the result."""
    return torch.tensor(values, dtype=dtype, device=device)


def _pair(name: str, value: object) -> tuple[float, float]:
    """A length-2 sequence of numbers (Hydra hands over lists) as a tuple of floats."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{name} = {value!r}, but must be a pair (low, high)")
    try:
        low, high = float(value[0]), float(value[1])
    except (TypeError, ValueError):
        raise ValueError(f"{name} = {value!r}, but must be a pair of numbers (low, high)") from None
    return low, high


def _probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} = {value!r}, but must be 0 <= {name} <= 1")


@dataclass(frozen=True)
class AugmentConfig:
    """The knobs of SimCLR's augmentation (Chen et al. 2020, appendix A), validated on creation.

    Args:
        size: output side in pixels; views are ``size x size``.
        crop_scale: range of the crop's area as a fraction of the image (RandomResizedCrop ``scale``).
        crop_ratio: range of the crop's aspect ratio w/h, sampled log-uniformly (``ratio``).
        flip_p: probability of a horizontal flip.
        strength: colour distortion strength ``s``: brightness, contrast and saturation factors are
            drawn from ``[max(0, 1 - 0.8 s), 1 + 0.8 s]``, the hue shift from ``[-h, h]`` with
            ``h = min(0.2 s, 0.5)`` (torchvision's ColorJitter bound).
        jitter_p: probability of applying the colour jitter (RandomApply).
        gray_p: probability of converting to grayscale (a no-op for C = 1).
        blur_p: probability of a Gaussian blur (SimCLR used 0.5 on ImageNet and none on CIFAR).
        blur_sigma: range of the blur's standard deviation in pixels; the kernel side is 10% of
            ``size``, made odd (23 at 224 px, as in the paper).

    Example:
        >>> AugmentConfig(size=32, strength=0.5).jitter_ranges()[3]
        (-0.1, 0.1)
    """

    size: int
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    strength: float = 0.5
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, numbers.Integral) or self.size < 1:
            raise ValueError(f"size = {self.size!r}, but must be an integer >= 1")
        object.__setattr__(self, "size", int(self.size))
        # Frozen: normalise list-valued pairs (from Hydra/YAML) to tuples through object.__setattr__.
        for name in ("crop_scale", "crop_ratio", "blur_sigma"):
            object.__setattr__(self, name, _pair(name, getattr(self, name)))
        low, high = self.crop_scale
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"crop_scale = {self.crop_scale!r}, but must be 0 < low <= high <= 1")
        low, high = self.crop_ratio
        if not (0.0 < low <= high and math.isfinite(high)):
            raise ValueError(f"crop_ratio = {self.crop_ratio!r}, but must be 0 < low <= high < inf")
        low, high = self.blur_sigma
        if not (0.0 < low <= high and math.isfinite(high)):
            raise ValueError(f"blur_sigma = {self.blur_sigma!r}, but must be 0 < low <= high < inf")
        for name in ("flip_p", "jitter_p", "gray_p", "blur_p"):
            _probability(name, getattr(self, name))
        if not (self.strength >= 0.0 and math.isfinite(self.strength)):
            raise ValueError(f"strength = {self.strength!r}, but must be finite and >= 0")

    def jitter_ranges(self) -> tuple[tuple[float, float], ...]:
        """(brightness, contrast, saturation, hue) ranges, as torchvision's ColorJitter builds them."""
        amount = 0.8 * self.strength
        factor = (max(0.0, 1.0 - amount), 1.0 + amount)
        hue = min(0.2 * self.strength, 0.5)
        return factor, factor, factor, (-hue, hue)

    @property
    def blur_kernel(self) -> int:
        """Odd blur kernel side: 10% of ``size`` (SimCLR), at least 3, at most reflect padding's limit."""
        k = max(3, int(0.1 * self.size))
        k += 1 - k % 2  # odd
        return min(k, 2 * self.size - 1)


@dataclass(frozen=True)
class AugmentParams:
    """Every random choice for one batch, drawn once by :meth:`BatchAugment.make_params`.

    All tensors are per sample (first dimension N) on the batch's device.

    Args:
        crop: ``(N, 4)`` int64 ``(top, left, height, width)`` of the crop in input pixels.
        flip: ``(N,)`` bool, flip horizontally.
        jitter: ``(N,)`` bool, apply the colour jitter.
        factors: ``(N, 4)`` float32 brightness, contrast, saturation factors and hue shift
            (used where ``jitter``).
        order: ``(N, 4)`` int64, a permutation of the jitter ops 0..3 (brightness, contrast,
            saturation, hue), applied left to right, as torchvision's ``fn_idx``.
        gray: ``(N,)`` bool, convert to grayscale.
        blur: ``(N,)`` bool, apply the Gaussian blur.
        sigma: ``(N,)`` float32 blur standard deviation in pixels (used where ``blur``).
        height, width: the input size the crops were drawn for.
    """

    crop: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    factors: torch.Tensor
    order: torch.Tensor
    gray: torch.Tensor
    blur: torch.Tensor
    sigma: torch.Tensor
    height: int
    width: int

    def __len__(self) -> int:
        return int(self.flip.shape[0])

    @staticmethod
    def identity(n: int, height: int, width: int, device: torch.device | str | None = None) -> AugmentParams:
        """Parameters that change nothing: the whole image, no flip, jitter, grayscale or blur."""
        crop = torch.tensor([[0, 0, height, width]], dtype=torch.int64, device=device).repeat(n, 1)  # (N, 4)
        no = torch.zeros(n, dtype=torch.bool, device=device)
        factors = torch.tensor([1.0, 1.0, 1.0, 0.0], device=device).repeat(n, 1)  # (N, 4)
        order = torch.arange(4, device=device).repeat(n, 1)  # (N, 4)
        sigma = torch.ones(n, device=device)
        return AugmentParams(crop, no, no, factors, order, no, no, sigma, height, width)


class BatchAugment:
    """SimCLR's random view generator, batched on the device.

    Implements the augmentation of SimCLR (Chen, Kornblith, Norouzi, Hinton, "A Simple Framework
    for Contrastive Learning of Visual Representations", ICML 2020, appendix A): random resized
    crop, horizontal flip, colour distortion (colour jitter applied with probability 0.8, random
    grayscale with probability 0.2) and optional Gaussian blur. It mirrors torchvision's
    ``RandomResizedCrop``, ``RandomHorizontalFlip``, ``RandomApply([ColorJitter(0.8s, 0.8s, 0.8s,
    0.2s)], p)``, ``RandomGrayscale`` and ``GaussianBlur``, with the same parameter distributions
    and per-op maths, but each op is one tensor pass over the whole batch with per-sample
    parameters:

    * crop + flip + resize: one per-sample axis-aligned affine (scale, shift, mirror) sampled by
      bilinear ``F.grid_sample``. The grid is built per axis, ``(N, 2, S)``, rather than by
      ``F.affine_grid``: fewer ops, sampling points clamped to the crop's pixel centres as
      ``F.resized_crop`` does, and a flip that mirrors the sampling points exactly;
    * colour jitter: brightness, contrast and saturation are blends ``f * x + (1 - f) * ref`` with
      ``ref`` = 0, the mean luma, the luma image; hue is an RGB -> HSV -> RGB rotation. Each sample
      gets its own random order of the four ops (torchvision's ``fn_idx``): the slots before its
      hue step run as blends, then hue once for the whole batch, then the slots after it;
    * grayscale: luma broadcast to three channels; blur: separable depthwise convolution with one
      kernel per sample, reflect-padded as torchvision's ``gaussian_blur``.

    For C = 1 saturation, hue and grayscale are skipped (torchvision leaves such images unchanged).

    Args:
        cfg: the augmentation's configuration.

    Shapes:
        input ``(N, C, H, W)`` uint8 (or float in [0, 1]), C in {1, 3};
        output ``(N, C, size, size)`` float32 in [0, 1].

    Example:
        >>> aug = BatchAugment(AugmentConfig(size=32, strength=0.5))
        >>> x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
        >>> g = torch.Generator().manual_seed(0)
        >>> view1, view2 = aug(x, g), aug(x, g)
        >>> view1.shape, view1.dtype
        (torch.Size([8, 3, 32, 32]), torch.float32)
    """

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.cfg!r})"

    # ---------------------------------------------------------------- randomness

    def make_params(
        self,
        n: int,
        height: int,
        width: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> AugmentParams:
        """Draw every random choice for a batch of ``n`` images of ``height x width``.

        All uniforms come from one draw on the generator's device (or ``device`` without a
        generator) and move to ``device`` in one copy, so a CPU generator gives the same
        parameters whatever device the batch lives on.
        """
        if n < 1 or height < 1 or width < 1:
            raise ValueError(f"n, height, width = {(n, height, width)}, but must all be >= 1")
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        device = torch.device(device)
        draw_device = generator.device if generator is not None else device
        # (N, 35) uniforms; float64 so that rounding crop sides matches torchvision's Python floats.
        u = torch.rand(n, _N_UNIFORMS, generator=generator, device=draw_device, dtype=torch.float64)
        # One affine map turns the columns into area fractions, log-ratios, factors and sigmas.
        scale, offset = self._uniform_map(device)
        v = torch.addcmul(offset, u.to(device), scale)  # (N, 35)
        crop = self._sample_crops(v[:, _AREA], v[:, _LOG_RATIO], v[:, _TOP_LEFT], height, width)
        coins = v[:, _COINS] < _const(self._probabilities(), device, torch.float64)  # (N, 4) bool
        factors = v[:, _FACTORS].float()  # (N, 4)
        order = torch.argsort(v[:, _ORDER], dim=1)  # (N, 4): a uniform random permutation per row
        sigma = v[:, _SIGMA].float()  # (N,)
        flip, jitter, gray, blur = coins.unbind(dim=1)
        return AugmentParams(crop, flip, jitter, factors, order, gray, blur, sigma, height, width)

    def _probabilities(self) -> tuple[float, ...]:
        cfg = self.cfg
        return (cfg.flip_p, cfg.jitter_p, cfg.gray_p, cfg.blur_p)

    def _uniform_map(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(35,) scale and offset: column j of the uniforms becomes ``offset[j] + scale[j] * u``."""
        cfg = self.cfg
        scale, offset = [1.0] * _N_UNIFORMS, [0.0] * _N_UNIFORMS
        (s_low, s_high), (r_low, r_high) = cfg.crop_scale, cfg.crop_ratio
        spans = [(_AREA, s_low, s_high), (_LOG_RATIO, math.log(r_low), math.log(r_high))]
        for k, (low, high) in enumerate(cfg.jitter_ranges()):
            spans.append((slice(_FACTORS.start + k, _FACTORS.start + k + 1), low, high))
        spans += [(_SIGMA_SLICE, *cfg.blur_sigma)]
        for columns, low, high in spans:
            for j in range(columns.start, columns.stop):
                scale[j], offset[j] = high - low, low
        return _const(tuple(scale), device, torch.float64), _const(tuple(offset), device, torch.float64)

    def _sample_crops(
        self,
        area_frac: torch.Tensor,
        log_ratio: torch.Tensor,
        u_top_left: torch.Tensor,
        height: int,
        width: int,
    ) -> torch.Tensor:
        """torchvision's ``RandomResizedCrop.get_params``, vectorised: (N, 4) int64 (top, left, h, w).

        Each sample gets all 10 candidate (area, ratio) pairs at once, ``(N, 10)``, and keeps the
        first whose rounded sides fit; samples with none fall back to the central crop, as
        torchvision does.
        """
        device = area_frac.device
        target = area_frac * float(height * width)  # (N, 10) crop areas in pixels
        aspect = torch.exp(log_ratio)  # w / h
        hw = torch.round(torch.sqrt(torch.stack((target / aspect, target * aspect), dim=-1)))  # (N, 10, 2)
        limit = _const((float(height), float(width)), device, torch.float64)  # (2,)
        ok = ((hw >= 1) & (hw <= limit)).all(dim=-1)  # (N, 10)
        first = ok.to(torch.uint8).argmax(dim=1)  # (N,) first fitting candidate (0 if none)
        hw = hw[torch.arange(hw.shape[0], device=device), first]  # (N, 2)
        found = ok.any(dim=1, keepdim=True)  # (N, 1)

        # Central-crop fallback, a constant for this image size.
        ratio_low, ratio_high = self.cfg.crop_ratio
        in_ratio = width / height
        if in_ratio < ratio_low:
            fallback = (float(round(width / ratio_low)), float(width))
        elif in_ratio > ratio_high:
            fallback = (float(height), float(round(height * ratio_high)))
        else:
            fallback = (float(height), float(width))
        hw = torch.where(found, hw, _const(fallback, device, torch.float64))
        room = limit - hw  # (N, 2) free pixels above/left of the crop
        # randint(0, room + 1) as floor(u * (room + 1)), clamped against u * m rounding up to m.
        top_left = torch.minimum(torch.floor(u_top_left * (room + 1)), room)
        top_left = torch.where(found, top_left, torch.floor(room / 2))
        return torch.cat((top_left, hw), dim=1).to(torch.int64)  # (N, 4)

    # ---------------------------------------------------------------- application

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One random view per image: ``(N, C, H, W)`` uint8 -> ``(N, C, size, size)`` float32."""
        _check_images(x)
        n, _, height, width = x.shape
        params = self.make_params(n, height, width, generator=generator, device=x.device)
        return self.apply(x, params)

    def apply(self, x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Apply drawn params: ``(N, C, H, W)`` uint8 (or float in [0, 1]) -> float32 ``(N, C, S, S)``.

        Colour jitter, grayscale and blur run only where the config enables them (probability,
        and for jitter strength, above 0); within them, ``params`` decides per sample.
        """
        _check_images(x)
        n, c, height, width = x.shape
        if len(params) != n or (params.height, params.width) != (height, width):
            raise ValueError(
                f"params drawn for {len(params)} images of {params.height}x{params.width}, "
                f"but the batch is {n} images of {height}x{width}"
            )
        cfg = self.cfg
        out = self._crop_flip(_as_float(x), params)  # (N, C, S, S)
        # Ops are gated on the config, not on the drawn masks (``params.x.any()`` would make the
        # host wait for the device): an op with probability 0 costs nothing.
        if cfg.jitter_p > 0.0 and cfg.strength > 0.0:
            out = self._color_jitter(out, params)
        if c == 3 and cfg.gray_p > 0.0:
            gray = params.gray.view(n, 1, 1, 1)
            out = torch.where(gray, _luma(out).expand_as(out), out)
        if cfg.blur_p > 0.0:
            blur = params.blur.view(n, 1, 1, 1)
            out = torch.where(blur, _gaussian_blur(out, params.sigma, cfg.blur_kernel), out)
        return out.clamp_(0.0, 1.0)

    def _crop_flip(self, x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Random resized crop + flip as one resampling: (N, C, H, W) -> (N, C, S, S).

        Output pixel j of a crop starting at ``start`` with side ``side`` samples the input at
        ``start + (j + 0.5) side / S - 0.5``, clamped to the crop's first and last pixel centres:
        exactly ``F.resized_crop``'s bilinear ``interpolate`` (align_corners=False). The grid is
        separable, so rows and columns are computed as ``(N, 2, S)`` and broadcast; a flip
        reverses the columns, so a flipped view is exactly the unflipped one mirrored.
        """
        n, c, height, width = x.shape
        size = self.cfg.size
        dtype, device = x.dtype, x.device
        crop = params.crop.to(dtype).unsqueeze(-1)  # (N, 4, 1)
        start, side = crop[:, :2], crop[:, 2:]  # (N, 2, 1) each, as (y, x)
        centres = _const(tuple((j + 0.5) / size for j in range(size)), device, dtype)  # (S,)
        pos = torch.addcmul(start - 0.5, side, centres)  # (N, 2, S) input pixel coordinates
        pos = torch.clamp(pos, min=start, max=start + side - 1)
        # Pixel coordinate p -> grid_sample's normalised (2 p + 1) / L - 1 (align_corners=False).
        to_norm = _const(((2 / height,), (2 / width,)), device, dtype)  # (2, 1)
        shift = _const(((1 / height - 1,), (1 / width - 1,)), device, dtype)
        pos = torch.addcmul(shift, pos, to_norm)  # (N, 2, S)
        ys, xs = pos.unbind(dim=1)  # (N, S) each
        xs = torch.where(params.flip.unsqueeze(1), xs.flip(-1), xs)
        grid = torch.stack(
            (xs.unsqueeze(1).expand(n, size, size), ys.unsqueeze(2).expand(n, size, size)), dim=-1
        )  # (N, S, S, 2) as (x, y)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _color_jitter(self, x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """ColorJitter with per-sample factors and per-sample random op order: (N, C, S, S).

        Brightness, contrast and saturation are one blend ``f x + (1 - f) ref`` with different
        references, so a "slot" applies every sample's own op in one pass (factor 1, exactly the
        identity, where a sample's slot is idle). Hue, the expensive op, runs once: the slots
        before each sample's hue step, then hue, then the slots after it (6 slots, 1 hue pass).
        """
        n, c = x.shape[:2]
        dtype, device = x.dtype, x.device
        jitter = params.jitter.unsqueeze(1)  # (N, 1)
        identity = _const((1.0, 1.0, 1.0, 0.0), device, dtype)  # factors 1 and hue shift 0
        factors = torch.where(jitter, params.factors.to(dtype), identity)  # (N, 4)
        order = params.order  # (N, 4)
        with_hue = c == 3 and self.cfg.jitter_ranges()[3][1] > 0.0
        if with_hue:
            slot_ops = order.index_select(1, _const(_SLOT_POSITIONS, device, torch.int64))  # (N, 6)
            hue_at = (order == _HUE).to(torch.uint8).argmax(dim=1, keepdim=True)  # (N, 1)
            positions = _const(_SLOT_POSITIONS, device, torch.int64)
            before = _const(_SLOT_BEFORE_HUE, device, torch.bool)
            usable = torch.where(before, positions < hue_at, positions > hue_at) & (slot_ops != _HUE)
        else:
            slot_ops = order  # (N, 4); hue, if drawn, is a no-op here
            usable = (slot_ops != _HUE) & (slot_ops != _SATURATION) if c == 1 else slot_ops != _HUE
        f = torch.where(usable, factors.gather(1, slot_ops.clamp(max=_SATURATION)), 1.0)  # (N, K)
        keep = 1.0 - f  # weight of the reference image
        w_mean = (keep * (slot_ops == _CONTRAST)).view(n, -1, 1, 1, 1)  # (N, K, 1, 1, 1)
        w_luma = (keep * (slot_ops == _SATURATION)).view(n, -1, 1, 1, 1)
        f = f.view(n, -1, 1, 1, 1)
        slots = range(slot_ops.shape[1])
        for k in slots[:3] if with_hue else slots:
            x = _blend(x, f[:, k], w_mean[:, k], w_luma[:, k])
        if with_hue:
            x = torch.where(params.jitter.view(n, 1, 1, 1), _adjust_hue(x, factors[:, _HUE]), x)
            for k in slots[3:]:
                x = _blend(x, f[:, k], w_mean[:, k], w_luma[:, k])
        return x


# -------------------------------------------------------------------- tensor helpers


def _check_images(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images of shape {tuple(x.shape)}, but must be (N, C, H, W) with C = 1 or 3")
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise ValueError(f"images of dtype {x.dtype}, but must be uint8 (or floating point in [0, 1])")


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; float images are taken as already in [0, 1]."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    return x.to(torch.float32)


def _luma(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma: (N, 3, H, W) -> (N, 1, H, W); a 1-channel image is its own luma."""
    if x.shape[1] == 1:
        return x
    return (x * _const(_LUMA, x.device, x.dtype).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)


def _blend(x: torch.Tensor, f: torch.Tensor, w_mean: torch.Tensor, w_luma: torch.Tensor) -> torch.Tensor:
    """``clamp(f x + w_mean mean(luma) + w_luma luma, 0, 1)`` with (N, 1, 1, 1) weights: (N, C, H, W).

    torchvision's ``_blend`` in ``adjust_brightness`` (reference 0), ``adjust_contrast`` (the mean
    luma) and ``adjust_saturation`` (the luma image), one op chosen per sample by its weights.
    """
    luma = _luma(x)  # (N, 1, H, W)
    out = torch.addcmul(w_mean * luma.mean(dim=(1, 2, 3), keepdim=True), f, x)
    if x.shape[1] == 3:  # a grey image has no saturation to change
        out = torch.addcmul(out, w_luma, luma)
    return out.clamp_(0.0, 1.0)


def _adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``shift[i]`` turns per sample: (N, 3, H, W), (N,) -> (N, 3, H, W).

    The maths of torchvision's ``adjust_hue`` (RGB -> HSV, shift, HSV -> RGB), for a per-sample
    shift and with few passes: the hue sextant comes from the channel holding the maximum (red,
    then green, then blue on ties, as PIL and torchvision; the formulas agree at ties), and the
    way back is the closed form ``c_n = v - v s clamp(min(k, 4 - k), 0, 1)``,
    ``k = (n + 6 h) mod 6`` for n = 5, 3, 1 (R, G, B).
    """
    device, dtype = x.device, x.dtype
    maxc, argmax = x.max(dim=1, keepdim=True)  # (N, 1, H, W): value and channel of the maximum
    spread = maxc - x.amin(dim=1, keepdim=True)
    sat = spread / maxc.clamp_min(1e-12)  # 0 for black (spread is 0 there too)
    # (g - b, b - r, r - g): the numerator of the hue for a maximum in r, g, b respectively.
    diff = x.index_select(1, _const((1, 2, 0), device, torch.int64)) - x.index_select(
        1, _const((2, 0, 1), device, torch.int64)
    )
    # Hue in sextants [0, 6): diff / spread + 2 * channel, plus the shift. Grey pixels (spread 0)
    # get some hue, which s = 0 makes irrelevant.
    h6 = torch.add(diff.gather(1, argmax) / spread.clamp_min(1e-12), argmax.to(dtype), alpha=2.0)
    h6 = torch.remainder(h6 + 6.0 * shift.to(dtype).view(-1, 1, 1, 1), 6.0)
    n_rgb = _const((5.0, 3.0, 1.0), device, dtype).view(1, 3, 1, 1)
    k = torch.remainder(h6 + n_rgb, 6.0)  # (N, 3, H, W)
    ramp = torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
    return torch.addcmul(maxc, maxc * sat, ramp, value=-1.0).clamp_(0.0, 1.0)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel: int) -> torch.Tensor:
    """Gaussian blur with one sigma per sample: (N, C, H, W), (N,) -> (N, C, H, W).

    Separable depthwise convolution (groups = N * C) with torchvision's kernel and reflect padding.
    """
    n, c, height, width = x.shape
    half = kernel // 2
    t = torch.arange(kernel, dtype=x.dtype, device=x.device) - half  # (K,)
    k1d = torch.softmax(-0.5 * (t / sigma.to(x.dtype).view(n, 1)) ** 2, dim=1)  # (N, K), rows sum to 1
    k1d = k1d.repeat_interleave(c, dim=0)  # (N*C, K): one kernel per (sample, channel) group
    padded = F.pad(x.reshape(1, n * c, height, width), (half, half, half, half), mode="reflect")
    out = F.conv2d(padded, k1d.view(n * c, 1, 1, kernel), groups=n * c)  # along width
    out = F.conv2d(out, k1d.view(n * c, 1, kernel, 1), groups=n * c)  # along height
    return out.view(n, c, height, width)


def to_float(x: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """The evaluation path: uint8 ``(N, C, H, W)`` -> float32 in [0, 1], no randomness.

    With ``size``, resize to ``size x size`` (bilinear, antialiased, like torchvision v2's
    ``Resize((size, size))``); without, or when already that size, only convert.
    """
    _check_images(x)
    out = _as_float(x)
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ValueError(f"size = {size!r}, but must be an integer >= 1")
        if tuple(out.shape[-2:]) != (size, size):
            out = F.interpolate(out, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            out = out.clamp_(0.0, 1.0)
    return out

