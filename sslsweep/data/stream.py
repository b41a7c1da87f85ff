"""The streaming data path (``dataset.residency = stream``): each trial reads the images while it
trains, from sharded Parquet (Hugging Face layout, local or any pyarrow URI such as ``s3://``) or
an image folder, with memory O(batch + shuffle buffer), never O(dataset).

:func:`build_index` lists where every image is (shard and row, or file) from Parquet metadata,
label columns and folder listings, decoding one image only (for its mode and size): the driver
builds it, and the splits and label subsets computed from its labels are the in-memory path's
(same :func:`~sslsweep.data.make_splits` over the same labels in the same order).

:class:`StreamReader` reads a set of images in batches: Parquet one row group at a time (only the
rows asked for), image files one by one; a background thread keeps ``prefetch`` decoded batches
ahead of the consumer, and decoding (PIL) runs in ``workers`` threads - or, with a
``decode_device`` (a CUDA trial's GPU), JPEGs are decoded there in batches
(:mod:`sslsweep.data.device_decode`) and the batches are tensors on it. Training order is shuffled
in two levels: the order of the shards/row groups (seeded), then a shuffle buffer of ``buffer``
encoded images. Evaluation reads in index order and returns images in the order asked.

Images are stored at ``size``: the shorter side resized to it, then a ``size`` x ``size`` crop,
random while training and central for evaluation; the aspect ratio is kept.

Bad data, as decided for a stream that may run for hours:

- an image that does not decode is skipped and counted (:attr:`StreamReader.skipped`), with a
  warning naming its file and row; the epoch goes on with the others.
- a shard or row group that cannot be read (truncated, corrupt pages, gone) fails the trial with
  :class:`StreamError` naming the shard and the rows; nothing computed before is lost: the trial's
  last checkpoint (every ``search.eval_every`` epochs) is where Tune's retry resumes from. A shard
  whose footer does not read already fails the index, before Ray starts.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sslsweep.data.decode import decode_one, image_mode
from sslsweep.data.sources import (_first_folder_file, _first_parquet_blob, _folder_files, _image_bytes,
                                   align_test_labels, read_parquet_labels, shards, source_files)
from sslsweep.rules import ConfigError
from sslsweep.storage import resolve

if TYPE_CHECKING:
    from sslsweep.config import DatasetConfig

log = logging.getLogger(__name__)
MAX_WARNINGS = 10  # undecodable images named in the log per reader; all are counted


class StreamError(RuntimeError):
    """A shard (or row group) of a streamed dataset cannot be read."""


@dataclass(frozen=True)
class StreamIndex:
    """Where every image of a dataset is, without its pixels.

    Args:
        kind: ``parquet`` (``files`` are shards, ``row_of`` rows in them) or ``imagefolder``
            (``files`` are images, one per index entry).
        files: shard URIs/paths or image paths, train source first, then the test source.
        file_of: (N,) int32: the file of each image, in the labelled set's order.
        row_of: (N,) int64: the row of each image in its shard (0 for image files).
        image_column: the Parquet column of encoded images.
        size: the stored side: shorter side resized to it, then a square crop.
        mode: ``L`` or ``RGB``, from the first image, as in-memory decoding.
    """

    kind: str
    files: tuple[str, ...]
    file_of: np.ndarray
    row_of: np.ndarray
    image_column: str
    size: int
    mode: str

    @property
    def shape(self) -> tuple[int, int, int]:
        return (1 if self.mode == "L" else 3, self.size, self.size)

    def __len__(self) -> int:
        return len(self.file_of)


def _parquet_index(files: list[str], cfg: DatasetConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(file_of, row_of, labels) of Parquet shards: their label columns only."""
    labels = read_parquet_labels(tuple(files), cfg)
    file_of = np.concatenate([np.full(len(y), i, np.int32) for i, y in enumerate(labels)])
    row_of = np.concatenate([np.arange(len(y), dtype=np.int64) for y in labels])
    return file_of, row_of, np.concatenate(labels)


def build_index(cfg: DatasetConfig) -> tuple[StreamIndex, np.ndarray, list[str], int]:
    """(index, labels, the train source's class names, images of the external test set) of a
    parquet or imagefolder dataset, read from metadata and listings; one image is decoded (mode and
    size). The labels are in the in-memory path's order: train source, then test source."""
    train, test = source_files(cfg)
    if cfg.name == "parquet":
        train_files, test_files = shards(train), (shards(test) if test is not None else [])
        file_of, row_of, labels = _parquet_index(train_files + test_files, cfg)
        n_test = int(np.isin(file_of, np.arange(len(train_files), len(train_files) + len(test_files))).sum())
        train_labels = labels[:len(labels) - n_test]
        classes = [str(c) for c in range(int(train_labels.max()) + 1)] if len(train_labels) else []
        files, first = train_files + test_files, _first_parquet_blob(train_files[0], cfg)
    elif cfg.name == "imagefolder":
        classes, paths, labels = _folder_files(str(train))
        n_test = 0
        if test is not None:
            test_classes, test_paths, test_labels = _folder_files(str(test))
            labels = np.concatenate([labels, align_test_labels(classes, test_classes, test_labels, str(test))])
            paths, n_test = paths + test_paths, len(test_paths)
        files = [str(p) for p in paths]
        file_of, row_of = np.arange(len(files), dtype=np.int32), np.zeros(len(files), np.int64)
        first_file = _first_folder_file(str(train))
        first = first_file.read_bytes() if first_file is not None else None
    else:
        raise ConfigError("dataset.residency", "stream", f"reads dataset=parquet or imagefolder, not {cfg.name}")
    if first is None:
        raise ConfigError("dataset.path", cfg.path, "holds no image to stream")
    mode = image_mode(first)
    size = cfg.image_size or min(decode_one(first, None, mode).shape[1:])
    index = StreamIndex(kind=cfg.name, files=tuple(files), file_of=file_of, row_of=row_of,
                        image_column=cfg.image_column, size=int(size), mode=mode)
    return index, labels, classes, n_test


@dataclass
class _Item:
    """One image to read: its position in the request, where it is, and its bytes once read."""

    pos: int
    file: int
    row: int
    blob: bytes | None = None


class StreamReader:
    """Reads images of a :class:`StreamIndex` in batches, while the consumer computes.

    Args:
        index: where the images are.
        buffer: encoded images held for shuffling (training only).
        workers: decoding threads.
        prefetch: decoded batches kept ready ahead of the consumer.

    Example:
        >>> reader = StreamReader(index, buffer=4096, workers=4)  # doctest: +SKIP
        >>> for images, rows in reader.batches(splits.train, 256, seed=epoch_seed):  # doctest: +SKIP
        ...     ...  # images: (B, C, S, S) uint8 numpy; rows: their indices into the labelled set
    """

    def __init__(self, index: StreamIndex, *, buffer: int = 4096, workers: int = 4, prefetch: int = 2,
                 decode_device: Any = None) -> None:
        self.index, self.buffer, self.workers, self.prefetch = index, max(1, buffer), max(1, workers), prefetch
        # JPEGs decoded in batches on this torch device (:mod:`sslsweep.data.device_decode`; the
        # trial's GPU), the other images by the threads; None: every image by the threads
        self.decode_device = decode_device
        self.skipped = 0  # undecodable images skipped so far, by this reader
        self._lock = threading.Lock()  # decoding threads count skips
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="sslsweep-decode")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -------------------------------------------------------------- reading encoded images

    def _parquet_items(self, file: int, items: list[_Item], rng: np.random.Generator | None) -> Iterator[_Item]:
        """``items`` (all in shard ``file``) with their bytes, one row group read at a time."""
        where = self.index.files[file]
        fs, inner = resolve(where)
        try:
            with fs.open_input_file(inner) as f:
                reader = pq.ParquetFile(f)
                bounds = np.cumsum([0] + [reader.metadata.row_group(g).num_rows
                                          for g in range(reader.metadata.num_row_groups)])
                rows = np.asarray([it.row for it in items])
                group_of = np.searchsorted(bounds, rows, side="right") - 1
                groups = np.unique(group_of)
                for g in (rng.permutation(groups) if rng is not None else groups):
                    try:
                        table = reader.read_row_group(int(g), columns=[self.index.image_column])
                        blobs = _image_bytes(table, self.index.image_column, where)
                    except (OSError, pa.ArrowException, ConfigError) as exc:
                        raise StreamError(f"{where}: row group {g} (rows {bounds[g]}..{bounds[g + 1] - 1}) "
                                          f"cannot be read ({type(exc).__name__}: {exc})") from None
                    for i in np.flatnonzero(group_of == g):
                        items[i].blob = blobs[items[i].row - bounds[g]]
                        yield items[i]
        except (OSError, pa.ArrowException) as exc:
            raise StreamError(f"{where}: cannot be read ({type(exc).__name__}: {exc})") from None

    def _encoded(self, positions: np.ndarray, indices: np.ndarray,
                 rng: np.random.Generator | None) -> Iterator[_Item]:
        """Every requested image as an :class:`_Item`: files in order (or shuffled), their rows in
        order; image files are read by the decoding threads, not here."""
        file_of = self.index.file_of[indices]
        files = np.unique(file_of)
        for file in (rng.permutation(files) if rng is not None else files):
            sel = np.flatnonzero(file_of == file)
            items = [_Item(int(positions[i]), int(file), int(self.index.row_of[indices[i]])) for i in sel]
            if self.index.kind == "parquet":
                yield from self._parquet_items(int(file), items, rng)
            else:
                yield from items

    def _shuffled(self, items: Iterator[_Item], rng: np.random.Generator) -> Iterator[_Item]:
        """A shuffle buffer of ``buffer`` items: each output is drawn at random from it."""
        held: list[_Item] = []
        for it in items:
            held.append(it)
            if len(held) >= self.buffer:
                j = int(rng.integers(len(held)))
                held[j], held[-1] = held[-1], held[j]
                yield held.pop()
        for j in rng.permutation(len(held)):
            yield held[j]

    # -------------------------------------------------------------- decoding

    def _decode(self, item: _Item, crop_seed: int | None) -> np.ndarray | None:
        where = self.index.files[item.file]
        try:
            if item.blob is None and self.index.kind == "parquet":
                raise ValueError("the image cell is empty")
            blob = item.blob if item.blob is not None else Path(where).read_bytes()
            rng = None if crop_seed is None else np.random.default_rng((crop_seed, item.pos))
            out = decode_one(blob, self.index.size, self.index.mode, rng)
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad bytes
            with self._lock:
                self.skipped += 1
                warn = self.skipped <= MAX_WARNINGS
            if warn:
                row = f", row {item.row}" if self.index.kind == "parquet" else ""
                log.warning("stream: skipped an undecodable image: %s%s (%s: %s)", where, row,
                            type(exc).__name__, exc)
            return None
        return out

    def _decode_on_device(self, chunk: list[_Item], crop_seed: int | None) -> list[Any]:
        """``chunk`` decoded to tensors on :attr:`decode_device`: its JPEGs in one batch there, the
        rest (other formats, JPEGs that decoder refuses) by the threads, then moved there."""
        import torch

        from sslsweep.data.device_decode import decode_jpegs, is_jpeg

        if self.index.kind == "imagefolder":  # read by the threads; an unreadable file is the CPU path's to report
            for it, blob in zip(chunk, self._pool.map(lambda it: _read_or_none(self.index.files[it.file]), chunk)):
                it.blob = blob
        jpeg = [i for i, it in enumerate(chunk) if is_jpeg(it.blob)]
        rngs = [None if crop_seed is None else np.random.default_rng((crop_seed, chunk[i].pos)) for i in jpeg]
        out: list[Any] = [None] * len(chunk)
        for i, img in zip(jpeg, decode_jpegs([chunk[i].blob for i in jpeg], self.index.size,  # type: ignore[misc]
                                             self.index.mode, rngs, self.decode_device)):
            out[i] = img
        rest = [i for i, img in enumerate(out) if img is None]
        for i, arr in zip(rest, self._pool.map(lambda i: self._decode(chunk[i], crop_seed), rest)):
            out[i] = None if arr is None else torch.from_numpy(arr.copy()).to(self.decode_device)
        return out

    def _decoded_batches(self, items: Iterator[_Item], batch_size: int, crop_seed: int | None,
                         drop_last: bool, on_device: bool = False) -> Iterator[tuple[Any, np.ndarray]]:
        shape = self.index.shape
        pending: list[tuple[Any, int]] = []
        chunk: list[_Item] = []

        def flush(chunk: list[_Item]) -> None:
            decoded = (self._decode_on_device(chunk, crop_seed) if on_device and chunk else
                       self._pool.map(lambda it: self._decode(it, crop_seed), chunk))
            for it, arr in zip(chunk, decoded):
                if arr is not None:
                    pending.append((arr, it.pos))

        def stack(batch: list[tuple[Any, int]]) -> tuple[Any, np.ndarray]:
            pos = np.asarray([p for _, p in batch])
            if on_device:
                import torch

                return torch.stack([a for a, _ in batch]), pos
            return np.stack([a for a, _ in batch]).reshape(-1, *shape), pos

        for it in items:
            chunk.append(it)
            if len(chunk) >= batch_size:
                flush(chunk)
                chunk = []
            while len(pending) >= batch_size:
                batch, pending[:] = pending[:batch_size], pending[batch_size:]
                yield stack(batch)
        flush(chunk)
        while pending and (len(pending) >= batch_size or not drop_last):
            batch, pending[:] = pending[:batch_size], pending[batch_size:]
            yield stack(batch)

    # -------------------------------------------------------------- the public iterator

    def batches(self, indices: np.ndarray, batch_size: int, *, seed: int | None = None,
                drop_last: bool = False, on_device: bool = True) -> Iterator[tuple[Any, np.ndarray]]:
        """(images (B, C, S, S) uint8, positions (B,)) batches of the images ``indices`` (into the
        labelled set); ``positions`` say where each image is in ``indices``. With ``seed``: shuffled
        (shards, row groups, buffer) and randomly cropped, the same for the same seed; without: in
        index order (the order of ``indices`` when sorted, as splits are), centre-cropped. Read and
        decoded in background threads. The images are a numpy array, or a tensor on
        :attr:`decode_device` when the reader has one and ``on_device``."""
        indices = np.asarray(indices, dtype=np.int64)
        order = np.argsort(indices, kind="stable")  # read in file order, hand back positions
        rng = np.random.default_rng(seed) if seed is not None else None
        items = self._encoded(order, indices[order], rng)
        if rng is not None:
            items = self._shuffled(items, rng)
        gen = self._decoded_batches(items, batch_size, seed, drop_last, on_device and self.decode_device is not None)
        return _prefetched(gen, self.prefetch)

    def materialize(self, indices: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(images (n, C, S, S) uint8 in the order of ``indices``, kept mask (len(indices),) bool):
        a small set (a label budget's subset) read whole into memory, centre-cropped; an image
        skipped as undecodable is missing from the images and False in the mask."""
        parts, kept = [], np.zeros(len(indices), bool)
        got: list[np.ndarray] = []
        for images, pos in self.batches(indices, batch_size, on_device=False):
            parts.append(images)
            got.append(pos)
        if not parts:
            return np.zeros((0, *self.index.shape), np.uint8), kept
        pos = np.concatenate(got)
        kept[pos] = True
        images = np.concatenate(parts)
        return images[np.argsort(pos, kind="stable")], kept


def _read_or_none(path: str) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


def _prefetched(gen: Iterator[tuple[np.ndarray, np.ndarray]], depth: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``gen`` run in a background thread, ``depth`` items ahead; its exception is raised here.
    Closing the returned iterator early stops the thread at its next item."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def put(item: Any) -> bool:
        """Hand ``item`` to the consumer unless it stopped reading; False once it has."""
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in gen:
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(exc)
        finally:
            close = getattr(gen, "close", None)  # a generator: its open shard reads end with it
            if close is not None:
                close()

    thread = threading.Thread(target=run, name="sslsweep-stream", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
