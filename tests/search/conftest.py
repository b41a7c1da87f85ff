"""Fixtures of the cluster tests: a real three-node Ray cluster with token authentication on
loopback, a local S3-compatible server (moto), and helpers that run the CLI in subprocesses.

Nothing here touches this pytest process's Ray (the session's ``ray_local``): every Ray client of
the cluster runs in a subprocess, and no environment variable of this process is changed.

The cluster, shaped like ``cluster.yaml``: ``ray start --head`` with no CPU for trials, and two
worker raylets with 1 CPU each, all bound to loopback (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
keeps Ray from replacing 127.0.0.1 by the machine's address; the workers use 127.0.0.2 and
127.0.0.3, so each node has its own address and trials report the right node id). The two workers
are alike, so two trials scheduled at once start at about the same time on different nodes
(Tune's actor reuse would otherwise hand the second trial to the first node's actor if the second
node were much slower to start one). ``ray start`` refuses to join a worker to a loopback head, so
the workers are started the way ``ray.cluster_utils.Cluster`` does it (``ray._private.node.Node``).
Each node has its own ``--temp-dir``: two raylets sharing one unpack a job's working directory into
the same folder and delete it under a running driver. When ``unshare`` works (root on Linux), each
worker runs in its own mount namespace where ``node_local`` is a private tmpfs: a directory that
exists on every node with different contents, i.e. node-local storage.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest

VENV_BIN = str(Path(sys.executable).parent)
START_TIMEOUT_S = 150.0

WORKER_NODE = r"""
import signal, sys, time
import ray._private.node as rnode
from ray._private.parameter import RayParams

gcs, cpus, temp_dir, ip = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
params = RayParams(gcs_address=gcs, node_ip_address=ip, num_cpus=cpus, num_gpus=0, temp_dir=temp_dir,
                   include_log_monitor=False, node_manager_port=0, min_worker_port=0, max_worker_port=0,
                   object_store_memory=200 * 1024 * 1024)
params.dashboard_agent_listen_port = None  # a free one, not the head's
node = rnode.Node(params, head=False, shutdown_at_exit=False, spawn_reaper=False)

def stop(*_):
    node.kill_all_processes(check_alive=False, allow_graceful=True)
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
print("NODE", node.node_id, flush=True)
while True:
    time.sleep(3600)
"""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything pointing at a Ray cluster or token."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
                        "RAY_AUTH_MODE", "RAY_NODE_IP_ADDRESS")}
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")  # the job's `python` is this venv's
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.update(extra)
    return env


def sslsweep(args: Sequence[str], env: dict[str, str], timeout: float = 300.0,
             cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run ``sslsweep ARGS`` in a subprocess (its own session: killed with its children on timeout)."""
    p = subprocess.Popen([sys.executable, "-m", "sslsweep.cli", *args], env=env, cwd=cwd, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(p.pid)
        out, err = p.communicate()
        raise AssertionError(f"sslsweep {' '.join(args)} ran over {timeout} s\n{out[-3000:]}\n{err[-3000:]}")
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_marked(marker: str) -> list[int]:
    """SIGKILL every process whose command line names ``marker`` (a temp dir only our processes use)."""
    killed = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd and pid != os.getpid():
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except OSError:
                pass
    return killed


def stop_process(p: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM (ray start --block and the worker node helper then stop their raylets), then
    SIGKILL whatever is left in the process's session."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    kill_group(p.pid)
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _unshare_works() -> bool:
    if sys.platform != "linux" or shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    probe = tempfile.mkdtemp(prefix="sslns-")
    try:
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            f"mount -t tmpfs tmpfs {probe} && touch {probe}/x"], capture_output=True, timeout=10)
        return r.returncode == 0 and not os.path.exists(f"{probe}/x")
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        shutil.rmtree(probe, ignore_errors=True)


@dataclass
class RayCluster:
    """A running cluster: addresses, token, and what a client subprocess needs."""

    gcs_address: str
    dashboard_url: str
    token: str
    root: Path  # temp dirs, logs, shared scratch
    node_local: Path | None  # a path each worker node sees as its own private tmpfs (None: not possible here)
    processes: list[subprocess.Popen] = field(repr=False)
    worker_node_ids: set[str] = field(default_factory=set)

    def env(self, *, token: bool = True, **extra: str) -> dict[str, str]:
        """Environment of a client on this machine: the token in RAY_AUTH_TOKEN (or none at all,
        and a HOME without ~/.ray/auth_token)."""
        if token:
            return clean_env(**{"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", **extra})
        home = self.root / "home-without-token"
        home.mkdir(exist_ok=True)
        return clean_env(HOME=str(home), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", **extra)

    def driver_env(self, **extra: str) -> dict[str, str]:
        """Environment of a driver started by hand on the head node (not a job)."""
        return self.env(RAY_ADDRESS=self.gcs_address, **extra)

    def get(self, path: str) -> Any:
        req = urllib.request.Request(self.dashboard_url + path, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def alive_node_ids(self) -> set[str]:
        data = self.get("/api/v0/nodes?limit=100")
        return {n["node_id"] for n in data["data"]["result"]["result"] if n["state"] == "ALIVE"}


def _wait_for(what: str, ok, timeout: float, procs: Sequence[subprocess.Popen], logs: Sequence[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():
            return
        for p in procs:
            if p.poll() is not None:
                break
        else:
            time.sleep(0.5)
            continue
        break
    tails = "\n".join(f"--- {log}\n{log.read_text(errors='replace')[-3000:]}" for log in logs if log.exists())
    raise RuntimeError(f"the test cluster did not come up ({what})\n{tails}")


WORKER_IPS = ("127.0.0.2", "127.0.0.3")


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """``ray start --head`` (0 CPUs) + two 1-CPU worker raylets, token auth on, all on loopback."""
    root = Path(tempfile.mkdtemp(prefix="sslc-"))  # short: Ray's socket paths must stay < 108 bytes
    token = secrets.token_hex(32)
    gcs_port, dash_port = free_port(), free_port()
    env = clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    head_log = root / "head.log"
    head = subprocess.Popen(
        [f"{VENV_BIN}/ray", "start", "--head", "--block", f"--port={gcs_port}", "--num-cpus=0", "--num-gpus=0",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}",
         f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
         f"--temp-dir={root / 'h'}", "--disable-usage-stats"],
        env=env, stdout=head_log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    procs, logs = [head], [head_log]
    try:
        dashboard = f"http://127.0.0.1:{dash_port}"

        def dashboard_up() -> bool:
            try:
                req = urllib.request.Request(dashboard + "/api/version", headers={"Authorization": f"Bearer {token}"})
                with urllib.request.urlopen(req, timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        _wait_for("head", lambda: "Ray runtime started" in head_log.read_text(errors="replace") and dashboard_up(),
                  START_TIMEOUT_S, procs, logs)
        node_local = root / "node-local" if _unshare_works() else None
        if node_local is not None:
            node_local.mkdir()
        for i, ip in enumerate(WORKER_IPS):
            cmd = [sys.executable, "-c", WORKER_NODE, f"127.0.0.1:{gcs_port}", "1", str(root / f"w{i}"), ip]
            if node_local is not None:
                cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                       f'mount -t tmpfs tmpfs "{node_local}" && exec "$@"', "sh", *cmd]
            logs.append(root / f"worker{i}.log")
            procs.append(subprocess.Popen(cmd, env=env, stdout=logs[-1].open("w"), stderr=subprocess.STDOUT,
                                          start_new_session=True))
        cluster = RayCluster(gcs_address=f"127.0.0.1:{gcs_port}", dashboard_url=dashboard, token=token, root=root,
                             node_local=node_local, processes=procs)

        def worker_ids() -> set[str]:
            return {ln.split()[1] for log in logs[1:] for ln in log.read_text(errors="replace").splitlines()
                    if ln.startswith("NODE ")}

        def all_nodes() -> bool:
            try:
                return len(worker_ids()) == len(WORKER_IPS) and len(cluster.alive_node_ids()) == 1 + len(WORKER_IPS)
            except (OSError, KeyError, ValueError):
                return False

        _wait_for("worker nodes", all_nodes, START_TIMEOUT_S, procs, logs)
        cluster.worker_node_ids = worker_ids()
        yield cluster
    finally:
        for p in reversed(procs):
            stop_process(p)
        kill_marked(str(root))  # job drivers and workers that outlived their raylet, if any
        shutil.rmtree(root, ignore_errors=True)


# ----------------------------------------------------------------------------- S3


@dataclass
class S3Server:
    endpoint: str
    bucket: str

    def env(self) -> dict[str, str]:
        """What pyarrow (ours and Ray Tune's) needs to reach the server: AWS SDK variables."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true"}

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 (a free port), with one empty bucket."""
    pytest.importorskip("moto.server", reason="moto[server] is needed for the S3 tests (pip install 'moto[server]')")
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not one log line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = S3Server(endpoint=f"http://{host}:{port}", bucket="sslsweep-test")
        boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=s3.bucket)
        yield s3
    finally:
        server.stop()


@pytest.fixture()
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The S3 server's variables in this process too (for in-process pyarrow), undone after the test."""
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    return s3_server


# ----------------------------------------------------------------------------- one sweep on the cluster

# Two search trials at once and two confirm runs at once, 1 CPU each, on two 1-CPU worker nodes:
# each phase has both nodes at work. Everything else as small as a real sweep allows.
CLUSTER_SWEEP = ["experiment=smoke", "method=[rotation]", "search.num_samples=2", "search.max_concurrent=2",
                 "search.max_epochs=1", "search.grace_period=1", "dataset.max_images=200", "confirm.seeds=2",
                 "confirm.finetune_min_steps=2", "confirm.finetune_max_steps=2", "name=cluster"]


@dataclass
class SubmittedSweep:
    result: subprocess.CompletedProcess
    job_id: str
    storage: Path
    sweep_dir: Path | None


@pytest.fixture(scope="session")
def submitted_sweep(ray_cluster: RayCluster) -> SubmittedSweep:
    """``sslsweep submit --follow`` of a tiny sweep to the two-node cluster, with the token;
    storage is a local path that both nodes see (one machine), so the shared-storage check passes."""
    storage = ray_cluster.root / "shared"
    storage.mkdir()
    r = sslsweep(["submit", "--address", ray_cluster.dashboard_url, "--follow", "--",
                  *CLUSTER_SWEEP, f"storage={storage}"], ray_cluster.env(), timeout=420)
    job_id = r.stdout.splitlines()[0].strip() if r.stdout else ""
    dirs = sorted(storage.glob("cluster-*"))
    return SubmittedSweep(result=r, job_id=job_id, storage=storage, sweep_dir=dirs[0] if len(dirs) == 1 else None)
