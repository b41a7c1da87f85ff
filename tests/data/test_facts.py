"""read_facts: the counts and the image shape the data rules need, from labels, listings and one
decoded image; any readable dataset gives facts, however small."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sslsweep.config import DatasetConfig
from sslsweep.data import DataFacts, prepare, read_facts, sources
from sslsweep.rules import ConfigError
from tests.conftest import make_images
from tests.data.conftest import write_folder, write_parquet


def _assert_matches_prepare(facts: DataFacts, cfg: DatasetConfig) -> None:
    """The facts describe the arrays prepare() builds: same classes, split sizes, image shape."""
    prep = prepare(cfg)
    assert facts.classes == tuple(prep.classes) and facts.image_shape == prep.shape
    assert (facts.n_train, facts.n_val, facts.n_test) == (len(prep.splits.train), len(prep.splits.val),
                                                         len(prep.splits.test))
    assert facts.n_images == len(prep.labels)
    train_counts = np.bincount(prep.labels[prep.splits.train], minlength=len(prep.classes))
    assert facts.train_counts == {prep.classes[c]: int(train_counts[c]) for c in np.unique(prep.labels)}


def test_digits_facts(cache_dir: Path) -> None:
    """Digits: 1,797 images in 10 classes, grey 8x8, no test set of its own; the splits and the
    smallest train class are those of prepare()."""
    cfg = DatasetConfig()
    facts = read_facts(cfg)
    labels = sources.load_digits().labels
    assert facts.class_counts == {str(c): int(n) for c, n in enumerate(np.bincount(labels))}
    assert facts.n_images == 1797 and facts.num_classes == 10 and facts.image_shape == (1, 8, 8)
    assert not facts.has_test_set and facts.n_train + facts.n_val + facts.n_test == 1797
    assert facts.min_class_count == min(facts.train_counts.values()) > 0
    _assert_matches_prepare(facts, cfg)
    assert read_facts(DatasetConfig(image_size=16)).image_shape == (1, 16, 16)


@pytest.mark.parametrize("channels", [1, 3])
def test_parquet_file_facts(tmp_path: Path, cache_dir: Path, channels: int) -> None:
    """One Parquet file: counts from the label column, (C, H, W) from its first row, grey or RGB,
    resized to image_size if set."""
    images, labels = make_images(40, channels=channels)
    write_parquet(tmp_path / "d.parquet", images, labels)
    cfg = DatasetConfig(name="parquet", path=str(tmp_path / "d.parquet"), image_column="img")
    facts = read_facts(cfg)
    assert facts.class_counts == {"0": 14, "1": 13, "2": 13} and facts.image_shape == (channels, 8, 8)
    assert not facts.has_test_set
    _assert_matches_prepare(facts, cfg)
    assert read_facts(DatasetConfig(name="parquet", path=str(tmp_path / "d.parquet"), image_column="img",
                                    image_size=12)).image_shape == (channels, 12, 12)


def test_parquet_directory_with_test_file_facts(tmp_path: Path, cache_dir: Path) -> None:
    """train.parquet + test.parquet: the test file is the test set (has_test_set, n_test = its rows)
    and the whole labelled set counts both files."""
    images, labels = make_images(60, channels=1)
    write_parquet(tmp_path / "train.parquet", images[:45], labels[:45])
    write_parquet(tmp_path / "test.parquet", images[45:], labels[45:])
    cfg = DatasetConfig(name="parquet", path=str(tmp_path), image_column="img")
    facts = read_facts(cfg)
    assert facts.has_test_set and facts.n_test == 15 and facts.n_images == 60
    assert facts.test_counts == {"0": 5, "1": 5, "2": 5}
    _assert_matches_prepare(facts, cfg)


def test_unused_class_ids_are_classes_but_not_counted(tmp_path: Path, cache_dir: Path) -> None:
    """Labels 0 and 2 only: three classes for the classifier, two present (class 1 has no image)."""
    images, labels = make_images(20, classes=2)
    write_parquet(tmp_path / "d.parquet", images, labels * 2)
    facts = read_facts(DatasetConfig(name="parquet", path=str(tmp_path / "d.parquet"), image_column="img"))
    assert facts.classes == ("0", "1", "2") and facts.class_counts == {"0": 10, "2": 10}
    assert facts.num_classes == 2 and set(facts.train_counts) == {"0", "2"}


def test_two_classes_of_one_image_give_facts_not_an_error(tmp_path: Path) -> None:
    """An image folder with 2 classes of 1 image each: the test split takes both (one per class),
    so train and validation are empty; read_facts says so in counts instead of raising."""
    write_folder(tmp_path, ["cat", "dog"], 2)
    facts = read_facts(DatasetConfig(name="imagefolder", path=str(tmp_path)))
    assert facts.class_counts == {"cat": 1, "dog": 1} and facts.num_classes == 2
    assert (facts.n_train, facts.n_val, facts.n_test) == (0, 0, 2)
    assert facts.train_counts == {"cat": 0, "dog": 0} and facts.min_class_count == 0
    assert facts.n_images == 2 and facts.image_shape == (3, 10, 10)


def test_one_class_folder_gives_facts_not_an_error(tmp_path: Path) -> None:
    """An image folder with a single class: facts with num_classes 1 and its count, for the rule
    to name; the splits still divide its images."""
    write_folder(tmp_path, ["cat"], 10)
    facts = read_facts(DatasetConfig(name="imagefolder", path=str(tmp_path)))
    assert facts.classes == ("cat",) and facts.class_counts == {"cat": 10} and facts.num_classes == 1
    assert facts.n_train + facts.n_val + facts.n_test == 10 and facts.n_train > 0


def test_empty_parquet_file_gives_zero_counts_and_no_shape(tmp_path: Path) -> None:
    """A Parquet file with no rows: no class, no split, no first image (image_shape None)."""
    images, labels = make_images(3)
    write_parquet(tmp_path / "d.parquet", images[:0], labels[:0])
    facts = read_facts(DatasetConfig(name="parquet", path=str(tmp_path / "d.parquet"), image_column="img"))
    assert facts.classes == () and facts.class_counts == {} and facts.image_shape is None
    assert (facts.n_images, facts.n_train, facts.n_val, facts.n_test, facts.min_class_count) == (0, 0, 0, 0, 0)


@pytest.mark.parametrize("layout", ["parquet", "imagefolder"])
def test_read_facts_decodes_one_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    """Facts come from labels and listings: exactly one image is decoded, never the whole set."""
    if layout == "parquet":
        images, labels = make_images(50)
        write_parquet(tmp_path / "d.parquet", images, labels)
        cfg = DatasetConfig(name="parquet", path=str(tmp_path / "d.parquet"), image_column="img")
    else:
        write_folder(tmp_path, ["cat", "dog", "fox"], 30)
        cfg = DatasetConfig(name="imagefolder", path=str(tmp_path))
    calls = []
    decode_one = sources.decode_one

    def counted(*a: Any, **k: Any) -> np.ndarray:
        calls.append(a)
        return decode_one(*a, **k)

    def no_bulk_decode(*a: Any, **k: Any) -> None:
        raise AssertionError("decoded the whole source")

    monkeypatch.setattr(sources, "decode_one", counted)
    monkeypatch.setattr(sources, "decode_images", no_bulk_decode)
    facts = read_facts(cfg)
    assert len(calls) == 1 and facts.image_shape == (3, 8 if layout == "parquet" else 10, 8 if layout == "parquet" else 10)


def test_undecodable_first_image_is_a_config_error(tmp_path: Path) -> None:
    """The one image read_facts decodes is named when it does not decode: row 0 and the file."""
    images, labels = make_images(10)
    write_parquet(tmp_path / "d.parquet", images, labels, bad_row=0)
    with pytest.raises(ConfigError, match=r"dataset.path = '.*d.parquet': row 0 of .*d.parquet is not a decodable image"):
        read_facts(DatasetConfig(name="parquet", path=str(tmp_path / "d.parquet"), image_column="img"))
