"""The engine's one entry point: SageMaker's control-plane operations (and raymaker's own, declared in
the service-model extension) as a dispatch-and-audit table, dict in, dict out.

This is the narrow seam of DESIGN.md: the in-process backend is ``SageMakerAPI`` itself; an HTTP server
speaking SageMaker's JSON 1.1 protocol wraps the same ``call``. Every request is checked against the
service model first, then handed to its resource's operation module (``training_jobs``, ``hosting``,
``transform_jobs``, ``tuning_jobs``, ``billing``, ``audit``, ``resource_logs``); every call, whatever it raised, is
recorded in the audit trail.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

from raymaker.cluster.runtime import ensure_ray
from raymaker.engine import audit, billing, hosting, resource_logs, training_jobs, transform_jobs, tuning_jobs
from raymaker.engine.context import Engine
from raymaker.engine.service import job_service
from raymaker.engine.store import JobStore
from raymaker.engine.validation import validate_request
from raymaker.io.storage import S3Settings
from raymaker.protocol.errors import ValidationError

Handler = Callable[[Engine, dict[str, Any]], dict[str, Any]]

OPERATIONS: dict[str, Handler] = {
    **training_jobs.OPERATIONS,
    **hosting.OPERATIONS,
    **transform_jobs.OPERATIONS,
    **tuning_jobs.OPERATIONS,
    **billing.OPERATIONS,
    **audit.OPERATIONS,
    **resource_logs.OPERATIONS,
}

# Where each Describe keeps its status, and which statuses still need the job service.
_IN_PROGRESS = {
    "DescribeTrainingJob": ("TrainingJobStatus", {"InProgress", "Stopping"}),
    "DescribeEndpoint": ("EndpointStatus", {"Creating", "Updating", "Deleting"}),
    "DescribeTransformJob": ("TransformJobStatus", {"InProgress", "Stopping"}),
    "DescribeHyperParameterTuningJob": ("HyperParameterTuningJobStatus", {"InProgress", "Stopping"}),
}


class SageMakerAPI:
    """The in-process backend: ``call(operation, params)`` runs the operation in this process against
    the job database, handing long work to the job service on the local Ray cluster (or RAY_ADDRESS)."""

    def __init__(self, store: JobStore | None = None, settings: S3Settings | None = None):
        self.store = store or JobStore()
        self.settings = (settings or S3Settings()).resolve()
        self._ray_ready = False
        self._lock = threading.Lock()
        self.engine = Engine(self.store, self.settings, service=self.service)
        # Load botocore's SageMaker model and find the job service while the caller sets up its job.
        threading.Thread(target=self._prewarm, daemon=True, name="raymaker-prewarm").start()

    @property
    def resources(self) -> Any:
        return self.engine.resources

    def service(self) -> Any:
        """The job service's actor handle: Ray is joined or started on first use, and the service is
        looked up by name every time (a millisecond), so a service that died and was replaced is never
        called through a stale handle."""
        with self._lock:
            if not self._ray_ready:
                ensure_ray()
                self._ray_ready = True
        return job_service(str(self.store.path))

    def ensure_ready(self) -> bool:
        """Join Ray and start the job service now, for work that must outlive this process (the CLI's
        deploy, or a job it does not wait for). False, with nothing started, when there is no Ray
        cluster to join (this process would start one that ends with it)."""
        import ray

        joined = ray.is_initialized()
        ensure_ray()
        from ray._private import worker

        node = getattr(worker, "_global_node", None)
        if not joined and node is not None and getattr(node, "head", False):
            ray.shutdown()  # a head started here would end with this process, and the work with it
            return False
        self.service()
        return True

    def _prewarm(self) -> None:
        try:
            validate_request("DescribeTrainingJob", {"TrainingJobName": "prewarm"})
            import ray

            if ray.is_initialized():
                self.service()
        except Exception:  # noqa: BLE001 - only a head start; the real call reports any problem
            pass

    def call(
        self,
        operation: str,
        params: dict[str, Any],
        *,
        caller: str | None = None,
        source_ip: str | None = None,
        user_agent: str | None = None,
    ) -> dict[str, Any]:
        request_id = str(uuid.uuid4())
        try:
            handler = OPERATIONS.get(operation)
            if handler is None:
                raise ValidationError(f"raymaker does not support the operation {operation!r} yet")
            validate_request(operation, params)
            result = handler(self.engine, dict(params))
            if operation in _IN_PROGRESS:
                self._note_if_service_gone(operation, result)
        except BaseException as e:  # every call is audited, whatever it raised
            self.store.record_api_call(
                operation,
                params,
                error=e,
                caller=caller,
                source_ip=source_ip,
                user_agent=user_agent,
                request_id=request_id,
            )
            raise
        self.store.record_api_call(
            operation,
            params,
            caller=caller,
            source_ip=source_ip,
            user_agent=user_agent,
            request_id=request_id,
        )
        return result

    def _note_if_service_gone(self, operation: str, out: dict[str, Any]) -> None:
        """A resource still in progress whose job service is gone says so in its Describe."""
        key, active = _IN_PROGRESS[operation]
        if out.get(key) not in active:
            return
        message = self.store.service_gone_message()
        if message is None:
            return
        if operation == "DescribeTrainingJob" and out.get("SecondaryStatusTransitions"):
            out["SecondaryStatusTransitions"][-1]["StatusMessage"] = message
        else:
            out["FailureReason"] = message
