"""The stages of one sweep, in order: validate -> check the data -> prepare it -> search -> confirm
-> Parquet -> report.

The configuration arrives validated (:func:`sslsweep.config.from_dictconfig`); here the data's
facts are checked against it from labels and file listings, before any image is decoded or Ray
starts; then :class:`sslsweep.search.sweep.Sweep` runs (or continues) the remaining stages.
"""

from __future__ import annotations

import time
from typing import Any

from sslsweep.config import SweepConfig, from_dictconfig, upgrade
from sslsweep.data import read_facts
from sslsweep.schema import MANIFEST
from sslsweep.storage import open_sweep_dir
from sslsweep.validate import validate_against_data


def run_sweep(cfg: SweepConfig, raw: dict[str, Any]) -> str:
    """Run a new sweep (or continue ``cfg.resume``); returns the sweep's URI."""
    if cfg.resume:
        return resume_sweep(cfg.resume)
    started = time.time()  # the zero of the sweep's start-up times (manifest "startup")
    validate_against_data(cfg, read_facts(cfg.dataset))
    from sslsweep.search.sweep import Sweep  # Ray, torch and pandas take ~2.5 s: bad data fails before

    return Sweep.create(cfg, raw, started=started).run()


def resume_sweep(uri: str) -> str:
    """Continue the interrupted sweep at ``uri`` with the configuration it was started with."""
    started = time.time()
    st = open_sweep_dir(uri)
    manifest = st.read_json(MANIFEST)
    cfg = from_dictconfig(upgrade(manifest["config"]))  # a sweep started by an older sslsweep
    validate_against_data(cfg, read_facts(cfg.dataset))
    from sslsweep.search.sweep import Sweep  # Ray, torch and pandas take ~2.5 s: bad data fails before

    return Sweep(cfg, manifest["config"], st, manifest, started=started).run()
