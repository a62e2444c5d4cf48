"""The API's shapes: botocore's SageMaker service model (the schema AWS publishes; botocore ships it),
plus raymaker's own operations in a small extension written in the same JSON format
(``raymaker-extension.json``), so both are validated, served and documented alike. Loaded lazily:
botocore costs ~0.2 s, which code that never validates should not pay."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

EXTENSION_FILE = Path(__file__).with_name("raymaker-extension.json")

# An endpoint config tag (tags are SageMaker's own extension point): the target in-flight requests per
# replica that variant autoscaling keeps.
TARGET_INFLIGHT_TAG = "raymaker:TargetInflightRequestsPerReplica"


@functools.cache
def service_model() -> Any:
    """The ``sagemaker`` ServiceModel, loaded once per process."""
    import botocore.session

    return botocore.session.get_session().get_service_model("sagemaker")


@functools.cache
def extension_model() -> Any:
    """raymaker's own operations, as a botocore ServiceModel."""
    from botocore.model import ServiceModel

    return ServiceModel(json.loads(EXTENSION_FILE.read_text()), service_name="raymaker")


@functools.cache
def raymaker_operations() -> frozenset[str]:
    return frozenset(extension_model().operation_names)


def operation_model(operation: str) -> Any:
    """The operation's model, SageMaker's or raymaker's; botocore's OperationNotFoundError if neither."""
    if operation in raymaker_operations():
        return extension_model().operation_model(operation)
    return service_model().operation_model(operation)


def input_shape(operation: str) -> Any:
    return operation_model(operation).input_shape


def output_shape(operation: str) -> Any:
    return operation_model(operation).output_shape
