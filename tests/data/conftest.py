"""Tiny datasets on disk for the data tests: Parquet files and image folders."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from PIL import Image

from tests.conftest import encode_png, make_images


def write_parquet(path: Path, images: np.ndarray, labels: np.ndarray, *, struct: bool = True,
                  bad_row: int | None = None) -> None:
    blobs = [encode_png(im) for im in images]
    if bad_row is not None:
        blobs[bad_row] = b"not an image"
    col = (pa.array([{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(blobs)]) if struct
           else pa.array(blobs, type=pa.binary()))
    pq.write_table(pa.table({"img": col, "label": pa.array(labels, type=pa.int64())}), path)


def write_folder(root: Path, names: list[str], n: int, size: int = 10, seed: int = 0) -> None:
    """``n`` images of ``len(names)`` classes under ``root/<name>/``; make_images makes class i of k
    brighter as i grows (mean 30 for the first, 220 for the last)."""
    images, labels = make_images(n, classes=len(names), size=size, seed=seed)
    for i, (im, y) in enumerate(zip(images, labels)):
        (root / names[y]).mkdir(parents=True, exist_ok=True)
        (root / names[y] / f"{i}.png").write_bytes(encode_png(im))


def encode_jpeg(im: np.ndarray) -> bytes:
    """(C, H, W) uint8 as JPEG bytes (quality 95)."""
    buf = io.BytesIO()
    Image.fromarray(im.transpose(1, 2, 0) if im.shape[0] == 3 else im[0]).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def photos(n: int, classes: int = 3, seed: int = 0) -> tuple[list[bytes], np.ndarray]:
    """``n`` non-square RGB JPEGs (heights 20..27, widths 28..35: landscape, never square) and
    balanced labels; class c is brighter as c grows."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    blobs = []
    for y in labels:
        h, w = int(rng.integers(20, 28)), int(rng.integers(28, 36))
        base = 40 + 170 * y / max(classes - 1, 1)
        blobs.append(encode_jpeg(np.clip(base + rng.normal(0, 25, (3, h, w)), 0, 255).astype(np.uint8)))
    return blobs, labels.astype(np.int64)


def write_shards(root: Path, blobs: list[bytes], labels: np.ndarray, *, split: str = "train", n_shards: int = 3,
                 row_group: int = 7) -> list[Path]:
    """``blobs`` in ``n_shards`` Parquet files in the Hugging Face layout
    (``root/data/<split>-0000k-of-0000n.parquet``, columns image {bytes, path} and label), each
    with row groups of ``row_group`` rows, snappy-compressed."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(blobs), n_shards + 1).astype(int)
    paths = []
    for k in range(n_shards):
        lo, hi = bounds[k], bounds[k + 1]
        col = pa.array([{"bytes": b, "path": f"{i}.jpg"} for i, b in zip(range(lo, hi), blobs[lo:hi])])
        path = root / "data" / f"{split}-{k:05d}-of-{n_shards:05d}.parquet"
        pq.write_table(pa.table({"image": col, "label": pa.array(labels[lo:hi], pa.int64())}), path,
                       row_group_size=row_group, compression="snappy")
        paths.append(path)
    return paths
