"""The SDK's tests run without Ray or the engine's runtime: ``RecordingBackend`` stands in for the
backend, records every (operation, request) the SDK sends, checks each request against the operation's
input shape with the engine's real validator (botocore's SageMaker model, plus raymaker's own
operations from the protocol's extension model), and answers with canned SageMaker-shaped responses,
themselves checked against the output shapes. The builders below write those responses as the engine
answers them."""

from __future__ import annotations

import copy
import datetime
from collections.abc import Callable
from typing import Any

from botocore.validate import ParamValidator

from raymaker.engine.validation import validate_request
from raymaker.protocol.service_model import output_shape

T0 = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
ACCOUNT = "arn:aws:sagemaker:us-east-1:000000000000"

Answer = dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]] | Exception


class RecordingBackend:
    """A backend that records each call (the request validated as the engine validates it) and answers
    with the next response queued for the operation (the last one repeats; a callable gets the request;
    an exception is raised). No queued response: AssertionError, so a test sees any call it did not
    expect."""

    def __init__(self, **answers: Answer | list[Answer]):
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.answers: dict[str, list[Answer]] = {}
        self.answer(**answers)

    def answer(self, **answers: Answer | list[Answer]) -> RecordingBackend:
        """Queue (replace) the responses of the named operations."""
        for op, a in answers.items():
            self.answers[op] = list(a) if isinstance(a, list) else [a]
        return self

    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        validate_request(operation, params)
        self.calls.append((operation, copy.deepcopy(params)))
        queue = self.answers.get(operation)
        if not queue:
            raise AssertionError(f"unexpected call {operation} {params}")
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        response = answer(params) if callable(answer) else answer
        assert_valid_output(operation, response)
        return copy.deepcopy(response)

    def ops(self) -> list[str]:
        return [op for op, _ in self.calls]

    def requests(self, operation: str) -> list[dict[str, Any]]:
        return [p for op, p in self.calls if op == operation]


def assert_valid_output(operation: str, response: dict[str, Any]) -> None:
    shape = output_shape(operation)
    if shape is None:
        assert response == {}, f"{operation} answers nothing"
        return
    report = ParamValidator().validate(response, shape)
    assert not report.has_errors(), report.generate_report()


# --- responses as the engine writes them ---------------------------------------------------------


def arn(kind: str, name: str) -> str:
    return f"{ACCOUNT}:{kind}/{name.lower()}"


def training_job_description(
    name: str,
    status: str = "InProgress",
    secondary: str = "Training",
    *,
    instance_count: int = 1,
    transitions: list[tuple[str, str]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """DescribeTrainingJob of an xgboost job; ``transitions`` as (Status, StatusMessage) pairs."""
    desc: dict[str, Any] = {
        "TrainingJobName": name,
        "TrainingJobArn": arn("training-job", name),
        "ModelArtifacts": {"S3ModelArtifacts": f"file:///out/{name}/output/model.tar.gz"},
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary,
        "AlgorithmSpecification": {"TrainingInputMode": "File", "AlgorithmName": "xgboost"},
        "RoleArn": "arn:aws:iam::000000000000:role/raymaker",
        "HyperParameters": {"num_round": "10", "objective": "binary:logistic"},
        "OutputDataConfig": {"S3OutputPath": "file:///out"},
        "ResourceConfig": {"InstanceType": "local", "InstanceCount": instance_count, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        "CreationTime": T0,
        "LastModifiedTime": T0,
    }
    if transitions:
        desc["SecondaryStatusTransitions"] = [
            {"Status": s, "StartTime": T0 + datetime.timedelta(seconds=i), "StatusMessage": m}
            for i, (s, m) in enumerate(transitions)
        ]
    desc.update(extra)
    return desc


def endpoint_description(
    name: str, status: str = "InService", config: str | None = None, **extra: Any
) -> dict[str, Any]:
    desc = {
        "EndpointName": name,
        "EndpointArn": arn("endpoint", name),
        "EndpointConfigName": config or name,
        "EndpointStatus": status,
        "CreationTime": T0,
        "LastModifiedTime": T0,
    }
    desc.update(extra)
    return desc


def endpoint_config_description(name: str, variants: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "EndpointConfigName": name,
        "EndpointConfigArn": arn("endpoint-config", name),
        "ProductionVariants": copy.deepcopy(variants),
        "CreationTime": T0,
    }


def variant(model: str, name: str = "AllTraffic", count: int = 1) -> dict[str, Any]:
    return {
        "VariantName": name,
        "ModelName": model,
        "InitialInstanceCount": count,
        "InstanceType": "local",
        "InitialVariantWeight": 1.0,
    }


def transform_job_description(
    request: dict[str, Any], status: str = "InProgress", **extra: Any
) -> dict[str, Any]:
    """DescribeTransformJob: the CreateTransformJob request echoed, plus state."""
    desc = {k: copy.deepcopy(v) for k, v in request.items() if k != "Tags"}
    desc.update(
        TransformJobArn=arn("transform-job", request["TransformJobName"]),
        TransformJobStatus=status,
        CreationTime=T0,
    )
    desc.update(extra)
    return desc


def created(kind: str, key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A Create* answer: ``{<kind>Arn: ...}`` naming the resource the request named in ``key``."""
    resource = {"Model": "model", "EndpointConfig": "endpoint-config", "Endpoint": "endpoint"}.get(kind)
    resource = resource or kind.lower()
    return lambda p: {f"{kind}Arn": arn(resource, p[key])}
