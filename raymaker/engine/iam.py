"""Which IAM action and resource ARN a request is (``action_of``, ``resource_of``), for the policies
``protocol.iam_policy`` evaluates (``decide``, ``parse_policy``: re-exported here)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from raymaker.engine.arns import arn
from raymaker.engine.kinds import Kind
from raymaker.protocol.environment import account_id
from raymaker.protocol.iam_policy import (
    ADMINISTRATOR_POLICY,
    OWN_RESOURCES_POLICY,
    OWNER_KEY,
    Decision,
    decide,
    parse_policy,
)

__all__ = [
    "ADMINISTRATOR_POLICY",
    "OWNER_KEY",
    "OWN_RESOURCES_POLICY",
    "Decision",
    "action_of",
    "decide",
    "parse_policy",
    "resource_of",
    "user_arn",
]

# raymaker's user and policy operations are IAM's; every other operation is SageMaker's (raymaker's own
# operations included: they read SageMaker resources).
IAM_OPERATIONS = frozenset(
    {
        "CreateUser",
        "DeleteUser",
        "ListUsers",
        "CreateAccessKey",
        "DeleteAccessKey",
        "ListAccessKeys",
        "PutUserPolicy",
        "GetUserPolicy",
        "DeleteUserPolicy",
        "ListUserPolicies",
    }
)

# The request member that names the resource an operation acts on, and its ARN's resource type.
_NAME_MEMBERS: tuple[tuple[str, str], ...] = (
    ("TrainingJobName", Kind.TRAINING_JOB),
    ("HyperParameterTuningJobName", Kind.TUNING_JOB),
    ("TransformJobName", Kind.TRANSFORM_JOB),
    ("EndpointName", Kind.ENDPOINT),
    ("EndpointConfigName", Kind.ENDPOINT_CONFIG),
    ("ModelName", Kind.MODEL),
)

def user_arn(name: str) -> str:
    return f"arn:aws:iam::{account_id()}:user/{name}"


def action_of(operation: str) -> str:
    """``CreateTrainingJob`` -> ``sagemaker:CreateTrainingJob``; ``CreateUser`` -> ``iam:CreateUser``."""
    return f"iam:{operation}" if operation in IAM_OPERATIONS else f"sagemaker:{operation}"


def resource_of(operation: str, params: Mapping[str, Any]) -> str:
    """The ARN the request acts on, as IAM matches it; ``*`` for List operations and others that name
    no single resource. A Create's resource is the ARN the new resource will have."""
    if operation in IAM_OPERATIONS:
        name = params.get("UserName")
        return user_arn(name) if isinstance(name, str) else "*"
    if isinstance(params.get("ResourceArn"), str):
        return params["ResourceArn"]
    for member, kind in _NAME_MEMBERS:
        value = params.get(member)
        if isinstance(value, str):
            return arn(kind, value)
    return "*"
