"""ARNs for raymaker resources, shaped as SageMaker's:
``arn:aws:sagemaker:<region>:<account>:training-job/<name>``.

raymaker has no AWS account; the account is a 12-digit placeholder (``RAYMAKER_ACCOUNT_ID``, default
000000000000) and the region is RAYMAKER_REGION, AWS_REGION, AWS_DEFAULT_REGION or us-east-1. The name
is lower-cased, as SageMaker writes it in ARNs (its resource names are case-insensitive)."""

from __future__ import annotations

import os
import re

DEFAULT_ACCOUNT_ID = "000000000000"
DEFAULT_REGION = "us-east-1"


def region() -> str:
    for var in ("RAYMAKER_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"):
        if os.environ.get(var):
            return os.environ[var]
    return DEFAULT_REGION


def account_id() -> str:
    account = os.environ.get("RAYMAKER_ACCOUNT_ID") or DEFAULT_ACCOUNT_ID
    if not re.fullmatch(r"\d{12}", account):
        raise ValueError(f"RAYMAKER_ACCOUNT_ID {account!r} must be 12 digits")
    return account


def arn(resource_type: str, name: str) -> str:
    """e.g. ``arn("training-job", "My-Job")`` -> ``arn:aws:sagemaker:us-east-1:000000000000:training-job/my-job``."""
    return f"arn:aws:sagemaker:{region()}:{account_id()}:{resource_type}/{name.lower()}"


def training_job_arn(name: str) -> str:
    return arn("training-job", name)
