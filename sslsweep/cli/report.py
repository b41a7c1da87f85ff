"""``sslsweep report DIR [DIR ...] [--out DIR]``: (re)build report.md and report.html."""

from __future__ import annotations

import argparse
from typing import Sequence

from sslsweep.analysis.report import build_report
from sslsweep.cli.common import fail


def main(argv: Sequence[str]) -> None:
    p = argparse.ArgumentParser(prog="sslsweep report", description="Build report.md and report.html from sweeps.")
    p.add_argument("dirs", nargs="+", help="sweep directories or URIs (s3://...); several are combined")
    p.add_argument("--out", default=None, help="where to write the report (default: the first sweep)")
    args = p.parse_args(list(argv))
    try:
        paths = build_report(args.dirs, args.out)
    except ValueError as exc:
        fail(str(exc).splitlines()[0])
    for name, path in paths.items():
        print(f"{name}: {path}")
