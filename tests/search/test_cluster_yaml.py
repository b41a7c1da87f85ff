"""cluster.yaml against Ray's own cluster-launcher schema (offline: no cloud is contacted), the
security rules it must keep, and the KubeRay manifests' structure."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "cluster.yaml"


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _prepared(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` validates: the config merged with the AWS defaults, then Ray's JSON schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_passes_rays_schema(raw: dict[str, Any]) -> None:
    prepared = _prepared(raw)
    assert prepared["provider"]["type"] == "aws"
    assert set(prepared["available_node_types"]) == {"head", "gpu_1x", "gpu_4x"}


def test_schema_check_is_real(raw: dict[str, Any]) -> None:
    """The same check rejects what Ray rejects: a fractional resource, an unknown key."""
    import jsonschema

    bad = copy.deepcopy(raw)
    bad["available_node_types"]["gpu_1x"]["resources"]["GPU"] = 0.5
    with pytest.raises(jsonschema.ValidationError, match="0.5 is not of type 'integer'"):
        _prepared(bad)
    bad = copy.deepcopy(raw)
    bad["available_node_types"]["head"]["gpus"] = 1
    with pytest.raises(jsonschema.ValidationError, match="Additional properties are not allowed"):
        _prepared(bad)


def test_node_types_have_explicit_resources_and_bounds(raw: dict[str, Any]) -> None:
    types = raw["available_node_types"]
    head = types[raw["head_node_type"]]
    assert head["resources"] == {"CPU": 0, "GPU": 0}  # the head runs the driver, no trial
    gpu_types = [t for name, t in types.items() if name != raw["head_node_type"]]
    assert len(gpu_types) >= 2
    for t in gpu_types:
        assert t["resources"]["GPU"] >= 1 and t["resources"]["CPU"] >= 1
        assert t["min_workers"] == 0 and 1 <= t["max_workers"] <= raw["max_workers"]


def test_dashboard_on_loopback_and_token_auth_on_every_node(raw: dict[str, Any]) -> None:
    text = CLUSTER_YAML.read_text()
    head_start = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    for cmd in [c for c in raw["head_start_ray_commands"] + raw["worker_start_ray_commands"] if "ray start" in c]:
        assert "RAY_AUTH_MODE=token ray start" in cmd, cmd
    assert "0.0.0.0" not in " ".join(raw["head_start_ray_commands"] + raw["worker_start_ray_commands"])
    # the token reaches every node; the comments say how to reach the dashboard and what to open
    assert raw["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert "ray dashboard cluster.yaml" in text and "ray get-auth-token --generate" in text
    assert re.search(r"SSH \(22\)", text) and "SecurityGroupIds" in text


def test_sslsweep_is_installed_from_the_launched_project_only(raw: dict[str, Any]) -> None:
    assert set(raw["file_mounts"]) == {"~/.ray/auth_token", "~/sslsweep"}  # file mounts only where needed
    assert (CLUSTER_YAML.parent / raw["file_mounts"]["~/sslsweep"] / "pyproject.toml").is_file()
    assert any("pip install" in c and "sslsweep" in c for c in raw["setup_commands"])
    for excluded in (".git", ".venv", "data", "runs", "outputs", "*.parquet"):
        assert excluded in raw["rsync_exclude"], excluded
    # the cluster's Ray is one the project supports (pyproject's lower bound); not the Ray installed
    # here, which a fresh install takes newest and which a user's client may differ from anyway
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    low = next(re.search(r">=\s*([\d.]+)", d).group(1) for d in deps if d.startswith("ray["))
    image = raw["docker"]["image"]
    assert image.startswith("rayproject/ray:"), image
    tag = tuple(int(x) for x in image.split(":")[1].split("-")[0].split("."))
    assert tag >= tuple(int(x) for x in low.split(".")), (image, low)


def test_rayjob_manifest(raw: dict[str, Any]) -> None:
    """KubeRay's RayJob: the sweep's entrypoint, token auth, shared storage, GPU workers."""
    job = yaml.safe_load((ROOT / "k8s" / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["entrypoint"].startswith("python -m sslsweep.cli sweep ") and "storage=s3://" in spec["entrypoint"]
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token"}
    assert cluster["rayVersion"] == raw["docker"]["image"].split(":")[1].split("-")[0]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    worker = cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    policy = yaml.safe_load((ROOT / "k8s" / "networkpolicy.yaml").read_text())
    assert policy["kind"] == "NetworkPolicy" and policy["spec"]["policyTypes"] == ["Ingress"]
    labels = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    dockerfile = (ROOT / "k8s" / "Dockerfile").read_text()
    assert f"FROM {raw['docker']['image']}" in dockerfile
