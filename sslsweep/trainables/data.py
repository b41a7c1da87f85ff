"""Datasets, splits and label budgets.

A dataset is decoded once into a uint8 array (N, C, H, W) plus int64 labels; decoded arrays are
cached on disk by a key of the source file(s) and the decoding options, so a second sweep over the
same data does not decode again. Splits and label subsets are pure functions of the labels and a
seed: every method, every trial and every node computes the same ones. No torch here.
"""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from sslsweep.config import ConfigError, DatasetConfig, SweepConfig, check_against_data

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


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


@dataclass
class Splits:
    """Indices into the full array: ``train`` is the unlabeled pretraining pool (its labels are
    used only for label-budget subsets at evaluation), ``val`` selects, ``test`` confirms."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


@dataclass
class Prepared:
    """Everything a trial needs, built once on the driver and shipped through the object store."""

    images: np.ndarray  # (N, C, H, W) uint8: train pool, val and test together
    labels: np.ndarray  # (N,) int64
    splits: Splits
    classes: list[str]
    fingerprint: str
    hflip: bool

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


# ----------------------------------------------------------------------------- loading


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(pixels (1797, 64) in 0..16, labels) from the CSV scikit-learn ships, read without importing
    scikit-learn (seconds on a small machine: config checks that need the labels stay fast)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    csv = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if csv is None or not csv.exists():  # a scikit-learn that ships it differently
        from sklearn.datasets import load_digits as sk_digits

        d = sk_digits()
        return d.data, d.target.astype(np.int64)
    table = np.loadtxt(csv, delimiter=",", dtype=np.float64)  # (1797, 65): 64 pixels, then the label
    return table[:, :-1], table[:, -1].astype(np.int64)


def load_digits() -> ImageSet:
    """scikit-learn's digits (shipped with the package): 1,797 grey 8x8 images, values 0..16."""
    pixels, labels = _digits_arrays()
    images = np.round(pixels.reshape(-1, 1, 8, 8) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # (N, 1, 8, 8)
    return ImageSet(images=images, labels=labels, classes=[str(c) for c in range(10)])


def _is_grey(pil_mode: str) -> bool:
    return pil_mode in ("L", "1", "LA", "I", "F") or pil_mode.startswith("I;16")


def _convert(im: Any, mode: str) -> Any:
    """``im`` in ``mode`` (L or RGB). A 16-bit grey image (PNG/TIFF: Pillow's I and I;16 modes) is
    scaled from 0..65535 to 0..255 first: Pillow's own convert clips it at 255."""
    from PIL import Image

    if im.mode == "I" or im.mode.startswith("I;16"):
        wide = np.asarray(im).astype(np.float64)
        im = Image.fromarray(np.round(np.clip(wide, 0, 65535) / 257.0).astype(np.uint8), "L")
    return im.convert(mode)


def _decode_one(blob: bytes, size: int | None, mode: str) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as im:
        im = _convert(im, mode)
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)  # (C, H, W)


def _decode_chunk(args: tuple[list[bytes], int | None, str, int]) -> np.ndarray | tuple[int, str]:
    blobs, size, mode, offset = args
    out = []
    for i, b in enumerate(blobs):
        try:
            out.append(_decode_one(b, size, mode))
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
    from PIL import Image

    if len(blobs) == 0:
        raise ValueError(f"{source}: no images")
    try:
        with Image.open(io.BytesIO(blobs[0])) as first:
            mode = "L" if _is_grey(first.mode) else "RGB"
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


def is_uri(path: str) -> bool:
    """A remote location (``s3://``, ``gs://``, ...) read through pyarrow's filesystems."""
    return "://" in path and not path.startswith("file://")


def _local(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def _open_fs(path: str, key: str = "dataset.path"):  # -> (pyarrow.fs.FileSystem, str)
    """The pyarrow filesystem and in-filesystem path of a local path, ``file://`` path or URI."""
    import pyarrow.fs as pafs

    if not is_uri(path):
        return pafs.LocalFileSystem(), os.path.abspath(_local(path))
    try:
        return pafs.FileSystem.from_uri(path)
    except Exception as exc:  # unknown scheme, missing credentials, bad bucket name ...
        raise ConfigError(key, path, f"cannot open ({type(exc).__name__}: {_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def _file_info(path: str, key: str = "dataset.path"):  # -> pyarrow.fs.FileInfo
    fs, inner = _open_fs(path, key)
    try:
        return fs.get_file_info(inner)
    except Exception as exc:  # access denied, no such bucket, endpoint unreachable
        raise ConfigError(key, path, f"cannot read ({type(exc).__name__}: {_first_line(exc)})") from None


def _etag(path: str) -> str:
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
    return f"{path.rstrip('/')}/{name}" if is_uri(path) else str(Path(_local(path)) / name)


def _parquet_files(path: str) -> tuple[str, str | None]:
    """(train file, test file or None) for a file or a directory holding train.parquet/test.parquet.

    ``path`` may be a local path or a URI (``s3://bucket/cifar10``): a URI is read through
    pyarrow's filesystems on the driver only, and the decoded arrays reach the trials through
    Ray's object store, so no other node needs the file."""
    import pyarrow.fs as pafs

    info = _file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise ConfigError("dataset.path", path, "path does not exist")
    if info.type == pafs.FileType.Directory:
        train = _child(path, "train.parquet")
        if _file_info(train).type != pafs.FileType.File:
            raise ConfigError("dataset.path", path, "a directory must hold train.parquet")
        test = _child(path, "test.parquet")
        return train, (test if _file_info(test).type == pafs.FileType.File else None)
    return path, None


def _read_parquet_columns(path: str, cfg: DatasetConfig, columns: Sequence[str],
                          required: Sequence[str] | None = None):  # -> pyarrow.Table
    """Read ``columns`` of the Parquet file at ``path`` (local path or URI), after checking that
    every column of ``required`` (default: ``columns``) exists."""
    import pyarrow.parquet as pq

    fs, inner = _open_fs(path)
    try:
        schema = pq.read_schema(inner, filesystem=fs)
    except Exception as exc:
        raise ConfigError("dataset.path", path, f"not a readable Parquet file ({type(exc).__name__})") from None
    needed = set(columns if required is None else required) | set(columns)
    for key, col in (("dataset.image_column", cfg.image_column), ("dataset.label_column", cfg.label_column)):
        if col in needed and col not in schema.names:
            raise ConfigError(key, col, f"no such column in {path}; columns: {', '.join(schema.names)}")
    return pq.read_table(inner, columns=list(columns), filesystem=fs)


def _image_bytes(table, column: str, path: str) -> list[bytes]:
    import pyarrow as pa

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


def _labels(table, column: str, path: str) -> np.ndarray:
    import pyarrow as pa

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


def load_parquet(path: str, cfg: DatasetConfig) -> ImageSet:
    table = _read_parquet_columns(path, cfg, [cfg.image_column, cfg.label_column])
    labels = _labels(table, cfg.label_column, path)
    images = decode_images(_image_bytes(table, cfg.image_column, path), cfg.image_size, source=path)
    classes = [str(c) for c in range(int(labels.max()) + 1)] if len(labels) else []
    return ImageSet(images=images, labels=labels, classes=classes)


def _folder_files(path: str) -> tuple[list[str], list[Path], np.ndarray]:
    root = Path(path)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise ConfigError("dataset.path", path, "an imagefolder needs one sub-directory per class")
    files, labels = [], []
    for i, c in enumerate(classes):
        for f in sorted((root / c).rglob("*")):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                labels.append(i)
    if not files:
        raise ConfigError("dataset.path", path, f"no images ({', '.join(IMAGE_SUFFIXES)}) under the class folders")
    return classes, files, np.asarray(labels, dtype=np.int64)


def _align_test_labels(train_classes: Sequence[str], test_classes: Sequence[str], test_labels: np.ndarray,
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


def read_labels(cfg: DatasetConfig) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels only (train source, test source or None): cheap, for the rules checked before decoding."""
    if cfg.name == "digits":
        return _digits_arrays()[1], None
    if cfg.name == "parquet":
        train, test = _parquet_files(str(cfg.path))
        test = cfg.test_path or test
        both = [cfg.image_column, cfg.label_column]  # both must exist; only the labels are read
        y = _labels(_read_parquet_columns(train, cfg, [cfg.label_column], required=both), cfg.label_column, train)
        yt = None
        if test is not None:
            yt = _labels(_read_parquet_columns(test, cfg, [cfg.label_column], required=both), cfg.label_column, test)
        return y, yt
    for key, p in (("dataset.path", cfg.path), ("dataset.test_path", cfg.test_path)):
        if p is not None and is_uri(str(p)):
            raise ConfigError(key, p, "an imagefolder must be a local directory; a URI is read only for dataset=parquet")
    classes, _, y = _folder_files(str(cfg.path))
    yt = None
    if cfg.test_path:
        test_classes, _, yt = _folder_files(cfg.test_path)
        yt = _align_test_labels(classes, test_classes, yt, cfg.test_path)
    return y, yt


LOADERS: dict[str, Callable[[str, DatasetConfig], ImageSet]] = {
    "parquet": load_parquet,
    "imagefolder": load_imagefolder,
}


# ----------------------------------------------------------------------------- caching


def _cache_dir() -> Path:
    return Path(os.environ.get("SSLSWEEP_CACHE", Path.home() / ".cache" / "sslsweep"))


def _source_key(cfg: DatasetConfig, paths: Sequence[str]) -> str:
    """Key of the decoded-array cache: the decoding options and each source file's identity
    (resolved path or URI, size, modification time), so a changed file is decoded again."""
    import pyarrow.fs as pafs

    h = hashlib.sha256()
    h.update(repr((cfg.name, cfg.image_column, cfg.label_column, cfg.image_size)).encode())
    for p in paths:
        if is_uri(p):  # one object (a directory was resolved to its train/test files before)
            info = _file_info(p)
            if info.type != pafs.FileType.File:
                raise ConfigError("dataset.path", p, "not a file")
            h.update(f"{p}:{info.size}:{info.mtime_ns}:{_etag(p)}".encode())
            continue
        p = _local(p)
        for f in sorted(Path(p).rglob("*")) if Path(p).is_dir() else [Path(p)]:
            if f.is_file():
                st = f.stat()
                h.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def _load_cached(cfg: DatasetConfig, path: str, loader: Callable[[str, DatasetConfig], ImageSet]) -> ImageSet:
    """Decode ``path`` once: later calls with the same file and options read the cached arrays."""
    cache = _cache_dir() / f"{cfg.name}-{_source_key(cfg, [path])}.npz"
    if cache.exists():
        try:
            with np.load(cache, allow_pickle=False) as z:
                return ImageSet(images=z["images"], labels=z["labels"], classes=[str(c) for c in z["classes"]])
        except Exception:  # a torn cache file is rebuilt, never trusted
            cache.unlink(missing_ok=True)
    data = loader(path, cfg)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, images=data.images, labels=data.labels, classes=np.asarray(data.classes))
    os.replace(tmp, cache)
    return data


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = np.empty((len(images), images.shape[1], size, size), dtype=np.uint8)
    for i, im in enumerate(images):
        for c in range(images.shape[1]):
            out[i, c] = np.asarray(Image.fromarray(im[c]).resize((size, size), Image.BILINEAR))
    return out


# ----------------------------------------------------------------------------- splits and budgets


def _stratified_take(labels: np.ndarray, idx: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A class-stratified random ``fraction`` of ``idx`` (at least one per class)."""
    taken = []
    for c in np.unique(labels[idx]):
        members = rng.permutation(idx[labels[idx] == c])
        taken.append(members[: max(1, int(round(fraction * len(members))))])
    return np.sort(np.concatenate(taken))


def make_splits(labels: np.ndarray, cfg: DatasetConfig, n_external_test: int = 0) -> Splits:
    """Seeded, class-stratified train/val/test split of ``labels``.

    With an external test set (``n_external_test`` > 0) its rows follow the main rows in the
    array and form the test split; otherwise ``test_fraction`` of the main rows does.
    ``max_images`` first keeps a class-balanced subset of the main rows.
    """
    rng = np.random.default_rng(cfg.split_seed)
    n_main = len(labels) - n_external_test
    main = np.arange(n_main)
    if cfg.max_images is not None and cfg.max_images < n_main:
        main = _stratified_take(labels, main, cfg.max_images / n_main, rng)
    if n_external_test:
        test = np.arange(n_main, len(labels))
        pool = main
    else:
        test = _stratified_take(labels, main, cfg.test_fraction, rng) if cfg.test_fraction > 0 else main[:0]
        pool = np.setdiff1d(main, test)
    val_share = cfg.val_fraction / (1 - (0 if n_external_test else cfg.test_fraction))
    val = _stratified_take(labels, pool, val_share, rng)
    train = np.setdiff1d(pool, val)
    return Splits(train=train, val=val, test=test)


def label_subset(labels: np.ndarray, train: np.ndarray, *, seed: int, fraction: float | None = None,
                 per_class: int | None = None) -> np.ndarray:
    """Indices (into the full array) of a class-balanced labeled subset of the train pool.

    The same ``seed`` draws the same per-class order whatever the budget, and a budget takes a
    prefix of each class's order, so subsets are **nested** (1% inside 10% inside 100%), and every
    method sees the same subset at a given seed.

    Args:
        labels: (N,) all labels. train: indices of the train pool.
        fraction: in (0, 1]: round(fraction * n_c) of each class c, at least 1.
        per_class: k labels of every class (at most the class size).
    """
    if (fraction is None) == (per_class is None):
        raise ValueError("give exactly one of fraction or per_class")
    if fraction is not None and not 0 < fraction <= 1:
        raise ValueError(f"fraction = {fraction}: must be in (0, 1]")
    if per_class is not None and per_class < 1:
        raise ValueError(f"per_class = {per_class}: must be >= 1")
    rng = np.random.default_rng(seed)
    taken = []
    for c in np.unique(labels[train]):
        order = rng.permutation(train[labels[train] == c])  # drawn for every class, whatever the budget
        k = max(1, int(round(fraction * len(order)))) if fraction is not None else min(per_class, len(order))
        taken.append(order[:k])
    return np.sort(np.concatenate(taken))


def check_data(cfg: SweepConfig) -> None:
    """The data-dependent rules (batch size vs. train pool, labels per class vs. smallest class),
    from the labels alone: no image is decoded."""
    labels, test_labels = read_labels(cfg.dataset)
    if test_labels is None and cfg.dataset.test_fraction == 0:
        raise ConfigError("dataset.test_fraction", cfg.dataset.test_fraction,
                          "must be > 0 when the dataset has no test set of its own (dataset.test_path, or "
                          "test.parquet beside train.parquet): the confirm phase measures test accuracy")
    all_labels = labels if test_labels is None else np.concatenate([labels, test_labels])
    splits = make_splits(all_labels, cfg.dataset, n_external_test=0 if test_labels is None else len(test_labels))
    d = cfg.dataset
    for split, idx, key, value in (("train", splits.train, "dataset.path", d.path),
                                   ("validation", splits.val, "dataset.val_fraction", d.val_fraction),
                                   ("test", splits.test, "dataset.test_fraction", d.test_fraction)):
        if len(idx) == 0:
            n = len(all_labels)
            if d.max_images is not None:
                key, value, kept, hint = "dataset.max_images", d.max_images, f"{d.max_images} of {n} images", "raise it"
            else:
                kept, hint = f"{n} images", ("the dataset is too small" if split == "train" else f"raise {key}")
            raise ConfigError(key, value, f"leaves the {split} split empty ({kept}, val_fraction {d.val_fraction}, "
                              f"test_fraction {d.test_fraction}): {hint}")
    counts = np.bincount(all_labels[splits.train])
    check_against_data(cfg, len(splits.train), int(counts[counts > 0].min()))


def budgets(cfg: DatasetConfig) -> list[tuple[str, float]]:
    """All label budgets of the dataset config as (kind, value): ('fraction', f) and ('per_class', k)."""
    return [("fraction", float(f)) for f in cfg.label_fractions] + [("per_class", float(k)) for k in cfg.labels_per_class]


# ----------------------------------------------------------------------------- entry point


def fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """sha256 of the decoded pixels and labels: two sweeps compare only if their fingerprints match."""
    h = hashlib.sha256()
    h.update(repr(images.shape).encode())
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(labels).tobytes())
    return h.hexdigest()[:32]


def prepare(cfg: DatasetConfig) -> Prepared:
    """Load, decode (cached), resize and split the dataset named by ``cfg``."""
    if cfg.name == "digits":
        main, test = load_digits(), None
    else:
        loader = LOADERS[cfg.name]
        if cfg.name == "parquet":
            train_path, test_path = _parquet_files(str(cfg.path))
        else:
            train_path, test_path = str(cfg.path), None
        test_path = cfg.test_path or test_path
        main = _load_cached(cfg, train_path, loader)
        test = _load_cached(cfg, test_path, loader) if test_path else None
        if test is not None and cfg.name == "imagefolder":
            test = replace(test, labels=_align_test_labels(main.classes, test.classes, test.labels, test_path),
                           classes=list(main.classes))
    images, labels = main.images, main.labels
    if test is not None:
        if test.images.shape[1:] != images.shape[1:]:
            raise ValueError(f"dataset.test_path: test images are {test.images.shape[1:]}, train images "
                             f"{images.shape[1:]}; set dataset.image_size to resize both")
        images = np.concatenate([images, test.images])
        labels = np.concatenate([labels, test.labels])
    if cfg.image_size is not None:
        images = _resize(images, cfg.image_size)
    splits = make_splits(labels, cfg, n_external_test=0 if test is None else len(test.labels))
    classes = main.classes if len(main.classes) > int(labels.max()) else [str(c) for c in range(int(labels.max()) + 1)]
    return Prepared(images=np.ascontiguousarray(images), labels=labels, splits=splits, classes=classes,
                    fingerprint=fingerprint(images, labels), hflip=cfg.hflip)
