"""The Ray job client behind ``sslsweep submit`` and ``sslsweep jobs``: the address, the token and
what is shipped. No argument parsing or printing here (that is :mod:`sslsweep.cli`).

The job's working directory is the project (the directory holding sslsweep's ``pyproject.toml``,
without data, outputs, virtual environments or git history), so the cluster runs exactly the
code being submitted; the job's driver connects to the cluster through ``RAY_ADDRESS``, which Ray
sets for it.

Token authentication: requests carry ``Authorization: Bearer <token>`` with the token Ray itself
would use: ``RAY_AUTH_TOKEN``, else the file named by ``RAY_AUTH_TOKEN_PATH``, else
``~/.ray/auth_token`` (unless ``RAY_AUTH_MODE=disabled``). A cluster with token auth refuses a
request without it (401) or with another token (403); both become a :class:`ClusterError`.

The address: the one given, else ``RAY_API_SERVER_ADDRESS``, else ``RAY_ADDRESS``, else
``http://127.0.0.1:8265`` (the dashboard port that ``ray dashboard cluster.yaml`` forwards).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import requests

import sslsweep
from sslsweep.storage import scheme

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

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


class ClusterError(Exception):
    """The cluster cannot be used as asked (unreachable, token refused, unknown job): one line."""


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
            raise ClusterError(f"RAY_AUTH_TOKEN_PATH = {named!r}: cannot read the token there "
                               f"({exc.strerror or exc})") from None
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


def client(address: str | None) -> JobSubmissionClient:
    """A JobSubmissionClient for ``address`` (see :func:`resolve_address`) that sends the token."""
    # Ray is imported here, not at the top: importing it takes ~0.6 s, and a bad
    # `sslsweep submit` override must fail on one line before that (tests/test_cli.py)
    from ray.job_submission import JobSubmissionClient

    url = resolve_address(address)
    token = auth_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    with _without_address_env(), cluster_errors(url, token):
        return JobSubmissionClient(url, headers=headers)


@contextlib.contextmanager
def cluster_errors(url: str, token: str | None) -> Iterator[None]:
    """Turn the Jobs SDK's failures into one-line :class:`ClusterError` s."""
    from ray.exceptions import AuthenticationError  # deferred as in client(), which runs first

    try:
        yield
    except AuthenticationError as exc:
        if token is None:
            raise ClusterError(f"the Ray cluster at {url} requires a token and none was found here: set "
                               "RAY_AUTH_TOKEN, or put it in ~/.ray/auth_token (or the file in RAY_AUTH_TOKEN_PATH); "
                               "on the head node `ray get-auth-token` prints it") from None
        raise ClusterError(f"the Ray cluster at {url} refused the token ({first_line(exc)}); use the cluster's "
                           "token (`ray get-auth-token` on the head node)") from None
    except (ConnectionError, requests.exceptions.ConnectionError) as exc:
        # the client's first contact raises the built-in ConnectionError; later calls go through
        # requests, whose ConnectionError is not one (a dropped tunnel mid --follow, jobs status)
        raise ClusterError(f"cannot reach the Ray dashboard at {url} ({first_line(exc)}); is the cluster up and, "
                           "for `ray up cluster.yaml`, the tunnel open (`ray dashboard cluster.yaml`)?") from None
    except RuntimeError as exc:  # the job server answered with an error (unknown job id, ...)
        raise ClusterError(first_line(exc)) from None


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# ----------------------------------------------------------------------------- what is shipped


def project_dir() -> Path | None:
    """The source tree sslsweep runs from, if it is one (holds pyproject.toml), else None."""
    root = Path(sslsweep.__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def runtime_env(overrides: Sequence[str]) -> dict[str, Any]:
    """The job's runtime environment: the project as working directory (the cluster runs the code
    being submitted), or the installed package as a py_module when not run from a source tree."""
    excludes = list(WORKING_DIR_EXCLUDES)
    root = project_dir()
    storage = override(overrides, "storage")
    if root is not None and storage and not scheme(storage) and Path(storage).is_absolute():
        with contextlib.suppress(ValueError):  # a storage directory inside the project: not shipped
            excludes.append("/" + Path(storage).resolve().relative_to(root).as_posix())
    env: dict[str, Any] = {"excludes": excludes}
    if root is not None:
        env["working_dir"] = str(root)
    else:
        env["py_modules"] = [str(Path(sslsweep.__file__).resolve().parent)]
    return env


def override(overrides: Sequence[str], key: str) -> str | None:
    """The value the last ``key=...`` of ``overrides`` gives, or None."""
    value = None
    for o in overrides:
        k, sep, v = o.partition("=")
        if sep and k.lstrip("+~") == key:
            value = v
    return value
