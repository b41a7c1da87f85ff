"""A sweep on a real multi-node Ray cluster (two raylets on loopback, token auth on): its trials
run on both nodes and every result lands in the shared storage; node-local storage is refused
before any trial starts."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from sslsweep.search.ray_init import unshared_nodes

from tests.search.conftest import RayCluster, SubmittedSweep, sslsweep


def _fail_text(s: SubmittedSweep) -> str:
    return f"rc={s.result.returncode}\nstdout tail:\n{s.result.stdout[-4000:]}\nstderr tail:\n{s.result.stderr[-3000:]}"


@pytest.mark.slow
def test_sweep_trials_run_on_several_nodes(submitted_sweep: SubmittedSweep, ray_cluster: RayCluster) -> None:
    """Trials are spread over both worker nodes (the node id each result records: trials.parquet
    for the search, Tune's result.json for the confirm runs), and the sweep directory in shared
    storage is complete: tables, manifest, Optuna journal, Tune experiments with checkpoints, report."""
    s = submitted_sweep
    assert s.result.returncode == 0 and s.sweep_dir is not None, _fail_text(s)
    assert len(ray_cluster.alive_node_ids()) == 3 and len(ray_cluster.worker_node_ids) == 2
    trials = pd.read_parquet(s.sweep_dir / "trials.parquet")
    assert set(trials["status"]) == {"completed"} and trials["trial_id"].nunique() == 2
    recorded = set(trials["node_id"].dropna())
    for f in (s.sweep_dir / "tune" / "confirm-rotation").glob("*/result.json"):
        recorded |= {json.loads(line)["node_id"] for line in f.read_text().splitlines() if line.strip()}
    assert recorded == ray_cluster.worker_node_ids, \
        f"results recorded nodes {recorded}; the worker nodes are {ray_cluster.worker_node_ids}"

    budget = pd.read_parquet(s.sweep_dir / "budget.parquet")
    # 2 seeds x 2 label budgets (smoke: 10%, 100%) x 2 protocols (linear, finetune)
    assert len(budget) == 8 and budget["test_acc"].notna().all()
    manifest = json.loads((s.sweep_dir / "manifest.json").read_text())
    assert manifest["finished"] and manifest["progress"] == {"searched": ["rotation"], "confirmed": True,
                                                             "confirmed_methods": ["rotation"], "reported": True}
    for f in ("report.md", "report.html", "optuna/rotation.journal"):
        assert (s.sweep_dir / f).is_file(), f
    for experiment in ("search-rotation", "confirm-rotation"):
        trial_dirs = [d for d in (s.sweep_dir / "tune" / experiment).iterdir() if d.is_dir()]
        assert len(trial_dirs) == 2, experiment
        # every trial wrote its checkpoint into the shared directory, whichever node ran it
        assert all(any(d.glob("checkpoint_*")) for d in trial_dirs), experiment


@pytest.mark.slow
def test_node_local_storage_is_refused_on_a_multi_node_cluster(ray_cluster: RayCluster) -> None:
    """A driver on the head node given a directory that each worker node sees as its own private
    disk: one line naming the storage and the node that cannot see it, exit 2, no trial started."""
    if ray_cluster.node_local is None:
        pytest.skip("needs `unshare --mount` (root on Linux) to give one node a private directory")
    storage = ray_cluster.node_local / "runs"
    r = sslsweep(["sweep", "experiment=smoke", "method=[none]", f"storage={storage}"],
                 ray_cluster.driver_env(), timeout=180)
    assert r.returncode == 2, r.stderr[-3000:]
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("sslsweep: error:")]
    assert line and f"storage = '{storage}" in line[0] and "node-local path on a 3-node Ray cluster" in line[0] \
        and "2 node(s) cannot see it (" in line[0] and "127.0.0.2" in line[0] and "127.0.0.3" in line[0] \
        and "s3://" in line[0], r.stderr[-3000:]
    # refused before Tune started, and the new sweep's folder (only its manifest) is removed
    assert list(storage.iterdir()) == []


def test_unshared_nodes_names_ip_and_node_id() -> None:
    nodes = [{"NodeID": "a" * 56, "NodeManagerAddress": "10.0.0.1"}, {"NodeID": "b" * 56, "NodeManagerAddress": "10.0.0.2"}]
    assert unshared_nodes(nodes, [True, False]) == ["10.0.0.2 (bbbbbbbbbbbb)"]
    assert unshared_nodes(nodes, [True, True]) == []
