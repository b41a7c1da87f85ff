"""``sslsweep resume DIR``: continue an interrupted sweep (same as ``sslsweep sweep resume=DIR``)."""

from __future__ import annotations

import argparse
from typing import Sequence

from sslsweep.cli.common import run
from sslsweep.pipeline import resume_sweep


def main(argv: Sequence[str]) -> None:
    p = argparse.ArgumentParser(prog="sslsweep resume", description="Continue an interrupted sweep.")
    p.add_argument("dir", help="the sweep directory or URI")
    args = p.parse_args(list(argv))
    run(lambda: resume_sweep(args.dir))
