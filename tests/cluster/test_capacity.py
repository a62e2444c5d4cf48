"""What an instance asks Ray for, and the create-time answer when the cluster can never give it."""

from __future__ import annotations

import pytest

from raymaker.cluster.capacity import check_capacity, cpu_budget, custom_resources, worker_resources
from raymaker.cluster.definition import InstanceType
from raymaker.protocol.errors import ResourceLimitExceeded

G5 = InstanceType("ml.g5.xlarge", cpus=4.0, gpus=1, node_type=True, max_nodes=2)
M5 = InstanceType("ml.m5.xlarge", cpus=4.0, node_type=True, max_nodes=0)


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
def test_shapes_leave_a_cpu_for_ray_data(cpus: float | None, count: int, total: float, expected: float) -> None:
    resources = worker_resources(InstanceType("t", cpus=cpus), count, total)
    assert resources == {"CPU": expected}
    assert count * resources["CPU"] <= cpu_budget(total)


def test_node_type_instances_ask_for_their_node_type() -> None:
    """One unit of the resource named after the type: only such nodes take it, one instance per node,
    whatever the cluster's CPUs are now (an autoscaler adds the nodes)."""
    assert worker_resources(G5, 2, total_cpus=0) == {"CPU": 3.0, "GPU": 1.0, "ml.g5.xlarge": 1.0}
    assert custom_resources(worker_resources(G5, 1, 0)) == {"ml.g5.xlarge": 1.0}
    one_cpu = InstanceType("ml.t3.medium", cpus=1.0, node_type=True, max_nodes=1)
    assert worker_resources(one_cpu, 1, 0) == {"CPU": 0.5, "ml.t3.medium": 1.0}


def test_shape_gpus_and_limits() -> None:
    assert worker_resources(InstanceType("g", cpus=2, gpus=1), 1, 8) == {"CPU": 2.0, "GPU": 1.0}
    with pytest.raises(ResourceLimitExceeded, match="too many t instances"):
        worker_resources(InstanceType("t", cpus=1), 500, 2)
    with pytest.raises(ResourceLimitExceeded, match="1 or more"):
        worker_resources(InstanceType("t", cpus=1), 0, 2)


def test_node_types_the_autoscaler_can_start_are_enough() -> None:
    check_capacity(G5, 2, "training job", nodes=[{"CPU": 1.0}])  # none running, max_workers 2
    check_capacity(M5, 3, "training job", nodes=[{"CPU": 4, "ml.m5.xlarge": 1}] * 3)  # fixed nodes
    with pytest.raises(ResourceLimitExceeded) as info:
        check_capacity(G5, 3, "training job", nodes=[{"CPU": 1.0}], definition="cluster/aws.yaml")
    assert info.value.code == "ResourceLimitExceeded" and info.value.http_status == 400
    message = str(info.value)
    assert "'ml.g5.xlarge for training job usage' is 2 Instances" in message
    assert "request delta of 3 Instances" in message and "max_workers" in message


def test_gpu_shape_on_a_cluster_without_gpus_fails_clearly() -> None:
    gpu_shape = InstanceType("ml.g5.xlarge", cpus=1.0, gpus=1)
    with pytest.raises(ResourceLimitExceeded) as info:
        check_capacity(gpu_shape, 1, "endpoint", nodes=[{"CPU": 2.0}])
    message = str(info.value)
    assert "'ml.g5.xlarge for endpoint usage' is 0 Instances" in message
    assert "needs 1 GPU per instance" in message and "0 GPU(s)" in message
    assert "Use a CPU instance type" in message
    check_capacity(gpu_shape, 2, "endpoint", nodes=[{"CPU": 8.0, "GPU": 2.0}])
    with pytest.raises(ResourceLimitExceeded):  # one GPU on each of two nodes is not two per node
        check_capacity(InstanceType("x", cpus=1.0, gpus=2), 1, "endpoint", nodes=[{"CPU": 4, "GPU": 1}] * 2)


def test_cpu_shape_too_many_for_the_cluster() -> None:
    with pytest.raises(ResourceLimitExceeded, match="too many"):
        check_capacity(InstanceType("t", cpus=1.0), 300, "training job", nodes=[{"CPU": 2.0}])
