"""``sslsweep submit [--address URL] [--follow] -- <sweep overrides>``: run a sweep as a Ray job.

The overrides are validated here, as ``sslsweep sweep`` would, before anything is uploaded; the
job runs ``python -m sslsweep.cli sweep <overrides>`` on the cluster (see :mod:`sslsweep.search.jobclient`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import secrets
import shlex
import sys
from pathlib import Path
from typing import Sequence

from sslsweep import __version__
from sslsweep.cli.common import check_group_overrides, compose, fail
from sslsweep.cli.jobs import ADDRESS_HELP, follow
from sslsweep.config import ConfigError, from_dictconfig
from sslsweep.search import jobclient
from sslsweep.search.jobclient import ClusterError
from sslsweep.storage import scheme


def main(argv: Sequence[str]) -> None:
    """Prints the job id; with ``--follow``, streams its logs and exits 1 unless it succeeded."""
    argv = list(argv)
    opts, overrides = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(
        prog="sslsweep submit",
        usage="sslsweep submit [--address URL] [--follow] [--submission-id ID] -- [OVERRIDES...]",
        description="Submit a sweep to a Ray cluster as a Ray job (overrides as for `sslsweep sweep`).",
        epilog="example: sslsweep submit --follow -- method=[simclr,rotation] storage=s3://bucket/sweeps")
    p.add_argument("--address", default=None, help=ADDRESS_HELP)
    p.add_argument("--follow", action="store_true", help="stream the job's logs until it ends; exit 1 unless it succeeded")
    p.add_argument("--submission-id", default=None, help="the job id to use (default: sslsweep-<time>-<random>)")
    p.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args(opts)
    overrides = check_overrides([*args.overrides, *overrides])
    try:
        job_id = _submit(args.address, overrides, args.submission_id)
        print(job_id, flush=True)
        where = f" --address {args.address}" if args.address else ""
        if not args.follow:
            print(f"follow it: sslsweep jobs logs {job_id}{where} --follow; stop it: sslsweep jobs stop {job_id}{where}",
                  file=sys.stderr)
            return
        code = follow(jobclient.client(args.address), job_id, jobclient.resolve_address(args.address))
    except ClusterError as exc:
        fail(str(exc))
    sys.exit(code)


def _submit(address: str | None, overrides: list[str], submission_id: str | None) -> str:
    c = jobclient.client(address)
    job_id = submission_id or f"sslsweep-{dt.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    entrypoint = shlex.join(["python", "-m", "sslsweep.cli", "sweep", *overrides])
    with jobclient.cluster_errors(jobclient.resolve_address(address), jobclient.auth_token()):
        return c.submit_job(entrypoint=entrypoint, submission_id=job_id, runtime_env=jobclient.runtime_env(overrides),
                            metadata={"sslsweep_version": __version__, "overrides": shlex.join(overrides)})


def check_overrides(overrides: list[str]) -> list[str]:
    """Validate the overrides here, before anything is uploaded: unknown groups and bad values
    fail with the same one-line errors as ``sslsweep sweep``. Paths are the cluster's: a
    dataset path missing here is only reported as a note."""
    overrides = check_group_overrides(overrides)
    cfg = compose(overrides)
    try:
        from_dictconfig(cfg)
    except ConfigError as exc:
        if exc.key in ("dataset.path", "dataset.test_path") and "does not exist" in exc.rule:
            print(f"sslsweep: note: {exc.key} = {exc.value!r} does not exist here; it must exist on the "
                  "cluster's head node (or give an s3:// / gs:// URI)", file=sys.stderr)
        else:
            fail(str(exc))
    key = "resume" if cfg.get("resume") else "storage"  # a resumed sweep stays where it is
    storage = str(cfg.get(key) or "runs")
    if not scheme(storage) and not Path(storage).is_absolute():
        fail(f"{key} = {storage!r}: a relative path on a cluster lands in the job's temporary working "
             "directory; give an s3:// or gs:// URI (or an absolute path on a filesystem every node mounts)")
    return overrides
