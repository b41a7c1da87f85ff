"""Command line: ``sslsweep sweep|resume|report|submit|jobs``. Thin: one module per command.

Every bad value is reported on one line (key, value, rule) with exit code 2 before any data is
decoded or Ray is started (:mod:`sslsweep.cli.common`).
"""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

from sslsweep.cli.common import fail

# A command's module is imported when it runs: submit and jobs import Ray's job client (~0.5 s),
# report imports pandas and matplotlib; a bad sweep override must not wait for them.
COMMANDS = {name: f"sslsweep.cli.{name}" for name in ("sweep", "resume", "report", "submit", "jobs")}

USAGE = """usage: sslsweep <command> [...]

Fair hyperparameter search and comparison of self-supervised pretext tasks.

commands:
  sweep [OVERRIDES...]          run a sweep (Hydra app: `sslsweep sweep --help`, `--cfg job`)
  resume DIR                    continue an interrupted sweep (same as `sweep resume=DIR`)
  report DIR [DIR ...] [--out DIR]
                                (re)build report.md/report.html from one or more sweeps
  submit [--address URL] [--follow] -- [OVERRIDES...]
                                submit a sweep to a Ray cluster as a Ray job
  jobs status|logs|stop JOB_ID [--address URL]
                                look after a submitted job

examples:
  sslsweep sweep experiment=demo
  sslsweep sweep method=[simclr,rotation] dataset=parquet dataset.path=data/cifar10 \\
      encoder=resnet18 resources.gpu=0.25 search.num_samples=16
  sslsweep report runs/demo-20261128-101500-ab12
"""


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(USAGE, file=sys.stderr)
        fail(f"command = {command!r}: unknown command; known: {', '.join(COMMANDS)}")
    importlib.import_module(COMMANDS[command]).main(rest)
