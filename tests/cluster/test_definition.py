"""The cluster definitions in cluster/: Ray's own tools accept them as they are, and raymaker reads its
instance types (node types or shapes) and prices from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raymaker.cluster.definition import (
    DEFAULT_CLUSTER_CONFIG,
    InstanceType,
    get_instance_type,
    load_cluster,
    load_instance_types,
)
from raymaker.protocol.errors import ValidationError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_cluster_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAYMAKER_CLUSTER_CONFIG", raising=False)


def test_packaged_default_is_cluster_local_yaml() -> None:
    # One file: the package ships a link to cluster/local.yaml, not a copy that could drift.
    assert DEFAULT_CLUSTER_CONFIG.resolve() == (REPO / "cluster" / "local.yaml").resolve()


@pytest.mark.parametrize("name", ["local.yaml", "aws.yaml"])
def test_launcher_files_pass_rays_own_validation(name: str) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((REPO / "cluster" / name).read_text()))
    validate_config(config)  # raises on anything Ray's schema rejects
    assert "raymaker" in config["metadata"]  # Ray keeps raymaker's part as it is


def test_rays_schema_rejects_a_top_level_raymaker_section(tmp_path: Path) -> None:
    """Why raymaker's part lives under metadata: Ray's schema allows nothing else at the top."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    doc = yaml.safe_load((REPO / "cluster" / "local.yaml").read_text())
    doc["raymaker"] = doc["metadata"].pop("raymaker")
    with pytest.raises(jsonschema.ValidationError, match="'raymaker' was unexpected"):
        validate_config(prepare_config(doc))
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match="move the top-level raymaker: section under metadata"):
        load_cluster(path)


def test_aws_node_types_are_instance_types() -> None:
    types = load_instance_types(REPO / "cluster" / "aws.yaml")
    assert set(types) == {"ml.m5.xlarge", "ml.c5.2xlarge", "ml.g5.xlarge", "ml.p3.2xlarge"}
    g5 = types["ml.g5.xlarge"]
    assert (g5.cpus, g5.gpus, g5.node_type, g5.max_nodes, g5.price_per_hour) == (4.0, 1, True, 4, 1.408)
    assert types["ml.m5.xlarge"].gpus == 0 and types["ml.m5.xlarge"].price_per_hour == 0.23
    # The head (no resource of its own name) is not an instance type: no instance runs there.
    assert "ray.head.default" not in types


def test_kuberay_file_as_kuberay_and_rays_autoscaler_read_it() -> None:
    """KubeRay's documented RayCluster fields, and the node types Ray's in-tree autoscaler derives
    from them (its own translator, then its own schema check) are raymaker's instance types."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    cr = yaml.safe_load((REPO / "cluster" / "kuberay.yaml").read_text())
    assert cr["apiVersion"] == "ray.io/v1" and cr["kind"] == "RayCluster"
    spec = cr["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert set(spec["autoscalerOptions"]) <= {"upscalingMode", "idleTimeoutSeconds", "resources", "env", "image"}
    head = spec["headGroupSpec"]
    assert "resources" not in head["rayStartParams"]  # no instance type: no instance runs on the head
    env = {e["name"]: e["value"] for e in head["template"]["spec"]["containers"][0]["env"]}
    assert env["RAYMAKER_CLUSTER_CONFIG"] == "/etc/raymaker/cluster.yaml"
    for group in spec["workerGroupSpecs"]:
        assert {"groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template"} <= set(group)
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["template"]["spec"]["containers"][0]["name"]
    derived = _derive_autoscaling_config_from_ray_cr(cr)  # runs Ray's validate_config too
    types = load_instance_types(REPO / "cluster" / "kuberay.yaml")
    groups = {g["groupName"] for g in spec["workerGroupSpecs"]}
    assert set(types) == groups == set(derived["available_node_types"]) - {"headgroup"}
    g5 = types["ml.g5.xlarge"]
    assert (g5.cpus, g5.gpus, g5.memory_gb, g5.max_nodes, g5.price_per_hour) == (4.0, 1, 16.0, 4, 1.408)
    assert derived["available_node_types"]["ml.g5.xlarge"]["resources"]["ml.g5.xlarge"] == 1


def test_default_instance_types() -> None:
    types = load_instance_types()
    assert types["local"] == InstanceType("local", cpus=None, gpus=0, memory_gb=None, price_per_hour=0.0)
    assert types["ml.m5.large"].cpus == 0.5 and types["ml.m5.large"].price_per_hour == 0.115
    assert types["ml.m5.xlarge"].cpus == 1 and types["ml.m5.xlarge"].price_per_hour == 0.23
    assert "ml.c5.xlarge" in types


def test_env_var_and_explicit_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text(
        "metadata:\n raymaker:\n  instance_types:\n    ml.g5.xlarge: {cpus: 4, gpus: 1, price_per_hour: 1.4}\n"
    )
    assert list(load_instance_types(config)) == ["ml.g5.xlarge"]
    monkeypatch.setenv("RAYMAKER_CLUSTER_CONFIG", str(config))
    gpu = load_instance_types()["ml.g5.xlarge"]
    assert (gpu.cpus, gpu.gpus, gpu.memory_gb, gpu.price_per_hour) == (4.0, 1, None, 1.4)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("cluster_name: x\n", "declares no instance type"),
        ("metadata: {raymaker: {instance_types: {a: {cpus: -1}}}}", "cpus is -1"),
        ("metadata: {raymaker: {instance_types: {a: {cpus: 1, gpus: 0.5}}}}", "gpus is 0.5"),
        ("metadata: {raymaker: {instance_types: {a: {cpus: 1, price_per_hour: free}}}}", "price_per_hour is 'free'"),
        ("metadata: {raymaker: {instance_types: {a: {cpu: 1}}}}", "unknown keys ['cpu']"),
        ("metadata: {raymaker: {instance_types: {a: 3}}}", "must be a mapping"),
        ("metadata: {raymaker: [", "not valid YAML"),
        ("[1, 2]", "must be a mapping"),
        # a node type's shape is its resources: declaring it twice is refused
        (
            "available_node_types: {n: {node_config: {}, resources: {CPU: 2, n: 1}}}\n"
            "metadata: {raymaker: {instance_types: {n: {cpus: 4}}}}",
            "remove ['cpus']",
        ),
        ("available_node_types: {n: {node_config: {}, resources: {CPU: 0, n: 1}}}", "resources.CPU is 0"),
    ],
)
def test_bad_cluster_config(tmp_path: Path, text: str, fragment: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ValueError, match="bad.yaml") as info:
        load_instance_types(config)
    assert fragment in str(info.value)


def test_missing_cluster_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_instance_types(tmp_path / "nope.yaml")


def test_unknown_instance_type_lists_known_ones() -> None:
    with pytest.raises(ValidationError) as info:
        get_instance_type("ml.p4d.24xlarge")
    assert info.value.code == "ValidationException"
    assert "'ml.p4d.24xlarge'" in info.value.message and "local, ml.c5.2xlarge, ml.c5.xlarge" in info.value.message
