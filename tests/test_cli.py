"""The command line: Hydra behaviour, and every bad input as one line, exit code 2, no Ray started.

Checked in this process (a fixture fails the test if Ray starts); two tests run the CLI in a
fresh interpreter as a user would (exit code, one line, Ray and torch not even imported)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sslsweep.cli import main
from sslsweep.cli.common import run
from tests.conftest import encode_png, make_images

# Runs the CLI in a fresh interpreter and reports whether Ray (or torch) was imported by then.
PROBE = """
import sys, json
from sslsweep.cli import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "ray_imported": "ray" in sys.modules, "torch_imported": "torch" in sys.modules,
                  "ray_started": "ray" in sys.modules and sys.modules["ray"].is_initialized()}))
"""


def run_cli(*args: str, cwd: Path | None = None) -> tuple[dict, str]:
    """The CLI in a fresh interpreter, as a user runs it: (status, stderr)."""
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120, cwd=cwd)
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr.strip()


@pytest.fixture()
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """The CLI in this process: returns (exit code, stderr). Starting Ray fails the test."""
    import ray

    def no_ray(*args: object, **kwargs: object) -> None:
        pytest.fail("the command started Ray")

    monkeypatch.setattr(ray, "init", no_ray)
    monkeypatch.setattr(sys, "argv", ["sslsweep"])

    def call(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code: int | str | None = 0
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code
        captured = capsys.readouterr()
        call.out = captured.out  # type: ignore[attr-defined]
        return code, captured.err.strip()

    return call


def test_top_level_help_lists_the_commands() -> None:
    """`sslsweep --help` names every command."""
    out = subprocess.run([sys.executable, "-m", "sslsweep.cli", "--help"], capture_output=True, text=True).stdout
    for command in ("sweep", "resume", "report", "submit", "jobs"):
        assert f"  {command}" in out


def test_sweep_help_and_cfg_job_are_hydras(cli) -> None:
    """`sslsweep sweep --help` lists the config groups; `--cfg job` prints the composed config."""
    code, _ = cli("sweep", "--help")
    help_out = cli.out
    assert code == 0 and "method: autoencoder, byol, context" in help_out and "experiment: demo, smoke" in help_out
    code, _ = cli("sweep", "method=[simclr]", "--cfg", "job")
    cfg_out = cli.out
    assert code == 0 and "simclr:" in cfg_out and "rotation:" not in cfg_out and "num_samples: 8" in cfg_out


def test_bad_input_in_a_fresh_interpreter_is_one_line_exit_2_without_ray() -> None:
    """As a user runs it: a bad value and a bad data-dependent value each exit with code 2 and one
    stderr line, and neither imports Ray or torch (so neither can start Ray, and both are fast)."""
    for args, message in ((["method.simclr.space.temperature=0"], "temperature = 0: the temperature must be > 0"),
                          (["search.space.batch_size.choices=[4096]"], "must be <= the train pool (1169 images)")):
        status, err = run_cli("sweep", *args)
        assert status == {"code": 2, "ray_imported": False, "torch_imported": False, "ray_started": False}, err
        assert len(err.splitlines()) == 1 and message in err, err


def test_bad_submit_input_in_a_fresh_interpreter_fails_before_ray_is_imported() -> None:
    """`sslsweep submit` with a bad override: one line, exit 2, and Ray's job client (imported
    only to contact the cluster) not even imported, so the error comes without its import time."""
    status, err = run_cli("submit", "--", "method.simclr.space.temperature=0")
    assert status == {"code": 2, "ray_imported": False, "torch_imported": False, "ray_started": False}, err
    assert len(err.splitlines()) == 1 and "temperature = 0: the temperature must be > 0" in err, err


def _parquet(path: Path, *, bad_row: int | None = None) -> Path:
    images, labels = make_images(60)
    blobs = [encode_png(im) for im in images]
    if bad_row is not None:
        blobs[bad_row] = b"\x89PNG garbage"
    pq.write_table(pa.table({"img": pa.array([{"bytes": b} for b in blobs]), "label": pa.array(labels)}), path)
    return path


BAD = [
    (["method=[simclr,mae]"], r"method = 'mae': unknown method; known: autoencoder, byol, .*simclr"),
    (["encoder=vit"], r"encoder = 'vit': unknown encoder"),
    (["dataset=mnist"], r"dataset = 'mnist': unknown dataset"),
    (["method.simclr.space.temperature.low=0"], r"temperature.low = 0: must be > 0"),
    (["method.simclr.space.temperature=0"], r"temperature = 0: the temperature must be > 0"),
    (["search.space.batch_size.choices=[1]"], r"batch_size = 1: the batch size must be an integer >= 2"),
    (["search.space.batch_size.choices=[4096]"], r"batch_size = 4096: must be <= the train pool \(1169 images\)"),
    (["dataset.label_fractions=[0.1,2]"], r"dataset.label_fractions = 2: every label fraction must be in \(0, 1\]"),
    (["dataset.labels_per_class=[1000]"], r"dataset.labels_per_class = 1000: must be <= the smallest class"),
    (["dataset=parquet", "dataset.path=/no/such/file.parquet"], r"dataset.path = '/no/such/file.parquet': path does not exist"),
    (["search.num_samples=0"], r"search.num_samples = 0: must be >= 1"),
    (["search.grace_period=50"], r"search.grace_period = 50: must be <= search.max_epochs \(20\)"),
    (["resources.gpu=2.5"], r"resources.gpu = 2.5: a GPU fraction must be in \(0, 1\]"),
    (["resources.cpu=0"], r"resources.cpu = 0: must be >= 1"),
    (["storage=ftp://x/y"], r"storage = 'ftp://x/y': unknown URI scheme"),
    (["dataset.test_fraction=0"], r"dataset.test_fraction = 0: must be > 0 when the dataset has no test set"),
    (["dataset.max_images=20"], r"dataset.max_images = 20: leaves the train split empty \(20 of 1797 images"),
    # Hydra's own several-line errors, as one line
    (["search.num_sample=3"], r"Could not override 'search.num_sample'; To append to your config use \+search.num_sample=3"),
    (["name=${foo}"], r"Interpolation key 'foo' not found; full_key: name"),
    (["method=[simclr"], r"no viable alternative at input '\[simclr'"),
    (["seed=abc"], r"seed = 'abc': must be an integer"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_input_is_one_line_exit_2_no_ray(cli, overrides: list[str], message: str) -> None:
    """Each bad input: exit code 2, a single stderr line naming key, value and rule, Ray never started.
    (How long it takes is measured by benchmarks/bad_input_latency.py, not asserted here.)"""
    import re

    code, err = cli("sweep", *overrides)
    assert code == 2
    assert len(err.splitlines()) == 1 and re.search(message, err), err


def test_parquet_without_the_named_column(cli, tmp_path: Path) -> None:
    """A Parquet file lacking the image column: the key, the value and the columns there."""
    path = _parquet(tmp_path / "d.parquet")
    code, err = cli("sweep", "dataset=parquet", f"dataset.path={path}", "dataset.image_column=image")
    assert code == 2 and "dataset.image_column = 'image': no such column" in err and "img, label" in err


def test_undecodable_image_names_the_row_and_leaves_no_sweep(tmp_path: Path) -> None:
    """An image that does not decode (found while decoding, the pipeline already imported): one
    line naming its row, exit 2, Ray not started; no sweep directory is left behind."""
    path = _parquet(tmp_path / "d.parquet", bad_row=7)
    status, err = run_cli("sweep", "dataset=parquet", f"dataset.path={path}", f"storage={tmp_path / 'runs'}",
                                   "search.space.batch_size.choices=[8]", "dataset.label_fractions=[1.0]")
    assert status["code"] == 2 and status["ray_started"] is False
    assert "row 7 is not a decodable image" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_decoded_images_too_small_or_not_square_fail_before_ray_and_leave_no_sweep(cli, tmp_path: Path) -> None:
    """The size of parquet data is known only once decoded: 8x8 images for context (needs 16x16)
    and 12x8 images for any method fail as one line, exit 2, before Ray starts, with no sweep left."""
    import numpy as np

    small = _parquet(tmp_path / "small.parquet")  # 8x8
    images, labels = make_images(60, size=12)
    tall = tmp_path / "tall.parquet"
    pq.write_table(pa.table({"img": pa.array([{"bytes": encode_png(np.ascontiguousarray(im[:, :, :8]))} for im in images]),
                             "label": pa.array(labels)}), tall)
    common = ["dataset=parquet", "dataset.image_column=img", f"storage={tmp_path / 'runs'}",
              "search.space.batch_size.choices=[8]", "dataset.label_fractions=[1.0]"]
    for args, message in (
            ([f"dataset.path={small}", "method=[context]"],
             "dataset.image_size = 8: method context needs images of at least 16x16 (set dataset.image_size=16 or more)"),
            ([f"dataset.path={tall}", "method=[simclr]"],
             "dataset.image_size = None: the images are 12x8 (height x width); the methods need square images")):
        code, err = cli("sweep", *common, *args)
        assert code == 2
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_resume_of_a_directory_that_is_not_a_sweep(cli, tmp_path: Path) -> None:
    """`sslsweep resume DIR` and `sweep resume=DIR` on a non-sweep directory: one line, exit 2."""
    for args in (("resume", str(tmp_path)), ("sweep", f"resume={tmp_path}")):
        code, err = cli(*args)
        assert code == 2
        assert f"resume = '{tmp_path}': not a sweep directory (no manifest.json there)" in err


def test_report_of_a_directory_that_is_not_a_sweep(cli, tmp_path: Path) -> None:
    """`sslsweep report DIR` on a non-sweep directory: one line naming the path, exit 2."""
    code, err = cli("report", str(tmp_path))
    assert code == 2 and str(tmp_path) in err and len(err.splitlines()) == 1


def test_a_ray_error_wrapping_a_value_error_is_not_reported_as_bad_input() -> None:
    """A trial or task that raised ValueError on a worker reaches the driver as
    RayTaskError(ValueError): a crash to show in full, not bad input (one line, exit 2)."""
    from ray.exceptions import RayTaskError

    crash = RayTaskError("trial", "Traceback (most recent call last):\n  boom", ValueError("bad")).as_instanceof_cause()

    def start() -> str:
        raise crash

    with pytest.raises(RayTaskError):
        run(start)


def test_bad_data_found_while_decoding_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A plain ValueError from the driver's decoding is bad input: its first line, exit code 2."""
    def start() -> str:
        raise ValueError("dataset.path: row 3 is not a decodable image\nmore detail")

    with pytest.raises(SystemExit) as info:
        run(start)
    assert info.value.code == 2 and "row 3 is not a decodable image" in capsys.readouterr().err
