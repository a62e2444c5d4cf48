"""What every operation handler receives: the records, the storage settings, and a way to hand work to
the job service. The service handle is injected (by the API, or by the service itself for the work it
starts), so operation modules never import the service or the API above them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
