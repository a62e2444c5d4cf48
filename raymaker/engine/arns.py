"""ARNs for raymaker resources, shaped as SageMaker's:
``arn:aws:sagemaker:<region>:<account>:training-job/<name>``.

raymaker has no AWS account; the account is a 12-digit placeholder (``RAYMAKER_ACCOUNT_ID``, default
000000000000) and the region is RAYMAKER_REGION, AWS_REGION, AWS_DEFAULT_REGION or us-east-1. The name
is lower-cased, as SageMaker writes it in ARNs (its resource names are case-insensitive)."""

from __future__ import annotations

from raymaker.engine.kinds import Kind
from raymaker.protocol.environment import resource_arn


def arn(resource_type: str, name: str) -> str:
    """e.g. ``arn("training-job", "My-Job")`` -> ``arn:aws:sagemaker:us-east-1:000000000000:training-job/my-job``."""
    return resource_arn(resource_type, name)


def training_job_arn(name: str) -> str:
    return arn(Kind.TRAINING_JOB, name)
