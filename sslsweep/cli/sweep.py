"""``sslsweep sweep [OVERRIDES...]``: a Hydra application (``--help``, ``--cfg job``, ``-m``)."""

from __future__ import annotations

import sys
from typing import Sequence

import hydra
from omegaconf import DictConfig, OmegaConf

from sslsweep.cli.common import check_group_overrides, compose, fail, run
from sslsweep.config import ConfigError, from_dictconfig
from sslsweep.pipeline import run_sweep


def main(argv: Sequence[str]) -> None:
    overrides = check_group_overrides(argv)
    if not any(o.startswith("-") for o in overrides):  # Hydra's flags (--help, --cfg, -m): Hydra handles them
        compose(overrides)
    sys.argv = [sys.argv[0], *overrides]
    _app()


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    raw = OmegaConf.to_container(cfg, resolve=True)
    try:
        sweep_cfg = from_dictconfig(cfg)
    except ConfigError as exc:
        fail(str(exc))
    run(lambda: run_sweep(sweep_cfg, raw))
