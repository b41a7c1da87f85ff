"""Encoded images (PNG, JPEG, ...) to uint8 arrays (C, H, W), one at a time or in parallel processes."""

from __future__ import annotations

import io
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Sequence

import numpy as np
from PIL import Image


def _is_grey(pil_mode: str) -> bool:
    return pil_mode in ("L", "1", "LA", "I", "F") or pil_mode.startswith("I;16")


def _convert(im: Any, mode: str) -> Any:
    """``im`` in ``mode`` (L or RGB). A 16-bit grey image (PNG/TIFF: Pillow's I and I;16 modes) is
    scaled from 0..65535 to 0..255 first: Pillow's own convert clips it at 255."""
    if im.mode == "I" or im.mode.startswith("I;16"):
        wide = np.asarray(im).astype(np.float64)
        im = Image.fromarray(np.round(np.clip(wide, 0, 65535) / 257.0).astype(np.uint8), "L")
    return im.convert(mode)


def image_mode(blob: bytes) -> str:
    """The mode every image of a set is decoded in: L if this (the first) image is grey, else RGB."""
    with Image.open(io.BytesIO(blob)) as im:
        return "L" if _is_grey(im.mode) else "RGB"


def fit_shorter_side(im: Any, size: int) -> Any:
    """``im`` resized (bilinear) so that its shorter side is ``size``, keeping its aspect ratio."""
    w, h = im.size
    if min(w, h) == size:
        return im
    scale = size / min(w, h)
    return im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)


def crop_offsets(h: int, w: int, size: int, rng: np.random.Generator | None) -> tuple[int, int]:
    """(top, left) of a ``size`` x ``size`` crop of an h x w image: the centre without ``rng``,
    uniformly random with it."""
    if rng is None:
        return (h - size) // 2, (w - size) // 2
    return int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))


def decode_one(blob: bytes, size: int | None, mode: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """One encoded image as (C, H, W) uint8 in ``mode``. With ``size``: the shorter side resized to
    ``size``, then a ``size`` x ``size`` crop (the centre, or a random one drawn from ``rng``);
    the aspect ratio is kept, never squashed."""
    with Image.open(io.BytesIO(blob)) as im:
        im = _convert(im, mode)
        if size is not None:
            im = fit_shorter_side(im, size)
        arr = np.asarray(im, dtype=np.uint8)
    if size is not None:
        top, left = crop_offsets(arr.shape[0], arr.shape[1], size, rng)
        arr = arr[top:top + size, left:left + size]
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)  # (C, H, W)


def _decode_chunk(args: tuple[list[bytes], int | None, str, int]) -> np.ndarray | tuple[int, str]:
    blobs, size, mode, offset = args
    out = []
    for i, b in enumerate(blobs):
        try:
            out.append(decode_one(b, size, mode))
        except Exception as exc:  # PIL raises many types for bad bytes
            return (offset + i, f"is not a decodable image ({type(exc).__name__}: {exc})")
    odd = next((i for i, a in enumerate(out) if a.shape != out[0].shape), None)
    if odd is not None:
        return (offset + odd, _size_message(out[odd].shape, out[0].shape, offset))
    return np.stack(out)


def _size_message(shape: tuple[int, ...], first: tuple[int, ...], first_row: int) -> str:
    return (f"has size {shape[1]}x{shape[2]} ({shape[0]} channels), unlike row {first_row}'s {first[1]}x{first[2]} "
            f"({first[0]}); set dataset.image_size to resize them all")


def decode_images(blobs: Sequence[bytes], size: int | None, *, source: str, workers: int | None = None) -> np.ndarray:
    """Decode encoded images (PNG, JPEG, ...) into (N, C, H, W) uint8, in parallel processes.

    Grey if the first image is grey (mode L/1/I), else RGB. Raises ``ValueError`` naming the first
    row that does not decode."""
    if len(blobs) == 0:
        raise ValueError(f"{source}: no images")
    try:
        mode = image_mode(blobs[0])
    except Exception as exc:
        raise ValueError(f"{source}: row 0 is not a decodable image ({type(exc).__name__}: {exc})") from None
    workers = workers or min(16, os.cpu_count() or 1)
    chunk = max(256, len(blobs) // (workers * 4) + 1)
    jobs = [(list(blobs[i:i + chunk]), size, mode, i) for i in range(0, len(blobs), chunk)]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_decode_chunk, jobs))
    else:
        parts = [_decode_chunk(j) for j in jobs]
    for p in parts:
        if isinstance(p, tuple):
            row, problem = p
            raise ValueError(f"{source}: row {row} {problem}")
    for (_, _, _, i), p in zip(jobs, parts):  # chunks agree within themselves; now across them
        if p.shape[1:] != parts[0].shape[1:]:  # type: ignore[union-attr]
            raise ValueError(f"{source}: row {i} {_size_message(p.shape[1:], parts[0].shape[1:], 0)}")  # type: ignore[union-attr]
    return np.concatenate(parts)  # type: ignore[arg-type]


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """(N, C, H, W) uint8 resized bilinearly to (N, C, size, size), channel by channel."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = np.empty((len(images), images.shape[1], size, size), dtype=np.uint8)
    for i, im in enumerate(images):
        for c in range(images.shape[1]):
            out[i, c] = np.asarray(Image.fromarray(im[c]).resize((size, size), Image.BILINEAR))
    return out
