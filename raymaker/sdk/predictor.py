"""``Predictor``: calls an endpoint, as the SageMaker Python SDK's ``sagemaker.predictor.Predictor``.

Requests go through boto3's own ``sagemaker-runtime`` client pointed at the session's runtime URL, so
errors are the botocore ``ClientError``s a SageMaker user already handles. Requests are unsigned: the
runtime listener does not check SigV4 (it is meant for a trusted network or 127.0.0.1)."""

from __future__ import annotations

from typing import Any

from raymaker.sdk import progress
from raymaker.sdk.deserializers import BaseDeserializer, BytesDeserializer
from raymaker.sdk.exceptions import UnexpectedStatusException
from raymaker.sdk.names import name_from_base
from raymaker.sdk.serializers import BaseSerializer, IdentitySerializer
from raymaker.sdk.session import Session
from raymaker.sdk.waiter import ENDPOINT, ENDPOINT_DELETED, wait_for


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
        *,
        logs: bool = True,
    ) -> None:
        """Move the endpoint to a new endpoint config: the current one with this instance count, type
        or model (every variant, as the SageMaker SDK does). New replicas start before old ones stop.
        With ``wait``, UnexpectedStatusException if the update failed (the endpoint then goes on
        serving its previous config); its progress shows unless ``logs=False``."""
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
        new_config = name_from_base(self.endpoint_name)
        self.session.call(
            "CreateEndpointConfig", {"EndpointConfigName": new_config, "ProductionVariants": variants}
        )
        self.session.call(
            "UpdateEndpoint", {"EndpointName": self.endpoint_name, "EndpointConfigName": new_config}
        )
        if wait:
            desc = wait_for_endpoint(self.session, self.endpoint_name, logs=logs)
            if desc["EndpointConfigName"] != new_config:
                # A failed update rolls back: InService again, on the old config, with the reason.
                raise UnexpectedStatusException(
                    f"Endpoint {self.endpoint_name} update failed and was rolled back to "
                    f"{desc['EndpointConfigName']}: {desc.get('FailureReason', '(No reason provided)')}",
                    allowed_statuses=["InService"],
                    actual_status=desc["EndpointStatus"],
                )

    def delete_endpoint(self, delete_endpoint_config: bool = True, wait: bool = True) -> None:
        """Delete the endpoint (with ``wait``, until it is gone), then its endpoint config."""
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


def wait_for_endpoint(
    session: Session, name: str, timeout_s: float = 900.0, poll_s: float = 0.1, *, logs: bool = True
) -> dict[str, Any]:
    """Wait until endpoint ``name`` is no longer Creating or Updating and return its description;
    UnexpectedStatusException unless it is InService (the SageMaker SDK's ``wait_for_endpoint``). With
    ``logs``, its status and elapsed time on stdout (``sdk/progress.py``), where the SageMaker SDK
    prints a row of dashes."""
    if not logs:
        return wait_for(session, ENDPOINT, name, poll=poll_s, timeout=timeout_s)
    with progress.watch(ENDPOINT, session, name) as w:
        return wait_for(session, ENDPOINT, name, poll=poll_s, timeout=timeout_s, on_describe=w.on_describe)


def wait_for_deleted(session: Session, name: str, timeout_s: float = 300.0, poll_s: float = 0.1) -> None:
    """Wait until DescribeEndpoint no longer finds endpoint ``name`` (botocore's EndpointDeleted)."""
    wait_for(session, ENDPOINT_DELETED, name, poll=poll_s, timeout=timeout_s)
