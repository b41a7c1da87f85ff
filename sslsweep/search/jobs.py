"""Running a sweep on a Ray cluster as a Ray job: ``sslsweep submit`` and ``sslsweep jobs``.

``sslsweep submit [--address URL] [--follow] -- <sweep overrides>`` ships the project (the
directory holding sslsweep's ``pyproject.toml``, without data, outputs, virtual environments or
git history) as the job's working directory, so the cluster runs exactly the code you submit,
and runs ``python -m sslsweep.cli sweep <overrides>`` there. The job's driver connects to the
cluster through ``RAY_ADDRESS``, which Ray sets for it.

Token authentication: the request carries ``Authorization: Bearer <token>`` with the token Ray
itself would use: ``RAY_AUTH_TOKEN``, else the file named by ``RAY_AUTH_TOKEN_PATH``, else
``~/.ray/auth_token`` (unless ``RAY_AUTH_MODE=disabled``). A cluster with token auth refuses a
request without it (401) or with another token (403); both end in a one-line error.

The address: ``--address``, else ``RAY_API_SERVER_ADDRESS``, else ``RAY_ADDRESS``, else
``http://127.0.0.1:8265`` (the dashboard port that ``ray dashboard cluster.yaml`` forwards).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import secrets
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
ADDRESS_ENV = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")

# gitignore-style patterns relative to the project: never shipped to the cluster.
WORKING_DIR_EXCLUDES = (
    # hidden top-level entries: .git, .venv, tool caches, scratch directories. Not "/.*": Ray
    # matches the project root itself as ".", and "/.*" would exclude everything (empty package)
    "/.?*",
    "/venv", "__pycache__", "*.egg-info", "/build", "/dist",
    "/data", "/runs", "/outputs", "/multirun", "/benchmarks/results",  # data and outputs
    "*.parquet", "*.npz", "*.pt", "*.pth", "*.ckpt",
)
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
EXIT_BAD_INPUT = 2
EXIT_JOB_FAILED = 1


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    print(f"sslsweep: error: {message}", file=sys.stderr)
    sys.exit(code)


# ----------------------------------------------------------------------------- auth and address


def auth_token() -> str | None:
    """The token Ray's own clients would send: ``RAY_AUTH_TOKEN``, else the file named by
    ``RAY_AUTH_TOKEN_PATH`` (which must be readable when set), else ``~/.ray/auth_token``; None if
    there is none or ``RAY_AUTH_MODE=disabled``."""
    if os.environ.get("RAY_AUTH_MODE", "").strip().lower() == "disabled":
        return None
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = named or str(Path.home() / ".ray" / "auth_token")
    try:
        return Path(path).expanduser().read_text().strip() or None
    except OSError as exc:
        if named:  # as for Ray's own clients, a file named explicitly must be readable
            _fail(f"RAY_AUTH_TOKEN_PATH = {named!r}: cannot read the token there ({exc.strerror or exc})")
        return None


def resolve_address(address: str | None) -> str:
    if address:
        return address
    for name in ADDRESS_ENV:
        if os.environ.get(name):
            return os.environ[name]
    return DEFAULT_ADDRESS


@contextlib.contextmanager
def _without_address_env() -> Iterator[None]:
    """Ray's client lets RAY_ADDRESS override an explicit address; ours must not."""
    saved = {k: os.environ.pop(k) for k in ADDRESS_ENV if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def client(address: str | None) -> Any:
    """A JobSubmissionClient for ``address`` (see :func:`resolve_address`) that sends the token."""
    from ray.job_submission import JobSubmissionClient

    url = resolve_address(address)
    token = auth_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    with _without_address_env(), _cluster_errors(url, token):
        return JobSubmissionClient(url, headers=headers)


@contextlib.contextmanager
def _cluster_errors(url: str, token: str | None) -> Iterator[None]:
    """Turn the Jobs SDK's failures into one-line errors."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as exc:
        if token is None:
            _fail(f"the Ray cluster at {url} requires a token and none was found here: set RAY_AUTH_TOKEN, "
                  "or put it in ~/.ray/auth_token (or the file in RAY_AUTH_TOKEN_PATH); on the head node "
                  "`ray get-auth-token` prints it")
        _fail(f"the Ray cluster at {url} refused the token ({_first_line(exc)}); use the cluster's token "
              "(`ray get-auth-token` on the head node)")
    except (ConnectionError, requests.exceptions.ConnectionError) as exc:
        # the client's first contact raises the built-in ConnectionError; later calls go through
        # requests, whose ConnectionError is not one (a dropped tunnel mid --follow, jobs status)
        _fail(f"cannot reach the Ray dashboard at {url} ({_first_line(exc)}); is the cluster up and, for "
              "`ray up cluster.yaml`, the tunnel open (`ray dashboard cluster.yaml`)?")
    except RuntimeError as exc:  # the job server answered with an error (unknown job id, ...)
        _fail(_first_line(exc))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# ----------------------------------------------------------------------------- what is shipped


def project_dir() -> Path | None:
    """The source tree sslsweep runs from, if it is one (holds pyproject.toml), else None."""
    import sslsweep

    root = Path(sslsweep.__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def runtime_env(overrides: Sequence[str]) -> dict[str, Any]:
    """The job's runtime environment: the project as working directory (the cluster runs the code
    being submitted), or the installed package as a py_module when not run from a source tree."""
    import sslsweep

    excludes = list(WORKING_DIR_EXCLUDES)
    root = project_dir()
    storage = _override(overrides, "storage")
    if root is not None and storage and "://" not in storage and Path(storage).is_absolute():
        with contextlib.suppress(ValueError):  # a storage directory inside the project: not shipped
            excludes.append("/" + Path(storage).resolve().relative_to(root).as_posix())
    env: dict[str, Any] = {"excludes": excludes}
    if root is not None:
        env["working_dir"] = str(root)
    else:
        env["py_modules"] = [str(Path(sslsweep.__file__).resolve().parent)]
    return env


def _override(overrides: Sequence[str], key: str) -> str | None:
    value = None
    for o in overrides:
        k, sep, v = o.partition("=")
        if sep and k.lstrip("+~") == key:
            value = v
    return value


def check_overrides(overrides: list[str]) -> list[str]:
    """Validate the overrides here, before anything is uploaded: unknown groups and bad values
    fail with the same one-line errors as ``sslsweep sweep``. Paths are the cluster's: a
    dataset path missing here is only reported as a note."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from sslsweep.cli import CONF_DIR, check_group_overrides, hydra_error
    from sslsweep.config import ConfigError, from_dictconfig

    overrides = check_group_overrides(overrides)
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="sslsweep"):
            cfg = compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        _fail(hydra_error(exc))
    try:
        from_dictconfig(cfg)
    except ConfigError as exc:
        if exc.key in ("dataset.path", "dataset.test_path") and "does not exist" in exc.rule:
            print(f"sslsweep: note: {exc.key} = {exc.value!r} does not exist here; it must exist on the "
                  "cluster's head node (or give an s3:// / gs:// URI)", file=sys.stderr)
        else:
            _fail(str(exc))
    key = "resume" if cfg.get("resume") else "storage"  # a resumed sweep stays where it is
    storage = str(cfg.get(key) or "runs")
    if "://" not in storage and not Path(storage).is_absolute():
        _fail(f"{key} = {storage!r}: a relative path on a cluster lands in the job's temporary working "
              "directory; give an s3:// or gs:// URI (or an absolute path on a filesystem every node mounts)")
    return overrides


# ----------------------------------------------------------------------------- commands


def submit_main(argv: Sequence[str]) -> None:
    """``sslsweep submit [--address URL] [--follow] -- [OVERRIDES...]``: prints the job id."""
    argv = list(argv)
    opts, overrides = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(
        prog="sslsweep submit",
        usage="sslsweep submit [--address URL] [--follow] [--submission-id ID] -- [OVERRIDES...]",
        description="Submit a sweep to a Ray cluster as a Ray job (overrides as for `sslsweep sweep`).",
        epilog="example: sslsweep submit --follow -- method=[simclr,rotation] storage=s3://bucket/sweeps")
    p.add_argument("--address", default=None,
                   help=f"the cluster's dashboard URL (default: RAY_API_SERVER_ADDRESS, RAY_ADDRESS or {DEFAULT_ADDRESS})")
    p.add_argument("--follow", action="store_true", help="stream the job's logs until it ends; exit 1 unless it succeeded")
    p.add_argument("--submission-id", default=None, help="the job id to use (default: sslsweep-<time>-<random>)")
    p.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args(opts)
    overrides = check_overrides([*args.overrides, *overrides])

    from sslsweep import __version__

    c = client(args.address)
    url = resolve_address(args.address)
    job_id = args.submission_id or f"sslsweep-{dt.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    entrypoint = shlex.join(["python", "-m", "sslsweep.cli", "sweep", *overrides])
    with _cluster_errors(url, auth_token()):
        job_id = c.submit_job(entrypoint=entrypoint, submission_id=job_id, runtime_env=runtime_env(overrides),
                              metadata={"sslsweep_version": __version__, "overrides": shlex.join(overrides)})
    print(job_id, flush=True)
    where = f" --address {args.address}" if args.address else ""
    if not args.follow:
        print(f"follow it: sslsweep jobs logs {job_id}{where} --follow; stop it: sslsweep jobs stop {job_id}{where}",
              file=sys.stderr)
        return
    sys.exit(_follow(c, job_id, url))


def _follow(c: Any, job_id: str, url: str) -> int:
    """Print the job's logs as they come, then its final status; 0 if it succeeded, else 1."""
    with _cluster_errors(url, auth_token()):
        shown = [0]
        try:
            try:
                asyncio.run(_tail(c, job_id, shown))
            except Exception:  # the log stream broke (websocket closed, proxy in the way): poll instead
                _poll_logs(c, job_id, shown)
        except KeyboardInterrupt:
            print(f"\nstopped following; the job keeps running (sslsweep jobs stop {job_id} stops it)",
                  file=sys.stderr)
            return 130
        status = _wait_terminal(c, job_id)
        # the log stream can end before the job's last lines arrive: print whatever it missed
        # (best effort: the job's status below matters more than its last lines)
        try:
            print(c.get_job_logs(job_id)[shown[0]:], end="", flush=True)
        except Exception as exc:  # noqa: BLE001 - e.g. the node holding the log is gone
            print(f"(could not fetch the rest of the job's log: {_first_line(exc)})", file=sys.stderr)
        info = c.get_job_info(job_id)
    print(f"job {job_id}: {status}" + (f" ({info.message})" if info.message and status != "SUCCEEDED" else ""),
          file=sys.stderr)
    return 0 if status == "SUCCEEDED" else EXIT_JOB_FAILED


async def _tail(c: Any, job_id: str, shown: list[int]) -> None:
    async for lines in c.tail_job_logs(job_id):
        print(lines, end="", flush=True)
        shown[0] += len(lines)


def _poll_logs(c: Any, job_id: str, shown: list[int], period_s: float = 2.0) -> None:
    """Print the job's logs every ``period_s`` until it ends; ``shown[0]``: characters already printed."""
    while True:
        done = str(c.get_job_status(job_id)) in TERMINAL
        logs = c.get_job_logs(job_id)
        print(logs[shown[0]:], end="", flush=True)
        shown[0] = len(logs)
        if done:
            return
        time.sleep(period_s)


def _wait_terminal(c: Any, job_id: str, timeout_s: float = 60.0) -> str:
    """The job's status once terminal (the log stream can close a moment before it is)."""
    deadline = time.monotonic() + timeout_s
    status = str(c.get_job_status(job_id))
    while status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.5)
        status = str(c.get_job_status(job_id))
    return status


def jobs_main(argv: Sequence[str]) -> None:
    """``sslsweep jobs status|logs|stop JOB_ID [--address URL]``."""
    p = argparse.ArgumentParser(prog="sslsweep jobs", usage="sslsweep jobs status|logs|stop JOB_ID [--address URL] [--follow]",
                                description="Look after a sweep submitted as a Ray job.")
    p.add_argument("action", choices=("status", "logs", "stop"))
    p.add_argument("job_id")
    p.add_argument("--address", default=None,
                   help=f"the cluster's dashboard URL (default: RAY_API_SERVER_ADDRESS, RAY_ADDRESS or {DEFAULT_ADDRESS})")
    p.add_argument("--follow", action="store_true", help="logs: keep streaming until the job ends")
    args = p.parse_args(list(argv))
    c = client(args.address)
    url = resolve_address(args.address)
    with _cluster_errors(url, auth_token()):
        if args.action == "status":
            info = c.get_job_info(args.job_id)
            print(str(info.status))
            if info.message:
                print(info.message, file=sys.stderr)
        elif args.action == "logs":
            if args.follow:
                sys.exit(_follow(c, args.job_id, url))
            print(c.get_job_logs(args.job_id), end="")
        else:
            stopped = c.stop_job(args.job_id)
            print(f"job {args.job_id}: " + ("stop requested" if stopped else
                                            f"not running ({c.get_job_status(args.job_id)})"))
