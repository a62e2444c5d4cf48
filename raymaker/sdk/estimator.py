"""``Estimator``: a training job definition, named and shaped as the SageMaker Python SDK's
(``sagemaker.estimator.Estimator``), for raymaker's built-in algorithms."""

from __future__ import annotations

import json
from typing import Any

from raymaker.sdk.analytics import TrainingJobAnalytics
from raymaker.sdk.inputs import channels_from_inputs
from raymaker.sdk.model import Model
from raymaker.sdk.names import base_name_from_image, name_from_base
from raymaker.sdk.predictor import Predictor
from raymaker.sdk.session import Session
from raymaker.sdk.training_job import TrainingJob
from raymaker.sdk.transformer import Transformer

# botocore requires a RoleArn; nothing checks it in raymaker.
DEFAULT_ROLE = "arn:aws:iam::000000000000:role/raymaker"


class Estimator:
    def __init__(
        self,
        algorithm: str | None = None,
        *,
        image_uri: str | None = None,
        role: str | None = None,
        instance_count: int = 1,
        instance_type: str = "local",
        hyperparameters: dict[str, Any] | None = None,
        output_path: str | None = None,
        input_mode: str = "File",
        max_run: int = 24 * 60 * 60,
        checkpoint_s3_uri: str | None = None,
        base_job_name: str | None = None,
        keep_alive_period_in_seconds: int | None = None,
        max_retry_attempts: int | None = None,
        environment: dict[str, str] | None = None,
        session: Session | None = None,
        sagemaker_session: Session | None = None,
    ):
        if (algorithm is None) == (image_uri is None):
            raise ValueError(
                "name a built-in algorithm (algorithm='xgboost') or a SageMaker built-in image_uri"
            )
        self.algorithm = algorithm
        self.image_uri = image_uri
        self.role = role or DEFAULT_ROLE
        self.instance_count = instance_count
        self.instance_type = instance_type
        self._hyperparameters = dict(hyperparameters or {})
        self.output_path = output_path
        self.input_mode = input_mode
        self.max_run = max_run
        self.checkpoint_s3_uri = checkpoint_s3_uri
        self.base_job_name = base_job_name
        self.keep_alive_period_in_seconds = keep_alive_period_in_seconds
        self.max_retry_attempts = max_retry_attempts
        self.environment = dict(environment or {})
        self.session = session or sagemaker_session or Session()
        self.latest_training_job: TrainingJob | None = None

    # --- hyperparameters, as the SageMaker SDK -------------------------------------------------

    def set_hyperparameters(self, **kwargs: Any) -> None:
        self._hyperparameters.update(kwargs)

    def hyperparameters(self) -> dict[str, str]:
        return {k: _wire(v) for k, v in self._hyperparameters.items()}

    # --- training --------------------------------------------------------------------------------

    def training_job_request(self, inputs: Any = None, job_name: str | None = None) -> dict[str, Any]:
        """The CreateTrainingJob request ``fit`` sends (what boto3's ``create_training_job`` takes)."""
        # As the SageMaker SDK: the base job name, else the image's (here the algorithm's) name.
        base = self.base_job_name or base_name_from_image(self.algorithm or self.image_uri, "raymaker")
        name = job_name or name_from_base(base)
        algo_spec: dict[str, Any] = {"TrainingInputMode": self.input_mode}
        if self.algorithm:
            algo_spec["AlgorithmName"] = self.algorithm
        else:
            algo_spec["TrainingImage"] = self.image_uri
        resources: dict[str, Any] = {
            "InstanceType": self.instance_type,
            "InstanceCount": self.instance_count,
            "VolumeSizeInGB": 30,
        }
        if self.keep_alive_period_in_seconds is not None:
            resources["KeepAlivePeriodInSeconds"] = self.keep_alive_period_in_seconds
        request: dict[str, Any] = {
            "TrainingJobName": name,
            "RoleArn": self.role,
            "AlgorithmSpecification": algo_spec,
            "HyperParameters": self.hyperparameters(),
            "InputDataConfig": channels_from_inputs(inputs),
            "OutputDataConfig": {"S3OutputPath": self.output_path or self.session.default_output_path},
            "ResourceConfig": resources,
            "StoppingCondition": {"MaxRuntimeInSeconds": self.max_run},
        }
        if not request["InputDataConfig"]:
            del request["InputDataConfig"]
        if self.checkpoint_s3_uri:
            request["CheckpointConfig"] = {"S3Uri": self.checkpoint_s3_uri}
        if self.environment:
            request["Environment"] = self.environment
        if self.max_retry_attempts is not None:
            request["RetryStrategy"] = {"MaximumRetryAttempts": self.max_retry_attempts}
        return request

    def fit(
        self, inputs: Any = None, wait: bool = True, logs: bool = True, job_name: str | None = None
    ) -> None:
        """Start a training job on ``inputs`` (a URI, a TrainingInput, or a dict of channels); with
        ``wait`` block until it ends, streaming its status, logs and metrics when ``logs``."""
        request = self.training_job_request(inputs, job_name)
        self.session.call("CreateTrainingJob", request)
        self.latest_training_job = TrainingJob(request["TrainingJobName"], self.session)
        if wait:
            self.latest_training_job.wait(logs=logs)

    def wait(self, logs: bool = True) -> None:
        """Block until the latest training job ends (UnexpectedStatusException if it failed)."""
        self._job().wait(logs=logs)

    def logs(self) -> None:
        """Print the latest training job's status and log lines until it ends."""
        self._job().wait(logs=True)

    @property
    def training_job_analytics(self) -> TrainingJobAnalytics:
        """The latest training job's metrics over time (``.dataframe()``), as the SageMaker SDK's."""
        return TrainingJobAnalytics(self._job().name, sagemaker_session=self.session)

    @property
    def model_data(self) -> str:
        """URI of the trained ``model.tar.gz`` (``<output_path>/<job>/output/model.tar.gz``)."""
        return self._job().describe()["ModelArtifacts"]["S3ModelArtifacts"]

    def create_model(self, name: str | None = None, env: dict[str, str] | None = None) -> Model:
        """A Model of the latest training job's artifact, served by the same algorithm."""
        return Model(
            self.model_data,
            algorithm=self.algorithm,
            image_uri=self.image_uri if not self.algorithm else None,
            role=self.role,
            name=name or self._job().name,
            env=env,
            session=self.session,
        )

    def deploy(
        self,
        initial_instance_count: int = 1,
        instance_type: str = "local",
        serializer: Any = None,
        deserializer: Any = None,
        endpoint_name: str | None = None,
        wait: bool = True,
        model_name: str | None = None,
        **kwargs: Any,
    ) -> Predictor:
        """Deploy the latest training job's model to an endpoint and return its Predictor."""
        model = self.create_model(name=model_name)
        return model.deploy(
            initial_instance_count,
            instance_type,
            serializer=serializer,
            deserializer=deserializer,
            endpoint_name=endpoint_name,
            wait=wait,
            **kwargs,
        )

    def transformer(
        self,
        instance_count: int = 1,
        instance_type: str = "local",
        model_name: str | None = None,
        **kwargs: Any,
    ) -> Transformer:
        """A Transformer for the latest training job's model (``strategy``, ``assemble_with``,
        ``output_path``, ``accept``, ``max_payload``, ``max_concurrent_transforms``, ``env``)."""
        return self.create_model(name=model_name).transformer(instance_count, instance_type, **kwargs)

    def _job(self) -> TrainingJob:
        if self.latest_training_job is None:
            raise ValueError("this estimator has no training job yet: call fit() first")
        return self.latest_training_job

    @classmethod
    def attach(cls, training_job_name: str, session: Session | None = None) -> Estimator:
        """An Estimator for an existing job (from its record), with ``latest_training_job`` set."""
        session = session or Session()
        desc = session.call("DescribeTrainingJob", {"TrainingJobName": training_job_name})
        spec = desc["AlgorithmSpecification"]
        res = desc.get("ResourceConfig") or {}
        est = cls(
            algorithm=spec.get("AlgorithmName"),
            image_uri=spec.get("TrainingImage") if not spec.get("AlgorithmName") else None,
            role=desc.get("RoleArn"),
            instance_count=res.get("InstanceCount", 1),
            instance_type=res.get("InstanceType", "local"),
            hyperparameters=desc.get("HyperParameters"),
            output_path=desc["OutputDataConfig"]["S3OutputPath"],
            input_mode=spec.get("TrainingInputMode", "File"),
            max_run=desc["StoppingCondition"].get("MaxRuntimeInSeconds", 86400),
            session=session,
        )
        est.latest_training_job = TrainingJob(training_job_name, session)
        return est


def _wire(value: Any) -> str:
    """Hyperparameter values travel as strings; booleans as SageMaker writes them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return str(value)
