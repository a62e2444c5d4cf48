"""What every operation handler receives: the records, the storage settings, and a way to hand work to
the job service. The service handle is injected (by the API, or by the service itself for the work it
starts), so operation modules never import the service or the API above them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raymaker.cluster.capacity import alive_nodes, check_capacity
from raymaker.cluster.definition import cluster_config_path, get_instance_type, load_instance_types
from raymaker.engine.resources import ResourceStore
from raymaker.engine.store import JobStore
from raymaker.io.storage import S3Settings


@dataclass
class Engine:
    store: JobStore
    settings: S3Settings
    # The job service's actor handle, started on first use (Ray is started or joined then).
    service: Callable[[], Any]
    resources: ResourceStore = field(init=False)

    def __post_init__(self) -> None:
        self.resources = ResourceStore(self.store)

    def require_capacity(self, instance_type: str, instance_count: int, usage: str) -> None:
        """ResourceLimitExceeded now, as SageMaker answers the create call, when no node the cluster has
        or its definition can start could ever run ``instance_count`` x ``instance_type``. Joins Ray
        (the job service starts with it) to see the nodes."""
        itype = get_instance_type(instance_type, load_instance_types())
        self.service()
        check_capacity(itype, instance_count, usage, alive_nodes(), str(cluster_config_path()))
