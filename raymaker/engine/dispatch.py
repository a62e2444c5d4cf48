"""SageMaker's control-plane operations (and raymaker's own, declared in the service-model extension) as
one dispatch-and-audit table, dict in, dict out, run where the job database is: in the API process on the
database's node, or in the job service for a caller on any other node.

Every request is checked against the service model first, then handed to its resource's operation module
(``training_jobs``, ``hosting``, ``transform_jobs``, ``tuning_jobs``, ``billing``, ``audit``,
``resource_logs``); every call, whatever it raised, is recorded in the audit trail.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from raymaker.engine import (
    audit,
    billing,
    hosting,
    resource_logs,
    training_jobs,
    transform_jobs,
    tuning_jobs,
    users,
)
from raymaker.engine.context import Engine
from raymaker.engine.iam import resource_of
from raymaker.engine.validation import validate_request
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
    **users.OPERATIONS,
}

# Where each Describe keeps its status, and which statuses still need the job service.
_IN_PROGRESS = {
    "DescribeTrainingJob": ("TrainingJobStatus", {"InProgress", "Stopping"}),
    "DescribeEndpoint": ("EndpointStatus", {"Creating", "Updating", "Deleting"}),
    "DescribeTransformJob": ("TransformJobStatus", {"InProgress", "Stopping"}),
    "DescribeHyperParameterTuningJob": ("HyperParameterTuningJobStatus", {"InProgress", "Stopping"}),
}


def dispatch(
    engine: Engine,
    operation: str,
    params: dict[str, Any],
    *,
    caller: str | None = None,
    source_ip: str | None = None,
    user_agent: str | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Validate, run and audit one call against ``engine``'s job database (``request_id``: the one the
    API server answers in ``x-amzn-RequestId``; a new one if none)."""
    store = engine.store
    request_id = request_id or str(uuid.uuid4())
    audit_fields = dict(caller=caller, source_ip=source_ip, user_agent=user_agent, request_id=request_id)
    try:
        handler = OPERATIONS.get(operation)
        if handler is None:
            raise ValidationError(f"raymaker does not support the operation {operation!r} yet")
        validate_request(operation, params)
        result = handler(engine, dict(params))
        if operation in _IN_PROGRESS:
            _note_if_service_gone(engine, operation, result)
    except BaseException as e:  # every call is audited, whatever it raised
        store.record_api_call(operation, params, error=e, **audit_fields)
        raise
    store.record_api_call(operation, params, **audit_fields)
    owner = user_of(caller)
    if owner and operation.startswith("Create") and (arn := resource_of(operation, params)) != "*":
        store.set_owner(arn, owner)  # what a user made is theirs (policies may test it: iam.OWNER_KEY)
    return result


def user_of(caller: Any) -> str | None:
    """The server user a call's identity names (None in-process: the local OS user owns nothing)."""
    if isinstance(caller, dict) and caller.get("type") == "IAMUser":
        return caller.get("userName")
    return None


def _note_if_service_gone(engine: Engine, operation: str, out: dict[str, Any]) -> None:
    """A resource still in progress whose job service is gone says so in its Describe."""
    key, active = _IN_PROGRESS[operation]
    if out.get(key) not in active:
        return
    message = engine.store.service_gone_message()
    if message is None:
        return
    if operation == "DescribeTrainingJob" and out.get("SecondaryStatusTransitions"):
        out["SecondaryStatusTransitions"][-1]["StatusMessage"] = message
    else:
        out["FailureReason"] = message
