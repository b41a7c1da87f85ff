"""Command line: ``sslsweep sweep|resume|report|submit|jobs``. Thin: parsing here, work elsewhere.

``sslsweep sweep`` is a Hydra application (``--help``, ``--cfg job``, ``-m``/overrides as Hydra
users expect). Every bad value is reported on one line (key, value, rule) with exit code 2 before
any data is decoded or Ray is started.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

# the same folder as sslsweep.config.CONF_DIR, named here so that starting the CLI imports no config
# code (a bad group option fails in 0.06 s instead of 0.25 s)
CONF_DIR = Path(__file__).resolve().parent / "conf"
GROUPS = ("dataset", "encoder", "method", "search", "experiment")
EXIT_BAD_INPUT = 2

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


def fail(message: str) -> "None":
    """Print a one-line error and exit with the bad-input code."""
    print(f"sslsweep: error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def check_group_overrides(overrides: Sequence[str]) -> list[str]:
    """Reject unknown config-group options (``method=[foo]``) with a one-line error, and accept
    ``methods=`` as an alias of Hydra's ``method=`` group selection."""
    out = []
    for o in overrides:
        key, sep, value = o.partition("=")
        bare = key.lstrip("+~")
        if sep and bare == "methods":
            key, bare = key.replace("methods", "method"), "method"
        if sep and bare in GROUPS:
            names = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
            known = _options(bare)
            for n in names:
                if n not in known and n != "null":
                    fail(f"{bare} = {n!r}: unknown {bare}; known: {', '.join(known)}")
        out.append(f"{key}{sep}{value}")
    return out


def _sweep_main(overrides: list[str]) -> None:
    import hydra
    from omegaconf import DictConfig, OmegaConf

    @hydra.main(config_path="conf", config_name="config", version_base="1.3")
    def app(cfg: DictConfig) -> None:
        from sslsweep.config import ConfigError, from_dictconfig

        raw = OmegaConf.to_container(cfg, resolve=True)
        try:
            sweep_cfg = from_dictconfig(cfg)
            from sslsweep.trainables.data import check_data

            if sweep_cfg.resume is None:
                check_data(sweep_cfg)
        except ConfigError as exc:
            fail(str(exc))
        from sslsweep.search.sweep import run_sweep

        run(lambda: run_sweep(sweep_cfg, raw))

    _check_composes(overrides)
    sys.argv = [sys.argv[0], *overrides]
    app()


def _check_composes(overrides: list[str]) -> None:
    """A malformed override (``search.num_sample=3`` without ``+``, an unresolvable ``${...}``) as
    one line: Hydra's own error is several lines and exits 1. Skipped when Hydra's flags are given
    (``--help``, ``--cfg``, ``-m``): Hydra handles those itself."""
    if any(o.startswith("-") for o in overrides):
        return
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="sslsweep"):
            cfg = compose(config_name="config", overrides=[o for o in overrides if not o.startswith("hydra.")])
            OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as exc:
        fail(hydra_error(exc))


def hydra_error(exc: BaseException) -> str:
    """Hydra's or OmegaConf's several-line error as one line (its hint and key kept, links dropped)."""
    lines = [line.strip() for line in str(exc).strip().splitlines()]
    kept = [line.rstrip(".") for line in lines if line and not line.startswith(("See https://", "object_type="))]
    return "; ".join(kept) or type(exc).__name__


def run(start: Callable[[], str]) -> None:
    """Run a sweep (``start`` returns its URI), turning bad input found on the way into one line."""
    from sslsweep.config import ConfigError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        uri = start()
    except ConfigError as exc:
        fail(str(exc))
    except ValueError as exc:  # bad data found while decoding (names the row/file)
        from ray.exceptions import RayError

        if isinstance(exc, RayError):  # RayTaskError(ValueError): a crash on a worker, shown in full
            raise
        fail(str(exc).splitlines()[0])
    print(f"sweep finished: {uri}")
    print(f"report: {uri}/report.html  ({uri}/report.md)")


def _report_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="sslsweep report", description="Build report.md and report.html from sweeps.")
    p.add_argument("dirs", nargs="+", help="sweep directories or URIs (s3://...); several are combined")
    p.add_argument("--out", default=None, help="where to write the report (default: the first sweep)")
    args = p.parse_args(argv)
    from sslsweep.analysis.report import build_report

    try:
        paths = build_report(args.dirs, args.out)
    except ValueError as exc:
        fail(str(exc).splitlines()[0])
    for name, path in paths.items():
        print(f"{name}: {path}")


def _resume_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="sslsweep resume", description="Continue an interrupted sweep.")
    p.add_argument("dir", help="the sweep directory or URI")
    args = p.parse_args(argv)
    from sslsweep.search.sweep import resume_sweep

    run(lambda: resume_sweep(args.dir))


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command == "sweep":
        _sweep_main(check_group_overrides(rest))
    elif command == "resume":
        _resume_main(rest)
    elif command == "report":
        _report_main(rest)
    elif command in ("submit", "jobs"):
        from sslsweep.search import jobs

        (jobs.submit_main if command == "submit" else jobs.jobs_main)(rest)
    else:
        print(USAGE, file=sys.stderr)
        fail(f"command = {command!r}: unknown command; known: sweep, resume, report, submit, jobs")


if __name__ == "__main__":
    main()
