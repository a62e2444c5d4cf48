"""What every operation handler receives: the records, the storage settings, and a way to hand work to
the job service. The service handle is injected (by the API, or by the service itself for the work it
starts), so operation modules never import the service or the API above them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from raymaker.cluster.capacity import alive_nodes, check_capacity, spans_nodes
from raymaker.cluster.definition import ClusterDefinition, get_instance_type, load_cluster
from raymaker.engine.resources import ResourceStore
from raymaker.engine.store import JobStore
from raymaker.io.storage import S3Settings, parse_uri
from raymaker.protocol.environment import DEFAULT_BUCKET_ENV
from raymaker.protocol.errors import ValidationError


@dataclass
class Engine:
    store: JobStore
    settings: S3Settings
    # The job service's actor handle, started on first use (Ray is started or joined then).
    service: Callable[[], Any]
    resources: ResourceStore = field(init=False)

    def __post_init__(self) -> None:
        self.resources = ResourceStore(self.store)

    def cluster(self) -> ClusterView:
        """The cluster as one create call sees it: its definition and its nodes, read once. Joins Ray
        (the job service starts with it) to see the nodes."""
        self.service()
        return ClusterView(load_cluster(), alive_nodes())


@dataclass(frozen=True)
class ClusterView:
    definition: ClusterDefinition
    nodes: list[dict[str, float]]

    @property
    def spans_nodes(self) -> bool:
        """Whether work may run on more than one machine."""
        return spans_nodes(self.nodes, len(self.definition.node_types))

    def require_capacity(self, instance_type: str, instance_count: int, usage: str) -> None:
        """ResourceLimitExceeded now, as SageMaker answers the create call, when no node the cluster has
        or its definition can start could ever run ``instance_count`` x ``instance_type``."""
        itype = get_instance_type(instance_type, self.definition.instance_types)
        check_capacity(itype, instance_count, usage, self.nodes, str(self.definition.path))

    def require_shared_storage(self, uris: Mapping[str, str | None]) -> None:
        """ValidationError when the cluster spans several machines and one of ``uris`` (request field
        name -> URI) is a folder on one of them: instances, replicas and trials on other nodes could
        not read or write it."""
        local = {k: v for k, v in uris.items() if v and parse_uri(v).scheme == "file"}
        if not local or not self.spans_nodes:
            return
        field, uri = next(iter(local.items()))
        more = " and starts more" if self.definition.node_types else ""
        raise ValidationError(
            f"{field} is {uri}, a folder on one machine, but this cluster runs work on "
            f"{len(self.nodes)} node(s){more}: work on the other nodes "
            f"could not reach it. Give an s3:// URI (an Estimator's output_path, a Model's model_data), "
            f"or set {DEFAULT_BUCKET_ENV} so the SDK's default output goes to S3"
        )
