"""``sslsweep submit`` / ``sslsweep jobs`` against a real ``ray start --head`` with token
authentication (loopback), and the parts of submission that need no cluster."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any

import pytest

from sslsweep.cli import jobs as jobs_cli
from sslsweep.cli import submit as submit_cli
from sslsweep.search import jobclient
from sslsweep.search.jobclient import ClusterError
from tests.search.conftest import RayCluster, SubmittedSweep, sslsweep

TINY = ["experiment=smoke", "method=[none]", "dataset.max_images=100", "confirm.seeds=1"]


# ----------------------------------------------------------------------------- against the cluster


@pytest.mark.slow
def test_submit_follow_runs_the_sweep_and_writes_the_report(submitted_sweep: SubmittedSweep,
                                                            ray_cluster: RayCluster) -> None:
    """The job id is the first line printed; --follow streams the sweep's own output and exits 0
    when the job succeeded; the report is in the storage; `jobs status|logs` see the job."""
    s = submitted_sweep
    assert s.result.returncode == 0, f"{s.result.stdout[-4000:]}\n{s.result.stderr[-3000:]}"
    assert s.job_id.startswith("sslsweep-")
    assert "sweep finished:" in s.result.stdout and f"job {s.job_id}: SUCCEEDED" in s.result.stderr
    assert s.sweep_dir is not None
    assert (s.sweep_dir / "report.md").stat().st_size > 0 and (s.sweep_dir / "report.html").stat().st_size > 0

    status = sslsweep(["jobs", "status", s.job_id, "--address", ray_cluster.dashboard_url], ray_cluster.env(), 60)
    assert status.returncode == 0 and status.stdout.strip() == "SUCCEEDED", status.stderr
    logs = sslsweep(["jobs", "logs", s.job_id, "--address", ray_cluster.dashboard_url], ray_cluster.env(), 60)
    assert logs.returncode == 0 and f"sweep finished: {s.sweep_dir}" in logs.stdout
    # the job ran the code shipped from this project (its working directory), not an installed copy
    info = ray_cluster.get(f"/api/jobs/{s.job_id}")
    assert info["runtime_env"]["working_dir"].startswith("gcs://")
    assert info["entrypoint"].startswith("python -m sslsweep.cli sweep experiment=smoke")


@pytest.mark.slow
def test_submit_without_a_token_is_refused(ray_cluster: RayCluster, tmp_path: Path) -> None:
    """No RAY_AUTH_TOKEN, no token file: the cluster answers 401, nothing is submitted."""
    before = _job_ids(ray_cluster)
    r = sslsweep(["submit", "--address", ray_cluster.dashboard_url, "--", *TINY, f"storage={tmp_path}"],
                 ray_cluster.env(token=False), 120)
    assert r.returncode == 2 and r.stdout == ""
    assert "requires a token and none was found here" in r.stderr and "RAY_AUTH_TOKEN" in r.stderr
    assert _job_ids(ray_cluster) == before


@pytest.mark.slow
def test_submit_with_another_token_is_refused(ray_cluster: RayCluster, tmp_path: Path) -> None:
    before = _job_ids(ray_cluster)
    r = sslsweep(["submit", "--address", ray_cluster.dashboard_url, "--", *TINY, f"storage={tmp_path}"],
                 ray_cluster.env(RAY_AUTH_TOKEN="0" * 64), 120)
    assert r.returncode == 2 and "refused the token" in r.stderr, r.stderr[-2000:]
    assert _job_ids(ray_cluster) == before


@pytest.mark.slow
def test_jobs_status_and_stop(ray_cluster: RayCluster, tmp_path: Path) -> None:
    """A submitted job can be stopped; its status then reads STOPPED."""
    r = sslsweep(["submit", "--address", ray_cluster.dashboard_url, "--", *TINY, f"storage={tmp_path}"],
                 ray_cluster.env(), 120)
    assert r.returncode == 0, r.stderr[-2000:]
    job_id = r.stdout.strip()
    assert f"sslsweep jobs stop {job_id}" in r.stderr
    deadline = time.monotonic() + 90  # stop a running job (a PENDING one may end FAILED, not STOPPED)
    while ray_cluster.get(f"/api/jobs/{job_id}")["status"] == "PENDING" and time.monotonic() < deadline:
        time.sleep(0.5)
    stop = sslsweep(["jobs", "stop", job_id, "--address", ray_cluster.dashboard_url], ray_cluster.env(), 60)
    assert stop.returncode == 0 and job_id in stop.stdout
    deadline, status = time.monotonic() + 90, ""
    while time.monotonic() < deadline:
        status = ray_cluster.get(f"/api/jobs/{job_id}")["status"]
        if status in ("STOPPED", "SUCCEEDED", "FAILED"):
            break
        time.sleep(1)
    assert status == "STOPPED"
    out = sslsweep(["jobs", "status", job_id, "--address", ray_cluster.dashboard_url], ray_cluster.env(), 60)
    assert out.stdout.strip() == "STOPPED"


@pytest.mark.slow
def test_jobs_unknown_id_is_one_line(ray_cluster: RayCluster) -> None:
    r = sslsweep(["jobs", "status", "sslsweep-nope", "--address", ray_cluster.dashboard_url], ray_cluster.env(), 60)
    assert r.returncode == 2 and r.stderr.startswith("sslsweep: error:") and len(r.stderr.strip().splitlines()) == 1


def _job_ids(cluster: RayCluster) -> set[str]:
    return {j.get("submission_id") or j.get("job_id") for j in cluster.get("/api/jobs/")}


# ----------------------------------------------------------------------------- no cluster needed


@pytest.fixture()
def no_ray_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_token_is_found_where_ray_looks(no_ray_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RAY_AUTH_TOKEN, else the file in RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token (Ray's order)."""
    assert jobclient.auth_token() is None
    (no_ray_env / ".ray").mkdir()
    (no_ray_env / ".ray" / "auth_token").write_text("home-token\n")
    assert jobclient.auth_token() == "home-token"
    (no_ray_env / "tok").write_text("file-token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(no_ray_env / "tok"))
    assert jobclient.auth_token() == "file-token"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "env-token")
    assert jobclient.auth_token() == "env-token"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert jobclient.auth_token() is None


def test_an_unreadable_token_file_named_in_the_environment_is_one_line(
        no_ray_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """RAY_AUTH_TOKEN_PATH naming a missing file is an error naming it (Ray's clients treat it as
    fatal too), not a silent fall-through to "the cluster requires a token"."""
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(no_ray_env / "missing"))
    message = (f"RAY_AUTH_TOKEN_PATH = '{no_ray_env / 'missing'}': "
               "cannot read the token there (No such file or directory)")
    with pytest.raises(ClusterError) as raised:
        jobclient.auth_token()
    assert str(raised.value) == message
    with pytest.raises(SystemExit) as info:  # through the command line: that line, exit code 2
        jobs_cli.main(["status", "sslsweep-1"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and err == f"sslsweep: error: {message}"


def test_address_order(no_ray_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert jobclient.resolve_address(None) == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_ADDRESS", "http://10.0.0.1:8265")
    assert jobclient.resolve_address(None) == "http://10.0.0.1:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://10.0.0.2:8265")
    assert jobclient.resolve_address(None) == "http://10.0.0.2:8265"
    assert jobclient.resolve_address("http://10.0.0.3:8265") == "http://10.0.0.3:8265"


class FakeClient:
    def __init__(self) -> None:
        self.submitted: dict[str, Any] = {}

    def submit_job(self, **kwargs: Any) -> str:
        self.submitted = kwargs
        return kwargs["submission_id"]


def test_submit_ships_the_project_without_data_and_runs_the_sweep(
        no_ray_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    """The entrypoint is the sweep with the overrides, quoted; the working directory is the project,
    with data, outputs, hidden directories and a storage directory inside it excluded. Checked on
    the package Ray builds: "/.*" matched the project root itself and shipped an empty package."""
    fake = FakeClient()
    monkeypatch.setattr(jobclient, "client", lambda address: fake)
    root = jobclient.project_dir()
    assert root is not None and (root / "sslsweep" / "cli" / "__init__.py").is_file()
    store = root / "runs" / "cluster"
    submit_cli.main(["--address", "http://127.0.0.1:1", "--", "method=[simclr,rotation]", f"storage={store}",
                      "name=a b"])
    out = capsys.readouterr()
    job_id = out.out.strip()
    assert job_id.startswith("sslsweep-") and fake.submitted["submission_id"] == job_id
    assert shlex.split(fake.submitted["entrypoint"]) == ["python", "-m", "sslsweep.cli", "sweep",
                                                          "method=[simclr,rotation]", f"storage={store}", "name=a b"]
    env = fake.submitted["runtime_env"]
    assert env["working_dir"] == str(root)
    for pattern in ("/data", "/runs", "/outputs", "*.parquet", "/runs/cluster"):
        assert pattern in env["excludes"], pattern
    shipped = _shipped(root, env["excludes"], tmp_path)
    assert "sslsweep/cli/__init__.py" in shipped and "pyproject.toml" in shipped and "sslsweep/conf/config.yaml" in shipped
    assert not [p for p in shipped if p.split("/")[0] in (".git", ".venv", ".gpu", "data", "runs")]
    assert sum((root / p).stat().st_size for p in shipped) < 20 * 2**20  # code, not data


def _shipped(root: Path, excludes: list[str], tmp: Path) -> list[str]:
    """The files Ray would upload: the package Ray itself builds from the project with these
    excludes (its create_package, as the job client calls it), listed from the zip."""
    import zipfile

    from ray._private.runtime_env.packaging import create_package

    create_package(str(root), tmp / "package.zip", include_gitignore=True, excludes=list(excludes))
    return [n for n in zipfile.ZipFile(tmp / "package.zip").namelist() if not n.endswith("/")]


@pytest.mark.parametrize("overrides, message", [
    (["storage=runs"], "storage = 'runs': a relative path on a cluster"),
    (["resume=runs/sweep-1"], "resume = 'runs/sweep-1': a relative path on a cluster"),
    (["storage=s3://b/r", "search.num_samples=0"], "search.num_samples = 0: must be >= 1"),
    (["storage=s3://b/r", "method=[nope]"], "method = 'nope': unknown method"),
])
def test_submit_checks_overrides_before_contacting_the_cluster(
        no_ray_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        overrides: list[str], message: str) -> None:
    monkeypatch.setattr(jobclient, "client", lambda address: pytest.fail("contacted the cluster"))
    with pytest.raises(SystemExit) as exc:
        submit_cli.main(["--", *overrides])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_submit_accepts_a_dataset_path_that_exists_only_on_the_cluster(
        no_ray_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeClient()
    monkeypatch.setattr(jobclient, "client", lambda address: fake)
    submit_cli.main(["--", "dataset=parquet", "dataset.path=/mnt/nfs/cifar10", "storage=s3://b/r"])
    err = capsys.readouterr().err
    assert "dataset.path = '/mnt/nfs/cifar10' does not exist here" in err and fake.submitted


def test_unreachable_cluster_is_one_line(no_ray_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    with pytest.raises(SystemExit) as exc:
        jobs_cli.main(["status", "x", "--address", f"http://127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "cannot reach the Ray dashboard" in err and len(err.strip().splitlines()) == 1


class _FakeJobClient:
    """The parts of Ray's JobSubmissionClient that ``_follow`` uses; its log stream ends early
    (as Ray's websocket can) or breaks, without the job's last lines."""

    def __init__(self, logs: str, streamed: list[str], breaks: bool = False) -> None:
        self.logs, self.streamed, self.breaks = logs, streamed, breaks

    async def tail_job_logs(self, job_id: str):  # noqa: ANN201
        for chunk in self.streamed:
            yield chunk
        if self.breaks:
            raise ConnectionResetError("websocket closed")

    def get_job_logs(self, job_id: str) -> str:
        return self.logs

    def get_job_status(self, job_id: str) -> str:
        return "SUCCEEDED"

    def get_job_info(self, job_id: str) -> Any:
        return type("Info", (), {"message": None})()


@pytest.mark.parametrize("breaks", [False, True])
def test_follow_prints_every_log_line_once_even_when_the_stream_ends_early(
        breaks: bool, capsys: pytest.CaptureFixture[str]) -> None:
    """--follow ends with the job's complete log, each line once: what the stream missed (the
    driver's last line, `sweep finished: ...`) is fetched when the job is done."""
    logs = "starting\nsearching\nsweep finished: /tmp/s\n"
    client = _FakeJobClient(logs, ["starting\n", "searching\n"], breaks=breaks)
    assert jobs_cli.follow(client, "job-1", "http://127.0.0.1:1") == 0
    out = capsys.readouterr()
    assert out.out == logs
    assert "job job-1: SUCCEEDED" in out.err


def test_a_connection_lost_after_connecting_is_one_line(no_ray_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The tunnel drops between connecting and the next call: requests' ConnectionError (not a
    built-in ConnectionError) becomes the same one-line error, exit 2, not a traceback."""
    import requests

    class Dropped:
        def get_job_info(self, job_id: str) -> Any:
            raise requests.exceptions.ConnectionError("Max retries exceeded with url: /api/jobs/x")

    monkeypatch.setattr(jobclient, "client", lambda address: Dropped())
    with pytest.raises(SystemExit) as info:
        jobs_cli.main(["status", "sslsweep-1", "--address", "http://127.0.0.1:1"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("sslsweep: error: cannot reach the Ray dashboard at http://127.0.0.1:1 (Max retries")
