"""Connecting the driver to Ray (a local instance by default, a cluster when RAY_ADDRESS is set),
and checking that a cluster's nodes can all reach the sweep's storage."""

from __future__ import annotations

import logging
import os
import secrets
from typing import Any, Mapping, Sequence

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from sslsweep.rules import ConfigError
from sslsweep.storage import Storage

log = logging.getLogger("sslsweep")

PROBE_TIMEOUT_S = 120.0  # a node that must first start a Python worker can take a while


def init_ray() -> None:
    """Connect to the cluster in RAY_ADDRESS (a Ray job, or a driver on a cluster node), or start
    a local Ray in this process.

    Local Ray keeps its defaults: token authentication on, dashboard off (nothing listens beyond
    loopback). A cluster with token authentication needs ``RAY_AUTH_MODE=token`` and the token in
    this process's environment; inside a Ray job both come from the cluster's nodes."""

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # "local": a new Ray, never one a `ray start` left running on this machine (ray.init()
        # without an address would join it, even a dead one)
        ray.init(address="local", include_dashboard=False, log_to_driver=True, configure_logging=False)


def unshared_nodes(nodes: Sequence[Mapping[str, Any]], seen: Sequence[bool]) -> list[str]:
    """The nodes (as ``ip (node id prefix)``) whose answer to the marker probe was no."""
    return [f"{n.get('NodeManagerAddress', '?')} ({str(n.get('NodeID', ''))[:12]})"
            for n, ok in zip(nodes, seen) if not ok]


def _alive_nodes() -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n.get("Alive")]


def check_storage_shared(st: Storage) -> None:
    """Refuse node-local storage on a multi-node cluster, before any trial starts.

    Trials write checkpoints and results to the sweep directory from whichever node runs them,
    so every node must see the same directory. A URI (s3://, gs://) is shared by construction. A
    local path is checked for real: a marker file written here by the driver must be visible
    from a task pinned to every alive node (an NFS mount passes, a head node's local disk does
    not). Raises :class:`ConfigError` naming the nodes that cannot see it."""
    if st.remote:
        return

    nodes = _alive_nodes()
    if len(nodes) <= 1:
        if os.environ.get("RAY_ADDRESS"):
            log.warning("storage %s is a local path on a Ray cluster: nodes that join later must see it "
                        "too (use an s3:// or gs:// URI, or a filesystem mounted on every node)", st.uri)
        return
    marker = f".sslsweep-shared-probe-{secrets.token_hex(6)}"
    st.write_bytes(marker, b"sslsweep")
    try:
        probe = ray.remote(num_cpus=0, max_retries=0)(_marker_visible)
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(st.path(marker)) for n in nodes]
        seen = ray.get(refs, timeout=PROBE_TIMEOUT_S)
    finally:
        st.fs.delete_file(st.path(marker))
    missing = unshared_nodes(nodes, seen)
    if missing:
        raise ConfigError(
            "storage", st.uri,
            f"a node-local path on a {len(nodes)}-node Ray cluster: {len(missing)} node(s) cannot see it "
            f"({', '.join(missing)}); give storage an s3:// or gs:// URI, or a path on a filesystem "
            f"mounted at the same place on every node (NFS)")


def _marker_visible(path: str) -> bool:
    return os.path.isfile(path)
