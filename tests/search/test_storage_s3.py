"""Storage and data through pyarrow's S3 filesystem, against moto's S3 server on loopback:
write, interrupt, resume, report — with the dataset itself read from S3 on the driver."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from sslsweep.config import ConfigError, DatasetConfig
from sslsweep.search.recovery import Mirror
from sslsweep.storage import Storage, open_sweep_dir
from sslsweep.data import fingerprint as pixel_fingerprint
from sslsweep.data import sources as data_mod
from sslsweep.data import load_digits, prepare, read_labels
from tests.search.conftest import S3Server, clean_env, kill_group, kill_marked, sslsweep


def s3fs(s3: S3Server) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1",
                             endpoint_override=s3.endpoint.split("://", 1)[1], scheme="http")


def digits_parquet(n: int = 400, seed: int = 0) -> bytes:
    """The first ``n`` digits as PNG bytes + labels, in the Hugging Face layout (img, label)."""
    from PIL import Image

    d = load_digits()
    rows = np.random.default_rng(seed).permutation(len(d.labels))[:n] if seed else np.arange(n)
    blobs = []
    for im in d.images[rows]:
        buf = io.BytesIO()
        Image.fromarray(im[0]).save(buf, format="PNG")
        blobs.append(buf.getvalue())
    table = pa.table({"img": pa.array(blobs, pa.binary()), "label": pa.array(d.labels[rows], pa.int64())})
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def put(s3: S3Server, key: str, data: bytes) -> None:
    with s3fs(s3).open_output_stream(f"{s3.bucket}/{key}") as f:
        f.write(data)


def get_json(s3: S3Server, key: str) -> dict | None:
    try:
        with s3fs(s3).open_input_stream(f"{s3.bucket}/{key}") as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def listing(s3: S3Server, prefix: str, recursive: bool = True) -> list[str]:
    """Keys under ``prefix``; not ``recursive``: the folder's own files and its sub-folders' names."""
    infos = s3fs(s3).get_file_info(pafs.FileSelector(f"{s3.bucket}/{prefix}", recursive=recursive,
                                                     allow_not_found=True))
    return [i.path.split("/", 1)[1] for i in infos if recursive is False or i.type == pafs.FileType.File]


# ----------------------------------------------------------------------------- fast: in-process pyarrow


def test_storage_round_trip_on_s3(s3_env: S3Server) -> None:
    st = Storage(s3_env.uri("unit", "sw1"))
    assert st.remote and st.child_uri("tune") == s3_env.uri("unit", "sw1", "tune")
    st.write_json("manifest.json", {"sweep_id": "sw1"})
    st.write_table("trials.parquet", pa.table({"x": [1, 2]}))
    assert st.exists("manifest.json") and not st.exists("budget.parquet")
    assert open_sweep_dir(st.uri).read_json("manifest.json") == {"sweep_id": "sw1"}
    assert pq.read_table(io.BytesIO(st.read_bytes("trials.parquet"))).column("x").to_pylist() == [1, 2]
    with pytest.raises(ConfigError, match=r"resume = 's3://sslsweep-test/unit/none': not a sweep directory"):
        open_sweep_dir(s3_env.uri("unit", "none"))


def test_mirror_keeps_a_copy_of_the_growing_journal_while_the_search_runs(s3_env: S3Server, tmp_path: Path) -> None:
    """The Optuna journal reaches S3 when the search starts, again while it runs (whole lines
    only: a half-written line would make the copy unreadable for Optuna), and at the end."""
    st = Storage(s3_env.uri("unit", "mirror"))
    journal, rel = tmp_path / "simclr.journal", "optuna/simclr.journal"
    journal.write_bytes(b'{"op": 0}\n')
    with Mirror(st, journal, rel, every=0.05):
        assert st.read_bytes(rel) == b'{"op": 0}\n'
        with journal.open("ab") as f:
            f.write(b'{"op": 1}\n{"op"')  # the second line is still being written
        deadline = time.time() + 20
        while st.read_bytes(rel) == b'{"op": 0}\n' and time.time() < deadline:
            time.sleep(0.05)
        assert st.read_bytes(rel) == b'{"op": 0}\n{"op": 1}\n'
        with journal.open("ab") as f:
            f.write(b': 2}\n')
    assert st.read_bytes(rel) == journal.read_bytes() == b'{"op": 0}\n{"op": 1}\n{"op": 2}\n'


def test_parquet_dataset_is_read_from_s3_once_and_cached(s3_env: S3Server, cache_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A dataset URI (a directory holding train.parquet) decodes to the same arrays as the local
    file: another source, so another fingerprint, but the same pixel-hash alias (resume and combine
    accept it); a second prepare reads the decode cache, and a changed object (same size) is
    decoded again."""
    blob = digits_parquet(120)
    put(s3_env, "unit-data/d1/train.parquet", blob)
    (tmp_path / "train.parquet").write_bytes(blob)
    kw = dict(name="parquet", image_column="img", hflip=False, val_fraction=0.2, test_fraction=0.2)
    remote = DatasetConfig(path=s3_env.uri("unit-data", "d1"), **kw)
    local = DatasetConfig(path=str(tmp_path), **kw)
    y, yt = read_labels(remote)
    assert yt is None and np.array_equal(y, read_labels(local)[0])
    a, b = prepare(remote), prepare(local)
    assert np.array_equal(a.images, b.images) and a.fingerprint != b.fingerprint
    assert a.fingerprint_aliases == b.fingerprint_aliases == (pixel_fingerprint(a.images, a.labels),)

    def no_decode(path: str, cfg: DatasetConfig):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setitem(data_mod.LOADERS, "parquet", no_decode)
    assert prepare(remote).fingerprint == a.fingerprint  # from the cache
    # the object changes but keeps its size, within the same second (S3 times are whole seconds):
    # only its ETag tells, and that is enough to decode it again
    changed = bytearray(blob)
    changed[len(blob) // 2] ^= 0xFF
    put(s3_env, "unit-data/d1/train.parquet", bytes(changed))
    with pytest.raises(AssertionError, match="decoded s3://"):
        prepare(remote)


def test_missing_dataset_uri_is_one_line(s3_env: S3Server) -> None:
    cfg = DatasetConfig(name="parquet", path=s3_env.uri("no", "such"), image_column="img")
    with pytest.raises(ConfigError, match=r"dataset.path = 's3://sslsweep-test/no/such': path does not exist"):
        read_labels(cfg)
    put(s3_env, "unit-data/empty-dir/readme.txt", b"no parquet here")
    with pytest.raises(ConfigError, match=r"a directory must hold train.parquet"):
        read_labels(DatasetConfig(name="parquet", path=s3_env.uri("unit-data", "empty-dir"), image_column="img"))


# ----------------------------------------------------------------------------- slow: a real sweep


@pytest.fixture()
def ray_tmp() -> Iterator[Path]:
    """RAY_TMPDIR of the test's own Ray instances: short (socket paths), and the name by which
    whatever they leave running is found and stopped afterwards."""
    d = Path(tempfile.mkdtemp(prefix="ssls3-"))
    yield d
    kill_marked(str(d))
    shutil.rmtree(d, ignore_errors=True)


SWEEP = ["experiment=smoke", "method=[none,rotation]", "dataset=parquet", "dataset.image_column=img",
         "dataset.hflip=false", "dataset.max_images=200", "search.max_epochs=1", "search.grace_period=1",
         "confirm.seeds=1", "confirm.finetune_min_steps=2", "confirm.finetune_max_steps=2", "name=s3"]


@pytest.mark.slow
def test_sweep_on_s3_survives_a_killed_driver_and_reports(s3_server: S3Server, ray_tmp: Path,
                                                           request: pytest.FixtureRequest) -> None:
    """Dataset and storage on S3. The driver is killed (SIGKILL, with its Ray) during the confirm
    phase, after Tune saved that experiment's state; `sslsweep resume URI` (another process with
    another $HOME, given nothing but the URI) finishes the sweep without searching again; everything (Tune experiments
    and checkpoints, tables, Optuna journal, manifest, report) is in the bucket; `sslsweep report
    URI` rebuilds the report from there."""
    s3 = s3_server
    put(s3, "data/digits/train.parquet", digits_parquet(400))
    env = clean_env(**s3.env(), RAY_TMPDIR=str(ray_tmp), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    runs = s3.uri("runs")
    log = ray_tmp / "first-run.log"  # a file, not a pipe nobody reads while we poll
    # confirm.epochs=8: a confirm phase long enough for the poll below to catch it running; the poll
    # lists only the tops of folders (not every checkpoint under runs/), so one round stays short
    p = subprocess.Popen([sys.executable, "-m", "sslsweep.cli", "sweep", *SWEEP, "confirm.epochs=8",
                          f"dataset.path={s3.uri('data', 'digits')}", f"storage={runs}"],
                         env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    sweep_id, reached = None, False
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and p.poll() is None:
            if sweep_id is None:
                ids = [k.split("/")[1] for k in listing(s3, "runs", recursive=False) if k.count("/") == 1]
                sweep_id = next((i for i in ids if _has(s3, f"runs/{i}/manifest.json")), None)
            if sweep_id is not None:
                m = get_json(s3, f"runs/{sweep_id}/manifest.json") or {}
                if set(m.get("progress", {}).get("searched", [])) == {"none", "rotation"} and any(
                        "/experiment_state" in k
                        for k in listing(s3, f"runs/{sweep_id}/tune/confirm-rotation", recursive=False)):
                    reached = True  # in rotation's confirm, once Tune has saved its experiment state there
                    break
            time.sleep(0.3)
        assert reached and p.poll() is None, log.read_text()[-4000:]
    finally:
        kill_group(p.pid)
        p.wait(timeout=30)
        kill_marked(str(ray_tmp))
    local_cache = Path.home() / ".cache" / "sslsweep" / "sweeps" / sweep_id  # the driver's Optuna journals
    request.addfinalizer(lambda: shutil.rmtree(local_cache, ignore_errors=True))
    uri = f"{runs}/{sweep_id}"
    partial = pd.read_parquet(io.BytesIO(_read(s3, f"runs/{sweep_id}/trials.parquet")))
    assert set(partial["method"]) == {"none", "rotation"}
    searched = set(partial["trial_id"])
    if _has(s3, f"runs/{sweep_id}/budget.parquet"):  # none's confirm may have finished (pipelined), rotation's not
        done = pd.read_parquet(io.BytesIO(_read(s3, f"runs/{sweep_id}/budget.parquet")))
        assert "rotation" not in set(done["method"])

    other_home = ray_tmp / "another-machine"  # the resume runs as if on another machine: no local cache
    other_home.mkdir()
    r = sslsweep(["resume", uri], {**env, "HOME": str(other_home)}, timeout=360)
    assert r.returncode == 0, f"{r.stdout[-4000:]}\n{r.stderr[-3000:]}"
    assert f"sweep finished: {uri}" in r.stdout
    # the Optuna journal came back from the bucket into the new machine's cache
    fetched = other_home / ".cache" / "sslsweep" / "sweeps" / sweep_id / "optuna" / "rotation.journal"
    assert fetched.read_bytes() == _read(s3, f"runs/{sweep_id}/optuna/rotation.journal")

    m = get_json(s3, f"runs/{sweep_id}/manifest.json")
    assert m["finished"] and m["progress"]["confirmed"] and m["progress"]["reported"]
    assert sorted(m["progress"]["searched"]) == sorted(m["progress"]["confirmed_methods"]) == ["none", "rotation"]
    trials = pd.read_parquet(io.BytesIO(_read(s3, f"runs/{sweep_id}/trials.parquet")))
    assert set(trials["trial_id"]) == searched  # the search was not run again
    assert trials.loc[trials["method"] == "rotation", "trial_id"].nunique() == 2
    budget = pd.read_parquet(io.BytesIO(_read(s3, f"runs/{sweep_id}/budget.parquet")))
    assert len(budget) == 2 * 1 * 2 * 2, r.stdout[-8000:]  # methods x seeds x budgets x protocols
    keys = listing(s3, f"runs/{sweep_id}")
    for exp in ("search-none", "search-rotation", "confirm-none", "confirm-rotation"):  # Tune's experiments, restorable from S3
        assert f"runs/{sweep_id}/tune/{exp}/tuner.pkl" in keys, exp
    for exp in ("search-rotation", "confirm-rotation"):  # trials that pretrain checkpoint every epoch
        assert any(f"/tune/{exp}/" in k and "/checkpoint_" in k for k in keys), exp
    for f in ("report.md", "report.html", "optuna/rotation.journal"):
        assert f"runs/{sweep_id}/{f}" in keys, f

    rep = sslsweep(["report", uri, "--out", s3.uri("reports", "again")], env, timeout=180)
    assert rep.returncode == 0, rep.stderr[-3000:]
    assert "md: s3://sslsweep-test/reports/again/report.md" in rep.stdout
    again = _read(s3, "reports/again/report.md").decode()
    assert sweep_id in again and "rotation" in again


def _read(s3: S3Server, key: str) -> bytes:
    with s3fs(s3).open_input_stream(f"{s3.bucket}/{key}") as f:
        return f.read()


def _has(s3: S3Server, key: str) -> bool:
    return s3fs(s3).get_file_info(f"{s3.bucket}/{key}").type == pafs.FileType.File

