"""What an instance asks Ray for, whether the cluster can ever give it, and what work waits for.

A node-type instance (see ``definition``) asks for one unit of the resource named after its type, so
only nodes of that type take it and an autoscaler starts exactly those; a shape on a fixed cluster asks
for its CPUs and GPUs wherever they fit. Either way each instance leaves a CPU of its node for Ray Data:
Train workers hold their CPUs for the whole run, and Ray Data's read tasks never schedule when nothing
is left (ray-2.60-notes, "Root cause 2"). Logical CPUs are not cgroups: a worker still uses every core
of its node it can.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from raymaker.cluster.definition import InstanceType
from raymaker.protocol.errors import ResourceLimitExceeded


def cpu_budget(cpus: float) -> float:
    """CPUs work may hold on ``cpus`` while leaving one for Ray Data (half on a machine with fewer than 2)."""
    return cpus - 1 if cpus >= 2 else cpus / 2


def worker_resources(instance_type: InstanceType, instance_count: int, total_cpus: float) -> dict[str, float]:
    """Ray resources for each of ``instance_count`` workers of ``instance_type`` on a cluster with
    ``total_cpus`` logical CPUs, e.g. ``{"CPU": 0.5}`` or ``{"CPU": 3, "GPU": 1, "ml.g5.xlarge": 1}``.

    A shape's workers together take at most the cluster's budget, and a shape bigger than its share
    shrinks to fit; a node type's worker takes its node's budget."""
    if instance_count < 1:
        raise ResourceLimitExceeded(f"ResourceConfig.InstanceCount is {instance_count}; give 1 or more")
    if instance_type.node_type:
        resources = {"CPU": _floor(cpu_budget(instance_type.cpus or 1)), instance_type.name: 1.0}
    else:
        budget = cpu_budget(total_cpus)
        share = min(instance_type.cpus_per_worker(instance_count, budget), budget / instance_count)
        cpu = _floor(share)
        if cpu <= 0:
            raise ResourceLimitExceeded(
                f"InstanceCount {instance_count} is too many {instance_type.name} instances for this "
                f"cluster's {total_cpus:g} CPUs: use at most {max(int(budget / 0.01), 1)} or a bigger cluster"
            )
        resources = {"CPU": cpu}
    if instance_type.gpus:
        resources["GPU"] = float(instance_type.gpus)
    return resources


def _floor(cpus: float) -> float:
    return math.floor(cpus * 100) / 100  # Ray's fractional resources; floor keeps sums in budget


def custom_resources(resources: Mapping[str, float]) -> dict[str, float]:
    """The resources Ray's ``.options(resources=...)`` takes: all but CPU and GPU."""
    return {k: v for k, v in resources.items() if k not in ("CPU", "GPU")}


def alive_nodes() -> list[dict[str, float]]:
    """Each alive node's total resources (needs Ray joined)."""
    import ray

    return [dict(n.get("Resources") or {}) for n in ray.nodes() if n.get("Alive")]


def spans_nodes(nodes: Iterable[Mapping[str, float]], node_types: int) -> bool:
    """Whether work may run on more than one machine: the cluster has several nodes now, or its
    definition has node types an autoscaler can start."""
    return len(list(nodes)) > 1 or node_types > 0


def check_capacity(
    instance_type: InstanceType,
    instance_count: int,
    usage: str,
    nodes: Iterable[Mapping[str, float]],
    definition: str = "the cluster definition",
) -> None:
    """ResourceLimitExceeded, as SageMaker raises it at create time, when no node the cluster has or
    its definition can start could ever run ``instance_count`` instances of ``instance_type``.
    ``usage`` names the quota as SageMaker does: "training job", "endpoint", "transform job"."""
    nodes = list(nodes)
    limit = f"The cluster limit '{instance_type.name} for {usage} usage'"
    if instance_type.node_type:
        running = int(sum(n.get(instance_type.name, 0) for n in nodes))
        capacity = max(running, instance_type.max_nodes)
        if instance_count > capacity:
            raise ResourceLimitExceeded(
                f"{limit} is {capacity} Instances ({running} node(s) of that type running, max_workers "
                f"{instance_type.max_nodes} in {definition}), with a request delta of {instance_count} "
                f"Instances: raise available_node_types.{instance_type.name}.max_workers, or ask for fewer"
            )
        return
    total_cpus = sum(n.get("CPU", 0.0) for n in nodes)
    worker_resources(instance_type, instance_count, total_cpus)  # too many workers for the CPUs
    if instance_type.gpus:
        fits = sum(int(n.get("GPU", 0.0) // instance_type.gpus) for n in nodes)
        if fits < instance_count:
            gpus = sum(n.get("GPU", 0.0) for n in nodes)
            raise ResourceLimitExceeded(
                f"{limit} is {fits} Instances: {instance_type.name} needs {instance_type.gpus} GPU per "
                f"instance and this cluster's nodes have {gpus:g} GPU(s) in all, with a request delta of "
                f"{instance_count} Instances. Use a CPU instance type (such as ml.m5.xlarge), or run on a "
                "cluster with GPU nodes (cluster/aws.yaml, cluster/kuberay.yaml)"
            )


def shortfall(needed: Mapping[str, float]) -> str | None:
    """What a request for ``needed`` resources in all would wait for now, in words ("2 CPU (0.5 of 2
    free)"), or None if Ray has them free."""
    import ray

    free, total = ray.available_resources(), ray.cluster_resources()
    short = [
        f"{need:g} {key} ({free.get(key, 0.0):g} of {total.get(key, 0.0):g} free)"
        for key, need in needed.items()
        if need and free.get(key, 0.0) < need - 1e-9
    ]
    return " and ".join(short) or None


def waiting_message(instance_type: InstanceType, count: int, each: Mapping[str, float]) -> str | None:
    """What ``count`` instances asking for ``each`` would wait for now, or None if Ray can place them
    at once: "Waiting for resources: waiting for 2 x ml.g5.xlarge (0 of 1 such nodes free)" for a
    node type (an autoscaler may be starting them), "... ml.m5.xlarge needs 1 CPU (0 of 2 free)" for a
    shape on a fixed cluster."""
    import ray

    short = shortfall({k: v * count for k, v in each.items()})
    if short is None:
        return None
    if instance_type.node_type:
        free = ray.available_resources().get(instance_type.name, 0.0)
        total = ray.cluster_resources().get(instance_type.name, 0.0)
        return (
            f"Waiting for resources: waiting for {count} x {instance_type.name} "
            f"({free:g} of {total:g} such nodes free)"
        )
    what = f"{count} x {instance_type.name}" if count > 1 else instance_type.name
    return f"Waiting for resources: {what} needs {short}"
