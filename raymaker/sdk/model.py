"""``Model``: a trained model artifact plus the algorithm that serves it, as the SageMaker Python SDK's
``sagemaker.model.Model``; ``deploy`` makes it a persistent endpoint in one call."""

from __future__ import annotations

from typing import Any

from raymaker.protocol.errors import ValidationError
from raymaker.protocol.service_model import TARGET_INFLIGHT_TAG
from raymaker.sdk.deserializers import BaseDeserializer
from raymaker.sdk.names import base_name_from_image, name_from_base
from raymaker.sdk.predictor import Predictor, wait_for_endpoint
from raymaker.sdk.serializers import BaseSerializer
from raymaker.sdk.session import Session
from raymaker.sdk.transformer import Transformer


class Model:
    def __init__(
        self,
        model_data: str,
        image_uri: str | None = None,
        role: str | None = None,
        *,
        algorithm: str | None = None,
        name: str | None = None,
        env: dict[str, str] | None = None,
        predictor_cls: type[Predictor] = Predictor,
        sagemaker_session: Session | None = None,
        session: Session | None = None,
    ):
        if (algorithm is None) == (image_uri is None):
            raise ValueError(
                "name the built-in algorithm that serves the model (algorithm='xgboost') or its image_uri"
            )
        self.model_data = model_data
        self.image_uri = image_uri or algorithm
        self.algorithm = algorithm
        self.role = role
        self.name = name
        self.env = dict(env or {})
        self.predictor_cls = predictor_cls
        self.session = session or sagemaker_session or Session()
        self.endpoint_name: str | None = None

    def create(self) -> str:
        """Record the model (CreateModel) if not yet done; returns its name."""
        if self.name and self._exists():
            return self.name
        # As the SageMaker SDK names a model: after its image (here the algorithm), else "Model".
        self.name = self.name or name_from_base(base_name_from_image(self.image_uri, "Model"))
        request: dict[str, Any] = {
            "ModelName": self.name,
            "PrimaryContainer": {"Image": self.image_uri, "ModelDataUrl": self.model_data},
        }
        if self.env:
            request["PrimaryContainer"]["Environment"] = self.env
        if self.role:
            request["ExecutionRoleArn"] = self.role
        self.session.call("CreateModel", request)
        return self.name

    def _exists(self) -> bool:
        try:
            self.session.call("DescribeModel", {"ModelName": self.name})
            return True
        except ValidationError:
            return False

    def deploy(
        self,
        initial_instance_count: int = 1,
        instance_type: str = "local",
        serializer: BaseSerializer | None = None,
        deserializer: BaseDeserializer | None = None,
        endpoint_name: str | None = None,
        wait: bool = True,
        *,
        variant_name: str = "AllTraffic",
        min_instance_count: int | None = None,
        max_instance_count: int | None = None,
        target_inflight_requests: float | None = None,
        tags: list[dict[str, str]] | None = None,
    ) -> Predictor:
        """CreateModel, CreateEndpointConfig and CreateEndpoint, then (``wait``) until InService.
        ``min_instance_count``/``max_instance_count`` turn on autoscaling (ManagedInstanceScaling),
        keeping about ``target_inflight_requests`` requests in flight per replica."""
        model_name = self.create()
        self.endpoint_name = endpoint_name or model_name
        variant: dict[str, Any] = {
            "VariantName": variant_name,
            "ModelName": model_name,
            "InitialInstanceCount": initial_instance_count,
            "InstanceType": instance_type,
            "InitialVariantWeight": 1.0,
        }
        if min_instance_count is not None or max_instance_count is not None:
            variant["ManagedInstanceScaling"] = {
                "Status": "ENABLED",
                "MinInstanceCount": min_instance_count or 1,
                "MaxInstanceCount": max_instance_count
                or max(initial_instance_count, min_instance_count or 1),
            }
        config: dict[str, Any] = {"EndpointConfigName": self.endpoint_name, "ProductionVariants": [variant]}
        tags = list(tags or [])
        if target_inflight_requests is not None:
            tags.append({"Key": TARGET_INFLIGHT_TAG, "Value": str(target_inflight_requests)})
        if tags:
            config["Tags"] = tags
        self.session.call("CreateEndpointConfig", config)
        self.session.call(
            "CreateEndpoint", {"EndpointName": self.endpoint_name, "EndpointConfigName": self.endpoint_name}
        )
        if wait:
            wait_for_endpoint(self.session, self.endpoint_name)
        return self.predictor_cls(
            self.endpoint_name, session=self.session, serializer=serializer, deserializer=deserializer
        )

    def transformer(
        self, instance_count: int = 1, instance_type: str = "local", **kwargs: Any
    ) -> Transformer:
        """A Transformer that runs batch transform jobs with this model (CreateModel first)."""
        return Transformer(self.create(), instance_count, instance_type, session=self.session, **kwargs)

    def delete_model(self) -> None:
        """Delete the model record (DeleteModel), if it was created."""
        if self.name:
            self.session.call("DeleteModel", {"ModelName": self.name})
