"""``Predictor``: calls an endpoint, as the SageMaker Python SDK's ``sagemaker.predictor.Predictor``.

Requests go through boto3's own ``sagemaker-runtime`` client pointed at the session's runtime URL, so
errors are the botocore ``ClientError``s a SageMaker user already handles. Requests are unsigned: the
runtime listener does not check SigV4 (it is meant for a trusted network or 127.0.0.1)."""

from __future__ import annotations

import time
from typing import Any

from raymaker.sdk.deserializers import BaseDeserializer, BytesDeserializer
from raymaker.sdk.serializers import BaseSerializer, IdentitySerializer
from raymaker.sdk.session import Session
from raymaker.sdk.training_job import UnexpectedStatusException


class Predictor:
    def __init__(
        self,
        endpoint_name: str,
        sagemaker_session: Session | None = None,
        serializer: BaseSerializer | None = None,
        deserializer: BaseDeserializer | None = None,
        *,
        session: Session | None = None,
    ):
        self.endpoint_name = endpoint_name
        self.session = session or sagemaker_session or Session()
        self.serializer = serializer or IdentitySerializer()
        self.deserializer = deserializer or BytesDeserializer()

    @property
    def content_type(self) -> str:
        return self.serializer.CONTENT_TYPE

    @property
    def accept(self) -> tuple[str, ...]:
        return self.deserializer.ACCEPT

    def predict(
        self,
        data: Any,
        initial_args: dict[str, Any] | None = None,
        target_model: str | None = None,
        target_variant: str | None = None,
        inference_id: str | None = None,
        custom_attributes: str | None = None,
    ) -> Any:
        """Serialize ``data``, invoke the endpoint, and deserialize the response."""
        args: dict[str, Any] = dict(initial_args or {})
        args["EndpointName"] = self.endpoint_name
        args.setdefault("ContentType", self.content_type)
        args.setdefault("Accept", ", ".join(self.accept))
        if target_variant:
            args["TargetVariant"] = target_variant
        if target_model:
            args["TargetModel"] = target_model
        if inference_id:
            args["InferenceId"] = inference_id
        if custom_attributes:
            args["CustomAttributes"] = custom_attributes
        args["Body"] = self.serializer.serialize(data)
        response = self.session.runtime_client().invoke_endpoint(**args)
        self.last_response = response
        return self.deserializer.deserialize(response["Body"], response.get("ContentType"))

    def describe(self) -> dict[str, Any]:
        return self.session.call("DescribeEndpoint", {"EndpointName": self.endpoint_name})

    def update_endpoint(
        self,
        initial_instance_count: int | None = None,
        instance_type: str | None = None,
        model_name: str | None = None,
        wait: bool = True,
    ) -> None:
        """Move the endpoint to a new endpoint config: the current one with this instance count, type
        or model (every variant, as the SageMaker SDK does). New replicas start before old ones stop."""
        desc = self.describe()
        config = self.session.call(
            "DescribeEndpointConfig", {"EndpointConfigName": desc["EndpointConfigName"]}
        )
        variants = []
        for v in config["ProductionVariants"]:
            v = dict(v)
            if initial_instance_count is not None:
                v["InitialInstanceCount"] = initial_instance_count
            if instance_type is not None:
                v["InstanceType"] = instance_type
            if model_name is not None:
                v["ModelName"] = model_name
            variants.append(v)
        new_config = unique_name(self.endpoint_name)
        self.session.call(
            "CreateEndpointConfig", {"EndpointConfigName": new_config, "ProductionVariants": variants}
        )
        self.session.call(
            "UpdateEndpoint", {"EndpointName": self.endpoint_name, "EndpointConfigName": new_config}
        )
        if wait:
            wait_for_endpoint(self.session, self.endpoint_name)

    def delete_endpoint(self, delete_endpoint_config: bool = True, wait: bool = True) -> None:
        desc = self.describe()
        self.session.call("DeleteEndpoint", {"EndpointName": self.endpoint_name})
        if wait:
            wait_for_deleted(self.session, self.endpoint_name)
        if delete_endpoint_config:
            self.session.call("DeleteEndpointConfig", {"EndpointConfigName": desc["EndpointConfigName"]})

    def delete_model(self) -> None:
        desc = self.describe()
        config = self.session.call(
            "DescribeEndpointConfig", {"EndpointConfigName": desc["EndpointConfigName"]}
        )
        for v in config["ProductionVariants"]:
            self.session.call("DeleteModel", {"ModelName": v["ModelName"]})


def unique_name(base: str) -> str:
    from raymaker.sdk.estimator import _timestamped

    return _timestamped(base)


def wait_for_endpoint(
    session: Session, name: str, timeout_s: float = 900.0, poll_s: float = 0.1
) -> dict[str, Any]:
    """Poll DescribeEndpoint until the endpoint is InService; UnexpectedStatusException if it fails
    (or an update rolls back, leaving a FailureReason)."""
    deadline = time.monotonic() + timeout_s
    while True:
        desc = session.call("DescribeEndpoint", {"EndpointName": name})
        status = desc["EndpointStatus"]
        if status == "InService":
            if desc.get("FailureReason"):
                raise UnexpectedStatusException(
                    f"Endpoint {name} update failed and was rolled back: {desc['FailureReason']}",
                    allowed_statuses=["InService"],
                    actual_status="InService",
                )
            return desc
        if status == "Failed":
            raise UnexpectedStatusException(
                f"Error hosting endpoint {name}: Failed. Reason: {desc.get('FailureReason')}",
                allowed_statuses=["InService"],
                actual_status=status,
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"endpoint {name} is still {status} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def wait_for_deleted(session: Session, name: str, timeout_s: float = 300.0) -> None:
    from raymaker.protocol.errors import ValidationError

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            session.call("DescribeEndpoint", {"EndpointName": name})
        except ValidationError:
            return
        time.sleep(0.1)
    raise TimeoutError(f"endpoint {name} is still being deleted after {timeout_s:.0f} s")
