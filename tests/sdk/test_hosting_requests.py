"""``Model`` and ``Predictor`` against a recording backend: the exact control-plane requests of
deploy, update_endpoint, delete_endpoint and delete_model (``predict`` goes over the runtime HTTP
client and is not here), and the endpoint waits through the SDK's one waiter."""

from __future__ import annotations

import re
from typing import Any

import pytest

from raymaker.protocol.errors import ValidationError
from raymaker.protocol.service_model import TARGET_INFLIGHT_TAG
from raymaker.sdk import Model, Predictor, Session, UnexpectedStatusException
from raymaker.sdk.predictor import wait_for_deleted
from tests.sdk.helpers import (
    T0,
    RecordingBackend,
    created,
    endpoint_config_description,
    endpoint_description,
    variant,
)

MODEL_DATA = "file:///out/job-1/output/model.tar.gz"
XGB_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
TIMESTAMPED = r"\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-\d{3}"


def hosting_backend(**answers: Any) -> RecordingBackend:
    return RecordingBackend(
        DescribeModel=ValidationError("Could not find model"),
        CreateModel=created("Model", "ModelName"),
        CreateEndpointConfig=created("EndpointConfig", "EndpointConfigName"),
        CreateEndpoint=created("Endpoint", "EndpointName"),
    ).answer(**answers)


def test_model_deploy_with_autoscaling_and_tags(sleeps: list[float]) -> None:
    backend = hosting_backend(
        DescribeEndpoint=[endpoint_description("m-ep", "Creating"), endpoint_description("m-ep")]
    )
    model = Model(MODEL_DATA, algorithm="xgboost", env={"K": "v"}, session=Session(backend=backend))
    predictor = model.deploy(
        1,
        "local",
        endpoint_name="m-ep",
        min_instance_count=1,
        max_instance_count=4,
        target_inflight_requests=3,
        tags=[{"Key": "team", "Value": "ml"}],
    )
    assert isinstance(predictor, Predictor) and predictor.endpoint_name == "m-ep"
    assert re.fullmatch(f"xgboost-{TIMESTAMPED}", model.name or "")
    assert backend.calls == [
        (
            "CreateModel",
            {
                "ModelName": model.name,
                "PrimaryContainer": {
                    "Image": "xgboost",
                    "ModelDataUrl": MODEL_DATA,
                    "Environment": {"K": "v"},
                },
            },
        ),
        (
            "CreateEndpointConfig",
            {
                "EndpointConfigName": "m-ep",
                "ProductionVariants": [
                    {
                        **variant(model.name or ""),
                        "ManagedInstanceScaling": {
                            "Status": "ENABLED",
                            "MinInstanceCount": 1,
                            "MaxInstanceCount": 4,
                        },
                    }
                ],
                "Tags": [{"Key": "team", "Value": "ml"}, {"Key": TARGET_INFLIGHT_TAG, "Value": "3"}],
            },
        ),
        ("CreateEndpoint", {"EndpointName": "m-ep", "EndpointConfigName": "m-ep"}),
        ("DescribeEndpoint", {"EndpointName": "m-ep"}),
        ("DescribeEndpoint", {"EndpointName": "m-ep"}),
    ]
    assert sleeps == [0.1]  # one pause between the two describes


def test_model_named_after_its_image_and_deploy_without_wait() -> None:
    backend = hosting_backend()
    model = Model(MODEL_DATA, image_uri=XGB_IMAGE, session=Session(backend=backend))
    model.deploy(wait=False)
    assert re.fullmatch(f"sagemaker-xgboost-{TIMESTAMPED}", model.name or "")
    assert backend.ops() == ["CreateModel", "CreateEndpointConfig", "CreateEndpoint"]
    assert backend.requests("CreateEndpoint") == [
        {"EndpointName": model.name, "EndpointConfigName": model.name}
    ]


def test_a_named_model_that_exists_is_not_created_again() -> None:
    backend = hosting_backend(
        DescribeModel={"ModelName": "m", "ModelArn": "arn:aws:sagemaker:x:model/m", "CreationTime": T0}
    )
    model = Model(MODEL_DATA, algorithm="xgboost", name="m", session=Session(backend=backend))
    assert model.create() == "m"
    assert backend.calls == [("DescribeModel", {"ModelName": "m"})]


def test_deploy_that_fails_raises_the_sagemaker_sdk_message() -> None:
    reason = "model.tar.gz is not a readable .tar.gz"
    backend = hosting_backend(
        DescribeEndpoint=[
            endpoint_description("bad", "Creating"),
            endpoint_description("bad", "Failed", FailureReason=reason),
        ]
    )
    model = Model(MODEL_DATA, algorithm="xgboost", name="bad", session=Session(backend=backend))
    with pytest.raises(UnexpectedStatusException) as err:
        model.deploy(1, "local")
    assert str(err.value) == f"Error hosting endpoint bad: Failed. Reason: {reason}."
    assert (err.value.allowed_statuses, err.value.actual_status) == (["InService"], "Failed")


def test_model_delete_model() -> None:
    backend = RecordingBackend(DeleteModel={})
    Model(MODEL_DATA, algorithm="xgboost", name="m", session=Session(backend=backend)).delete_model()
    assert backend.calls == [("DeleteModel", {"ModelName": "m"})]


def _predictor(backend: RecordingBackend) -> Predictor:
    return Predictor("ep", session=Session(backend=backend))


def test_update_endpoint_moves_to_a_new_config() -> None:
    backend = RecordingBackend(
        DescribeEndpointConfig=endpoint_config_description("ep", [variant("m-1"), variant("m-1", "B")]),
        CreateEndpointConfig=created("EndpointConfig", "EndpointConfigName"),
        UpdateEndpoint=created("Endpoint", "EndpointName"),
    )
    backend.answer(
        DescribeEndpoint=[
            endpoint_description("ep"),
            endpoint_description("ep", "Updating"),
            lambda p: endpoint_description(
                "ep", config=backend.requests("UpdateEndpoint")[0]["EndpointConfigName"]
            ),
        ]
    )
    _predictor(backend).update_endpoint(initial_instance_count=2, model_name="m-2")
    new = backend.requests("CreateEndpointConfig")[0]["EndpointConfigName"]
    assert re.fullmatch(f"ep-{TIMESTAMPED}", new)
    assert backend.calls == [
        ("DescribeEndpoint", {"EndpointName": "ep"}),
        ("DescribeEndpointConfig", {"EndpointConfigName": "ep"}),
        (
            "CreateEndpointConfig",
            {
                "EndpointConfigName": new,
                "ProductionVariants": [variant("m-2", count=2), variant("m-2", "B", count=2)],
            },
        ),
        ("UpdateEndpoint", {"EndpointName": "ep", "EndpointConfigName": new}),
        ("DescribeEndpoint", {"EndpointName": "ep"}),
        ("DescribeEndpoint", {"EndpointName": "ep"}),
    ]


def test_an_update_that_rolls_back_raises() -> None:
    backend = RecordingBackend(
        DescribeEndpointConfig=endpoint_config_description("ep", [variant("m-1")]),
        CreateEndpointConfig=created("EndpointConfig", "EndpointConfigName"),
        UpdateEndpoint=created("Endpoint", "EndpointName"),
        DescribeEndpoint=[
            endpoint_description("ep"),
            endpoint_description("ep", "Updating"),
            endpoint_description("ep", FailureReason="Update failed: model did not load"),
        ],
    )
    with pytest.raises(
        UnexpectedStatusException, match="update failed and was rolled back to ep: Update failed"
    ):
        _predictor(backend).update_endpoint(instance_type="local")


def test_update_endpoint_without_wait() -> None:
    backend = RecordingBackend(
        DescribeEndpoint=endpoint_description("ep"),
        DescribeEndpointConfig=endpoint_config_description("ep", [variant("m-1")]),
        CreateEndpointConfig=created("EndpointConfig", "EndpointConfigName"),
        UpdateEndpoint=created("Endpoint", "EndpointName"),
    )
    _predictor(backend).update_endpoint(initial_instance_count=3, wait=False)
    assert backend.ops() == [
        "DescribeEndpoint",
        "DescribeEndpointConfig",
        "CreateEndpointConfig",
        "UpdateEndpoint",
    ]


def test_delete_endpoint_waits_until_it_is_gone_then_deletes_the_config() -> None:
    backend = RecordingBackend(
        DeleteEndpoint={},
        DeleteEndpointConfig={},
        DescribeEndpoint=[
            endpoint_description("ep", config="ep-config"),
            endpoint_description("ep", "Deleting", config="ep-config"),
            ValidationError("Could not find endpoint ep"),
        ],
    )
    _predictor(backend).delete_endpoint()
    assert backend.calls == [
        ("DescribeEndpoint", {"EndpointName": "ep"}),
        ("DeleteEndpoint", {"EndpointName": "ep"}),
        ("DescribeEndpoint", {"EndpointName": "ep"}),
        ("DescribeEndpoint", {"EndpointName": "ep"}),
        ("DeleteEndpointConfig", {"EndpointConfigName": "ep-config"}),
    ]


def test_delete_endpoint_keeping_the_config_without_wait() -> None:
    backend = RecordingBackend(DeleteEndpoint={}, DescribeEndpoint=endpoint_description("ep"))
    _predictor(backend).delete_endpoint(delete_endpoint_config=False, wait=False)
    assert backend.ops() == ["DescribeEndpoint", "DeleteEndpoint"]


def test_a_deletion_that_fails_raises() -> None:
    backend = RecordingBackend(
        DescribeEndpoint=[
            endpoint_description("ep", "Deleting"),
            endpoint_description("ep", "Failed", FailureReason="replicas would not stop"),
        ]
    )
    with pytest.raises(
        UnexpectedStatusException, match="Error deleting endpoint ep: Failed. Reason: replicas"
    ):
        wait_for_deleted(Session(backend=backend), "ep")


def test_predictor_delete_model_deletes_every_variant_model() -> None:
    backend = RecordingBackend(
        DescribeEndpoint=endpoint_description("ep", config="ep-config"),
        DescribeEndpointConfig=endpoint_config_description(
            "ep-config", [variant("m-1"), variant("m-2", "B")]
        ),
        DeleteModel={},
    )
    _predictor(backend).delete_model()
    assert backend.calls == [
        ("DescribeEndpoint", {"EndpointName": "ep"}),
        ("DescribeEndpointConfig", {"EndpointConfigName": "ep-config"}),
        ("DeleteModel", {"ModelName": "m-1"}),
        ("DeleteModel", {"ModelName": "m-2"}),
    ]
