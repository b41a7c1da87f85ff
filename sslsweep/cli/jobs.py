"""``sslsweep jobs status|logs|stop JOB_ID [--address URL] [--follow]``: look after a submitted sweep."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any, Sequence

from sslsweep.cli.common import fail
from sslsweep.search import jobclient
from sslsweep.search.jobclient import DEFAULT_ADDRESS, TERMINAL, ClusterError, first_line

EXIT_JOB_FAILED = 1
ADDRESS_HELP = f"the cluster's dashboard URL (default: RAY_API_SERVER_ADDRESS, RAY_ADDRESS or {DEFAULT_ADDRESS})"


def main(argv: Sequence[str]) -> None:
    p = argparse.ArgumentParser(prog="sslsweep jobs",
                                usage="sslsweep jobs status|logs|stop JOB_ID [--address URL] [--follow]",
                                description="Look after a sweep submitted as a Ray job.")
    p.add_argument("action", choices=("status", "logs", "stop"))
    p.add_argument("job_id")
    p.add_argument("--address", default=None, help=ADDRESS_HELP)
    p.add_argument("--follow", action="store_true", help="logs: keep streaming until the job ends")
    args = p.parse_args(list(argv))
    try:
        c = jobclient.client(args.address)
        url = jobclient.resolve_address(args.address)
        with jobclient.cluster_errors(url, jobclient.auth_token()):
            if args.action == "status":
                info = c.get_job_info(args.job_id)
                print(str(info.status))
                if info.message:
                    print(info.message, file=sys.stderr)
            elif args.action == "logs":
                if args.follow:
                    sys.exit(follow(c, args.job_id, url))
                print(c.get_job_logs(args.job_id), end="")
            else:
                stopped = c.stop_job(args.job_id)
                print(f"job {args.job_id}: " + ("stop requested" if stopped else
                                                f"not running ({c.get_job_status(args.job_id)})"))
    except ClusterError as exc:
        fail(str(exc))


def follow(c: Any, job_id: str, url: str) -> int:
    """Print the job's logs as they come, then its final status; 0 if it succeeded, else 1.
    Raises :class:`ClusterError` if the cluster is lost on the way."""
    with jobclient.cluster_errors(url, jobclient.auth_token()):
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
            print(f"(could not fetch the rest of the job's log: {first_line(exc)})", file=sys.stderr)
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
