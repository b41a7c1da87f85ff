"""Batched JPEG decoding on the trial's device (``StreamReader.decode_device``; nvJPEG on a GPU,
the same torchvision call on the CPU here): the same geometry as the threads' PIL path (shorter
side, centre or seeded random crop: the same offsets), pixels within resampling differences;
what it cannot decode (PNG, a corrupt JPEG) goes to the threads' path, which skips and counts."""

from __future__ import annotations

import numpy as np
import torch

from sslsweep.config import DatasetConfig
from sslsweep.data import StreamReader, prepare
from sslsweep.data.decode import decode_one
from sslsweep.data.device_decode import decode_jpegs
from tests.conftest import encode_png
from tests.data.conftest import encode_jpeg, photos, write_shards

SIZE = 16
# PIL's and torch's antialiased bilinear kernels round differently: measured on these images
# (2026-12-05), mean |difference| 0.13-0.29 grey levels per image, max 1. Another geometry (resized
# to SIZE + 1 and cropped one pixel off) moves the mean by 5.4-99 levels: the bounds sit between.
MEAN_TOL, MAX_TOL = 1.0, 2


def _gradient(h: int, w: int, channels: int = 3) -> np.ndarray:
    """An image whose pixels say where they are (a crop at another offset differs everywhere)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 7 + y * 3 + 40 * c) % 256 for c in range(channels)]).astype(np.uint8)


def test_decoded_jpegs_match_the_pil_path_in_geometry_and_pixels() -> None:
    """Non-square RGB and grey JPEGs, centre crops and seeded random crops: each tensor is
    (C, SIZE, SIZE) uint8 like decode_one's array for the same generator seed, and close to it."""
    blobs, _ = photos(12)
    blobs += [encode_jpeg(_gradient(40, 64)), encode_jpeg(_gradient(70, 30))]
    grey = [encode_jpeg(_gradient(30, 50, channels=1)), encode_jpeg(_gradient(50, 23, channels=1))]
    for mode, group in (("RGB", blobs), ("L", grey)):
        for seed in (None, 7):
            rngs = [None if seed is None else np.random.default_rng((seed, i)) for i in range(len(group))]
            got = decode_jpegs(group, SIZE, mode, rngs, "cpu")
            for i, (blob, img) in enumerate(zip(group, got)):
                want = decode_one(blob, SIZE, mode, None if seed is None else np.random.default_rng((seed, i)))
                assert img is not None and img.dtype == torch.uint8 and tuple(img.shape) == want.shape
                diff = np.abs(img.numpy().astype(int) - want.astype(int))
                assert diff.mean() <= MEAN_TOL and diff.max() <= MAX_TOL, (mode, seed, i, diff.mean(), diff.max())


def test_a_corrupt_jpeg_is_none_and_the_others_decode() -> None:
    blobs, _ = photos(3)
    bad = blobs[1][:2] + b"\x00" * 40  # starts like a JPEG, is not one
    got = decode_jpegs([blobs[0], bad, blobs[2]], SIZE, "RGB", [None] * 3, "cpu")
    assert got[1] is None and got[0] is not None and got[2] is not None


def test_a_reader_decoding_on_its_device_gives_the_threads_batches(tmp_path, cache_dir) -> None:  # noqa: ANN001
    """The same shards read with and without a decode device: the same images in the same order
    (seeded shuffle and random crops), tensors on the device close to the threads' arrays; a PNG
    among the JPEGs and an undecodable image take the threads' path (decoded, resp. skipped and
    counted) in both."""
    blobs, labels = photos(40)
    blobs[5] = encode_png(np.full((3, 22, 30), 90, np.uint8))
    blobs[9] = blobs[9][:2] + b"\x00" * 40
    write_shards(tmp_path / "ds", blobs, labels, n_shards=2, row_group=8)
    data = prepare(DatasetConfig(name="parquet", path=str(tmp_path / "ds"), image_size=SIZE, residency="stream",
                                 val_fraction=0.2, test_fraction=0.2))
    indices = np.arange(len(labels))
    threads, device = StreamReader(data.stream, buffer=8, workers=2), \
        StreamReader(data.stream, buffer=8, workers=2, decode_device="cpu")
    for seed in (None, 3):
        a = list(threads.batches(indices, 8, seed=seed))
        b = list(device.batches(indices, 8, seed=seed))
        assert [p.tolist() for _, p in a] == [p.tolist() for _, p in b]
        for (x, _), (y, _) in zip(a, b):
            assert isinstance(x, np.ndarray) and isinstance(y, torch.Tensor) and y.shape == x.shape
            diff = np.abs(y.numpy().astype(int) - x.astype(int))
            assert diff.mean() <= MEAN_TOL and diff.max() <= MAX_TOL
        assert 9 not in np.concatenate([p for _, p in b]) and 5 in np.concatenate([p for _, p in b])
    assert threads.skipped == device.skipped == 2
    # materialize (label subsets, evaluation splits) stays on the threads' path: numpy, identical
    assert np.array_equal(device.materialize(indices)[0], threads.materialize(indices)[0])
