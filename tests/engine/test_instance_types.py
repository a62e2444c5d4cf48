"""Instance types from the cluster YAML, and the per-worker resources that keep a CPU free for Ray Data."""

from __future__ import annotations

from pathlib import Path

import pytest

from raymaker.engine.instance_types import (
    DEFAULT_CLUSTER_CONFIG,
    InstanceType,
    get_instance_type,
    load_instance_types,
    worker_resources,
)
from raymaker.protocol.errors import ValidationError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_cluster_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAYMAKER_CLUSTER_CONFIG", raising=False)


def test_packaged_default_is_cluster_local_yaml() -> None:
    assert DEFAULT_CLUSTER_CONFIG.read_text() == (REPO / "cluster" / "local.yaml").read_text()


def test_default_instance_types() -> None:
    types = load_instance_types()
    assert types["local"] == InstanceType("local", cpus=None, gpus=0, memory_gb=None, price_per_hour=0.0)
    assert types["ml.m5.large"].cpus == 0.5 and types["ml.m5.large"].price_per_hour == 0.115
    assert types["ml.m5.xlarge"].cpus == 1 and types["ml.m5.xlarge"].price_per_hour == 0.23
    assert "ml.c5.xlarge" in types


def test_env_var_and_explicit_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text(
        "raymaker:\n  instance_types:\n    ml.g5.xlarge: {cpus: 4, gpus: 1, price_per_hour: 1.4}\n"
    )
    assert list(load_instance_types(config)) == ["ml.g5.xlarge"]
    monkeypatch.setenv("RAYMAKER_CLUSTER_CONFIG", str(config))
    gpu = load_instance_types()["ml.g5.xlarge"]
    assert (gpu.cpus, gpu.gpus, gpu.memory_gb, gpu.price_per_hour) == (4.0, 1, None, 1.4)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("cluster_name: x\n", "no raymaker.instance_types"),
        ("raymaker: {instance_types: {a: {cpus: -1}}}", "cpus is -1"),
        ("raymaker: {instance_types: {a: {cpus: 1, gpus: 0.5}}}", "gpus is 0.5"),
        ("raymaker: {instance_types: {a: {cpus: 1, price_per_hour: free}}}", "price_per_hour is 'free'"),
        ("raymaker: {instance_types: {a: {cpu: 1}}}", "unknown keys ['cpu']"),
        ("raymaker: {instance_types: {a: 3}}", "must be a mapping"),
        ("raymaker: [", "not valid YAML"),
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
    assert "'ml.p4d.24xlarge'" in info.value.message and "local, ml.c5.xlarge" in info.value.message


@pytest.mark.parametrize(
    "cpus, count, total, expected",
    [
        (None, 1, 2, 1.0),  # local on 2 cores: one worker, one CPU left for Ray Data
        (None, 2, 2, 0.5),
        (None, 3, 16, 5.0),
        (0.5, 1, 2, 0.5),
        (0.5, 2, 2, 0.5),
        (1.0, 2, 2, 0.5),  # a shape bigger than the share shrinks to fit
        (1.0, 3, 2, 0.33),
        (1.0, 4, 16, 1.0),  # big cluster: the shape as declared
        (4.0, 4, 16, 3.75),
        (1.0, 1, 1, 0.5),  # one CPU: keep half of it free
    ],
)
def test_worker_resources_leave_a_cpu_for_ray_data(
    cpus: float | None, count: int, total: float, expected: float
) -> None:
    resources = worker_resources(InstanceType("t", cpus=cpus), count, total)
    assert resources == {"CPU": expected}
    assert count * resources["CPU"] <= (total - 1 if total >= 2 else total / 2)


def test_worker_resources_gpus_and_limits() -> None:
    assert worker_resources(InstanceType("g", cpus=2, gpus=1), 1, 8) == {"CPU": 2.0, "GPU": 1.0}
    with pytest.raises(ValidationError, match="too many workers"):
        worker_resources(InstanceType("t", cpus=1), 500, 2)
    with pytest.raises(ValidationError, match="1 or more"):
        worker_resources(InstanceType("t", cpus=1), 0, 2)
