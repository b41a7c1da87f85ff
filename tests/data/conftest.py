"""Tiny datasets on disk for the data tests: Parquet files and image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

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
