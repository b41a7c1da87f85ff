"""The streaming path (``dataset.residency = stream``) against the in-memory one on the same small
data: the same labels, splits, label subsets and (centre-cropped) pixels; seeded shuffling that
visits every image once; undecodable images skipped and counted; a corrupt row group fails naming
its shard and rows, after everything before it was delivered; S3 shards stream."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sslsweep.config import DatasetConfig
from sslsweep.data import StreamError, StreamReader, fingerprint, label_subset, prepare
from sslsweep.data.decode import decode_one
from tests.conftest import encode_png
from tests.data.conftest import photos, write_shards
from tests.search.conftest import s3_env, s3_server  # noqa: F401 - the moto S3 fixtures
from tests.search.test_storage_s3 import put

SIZE = 16


def cfgs(path: Path | str, **kw) -> tuple[DatasetConfig, DatasetConfig]:
    """(in memory, stream) configs of the same data."""
    base = DatasetConfig(name=kw.pop("name", "parquet"), path=str(path), image_size=SIZE, val_fraction=0.2,
                         test_fraction=0.2, stream_buffer=16, stream_workers=2, **kw)
    return replace(base, residency="device"), replace(base, residency="stream")


@pytest.fixture()
def shards_dir(tmp_path: Path) -> Path:
    blobs, labels = photos(90)
    write_shards(tmp_path / "ds", blobs[:72], labels[:72], split="train", n_shards=3)
    write_shards(tmp_path / "ds", blobs[72:], labels[72:], split="test", n_shards=2)
    return tmp_path / "ds"


def assert_same_data(memory_cfg: DatasetConfig, stream_cfg: DatasetConfig) -> None:
    mem, st = prepare(memory_cfg), prepare(stream_cfg)
    assert st.images is None and st.stream is not None and st.residency == "stream"
    assert np.array_equal(mem.labels, st.labels) and mem.classes == st.classes and mem.shape == st.shape
    for split in ("train", "val", "test"):
        assert np.array_equal(getattr(mem.splits, split), getattr(st.splits, split)), split
    for seed, frac in ((0, 0.1), (3, 0.5), (1, 1.0)):
        assert np.array_equal(label_subset(mem.labels, mem.splits.train, seed=seed, fraction=frac),
                              label_subset(st.labels, st.splits.train, seed=seed, fraction=frac))
    reader = StreamReader(st.stream, buffer=8, workers=2)
    images, kept = reader.materialize(np.arange(len(st.labels)))
    assert kept.all() and np.array_equal(images, mem.images)  # same decode: shorter side, centre crop
    # one fingerprint for the same data, streamed or in memory (sources and labels, not pixels);
    # the names older sslsweeps gave it are its aliases: the pixel hash, and stream- for streams
    assert st.fingerprint == mem.fingerprint == prepare(stream_cfg).fingerprint and st.fingerprint.startswith("src-")
    assert mem.fingerprint_aliases == (fingerprint(mem.images, mem.labels),)
    assert st.fingerprint_aliases == ("stream-" + st.fingerprint[len("src-"):],)


def test_sharded_parquet_streams_the_in_memory_data(shards_dir: Path, cache_dir: Path) -> None:
    """HF-layout shards (train + test files): identical labels, splits (test = the test shards),
    label subsets and pixels in memory and streamed; non-square photos are not squashed."""
    mem_cfg, stream_cfg = cfgs(shards_dir, label_selection=("random",))
    assert_same_data(mem_cfg, stream_cfg)
    assert len(prepare(stream_cfg).splits.test) == 18  # the two test shards


def test_image_folder_streams_the_in_memory_data(tmp_path: Path, cache_dir: Path) -> None:
    blobs, labels = photos(45)
    for i, (b, y) in enumerate(zip(blobs, labels)):
        (tmp_path / "f" / f"class{y}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "f" / f"class{y}" / f"{i:03d}.jpg").write_bytes(b)
    assert_same_data(*cfgs(tmp_path / "f", name="imagefolder"))


def test_the_stream_fingerprint_changes_with_a_shard(shards_dir: Path) -> None:
    _, stream_cfg = cfgs(shards_dir)
    before = prepare(stream_cfg).fingerprint
    blobs, labels = photos(72, seed=5)
    write_shards(shards_dir, blobs, labels, split="train", n_shards=3)
    assert prepare(stream_cfg).fingerprint != before


def test_training_order_is_seeded_and_visits_each_image_once(shards_dir: Path) -> None:
    """A seeded pass yields every asked image exactly once, in batches of the size asked; the same
    seed gives the same order and crops, another seed another order; random crops differ from
    the centre ones."""
    data = prepare(cfgs(shards_dir)[1])
    reader = StreamReader(data.stream, buffer=10, workers=2)
    train = data.splits.train

    def epoch(seed: int) -> tuple[np.ndarray, np.ndarray]:
        parts = list(reader.batches(train, 8, seed=seed))
        assert all(len(p) == 8 for p, _ in parts[:-1])
        return np.concatenate([p for p, _ in parts]), np.concatenate([q for _, q in parts])

    a_img, a_pos = epoch(1)
    b_img, b_pos = epoch(1)
    _, c_pos = epoch(2)
    assert sorted(a_pos.tolist()) == list(range(len(train)))
    assert np.array_equal(a_pos, b_pos) and np.array_equal(a_img, b_img)
    assert not np.array_equal(a_pos, c_pos)
    centre, _ = reader.materialize(train)
    assert not np.array_equal(a_img[np.argsort(a_pos)], centre)
    assert sum(len(p) for p, _ in reader.batches(train, 8, seed=1, drop_last=True)) == len(train) // 8 * 8


def test_an_undecodable_image_is_skipped_counted_and_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blobs, labels = photos(30)
    blobs[11] = b"not a jpeg"
    paths = write_shards(tmp_path / "ds", blobs, labels, n_shards=2)
    data = prepare(cfgs(tmp_path / "ds")[1])
    reader = StreamReader(data.stream, buffer=4, workers=2)
    with caplog.at_level(logging.WARNING, logger="sslsweep.data.stream"):
        images, kept = reader.materialize(np.arange(30))
    assert reader.skipped == 1 and kept.sum() == 29 and not kept[11] and len(images) == 29
    assert f"{paths[0]}, row 11" in caplog.text


def test_a_corrupt_row_group_fails_naming_the_shard_and_rows_after_the_earlier_batches(tmp_path: Path) -> None:
    """Bytes of the second shard's data pages are overwritten (its footer still reads, so the index
    builds): reading in order delivers every batch of the first shard, then raises StreamError
    naming the second shard and the rows of the row group."""
    blobs, labels = photos(28)
    paths = write_shards(tmp_path / "ds", blobs, labels, n_shards=2, row_group=14)
    raw = bytearray(paths[1].read_bytes())
    raw[200:2000] = bytes(1800)  # inside the first row group's image pages
    paths[1].write_bytes(bytes(raw))
    data = prepare(cfgs(tmp_path / "ds")[1])
    reader = StreamReader(data.stream, buffer=4, workers=2)
    got = []
    with pytest.raises(StreamError, match=rf"^{paths[1]}: row group 0 \(rows 0\.\.13\) cannot be read"):
        for images, pos in reader.batches(np.arange(28), 7):
            got.append(pos)
    assert np.array_equal(np.concatenate(got), np.arange(14))  # the first shard, whole


def test_sharded_parquet_streams_from_s3(s3_env, tmp_path: Path) -> None:  # noqa: ANN001
    """HF-layout shards on a moto S3 server: the index lists them, the reader streams them, and the
    images equal the local copy's."""
    blobs, labels = photos(40)
    local = write_shards(tmp_path / "ds", blobs, labels, n_shards=3)
    for p in local:
        put(s3_env, f"stream-data/ds/data/{p.name}", p.read_bytes())
    remote = prepare(cfgs(s3_env.uri("stream-data", "ds"))[1])
    here = prepare(cfgs(tmp_path / "ds")[1])
    assert remote.stream.files[0].startswith("s3://") and len(remote.stream.files) == 3
    assert np.array_equal(remote.labels, here.labels)
    for a, b in zip(remote.splits.__dict__.values(), here.splits.__dict__.values()):
        assert np.array_equal(a, b)
    got, _ = StreamReader(remote.stream, workers=2).materialize(remote.splits.val)
    want, _ = StreamReader(here.stream, workers=2).materialize(here.splits.val)
    assert np.array_equal(got, want)


def test_a_wide_image_is_resized_by_its_shorter_side_and_centre_cropped_not_squashed() -> None:
    """A 20x40 image whose left quarter is black: the shorter side goes to 10 (10x20), the centre
    10x10 crop is all white; squashing it to 10x10 would keep a black band on the left."""
    im = np.full((1, 20, 40), 255, np.uint8)
    im[:, :, :10] = 0
    out = decode_one(encode_png(im), 10, "L")
    assert out.shape == (1, 10, 10) and out.min() > 200
    cropped = [decode_one(encode_png(im), 10, "L", np.random.default_rng(s)) for s in range(20)]
    assert all(c.shape == (1, 10, 10) for c in cropped) and min(c.min() for c in cropped) < 50  # random crops reach the band


def test_a_sweep_recorded_under_an_older_fingerprint_name_resumes(shards_dir: Path, cache_dir: Path) -> None:
    """A sweep started before fingerprints named the source files recorded the pixel hash (in
    memory) or ``stream-...`` (streamed): a resume accepts either name for the same data, keeps the
    name it started with and records the other names; other data is still refused."""
    from sslsweep.config import ResourcesConfig
    from sslsweep.search.sweep import Sweep
    from tests.test_config import load

    mem_cfg, stream_cfg = cfgs(shards_dir)
    mem, st = prepare(mem_cfg), prepare(stream_cfg)
    base = load("storage=/tmp/unused")
    for dataset, old in ((mem_cfg, fingerprint(mem.images, mem.labels)), (stream_cfg, st.fingerprint_aliases[0])):
        sweep = Sweep.create(replace(base, dataset=dataset, resources=ResourcesConfig()), {})
        sweep.save_manifest = lambda: None  # type: ignore[method-assign]
        sweep.manifest["dataset"] = {"fingerprint": old}
        sweep._prepare()
        assert sweep.manifest["dataset"]["fingerprint"] == old
        assert st.fingerprint in sweep.manifest["dataset"]["fingerprint_aliases"]
        sweep.manifest["dataset"] = {"fingerprint": "0123456789abcdef"}
        with pytest.raises(ValueError, match="the dataset changed since the sweep started"):
            sweep._prepare()
