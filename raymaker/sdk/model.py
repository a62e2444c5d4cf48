"""``Model``: a trained model artifact plus what serves it, as the SageMaker Python SDK's
``sagemaker.model.Model``: a raymaker built-in algorithm, or a script (``entry_point``, ``source_dir``,
``dependencies``) in a SageMaker framework container; ``deploy`` makes it a persistent endpoint in one
call. The framework models (``raymaker.sdk.frameworks``: ``PyTorchModel``, ``SKLearnModel``,
``XGBoostModel``) subclass it and name the inference image from ``framework_version``.

A script's model carries what the SageMaker SDK v2's ``Model._script_mode_env_vars`` sets in the
container's Environment: ``SAGEMAKER_PROGRAM``, ``SAGEMAKER_SUBMIT_DIRECTORY`` (the uploaded
``sourcedir.tar.gz``), ``SAGEMAKER_CONTAINER_LOG_LEVEL`` and ``SAGEMAKER_REGION``."""

from __future__ import annotations

import logging
from typing import Any

from raymaker.protocol.environment import region
from raymaker.protocol.errors import ValidationError
from raymaker.protocol.frameworks import framework_of_image
from raymaker.protocol.service_model import TARGET_INFLIGHT_TAG
from raymaker.sdk.code import (
    CONTAINER_LOG_LEVEL_PARAM_NAME,
    DIR_PARAM_NAME,
    MODEL_SERVER_WORKERS_PARAM_NAME,
    SAGEMAKER_REGION_PARAM_NAME,
    SCRIPT_PARAM_NAME,
    UploadedCode,
    check_code,
    join_uri,
    tar_and_upload_dir,
)
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
        entry_point: str | None = None,
        source_dir: str | None = None,
        dependencies: list[str] | None = None,
        code_location: str | None = None,
        container_log_level: int = logging.INFO,
        model_server_workers: int | None = None,
        sagemaker_session: Session | None = None,
        session: Session | None = None,
    ):
        """``entry_point`` (with ``source_dir``, a local folder or an ``s3://`` ``.tar.gz``, and
        ``dependencies``) is the inference script (``model_fn``, ``input_fn``, ``predict_fn``,
        ``output_fn``) the framework container ``image_uri`` runs; its code is uploaded to
        ``<code_location>/<model name>/sourcedir.tar.gz`` (default: the session's output path)."""
        self.model_data = model_data
        self.image_uri = image_uri or algorithm
        self.algorithm = algorithm
        self.role = role
        self.name = name
        self.env = dict(env or {})
        self.predictor_cls = predictor_cls
        self.entry_point = entry_point
        self.source_dir = source_dir
        self.dependencies = list(dependencies or [])
        self.code_location = code_location
        self.container_log_level = container_log_level
        self.model_server_workers = model_server_workers
        self.session = session or sagemaker_session or Session()
        self.endpoint_name: str | None = None
        self.uploaded_code: UploadedCode | None = None
        self._check_image(image_uri)
        check_code(entry_point, source_dir, self.dependencies, required=False)

    def _check_image(self, image_uri: str | None) -> None:
        if (self.algorithm is None) == (image_uri is None):
            raise ValueError(
                "name the built-in algorithm that serves the model (algorithm='xgboost') or its image_uri"
            )
        if self.entry_point is None and self.model_server_workers is None:
            return
        if self.algorithm is not None:
            raise ValueError(
                f"the built-in algorithm {self.algorithm!r} serves its own model: entry_point and "
                "model_server_workers are for scripts in a framework container (raymaker.pytorch.PyTorchModel, "
                "raymaker.sklearn.SKLearnModel, raymaker.xgboost.XGBoostModel)"
            )
        if framework_of_image(image_uri or "") is None:
            raise ValueError(
                f"image_uri {image_uri!r} is not a SageMaker framework image raymaker runs inference "
                "scripts in: use a pytorch-inference, sagemaker-scikit-learn or sagemaker-xgboost image"
            )

    def serving_image_uri(self, instance_type: str | None = None) -> str:
        """The container's Image (the built-in algorithm's name, or ``image_uri``)."""
        del instance_type
        return self.image_uri  # type: ignore[return-value]

    def _script_mode(self) -> bool:
        return self.entry_point is not None or bool(self.source_dir) or bool(self.dependencies)

    def _upload_code(self) -> None:
        """Upload the script's code to ``<code_location>/<model name>/sourcedir.tar.gz`` (a source
        archive already in storage is used as it is; no entry point, nothing), as the SDK's
        ``Model._upload_code`` (without its repacking into model.tar.gz)."""
        if self.entry_point is None:
            self.uploaded_code = None
            return
        prefix = join_uri(self.code_location or self.session.default_output_path, self.name or "model")
        self.uploaded_code = tar_and_upload_dir(prefix, self.entry_point, self.source_dir, self.dependencies)

    def _script_mode_env_vars(self) -> dict[str, str]:
        """SAGEMAKER_PROGRAM, SAGEMAKER_SUBMIT_DIRECTORY, SAGEMAKER_CONTAINER_LOG_LEVEL and
        SAGEMAKER_REGION, as the SageMaker SDK's ``Model._script_mode_env_vars``: the program and
        directory are empty without an entry point (the container then serves the model archive's
        own ``code/``)."""
        script_name = self.env.get(SCRIPT_PARAM_NAME.upper(), "")
        dir_name = self.env.get(DIR_PARAM_NAME.upper(), "")
        if self.uploaded_code:
            script_name = self.uploaded_code.script_name
            dir_name = self.uploaded_code.s3_prefix
        return {
            SCRIPT_PARAM_NAME.upper(): script_name,
            DIR_PARAM_NAME.upper(): dir_name,
            CONTAINER_LOG_LEVEL_PARAM_NAME.upper(): str(self.container_log_level),
            SAGEMAKER_REGION_PARAM_NAME.upper(): region(),
        }

    def container_def(self, instance_type: str | None = None) -> dict[str, Any]:
        """The CreateModel PrimaryContainer (``prepare_container_def`` in the SageMaker SDK); a script's
        code is uploaded here."""
        image = self.serving_image_uri(instance_type)
        container: dict[str, Any] = {"Image": image, "ModelDataUrl": self.model_data}
        env = dict(self.env)
        if self._script_mode():
            self._upload_code()
            env.update(self._script_mode_env_vars())
            if self.model_server_workers:
                env[MODEL_SERVER_WORKERS_PARAM_NAME.upper()] = str(self.model_server_workers)
        if env:
            container["Environment"] = env
        return container

    def create(self, instance_type: str | None = None) -> str:
        """Record the model (CreateModel) if not yet done; returns its name. ``instance_type`` picks a
        framework model's CPU or GPU image (``deploy`` and ``transformer`` pass theirs)."""
        if self.name and self._exists():
            return self.name
        # As the SageMaker SDK names a model: after its image (here the algorithm), else "Model".
        self.name = self.name or name_from_base(
            base_name_from_image(self.serving_image_uri(instance_type), "Model")
        )
        request: dict[str, Any] = {
            "ModelName": self.name,
            "PrimaryContainer": self.container_def(instance_type),
        }
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
        logs: bool = True,
    ) -> Predictor:
        """CreateModel, CreateEndpointConfig and CreateEndpoint, then (``wait``) until InService,
        showing the endpoint's status and elapsed time unless ``logs=False``.
        ``min_instance_count``/``max_instance_count`` turn on autoscaling (ManagedInstanceScaling),
        keeping about ``target_inflight_requests`` requests in flight per replica."""
        model_name = self.create(instance_type)
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
            wait_for_endpoint(self.session, self.endpoint_name, logs=logs)
        return self.predictor_cls(
            self.endpoint_name, session=self.session, serializer=serializer, deserializer=deserializer
        )

    def transformer(
        self, instance_count: int = 1, instance_type: str = "local", **kwargs: Any
    ) -> Transformer:
        """A Transformer that runs batch transform jobs with this model (CreateModel first)."""
        return Transformer(
            self.create(instance_type), instance_count, instance_type, session=self.session, **kwargs
        )

    def delete_model(self) -> None:
        """Delete the model record (DeleteModel), if it was created."""
        if self.name:
            self.session.call("DeleteModel", {"ModelName": self.name})
