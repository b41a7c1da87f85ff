"""What every command shares: the one-line error, composing the config, running a sweep."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sslsweep.rules import ConfigError
from sslsweep.schema import REPORT_HTML, REPORT_MD

# the folder of sslsweep.config.CONF_DIR, named here so that `--help` and the group check import no config code
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("dataset", "encoder", "method", "search", "experiment")
EXIT_BAD_INPUT = 2


def fail(message: str) -> NoReturn:
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


def hydra_error(exc: BaseException) -> str:
    """Hydra's or OmegaConf's several-line error as one line (its hint and key kept, links dropped)."""
    lines = [line.strip() for line in str(exc).strip().splitlines()]
    kept = [line.rstrip(".") for line in lines if line and not line.startswith(("See https://", "object_type="))]
    return "; ".join(kept) or type(exc).__name__


def compose(overrides: Sequence[str]) -> DictConfig:
    """The composed and resolved config for ``overrides``; a malformed override (``search.num_sample=3``
    without ``+``, an unresolvable ``${...}``) fails as one line (Hydra's own error is several
    lines and exits 1). ``hydra.*`` overrides configure the Hydra app, not the sweep: skipped."""
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="sslsweep"):
            cfg = hydra_compose(config_name="config", overrides=[o for o in overrides if not o.startswith("hydra.")])
        OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as exc:
        fail(hydra_error(exc))
    return cfg


def run(start: Callable[[], str]) -> None:
    """Run a sweep (``start`` returns its URI), turning bad input found on the way into one line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        uri = start()
    except ConfigError as exc:
        fail(str(exc))
    except ValueError as exc:  # bad data found while decoding (names the row/file)
        from ray.exceptions import RayError  # imported only here: Ray costs ~0.5 s of start-up

        if isinstance(exc, RayError):  # RayTaskError(ValueError): a crash on a worker, shown in full
            raise
        fail(str(exc).splitlines()[0])
    print(f"sweep finished: {uri}")
    print(f"report: {uri}/{REPORT_HTML}  ({uri}/{REPORT_MD})")
