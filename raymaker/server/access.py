"""Who may read what: the IAM decision for one request (``authorize``) and a List answer cut to what
the caller may Describe (``visible``), shared by the API (``server.app``) and the web console
(``raymaker.console``), so the two cannot disagree."""

from __future__ import annotations

from typing import Any

from raymaker.engine import iam
from raymaker.engine.store import JobStore
from raymaker.engine.users import Caller
from raymaker.protocol.errors import AccessDenied
from raymaker.protocol.iam_policy import denial, request_context


def authorize(caller: Caller, operation: str, params: dict[str, Any], store: JobStore) -> None:
    """AccessDenied, worded as AWS words it, unless the caller's policies allow the action on the
    resource, its maker known to conditions (``aws:ResourceTag/raymaker:owner``)."""
    action, resource = iam.action_of(operation), iam.resource_of(operation, params)
    owner = store.owners([resource]).get(resource) if resource != "*" else None
    decision = iam.decide(caller.policies, action, resource, request_context(caller.name, owner))
    if decision != "allow":
        raise AccessDenied(denial(caller.arn, action, resource, decision))


def visible(caller: Caller, result: dict[str, Any], store: JobStore) -> dict[str, Any]:
    """A List answer with only what the caller may Describe: a user who may not see another's jobs does
    not find them listed either (a page may then hold fewer than MaxResults)."""
    for key, items in result.items():
        if not (isinstance(items, list) and items and isinstance(items[0], dict)):
            continue
        arns = [next((v for k, v in item.items() if k.endswith("Arn") and isinstance(v, str)), None) for item in items]
        if not any(arns):
            continue
        owners = store.owners([a for a in arns if a])
        kept = []
        for item, arn in zip(items, arns, strict=True):
            describe = _DESCRIBE.get(arn.split(":", 5)[-1].split("/", 1)[0]) if arn else None
            if describe is None or iam.decide(caller.policies, f"sagemaker:{describe}", arn,
                                              request_context(caller.name, owners.get(arn))) == "allow":
                kept.append(item)
        result = {**result, key: kept}
    return result


_DESCRIBE = {
    "training-job": "DescribeTrainingJob",
    "hyper-parameter-tuning-job": "DescribeHyperParameterTuningJob",
    "transform-job": "DescribeTransformJob",
    "endpoint": "DescribeEndpoint",
    "endpoint-config": "DescribeEndpointConfig",
    "model": "DescribeModel",
}
