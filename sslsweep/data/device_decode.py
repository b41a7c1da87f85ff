"""JPEG decoding in batches on the trial's device: ``torchvision.io.decode_jpeg(..., device="cuda")``
(nvJPEG) on a GPU, the same call on the CPU elsewhere (tests).

The stream reader (:mod:`sslsweep.data.stream`) uses it on CUDA trials, where decoding JPEGs in
a few CPU threads would starve a ResNet-50. The result matches the CPU path
(:func:`sslsweep.data.decode.decode_one`) in geometry exactly - the shorter side resized to
``size`` with the same rounding, the same crop offsets drawn from the same generator - and in
pixels to within resampling differences (bilinear with antialiasing in both, PIL's and torch's
kernels; a few grey levels). Images that are not JPEG, or that this decoder refuses, are left to
the caller (``None``), which decodes them on the CPU.

torchvision 0.29 marks its image decoders deprecated in favour of TorchCodec; ``decode_jpeg`` is
still the batched nvJPEG entry point there, and this module is the one place that calls it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg

from sslsweep.data.decode import crop_offsets

JPEG_START = b"\xff\xd8"  # every JPEG file begins with its start-of-image marker
MODES = {"L": ImageReadMode.GRAY, "RGB": ImageReadMode.RGB}


def is_jpeg(blob: bytes | None) -> bool:
    return blob is not None and blob[:2] == JPEG_START


def shorter_side_to(img: torch.Tensor, size: int) -> torch.Tensor:
    """``img`` (C, H, W) uint8 resized (bilinear, antialiased) so its shorter side is ``size``,
    with :func:`sslsweep.data.decode.fit_shorter_side`'s rounding."""
    h, w = img.shape[-2:]
    if min(h, w) == size:
        return img
    scale = size / min(h, w)
    out = (max(size, round(h * scale)), max(size, round(w * scale)))
    x = F.interpolate(img[None].float(), size=out, mode="bilinear", antialias=True, align_corners=False)
    return x[0].round_().clamp_(0, 255).to(torch.uint8)


def decode_jpegs(blobs: Sequence[bytes], size: int, mode: str, rngs: Sequence[np.random.Generator | None],
                 device: torch.device | str) -> list[torch.Tensor | None]:
    """JPEGs ``blobs`` as (C, size, size) uint8 tensors on ``device``, in ``mode`` (``L``/``RGB``):
    decoded in one batch, each resized by its shorter side and cropped (the centre, or a random
    crop from its ``rngs`` entry). An image the decoder refuses is ``None`` (the batch is retried
    one image at a time to find it)."""
    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    try:
        decoded: list[torch.Tensor | None] = list(decode_jpeg(data, mode=MODES[mode], device=device))
    except RuntimeError:
        decoded = [_one(d, mode, device) for d in data]
    out: list[torch.Tensor | None] = []
    for img, rng in zip(decoded, rngs):
        if img is None:
            out.append(None)
            continue
        img = shorter_side_to(img, size)
        top, left = crop_offsets(img.shape[-2], img.shape[-1], size, rng)
        out.append(img[:, top:top + size, left:left + size])
    return out


def _one(data: torch.Tensor, mode: str, device: torch.device | str) -> torch.Tensor | None:
    try:
        return decode_jpeg(data, mode=MODES[mode], device=device)
    except RuntimeError:
        return None
