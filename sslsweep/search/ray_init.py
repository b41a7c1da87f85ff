"""Connecting the driver to Ray: a local instance by default, a cluster when RAY_ADDRESS is set."""

from __future__ import annotations

import os

from sslsweep.config import SweepConfig


def init_ray(cfg: SweepConfig) -> None:
    """Connect to the cluster in RAY_ADDRESS (a Ray job), or start a local Ray in this process.

    Local Ray keeps its defaults: token authentication on, dashboard off (nothing listens beyond
    loopback)."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(include_dashboard=False, log_to_driver=True, configure_logging=False)
