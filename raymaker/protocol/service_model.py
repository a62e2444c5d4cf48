"""botocore's SageMaker service model: the API's shapes as AWS publishes them (botocore ships the
model file), used to validate requests and to build and check responses. Imported lazily: loading
botocore costs ~0.2 s, which job-record code that never validates should not pay."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def service_model() -> Any:
    """The ``sagemaker`` ServiceModel, loaded once per process."""
    import botocore.session

    return botocore.session.get_session().get_service_model("sagemaker")


def input_shape(operation: str) -> Any:
    return service_model().operation_model(operation).input_shape


def output_shape(operation: str) -> Any:
    return service_model().operation_model(operation).output_shape


# An endpoint config tag (tags are SageMaker's own extension point): the target in-flight requests per
# replica that variant autoscaling keeps.
TARGET_INFLIGHT_TAG = "raymaker:TargetInflightRequestsPerReplica"
