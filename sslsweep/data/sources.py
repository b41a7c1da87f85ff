"""Where images and labels come from: scikit-learn's digits, Parquet files (a local path or a URI)
and image folders (one sub-directory per class).

Labels and file listings are read without decoding an image (:func:`read_labels`,
:func:`first_image`); the loaders in :data:`LOADERS` decode a whole source.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sslsweep.data.decode import decode_images, decode_one, image_mode, resize
from sslsweep.rules import ConfigError
from sslsweep.storage import is_remote, local_path, resolve

if TYPE_CHECKING:
    from sslsweep.config import DatasetConfig

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DIGITS_SHAPE = (1, 8, 8)


@dataclass
class ImageSet:
    """Decoded images and labels.

    Args:
        images: (N, C, H, W) uint8.
        labels: (N,) int64 class ids in [0, num_classes).
        classes: class names, index = class id.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]


# ----------------------------------------------------------------------------- digits


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(pixels (1797, 64) in 0..16, labels) from the CSV scikit-learn ships, read without importing
    scikit-learn (seconds on a small machine: config checks that need the labels stay fast).

    Parsed once per process: one command reads digits in several stages (the data facts for
    validation, then :func:`load_digits` in prepare). The cached arrays are read-only; the public
    readers hand out copies."""
    spec = importlib.util.find_spec("sklearn")
    csv = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if csv is None or not csv.exists():  # a scikit-learn that ships it differently
        from sklearn.datasets import load_digits as sk_digits  # importing scikit-learn takes ~1.4 s

        d = sk_digits()
        pixels, labels = d.data, d.target.astype(np.int64)
    else:
        table = np.loadtxt(csv, delimiter=",", dtype=np.float64)  # (1797, 65): 64 pixels, then the label
        pixels, labels = table[:, :-1], table[:, -1].astype(np.int64)
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels


def load_digits() -> ImageSet:
    """scikit-learn's digits (shipped with the package): 1,797 grey 8x8 images, values 0..16.

    Every call returns new, writable arrays (the parsed CSV is cached, not the result)."""
    pixels, labels = _digits_arrays()
    images = np.round(pixels.reshape(-1, *DIGITS_SHAPE) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # (N, 1, 8, 8)
    return ImageSet(images=images, labels=labels.copy(), classes=[str(c) for c in range(10)])


# ----------------------------------------------------------------------------- files and objects


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def _open_fs(path: str, key: str = "dataset.path") -> tuple[pafs.FileSystem, str]:
    """:func:`sslsweep.storage.resolve`, with a failure (unknown scheme, missing credentials, bad
    bucket name ...) as a one-line :class:`ConfigError`."""
    try:
        return resolve(path)
    except Exception as exc:
        raise ConfigError(key, path, f"cannot open ({type(exc).__name__}: {_first_line(exc)})") from None


def file_info(path: str, key: str = "dataset.path") -> pafs.FileInfo:
    fs, inner = _open_fs(path, key)
    try:
        return fs.get_file_info(inner)
    except Exception as exc:  # access denied, no such bucket, endpoint unreachable
        raise ConfigError(key, path, f"cannot read ({type(exc).__name__}: {_first_line(exc)})") from None


def etag(path: str) -> str:
    """The object store's version tag of one object (S3's ETag changes with the content), or ''
    where the filesystem has none: S3 times are whole seconds, so size + time alone can miss a
    same-size object rewritten within the second."""
    fs, inner = _open_fs(path, "dataset.path")
    try:
        with fs.open_input_file(inner) as f:
            meta = f.metadata() or {}
    except Exception:  # noqa: BLE001 - the key then rests on size and time, as for local files
        return ""
    return next((v.decode() if isinstance(v, bytes) else str(v) for k, v in meta.items()
                 if (k.decode() if isinstance(k, bytes) else str(k)).lower() == "etag"), "")


def _child(path: str, name: str) -> str:
    return f"{path.rstrip('/')}/{name}" if is_remote(path) else str(Path(local_path(path)) / name)


Source = Union[str, Tuple[str, ...]]  # one file or folder, or the shards of one split (sorted)


def shards(source: Source) -> list[str]:
    """The files of a source: itself, or its shards in order."""
    return [source] if isinstance(source, str) else list(source)


def _split_of(rel: str) -> str | None:
    """``train``/``test`` for a shard's path relative to the dataset directory, in the Hugging Face
    layouts: ``data/train-00000-of-00004.parquet``, ``train/0000.parquet``, ``train.parquet``."""
    parts = rel.split("/")
    for split in ("train", "test"):  # train-00000-of-..., train_0.parquet, train.parquet; not trainval-*
        if re.match(rf"{split}([-_.]\d|\.parquet$)", parts[-1]) or split in parts[:-1]:
            return split
    return None


def _parquet_shards(path: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(train shards, test shards) of a directory in the Hugging Face layout, listed (recursively)
    without reading them; sorted, so every node sees the same order."""
    fs, inner = _open_fs(path)
    base, _, query = path.partition("?")
    try:
        infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
    except Exception as exc:  # noqa: BLE001 - access denied, endpoint unreachable
        raise ConfigError("dataset.path", path, f"cannot list ({type(exc).__name__}: {_first_line(exc)})") from None
    found: dict[str, list[str]] = {"train": [], "test": []}
    for info in infos:
        if info.type != pafs.FileType.File or not info.path.endswith(".parquet"):
            continue
        rel = info.path[len(inner.rstrip("/")) + 1:]
        split = _split_of(rel)
        if split is not None:
            found[split].append(_child(base, rel) + (f"?{query}" if query else ""))
    return tuple(sorted(found["train"])), tuple(sorted(found["test"]))


def parquet_files(path: str) -> tuple[Source, Source | None]:
    """(train source, test source or None) for a file, a directory holding train.parquet/test.parquet,
    or a directory of shards in the Hugging Face layout (``data/train-00000-of-00004.parquet``...).

    ``path`` may be a local path or a URI (``s3://bucket/cifar10``), read through pyarrow's
    filesystems. In memory (``dataset.residency`` device/host) the driver decodes it and the arrays
    reach the trials through Ray's object store; under ``stream`` every trial reads the shards."""
    info = file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise ConfigError("dataset.path", path, "path does not exist")
    if info.type == pafs.FileType.Directory:
        train = _child(path, "train.parquet")
        if file_info(train).type == pafs.FileType.File:
            test = _child(path, "test.parquet")
            return train, (test if file_info(test).type == pafs.FileType.File else None)
        train_shards, test_shards = _parquet_shards(path)
        if not train_shards:
            raise ConfigError("dataset.path", path, "a directory must hold train.parquet or train shards "
                              "(Hugging Face layout: data/train-00000-of-00004.parquet)")
        return train_shards, (test_shards or None)
    return path, None


def source_files(cfg: DatasetConfig) -> tuple[Source, Source | None]:
    """(train source, test source or None) of a parquet or imagefolder dataset: a file or folder
    path, a URI or shards for Parquet; ``dataset.test_path`` wins over test files beside the train ones."""
    if cfg.name == "parquet":
        train, test = parquet_files(str(cfg.path))
        return train, cfg.test_path or test
    return str(cfg.path), cfg.test_path


# ----------------------------------------------------------------------------- parquet


def _open_parquet(path: str, cfg: DatasetConfig, needed: set[str]) -> tuple[pafs.FileSystem, str]:
    """The filesystem and inner path of the Parquet file at ``path`` (local path or URI), after
    checking that it reads and holds every configured column in ``needed``."""
    fs, inner = _open_fs(path)
    try:
        schema = pq.read_schema(inner, filesystem=fs)
    except Exception as exc:
        raise ConfigError("dataset.path", path, f"not a readable Parquet file ({type(exc).__name__})") from None
    for key, col in (("dataset.image_column", cfg.image_column), ("dataset.label_column", cfg.label_column)):
        if col in needed and col not in schema.names:
            raise ConfigError(key, col, f"no such column in {path}; columns: {', '.join(schema.names)}")
    return fs, inner


def _read_parquet_columns(path: str, cfg: DatasetConfig, columns: Sequence[str],
                          required: Sequence[str] | None = None) -> pa.Table:
    """Read ``columns`` of the Parquet file at ``path`` (local path or URI), after checking that
    every column of ``required`` (default: ``columns``) exists."""
    fs, inner = _open_parquet(path, cfg, set(columns if required is None else required) | set(columns))
    return pq.read_table(inner, columns=list(columns), filesystem=fs)


def _image_bytes(table: pa.Table, column: str, path: str) -> list[bytes]:
    col = table.column(column).combine_chunks()
    if pa.types.is_struct(col.type):
        if col.type.get_field_index("bytes") < 0:
            raise ConfigError("dataset.image_column", column,
                              f"a struct image column needs a 'bytes' field ({path} has {col.type})")
        col = col.field("bytes")
    if not (pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type)):
        raise ConfigError("dataset.image_column", column,
                          f"must hold encoded image bytes (binary or struct with 'bytes'), got {col.type} in {path}")
    return col.to_pylist()


def _labels(table: pa.Table, column: str, path: str) -> np.ndarray:
    col = table.column(column)
    if not pa.types.is_integer(col.type):
        raise ConfigError("dataset.label_column", column, f"must be an integer column, got {col.type} in {path}")
    if col.null_count:
        raise ConfigError("dataset.label_column", column, f"has {col.null_count} null labels in {path}")
    labels = col.to_numpy().astype(np.int64)
    if len(labels) and labels.min() < 0:
        raise ConfigError("dataset.label_column", column,
                          f"labels must be class ids >= 0; {path} has {int(labels.min())}")
    return labels


def class_names(names: list[str], labels: np.ndarray) -> list[str]:
    """The source's class names if they cover every label, else the ids ``0..max(labels)``."""
    return names if len(names) > int(labels.max()) else [str(c) for c in range(int(labels.max()) + 1)]


def _parquet_label_classes(labels: np.ndarray) -> list[str]:
    return [str(c) for c in range(int(labels.max()) + 1)] if len(labels) else []


def read_parquet_labels(source: Source, cfg: DatasetConfig) -> list[np.ndarray]:
    """The labels of every shard of ``source``, one array per shard, no image read (both
    configured columns must exist)."""
    both = [cfg.image_column, cfg.label_column]
    return [_labels(_read_parquet_columns(p, cfg, [cfg.label_column], required=both), cfg.label_column, p)
            for p in shards(source)]


def load_parquet(path: Source, cfg: DatasetConfig) -> ImageSet:
    labels, blobs = [], []
    for p in shards(path):
        table = _read_parquet_columns(p, cfg, [cfg.image_column, cfg.label_column])
        labels.append(_labels(table, cfg.label_column, p))
        blobs += _image_bytes(table, cfg.image_column, p)
    where = path if isinstance(path, str) else f"{path[0]} (+{len(path) - 1} shards)"
    images = decode_images(blobs, cfg.image_size, source=where)
    y = np.concatenate(labels)
    return ImageSet(images=images, labels=y, classes=_parquet_label_classes(y))


def _first_parquet_blob(path: str, cfg: DatasetConfig) -> bytes | None:
    """The encoded image of row 0 (None for an empty file), reading one page, not the column."""
    fs, inner = _open_parquet(path, cfg, {cfg.image_column})
    with fs.open_input_file(inner) as f:
        reader = pq.ParquetFile(f, buffer_size=1 << 20)  # buffered: pages are read as needed
        batch = next(reader.iter_batches(batch_size=1, columns=[cfg.image_column]), None)
    if batch is None or batch.num_rows == 0:
        return None
    return _image_bytes(pa.Table.from_batches([batch]), cfg.image_column, path)[0] or b""  # null: undecodable


# ----------------------------------------------------------------------------- image folders


def _class_dirs(path: str) -> list[str]:
    classes = sorted(d.name for d in Path(path).iterdir() if d.is_dir())
    if not classes:
        raise ConfigError("dataset.path", path, "an imagefolder needs one sub-directory per class")
    return classes


def _class_files(root: Path, name: str) -> list[Path]:
    return [f for f in sorted((root / name).rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]


def _folder_files(path: str) -> tuple[list[str], list[Path], np.ndarray]:
    classes = _class_dirs(path)
    files, labels = [], []
    for i, c in enumerate(classes):
        found = _class_files(Path(path), c)
        files += found
        labels += [i] * len(found)
    if not files:
        raise ConfigError("dataset.path", path, f"no images ({', '.join(IMAGE_SUFFIXES)}) under the class folders")
    return classes, files, np.asarray(labels, dtype=np.int64)


def _first_folder_file(path: str) -> Path | None:
    """The file :func:`_folder_files` lists first, listing only the class folders up to it."""
    for c in _class_dirs(path):
        found = _class_files(Path(path), c)
        if found:
            return found[0]
    return None


def align_test_labels(train_classes: Sequence[str], test_classes: Sequence[str], test_labels: np.ndarray,
                      test_path: str) -> np.ndarray:
    """A test folder's labels renumbered by the train folder's class list: each folder is numbered
    within its own root, so a test folder missing a class would otherwise shift the ids after it."""
    index = {c: i for i, c in enumerate(train_classes)}
    for c in test_classes:
        if c not in index:
            raise ConfigError("dataset.test_path", test_path,
                              f"class folder {c!r} is not a train class ({', '.join(train_classes)})")
    remap = np.asarray([index[c] for c in test_classes], dtype=np.int64)
    return remap[test_labels]


def load_imagefolder(path: str, cfg: DatasetConfig) -> ImageSet:
    classes, files, labels = _folder_files(path)
    blobs = [f.read_bytes() for f in files]
    try:
        images = decode_images(blobs, cfg.image_size, source=path)
    except ValueError as exc:
        msg = str(exc)
        if "row " in msg:  # name the file, not the row
            row = int(msg.split("row ", 1)[1].split(" ", 1)[0])
            msg = msg.replace(f"row {row}", f"file {files[row]}")
        raise ValueError(msg) from None
    return ImageSet(images=images, labels=labels, classes=classes)


LOADERS: dict[str, Callable[[Source, DatasetConfig], ImageSet]] = {
    "parquet": load_parquet,
    "imagefolder": load_imagefolder,
}


# ----------------------------------------------------------------------------- without decoding


def read_labelled(cfg: DatasetConfig) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """(train labels, test labels or None, the train source's class names by id), no image decoded.

    Test labels of an image folder are numbered by the train folder's classes."""
    if cfg.name == "digits":
        return _digits_arrays()[1].copy(), None, [str(c) for c in range(10)]
    if cfg.name == "parquet":
        train, test = source_files(cfg)
        y = np.concatenate(read_parquet_labels(train, cfg))
        yt = None if test is None else np.concatenate(read_parquet_labels(test, cfg))
        return y, yt, _parquet_label_classes(y)
    for key, p in (("dataset.path", cfg.path), ("dataset.test_path", cfg.test_path)):
        if p is not None and is_remote(str(p)):
            raise ConfigError(key, p, "an imagefolder must be a local directory; a URI is read only for dataset=parquet")
    classes, _, y = _folder_files(str(cfg.path))
    yt = None
    if cfg.test_path:
        test_classes, _, yt = _folder_files(cfg.test_path)
        yt = align_test_labels(classes, test_classes, yt, cfg.test_path)
    return y, yt, classes


def read_labels(cfg: DatasetConfig) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels only (train source, test source or None): cheap, for the rules checked before decoding."""
    y, yt, _ = read_labelled(cfg)
    return y, yt


def first_image(cfg: DatasetConfig) -> np.ndarray | None:
    """The train source's first image, decoded alone as :func:`prepare` decodes it: (C, H, W) uint8,
    grey or RGB, resized to ``dataset.image_size`` if set. None if the source holds no image.

    Raises :class:`ConfigError` (key ``dataset.path``) if it does not decode."""
    if cfg.name == "digits":
        first = load_digits().images[:1]  # (1, 1, 8, 8)
        return (resize(first, cfg.image_size) if cfg.image_size is not None else first)[0]
    train, _ = source_files(cfg)
    if cfg.name == "parquet":
        first = shards(train)[0]
        blob, where = _first_parquet_blob(first, cfg), f"row 0 of {first}"
    else:
        file = _first_folder_file(train)
        blob, where = (file.read_bytes() if file else None), f"file {file}"
    if blob is None:
        return None
    try:
        return decode_one(blob, cfg.image_size, image_mode(blob))
    except Exception as exc:  # PIL raises many types for bad bytes
        raise ConfigError("dataset.path", cfg.path,
                          f"{where} is not a decodable image ({type(exc).__name__}: {exc})") from None

