"""The SDK's one wait loop: describe a resource until its status is an end status, then judge that end
as the SageMaker Python SDK does (``sagemaker.session._check_job_status`` and ``wait_for_endpoint``):

- jobs (training, transform, tuning): Completed and Stopped are fine (Stopped with a warning: the user
  or a limit stopped it); anything else raises ``UnexpectedStatusException`` with
  ``Error for <Training job> <name>: <status>. Reason: <FailureReason>``;
- endpoints: InService is fine; anything else raises with
  ``Error hosting endpoint <name>: <status>. Reason: <FailureReason>.``

The SDK's messages also point at AWS's troubleshooting page, which is left out (it is about AWS).
Every SDK wait (``TrainingJob.wait``, ``Transformer.wait``, ``HyperparameterTuner.wait``, endpoint
deploy, update and delete) goes through ``wait_for``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from raymaker.protocol.errors import ResourceNotFound, ValidationError
from raymaker.sdk.exceptions import UnexpectedStatusException

LOGGER = logging.getLogger("raymaker.sdk")

# Module-level so tests can run the loops without sleeping (monkeypatch ``waiter.sleep``).
sleep = time.sleep
monotonic = time.monotonic

_STOPPED_WARNING = (
    "Job ended with status 'Stopped' rather than 'Completed'. This could mean the job timed out or "
    "stopped early for some other reason: Consider checking whether it completed as you expect."
)


class Caller(Protocol):
    """Anything with the backend's ``call`` (a ``Session`` or a backend itself)."""

    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Resource:
    """How to wait for one kind of resource: the Describe operation and its name and status keys, the
    statuses that end the wait, which of those are not errors, and the error message."""

    label: str  # the SageMaker SDK's name for it in messages ("Training job")
    describe: str
    name_key: str
    status_key: str
    ends: frozenset[str]
    allowed: tuple[str, ...]
    message: str  # formatted with name, status, reason
    no_reason: str | None = "(No reason provided)"
    absent_is_end: bool = False  # waiting for a deletion: "not found" is the end

    def check(self, name: str, desc: dict[str, Any]) -> None:
        """Raise UnexpectedStatusException unless ``desc`` ended in an allowed status."""
        status = desc[self.status_key]
        if status in self.allowed:
            if status == "Stopped":
                LOGGER.warning(_STOPPED_WARNING)
            return
        reason = desc.get("FailureReason", self.no_reason)
        raise UnexpectedStatusException(
            self.message.format(label=self.label, name=name, status=status, reason=reason),
            allowed_statuses=list(self.allowed),
            actual_status=status,
        )


_JOB_ENDS = frozenset({"Completed", "Failed", "Stopped"})
_JOB_MESSAGE = "Error for {label} {name}: {status}. Reason: {reason}"

TRAINING_JOB = Resource(
    "Training job",
    "DescribeTrainingJob",
    "TrainingJobName",
    "TrainingJobStatus",
    _JOB_ENDS,
    ("Completed", "Stopped"),
    _JOB_MESSAGE,
)
TRANSFORM_JOB = Resource(
    "Transform job",
    "DescribeTransformJob",
    "TransformJobName",
    "TransformJobStatus",
    _JOB_ENDS,
    ("Completed", "Stopped"),
    _JOB_MESSAGE,
)
TUNING_JOB = Resource(
    "HyperParameterTuning job",
    "DescribeHyperParameterTuningJob",
    "HyperParameterTuningJobName",
    "HyperParameterTuningJobStatus",
    _JOB_ENDS,
    ("Completed", "Stopped"),
    _JOB_MESSAGE,
)
# Creating, Updating, SystemUpdating and RollingBack are on their way somewhere: keep waiting.
ENDPOINT = Resource(
    "endpoint",
    "DescribeEndpoint",
    "EndpointName",
    "EndpointStatus",
    frozenset({"InService", "Failed", "OutOfService", "Deleting", "UpdateRollbackFailed"}),
    ("InService",),
    "Error hosting endpoint {name}: {status}. Reason: {reason}.",
    no_reason=None,
)
# As botocore's EndpointDeleted waiter: gone (a not-found error) is the end; Failed is an error.
ENDPOINT_DELETED = Resource(
    "endpoint",
    "DescribeEndpoint",
    "EndpointName",
    "EndpointStatus",
    frozenset({"Failed"}),
    (),
    "Error deleting endpoint {name}: {status}. Reason: {reason}.",
    no_reason=None,
    absent_is_end=True,
)


def wait_for(
    session: Caller,
    resource: Resource,
    name: str,
    *,
    poll: float = 0.1,
    timeout: float | None = None,
    on_describe: Callable[[dict[str, Any]], None] | None = None,
    pause: Callable[[dict[str, Any], float], None] | None = None,
    check: bool = True,
) -> dict[str, Any]:
    """Describe ``name`` until its status is one of ``resource.ends``, then (``check``) raise
    UnexpectedStatusException unless that end is allowed; returns the last description ({} when a
    deletion is waited for and the resource is gone).

    ``on_describe`` sees every description (to print progress). ``pause(desc, seconds)`` replaces the
    sleep between describes: a long poll that returns as soon as something changes (training jobs'
    WaitForTrainingJob). ``timeout`` (seconds, default none) raises TimeoutError; the resource is
    left as it is."""
    deadline = None if timeout is None else monotonic() + timeout
    while True:
        try:
            desc = session.call(resource.describe, {resource.name_key: name})
        except (ValidationError, ResourceNotFound):
            # Hosting resources report "not found" as ValidationException, jobs as ResourceNotFound.
            if resource.absent_is_end:
                return {}
            raise
        if on_describe is not None:
            on_describe(desc)
        status = desc[resource.status_key]
        if status in resource.ends:
            break
        wait_s = poll
        if deadline is not None:
            remaining = deadline - monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"{resource.label} {name} is still {status} after {timeout:g} s; it goes on: wait "
                    "again, or give a longer timeout"
                )
            wait_s = min(poll, remaining)
        if pause is not None:
            pause(desc, wait_s)
        else:
            sleep(wait_s)
    if check:
        resource.check(name, desc)
    return desc
