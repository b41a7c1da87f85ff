"""Sources: digits, Parquet files and image folders decode to the pixels; their labels read alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sslsweep.config import DatasetConfig
from sslsweep.data import load_digits, prepare, read_labels
from sslsweep.rules import ConfigError
from tests.conftest import make_images
from tests.data.conftest import write_folder, write_parquet


def test_digits_is_uint8_nchw_with_ten_classes() -> None:
    """The embedded default decodes to (1797, 1, 8, 8) uint8 covering 0..255, labels 0..9."""
    d = load_digits()
    assert d.images.shape == (1797, 1, 8, 8) and d.images.dtype == np.uint8
    assert d.images.max() == 255 and set(np.unique(d.labels)) == set(range(10))


def test_fast_digits_reader_matches_scikit_learn() -> None:
    """Digits read from the shipped CSV (no scikit-learn import) equal sklearn.datasets.load_digits."""
    from sklearn.datasets import load_digits as sk_digits

    ours, ref = load_digits(), sk_digits()
    assert np.array_equal(ours.labels, ref.target)
    assert np.array_equal(ours.images[:, 0], np.round(ref.images * 255 / 16).astype(np.uint8))


def test_digits_csv_is_parsed_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Repeated reads (facts, prepare) parse the shipped CSV once; each call still gets equal,
    writable arrays of its own, so a caller's edit cannot reach the next caller."""
    import sklearn

    from sslsweep.data import sources

    if not (Path(sklearn.__file__).parent / "datasets" / "data" / "digits.csv.gz").exists():
        pytest.skip("this scikit-learn ships no digits CSV (digits are then read through scikit-learn)")
    calls = []
    real = np.loadtxt
    monkeypatch.setattr(np, "loadtxt", lambda *a, **k: calls.append(a) or real(*a, **k))
    sources._digits_arrays.cache_clear()
    try:
        first, second = load_digits(), load_digits()
        labels, _ = read_labels(DatasetConfig())
    finally:
        sources._digits_arrays.cache_clear()  # the next reader parses with the real np.loadtxt
    assert len(calls) == 1
    assert np.array_equal(first.images, second.images) and np.array_equal(first.labels, second.labels)
    assert np.array_equal(labels, first.labels)
    first.images[0] = 0
    first.labels[0] = -1
    labels[1] = -1
    again = load_digits()
    assert np.array_equal(again.images, second.images) and np.array_equal(again.labels, second.labels)


@pytest.mark.parametrize("struct", [True, False])
def test_parquet_struct_or_binary_column_decodes(tmp_path: Path, cache_dir: Path, struct: bool) -> None:
    """A Hugging Face struct{bytes,path} column and a plain binary column both decode to the pixels."""
    images, labels = make_images(40, channels=3)
    write_parquet(tmp_path / "d.parquet", images, labels, struct=struct)
    cfg = DatasetConfig(name="parquet", path=str(tmp_path / "d.parquet"), image_column="img", label_column="label")
    prep = prepare(cfg)
    assert prep.images.shape == (40, 3, 8, 8)
    assert np.array_equal(prep.images, images) and np.array_equal(prep.labels, labels)


def test_parquet_directory_uses_its_test_file(tmp_path: Path, cache_dir: Path) -> None:
    """A directory with train.parquet and test.parquet: the test rows are the test split."""
    images, labels = make_images(60, channels=1)
    write_parquet(tmp_path / "train.parquet", images[:45], labels[:45])
    write_parquet(tmp_path / "test.parquet", images[45:], labels[45:])
    prep = prepare(DatasetConfig(name="parquet", path=str(tmp_path), image_column="img"))
    assert len(prep.splits.test) == 15 and np.array_equal(prep.images[prep.splits.test], images[45:])


def test_undecodable_image_names_its_row(tmp_path: Path, cache_dir: Path) -> None:
    """A row that is not an image fails with an error naming that row."""
    images, labels = make_images(30)
    write_parquet(tmp_path / "d.parquet", images, labels, bad_row=17)
    cfg = DatasetConfig(name="parquet", path=str(tmp_path / "d.parquet"), image_column="img")
    with pytest.raises(ValueError, match=r"row 17 is not a decodable image"):
        prepare(cfg)


def test_missing_column_is_named(tmp_path: Path, cache_dir: Path) -> None:
    """A Parquet file without the configured image column: the key, the value and the columns there."""
    images, labels = make_images(10)
    write_parquet(tmp_path / "d.parquet", images, labels)
    cfg = DatasetConfig(name="parquet", path=str(tmp_path / "d.parquet"), image_column="image")
    with pytest.raises(ConfigError, match=r"dataset.image_column = 'image': no such column .* columns: img, label"):
        read_labels(cfg)


def test_negative_parquet_labels_are_a_config_error(tmp_path: Path) -> None:
    """Class ids below 0 fail on reading the labels, as one line naming the column and the value."""
    images, labels = make_images(10)
    labels[3] = -1
    write_parquet(tmp_path / "d.parquet", images, labels)
    cfg = DatasetConfig(name="parquet", path=str(tmp_path / "d.parquet"), image_column="img")
    with pytest.raises(ConfigError, match=r"dataset.label_column = 'label': labels must be class ids >= 0; .* has -1"):
        read_labels(cfg)


def _brightness_by_label(images: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    return {int(y): float(images[labels == y].mean()) for y in np.unique(labels)}


def test_imagefolder_reads_one_class_per_folder(tmp_path: Path, cache_dir: Path) -> None:
    """Folders are classes in sorted order; images are resized to image_size."""
    write_folder(tmp_path, ["cat", "dog"], 12)
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
    write_folder(tmp_path / "train", ["cat", "dog", "fox"], 30)
    write_folder(tmp_path / "test", ["cat", "fox"], 8, seed=1)
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
    write_folder(tmp_path / "train", ["cat", "dog"], 20)
    write_folder(tmp_path / "test", ["cat", "wolf"], 6, seed=1)
    cfg = DatasetConfig(name="imagefolder", path=str(tmp_path / "train"), test_path=str(tmp_path / "test"),
                        image_size=8)
    with pytest.raises(ConfigError, match=r"dataset.test_path = .*: class folder 'wolf' is not a train class \(cat, dog\)"):
        read_labels(cfg)


@pytest.mark.parametrize("rel,split", [
    ("data/train-00000-of-00004.parquet", "train"), ("train/0000.parquet", "train"), ("train.parquet", "train"),
    ("data/train_0.parquet", "train"), ("data/test-00000-of-00001.parquet", "test"), ("test.parquet", "test"),
    ("data/trainval-00000-of-00002.parquet", None), ("train_unlabeled-00000.parquet", None), ("notes.parquet", None)])
def test_shards_belong_to_a_split_by_the_hugging_face_names_only(rel: str, split: str | None) -> None:
    """A shard is train or test by Hugging Face's names (``train-00000-of-...``, ``train/``,
    ``train.parquet``); other files whose names merely start with it (``trainval-*``,
    ``train_unlabeled-*``, with label -1) are not merged into the train split."""
    from sslsweep.data.sources import _split_of

    assert _split_of(rel) == split
