"""Local settings both sides of the seam read from the environment: where raymaker keeps its files
(``RAYMAKER_HOME``), and the region and account that ARNs name."""

from __future__ import annotations

import os
import re
from pathlib import Path

DEFAULT_ACCOUNT_ID = "000000000000"
DEFAULT_REGION = "us-east-1"
DEFAULT_BUCKET_ENV = "RAYMAKER_DEFAULT_BUCKET"


def raymaker_home() -> Path:
    """``RAYMAKER_HOME``, default ``~/.raymaker``: the job database, caches, local outputs."""
    return Path(os.environ.get("RAYMAKER_HOME") or os.path.join(os.path.expanduser("~"), ".raymaker"))


def region() -> str:
    """RAYMAKER_REGION, AWS_REGION, AWS_DEFAULT_REGION or us-east-1."""
    for var in ("RAYMAKER_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"):
        if os.environ.get(var):
            return os.environ[var]
    return DEFAULT_REGION


def account_id() -> str:
    """raymaker has no AWS account: a 12-digit placeholder, ``RAYMAKER_ACCOUNT_ID`` (default zeros)."""
    account = os.environ.get("RAYMAKER_ACCOUNT_ID") or DEFAULT_ACCOUNT_ID
    if not re.fullmatch(r"\d{12}", account):
        raise ValueError(f"RAYMAKER_ACCOUNT_ID {account!r} must be 12 digits")
    return account


def resource_arn(resource_type: str, name: str) -> str:
    """SageMaker's ARN form, e.g. ``arn:aws:sagemaker:us-east-1:000000000000:endpoint/my-endpoint``: the
    name lower-cased, as SageMaker writes it (its resource names are case-insensitive)."""
    return f"arn:aws:sagemaker:{region()}:{account_id()}:{resource_type}/{name.lower()}"


def default_output_path() -> str:
    """Where models go when a request names no output: ``s3://$RAYMAKER_DEFAULT_BUCKET/`` (the SageMaker
    SDK's default bucket; what a cluster of several nodes needs), else a local folder (local mode)."""
    bucket = os.environ.get(DEFAULT_BUCKET_ENV, "").strip().removeprefix("s3://").strip("/")
    if bucket:
        return f"s3://{bucket}/"
    return "file://" + os.path.join(str(raymaker_home()), "output")
