"""Data: loaders, splits, nested class-balanced label budgets, the decode cache."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sslsweep.config import ConfigError, DatasetConfig
from sslsweep.trainables import data as data_mod
from sslsweep.trainables.data import label_subset, load_digits, make_splits, prepare, read_labels
from tests.conftest import encode_png, make_images


def _write_parquet(path: Path, images: np.ndarray, labels: np.ndarray, *, struct: bool = True,
                   bad_row: int | None = None) -> None:
    blobs = [encode_png(im) for im in images]
    if bad_row is not None:
        blobs[bad_row] = b"not an image"
    col = (pa.array([{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(blobs)]) if struct
           else pa.array(blobs, type=pa.binary()))
    pq.write_table(pa.table({"img": col, "label": pa.array(labels, type=pa.int64())}), path)


def test_digits_is_uint8_nchw_with_ten_classes() -> None:
    """The embedded default decodes to (1797, 1, 8, 8) uint8 covering 0..255, labels 0..9."""
    d = load_digits()
    assert d.images.shape == (1797, 1, 8, 8) and d.images.dtype == np.uint8
    assert d.images.max() == 255 and set(np.unique(d.labels)) == set(range(10))


def test_splits_are_disjoint_stratified_and_seeded() -> None:
    """Train/val/test never overlap, cover all rows, keep class proportions, and a seed fixes them."""
    labels = np.repeat(np.arange(4), [100, 200, 300, 400])
    cfg = DatasetConfig(val_fraction=0.1, test_fraction=0.2)
    s = make_splits(labels, cfg)
    parts = [set(s.train), set(s.val), set(s.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert len(s.train) + len(s.val) + len(s.test) == len(labels)
    for idx, share in ((s.test, 0.2), (s.val, 0.1)):
        counts = np.bincount(labels[idx], minlength=4)
        assert np.allclose(counts, np.array([100, 200, 300, 400]) * share, atol=1)
    again = make_splits(labels, cfg)
    assert np.array_equal(again.val, s.val)
    other = make_splits(labels, replace(cfg, split_seed=1))
    assert not np.array_equal(other.val, s.val)


def test_external_test_rows_form_the_test_split() -> None:
    """With a separate test file its rows (appended after the train rows) are exactly the test split."""
    labels = np.concatenate([np.arange(100) % 5, np.arange(20) % 5])
    s = make_splits(labels, DatasetConfig(val_fraction=0.1), n_external_test=20)
    assert s.test.tolist() == list(range(100, 120))
    assert max(s.train.max(), s.val.max()) < 100


def test_label_subsets_are_nested_balanced_and_identical_across_calls() -> None:
    """1% lies inside 10% inside 100%; each class is represented in proportion; per-class budgets
    take exactly k per class and nest too; the same seed gives the same subset."""
    labels = np.repeat(np.arange(5), 200)
    train = np.arange(1000)
    small = label_subset(labels, train, seed=3, fraction=0.01)
    mid = label_subset(labels, train, seed=3, fraction=0.1)
    full = label_subset(labels, train, seed=3, fraction=1.0)
    assert set(small) <= set(mid) <= set(full) and len(full) == 1000
    assert np.bincount(labels[small]).tolist() == [2] * 5 and np.bincount(labels[mid]).tolist() == [20] * 5
    k1, k5 = (label_subset(labels, train, seed=3, per_class=k) for k in (1, 5))
    assert np.bincount(labels[k5]).tolist() == [5] * 5 and set(k1) <= set(k5)
    assert np.array_equal(label_subset(labels, train, seed=3, fraction=0.1), mid)
    assert not np.array_equal(label_subset(labels, train, seed=4, fraction=0.1), mid)


def test_tiny_fraction_keeps_one_label_per_class() -> None:
    """A budget smaller than one image per class still labels one image of every class."""
    labels = np.repeat(np.arange(3), 10)
    sub = label_subset(labels, np.arange(30), seed=0, fraction=0.01)
    assert np.bincount(labels[sub]).tolist() == [1, 1, 1]


@pytest.mark.parametrize("struct", [True, False])
def test_parquet_struct_or_binary_column_decodes(tmp_path: Path, cache_dir: Path, struct: bool) -> None:
    """A Hugging Face struct{bytes,path} column and a plain binary column both decode to the pixels."""
    images, labels = make_images(40, channels=3)
    _write_parquet(tmp_path / "d.parquet", images, labels, struct=struct)
    cfg = DatasetConfig(name="parquet", path=str(tmp_path / "d.parquet"), image_column="img", label_column="label")
    prep = prepare(cfg)
    assert prep.images.shape == (40, 3, 8, 8)
    assert np.array_equal(prep.images, images) and np.array_equal(prep.labels, labels)


def test_parquet_directory_uses_its_test_file(tmp_path: Path, cache_dir: Path) -> None:
    """A directory with train.parquet and test.parquet: the test rows are the test split."""
    images, labels = make_images(60, channels=1)
    _write_parquet(tmp_path / "train.parquet", images[:45], labels[:45])
    _write_parquet(tmp_path / "test.parquet", images[45:], labels[45:])
    prep = prepare(DatasetConfig(name="parquet", path=str(tmp_path), image_column="img"))
    assert len(prep.splits.test) == 15 and np.array_equal(prep.images[prep.splits.test], images[45:])


def test_undecodable_image_names_its_row(tmp_path: Path, cache_dir: Path) -> None:
    """A row that is not an image fails with an error naming that row."""
    images, labels = make_images(30)
    _write_parquet(tmp_path / "d.parquet", images, labels, bad_row=17)
    cfg = DatasetConfig(name="parquet", path=str(tmp_path / "d.parquet"), image_column="img")
    with pytest.raises(ValueError, match=r"row 17 is not a decodable image"):
        prepare(cfg)


def test_missing_column_is_named(tmp_path: Path, cache_dir: Path) -> None:
    """A Parquet file without the configured image column: the key, the value and the columns there."""
    images, labels = make_images(10)
    _write_parquet(tmp_path / "d.parquet", images, labels)
    cfg = DatasetConfig(name="parquet", path=str(tmp_path / "d.parquet"), image_column="image")
    with pytest.raises(ConfigError, match=r"dataset.image_column = 'image': no such column .* columns: img, label"):
        read_labels(cfg)


def _brightness_by_label(images: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    return {int(y): float(images[labels == y].mean()) for y in np.unique(labels)}


def _folder(root: Path, names: list[str], n: int, size: int = 10, seed: int = 0) -> None:
    """``n`` images of ``len(names)`` classes under ``root/<name>/``; make_images makes class i of k
    brighter as i grows (mean 30 for the first, 220 for the last)."""
    images, labels = make_images(n, classes=len(names), size=size, seed=seed)
    for i, (im, y) in enumerate(zip(images, labels)):
        (root / names[y]).mkdir(parents=True, exist_ok=True)
        (root / names[y] / f"{i}.png").write_bytes(encode_png(im))


def test_imagefolder_reads_one_class_per_folder(tmp_path: Path, cache_dir: Path) -> None:
    """Folders are classes in sorted order; images are resized to image_size."""
    _folder(tmp_path, ["cat", "dog"], 12)
    prep = prepare(DatasetConfig(name="imagefolder", path=str(tmp_path), image_size=8, val_fraction=0.2,
                                 test_fraction=0.2))
    assert prep.classes == ["cat", "dog"] and prep.images.shape == (12, 3, 8, 8)
    assert sorted(np.bincount(prep.labels).tolist()) == [6, 6]
    # make_images draws class 0 (written to cat/) dark and class 1 (dog/) bright: the label follows the folder
    brightness = _brightness_by_label(prep.images, prep.labels)
    assert brightness[1] - brightness[0] > 100


def test_imagefolder_test_path_labels_follow_the_train_classes(tmp_path: Path, cache_dir: Path) -> None:
    """A test folder with fewer classes than train: each test image keeps its class *name*'s train
    label (fox stays fox, not the test folder's second class, dog)."""
    _folder(tmp_path / "train", ["cat", "dog", "fox"], 30)
    _folder(tmp_path / "test", ["cat", "fox"], 8, seed=1)
    cfg = DatasetConfig(name="imagefolder", path=str(tmp_path / "train"), test_path=str(tmp_path / "test"),
                        image_size=8, val_fraction=0.2)
    prep = prepare(cfg)
    test_labels = prep.labels[prep.splits.test]
    assert prep.classes == ["cat", "dog", "fox"] and sorted(set(test_labels.tolist())) == [0, 2]
    # test/cat holds the dark images, test/fox the bright ones: fox (label 2) must be the bright one
    brightness = _brightness_by_label(prep.images[prep.splits.test], test_labels)
    assert brightness[2] - brightness[0] > 100
    _, checked = read_labels(cfg)  # the pre-decoding check sees the same labels
    assert checked is not None and sorted(checked.tolist()) == sorted(test_labels.tolist())


def test_imagefolder_test_class_missing_from_train_is_named(tmp_path: Path, cache_dir: Path) -> None:
    """A test class that train does not have fails before decoding, naming the folder and the classes."""
    _folder(tmp_path / "train", ["cat", "dog"], 20)
    _folder(tmp_path / "test", ["cat", "wolf"], 6, seed=1)
    cfg = DatasetConfig(name="imagefolder", path=str(tmp_path / "train"), test_path=str(tmp_path / "test"),
                        image_size=8)
    with pytest.raises(ConfigError, match=r"dataset.test_path = .*: class folder 'wolf' is not a train class \(cat, dog\)"):
        read_labels(cfg)


def test_second_prepare_reads_the_cache_not_the_images(tmp_path: Path, cache_dir: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding happens once per file: a second prepare() gets identical arrays without decoding."""
    images, labels = make_images(30)
    _write_parquet(tmp_path / "d.parquet", images, labels)
    cfg = DatasetConfig(name="parquet", path=str(tmp_path / "d.parquet"), image_column="img")
    first = prepare(cfg)

    def no_decode(*a, **k):  # noqa: ANN002, ANN003
        raise AssertionError("decoded again")

    monkeypatch.setattr(data_mod, "decode_images", no_decode)
    second = prepare(cfg)
    assert np.array_equal(first.images, second.images) and first.fingerprint == second.fingerprint


def test_fast_digits_reader_matches_scikit_learn() -> None:
    """Digits read from the shipped CSV (no scikit-learn import) equal sklearn.datasets.load_digits."""
    from sklearn.datasets import load_digits as sk_digits

    ours, ref = load_digits(), sk_digits()
    assert np.array_equal(ours.labels, ref.target)
    assert np.array_equal(ours.images[:, 0], np.round(ref.images * 255 / 16).astype(np.uint8))


def _png16(values: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(values.astype(np.uint16)).save(buf, format="PNG")  # a 16-bit grey PNG
    return buf.getvalue()


def test_sixteen_bit_grey_images_are_scaled_not_clipped() -> None:
    """A 16-bit grey PNG spans 0..65535: decoded to uint8 it must keep its contrast (value / 257),
    where Pillow's own conversion clips everything above 255 to white."""
    ramp = np.linspace(0, 65535, 64).reshape(8, 8)
    out = data_mod.decode_images([_png16(ramp)], None, source="x", workers=1)
    assert out.shape == (1, 1, 8, 8) and out.dtype == np.uint8
    assert np.array_equal(out[0, 0], np.round(ramp / 257).astype(np.uint8))


def test_an_image_of_another_size_is_named_by_its_row_and_size() -> None:
    """Row 2 is 10x10 among 8x8 images: the error names row 2 and both sizes (not row 0 as 'not a
    decodable image'). Across chunks too: 256 small rows, then 256 large ones (two chunks)."""
    images, _ = make_images(4, channels=1)
    odd, _ = make_images(1, size=10, channels=1)
    small, large = encode_png(images[0]), encode_png(odd[0])
    with pytest.raises(ValueError, match=r"^x: row 2 has size 10x10 \(1 channels\), unlike row 0's 8x8 \(1\); "
                                         r"set dataset.image_size"):
        data_mod.decode_images([small, small, large, small], None, source="x", workers=1)
    with pytest.raises(ValueError, match=r"^x: row 256 has size 10x10 \(1 channels\), unlike row 0's 8x8"):
        data_mod.decode_images([small] * 256 + [large] * 256, None, source="x", workers=2)


def test_negative_parquet_labels_are_a_config_error(tmp_path: Path) -> None:
    """Class ids below 0 fail on reading the labels, as one line naming the column and the value."""
    images, labels = make_images(10)
    labels[3] = -1
    _write_parquet(tmp_path / "d.parquet", images, labels)
    cfg = DatasetConfig(name="parquet", path=str(tmp_path / "d.parquet"), image_column="img")
    with pytest.raises(ConfigError, match=r"dataset.label_column = 'label': labels must be class ids >= 0; .* has -1"):
        read_labels(cfg)
