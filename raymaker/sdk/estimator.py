"""``Estimator``: a training job definition, named and shaped as the SageMaker Python SDK's
(``sagemaker.estimator.Estimator``): a raymaker built-in algorithm (``algorithm=`` or its SageMaker
image), or a script (``entry_point``, ``source_dir``, ``dependencies``) in a SageMaker framework
container named by ``image_uri``. The framework estimators (``raymaker.sdk.frameworks``: ``PyTorch``,
``SKLearn``, ``XGBoost``) subclass it and name the image from ``framework_version``.

Script mode sends what the SageMaker SDK v2 sends: ``sourcedir.tar.gz`` uploaded to
``<code_location or output_path>/<job>/source/``, and the hyperparameters ``sagemaker_program``,
``sagemaker_submit_directory``, ``sagemaker_container_log_level``, ``sagemaker_job_name`` and
``sagemaker_region``, JSON-encoded as ``EstimatorBase._json_encode_hyperparameters`` does."""

from __future__ import annotations

import json
import logging
from typing import Any

from raymaker.protocol.environment import region
from raymaker.protocol.frameworks import framework_of_image
from raymaker.sdk.analytics import TrainingJobAnalytics
from raymaker.sdk.code import (
    CONTAINER_LOG_LEVEL_PARAM_NAME,
    DIR_PARAM_NAME,
    JOB_NAME_PARAM_NAME,
    SAGEMAKER_REGION_PARAM_NAME,
    SCRIPT_PARAM_NAME,
    TUNING_OBJECTIVE_PARAM_NAME,
    UploadedCode,
    check_code,
    check_distribution,
    check_metric_definitions,
    decode,
    distribution_from_hyperparameters,
    distribution_hyperparameters,
    is_remote,
    join_uri,
    tar_and_upload_dir,
)
from raymaker.sdk.inputs import channels_from_inputs
from raymaker.sdk.model import Model
from raymaker.sdk.names import base_name_from_image, name_from_base
from raymaker.sdk.predictor import Predictor
from raymaker.sdk.session import Session
from raymaker.sdk.training_job import TrainingJob
from raymaker.sdk.transformer import Transformer

# botocore requires a RoleArn; nothing checks it in raymaker.
DEFAULT_ROLE = "arn:aws:iam::000000000000:role/raymaker"

# deploy() / transformer() arguments that shape the model (create_model), not the endpoint or the job.
_MODEL_ARGS = ("entry_point", "source_dir", "dependencies", "role", "image_uri", "model_server_workers")


class Estimator:
    # The framework whose container runs the script (protocol.frameworks): set by the framework
    # estimators; the generic Estimator reads it from image_uri.
    _framework_name: str | None = None

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
        checkpoint_local_path: str | None = None,
        base_job_name: str | None = None,
        keep_alive_period_in_seconds: int | None = None,
        max_retry_attempts: int | None = None,
        environment: dict[str, str] | None = None,
        entry_point: str | None = None,
        source_dir: str | None = None,
        dependencies: list[str] | None = None,
        metric_definitions: list[dict[str, str]] | None = None,
        code_location: str | None = None,
        container_log_level: int = logging.INFO,
        distribution: dict[str, Any] | None = None,
        enable_sagemaker_metrics: bool | None = None,
        container_entry_point: list[str] | None = None,
        container_arguments: list[str] | None = None,
        session: Session | None = None,
        sagemaker_session: Session | None = None,
    ):
        """``entry_point`` (with ``source_dir``, a local folder or an ``s3://`` ``.tar.gz``, and
        ``dependencies``, local folders copied into its root) runs a script in the framework container
        ``image_uri`` names (pytorch-training, sagemaker-scikit-learn, sagemaker-xgboost), as SageMaker's
        script mode does. Mistakes in the code's location, the image or ``distribution`` raise ValueError
        here, before anything is uploaded."""
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
        self.checkpoint_local_path = checkpoint_local_path
        self.base_job_name = base_job_name
        self.keep_alive_period_in_seconds = keep_alive_period_in_seconds
        self.max_retry_attempts = max_retry_attempts
        self.environment = dict(environment or {})
        self.entry_point = entry_point
        self.source_dir = source_dir
        self.dependencies = list(dependencies or [])
        self.metric_definitions = check_metric_definitions(metric_definitions)
        self.code_location = code_location
        self.container_log_level = container_log_level
        self.enable_sagemaker_metrics = enable_sagemaker_metrics
        # A custom image's ContainerEntrypoint / ContainerArguments (SDK v2's names).
        self.container_entry_point = list(container_entry_point) if container_entry_point else None
        self.container_arguments = list(container_arguments) if container_arguments else None
        self.session = session or sagemaker_session or Session()
        self.latest_training_job: TrainingJob | None = None
        self.uploaded_code: UploadedCode | None = None
        self._current_job_name: str | None = None
        self._code_hyperparameters: dict[str, Any] = {}
        self._check_image()
        if self.script_mode or source_dir or self.dependencies:
            check_code(entry_point, source_dir, self.dependencies)  # code without an entry point: refused
        if distribution and not self.script_mode:
            raise ValueError(
                "distribution is for scripts: give entry_point (and image_uri of a PyTorch image)"
            )
        self.distribution = check_distribution(distribution, self.framework_name, entry_point)

    def _check_image(self) -> None:
        """Exactly one of a built-in algorithm and an image; a script only in a framework image, and a
        framework image (other than xgboost's, also the built-in's) only with a script."""
        if (self.algorithm is None) == (self.image_uri is None):
            raise ValueError(
                "name a built-in algorithm (algorithm='xgboost') or a SageMaker image_uri (a built-in "
                "algorithm's, or a framework's with entry_point)"
            )
        framework = framework_of_image(self.image_uri) if self.image_uri else None
        if self.entry_point is not None:
            if self.algorithm is not None:
                raise ValueError(
                    f"the built-in algorithm {self.algorithm!r} runs no script: drop entry_point, or run the "
                    "script in a framework container (raymaker.pytorch.PyTorch, raymaker.sklearn.SKLearn, "
                    "raymaker.xgboost.XGBoost, or image_uri of a SageMaker framework image)"
                )
            if framework is None:
                raise ValueError(
                    f"image_uri {self.image_uri!r} is not a SageMaker framework image raymaker runs scripts "
                    "in: use a pytorch-training, sagemaker-scikit-learn or sagemaker-xgboost image (or "
                    "raymaker.pytorch.PyTorch, raymaker.sklearn.SKLearn, raymaker.xgboost.XGBoost)"
                )
        elif framework is not None and framework.name != "xgboost":
            raise ValueError(
                f"image_uri {self.image_uri!r} is the {framework.name} framework container, which runs your "
                "script: give entry_point (and source_dir)"
            )

    # --- what runs ---------------------------------------------------------------------------------

    @property
    def script_mode(self) -> bool:
        """Whether the job runs the user's script (``entry_point``) in a framework container."""
        return self.entry_point is not None

    @property
    def framework_name(self) -> str | None:
        """The framework container that runs the script (pytorch, sklearn, xgboost), else None."""
        if not self.script_mode:
            return None
        if self._framework_name:
            return self._framework_name
        framework = framework_of_image(self.image_uri) if self.image_uri else None
        return framework.name if framework else None

    def training_image_uri(self) -> str | None:
        """The AlgorithmSpecification.TrainingImage (None for a built-in named by ``algorithm``)."""
        return self.image_uri

    # --- hyperparameters, as the SageMaker SDK -------------------------------------------------

    def set_hyperparameters(self, **kwargs: Any) -> None:
        self._hyperparameters.update(kwargs)

    def _json_hyperparameters(self) -> bool:
        """Whether every value travels JSON-encoded: the SDK's ``Estimator`` does so when it has a
        ``source_dir`` (its framework estimators always)."""
        return self.script_mode and bool(self.source_dir)

    def hyperparameters(self) -> dict[str, str]:
        """The request's HyperParameters: the user's (JSON-encoded in script mode with a source dir),
        then, once the code is staged, ``sagemaker_program`` and the other code parameters, then the
        distribution's, both JSON-encoded as the SageMaker SDK does."""
        if self._json_hyperparameters():
            out = {str(k): json.dumps(v) for k, v in self._hyperparameters.items()}
        else:
            out = {str(k): _wire(v) for k, v in self._hyperparameters.items()}
        if self.script_mode:
            out.update({k: json.dumps(v) for k, v in self._code_hyperparameters.items()})
            extra = distribution_hyperparameters(self.distribution, self.instance_type)
            out.update({k: json.dumps(v) for k, v in extra.items()})
        return out

    # --- training --------------------------------------------------------------------------------

    def _job_output_path(self) -> str:
        return self.output_path or self.session.default_output_path

    def _stage_code(self, job_name: str) -> None:
        """Upload ``sourcedir.tar.gz`` to ``<code_location or output_path>/<job>/source/`` (an archive
        already in storage is used as it is) and set the code's hyperparameters, as the SageMaker
        SDK's ``_prepare_for_training`` does."""
        prefix = join_uri(self.code_location or self._job_output_path(), job_name, "source")
        self.uploaded_code = tar_and_upload_dir(prefix, self.entry_point, self.source_dir, self.dependencies)
        self._code_hyperparameters = {
            DIR_PARAM_NAME: self.uploaded_code.s3_prefix,
            SCRIPT_PARAM_NAME: self.uploaded_code.script_name,
            CONTAINER_LOG_LEVEL_PARAM_NAME: self.container_log_level,
            JOB_NAME_PARAM_NAME: job_name,
            SAGEMAKER_REGION_PARAM_NAME: region(),
        }

    def training_job_request(self, inputs: Any = None, job_name: str | None = None) -> dict[str, Any]:
        """The CreateTrainingJob request ``fit`` sends (what boto3's ``create_training_job`` takes).
        In script mode this first uploads the code, as the SageMaker SDK does before it sends it."""
        # As the SageMaker SDK: the base job name, else the image's (here the algorithm's) name.
        base = self.base_job_name or base_name_from_image(
            self.algorithm or self.training_image_uri(), "raymaker"
        )
        name = job_name or name_from_base(base)
        self._current_job_name = name
        if self.script_mode:
            self._stage_code(name)
        algo_spec: dict[str, Any] = {"TrainingInputMode": self.input_mode}
        if self.algorithm:
            algo_spec["AlgorithmName"] = self.algorithm
        else:
            algo_spec["TrainingImage"] = self.training_image_uri()
        if self.metric_definitions:
            algo_spec["MetricDefinitions"] = [dict(m) for m in self.metric_definitions]
        if self.enable_sagemaker_metrics is not None:
            algo_spec["EnableSageMakerMetricsTimeSeries"] = self.enable_sagemaker_metrics
        if self.container_entry_point:
            algo_spec["ContainerEntrypoint"] = list(self.container_entry_point)
        if self.container_arguments:
            algo_spec["ContainerArguments"] = list(self.container_arguments)
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
            "OutputDataConfig": {"S3OutputPath": self._job_output_path()},
            "ResourceConfig": resources,
            "StoppingCondition": {"MaxRuntimeInSeconds": self.max_run},
        }
        if not request["InputDataConfig"]:
            del request["InputDataConfig"]
        if self.checkpoint_s3_uri:
            request["CheckpointConfig"] = {"S3Uri": self.checkpoint_s3_uri}
            if self.checkpoint_local_path:
                request["CheckpointConfig"]["LocalPath"] = self.checkpoint_local_path
        if self.environment:
            request["Environment"] = self.environment
        if self.max_retry_attempts is not None:
            request["RetryStrategy"] = {"MaximumRetryAttempts": self.max_retry_attempts}
        return request

    def fit(
        self, inputs: Any = None, wait: bool = True, logs: bool = True, job_name: str | None = None
    ) -> None:
        """Start a training job on ``inputs`` (a URI, a TrainingInput, or a dict of channels); with
        ``wait`` block until it ends, streaming its status, logs and metrics when ``logs``, with a
        progress display (round / epoch out of the total, latest metrics, elapsed and remaining:
        ``TrainingJob.wait``)."""
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

    # --- models ----------------------------------------------------------------------------------

    def _model_source_dir(self) -> str | None:
        """The training job's uploaded code (``sourcedir.tar.gz``), which its model serves with."""
        return self.uploaded_code.s3_prefix if self.uploaded_code is not None else None

    def _model_entry_point(self) -> str | None:
        """The entry point's name within ``_model_source_dir()`` (the training script's)."""
        if self.uploaded_code is not None:
            return self.uploaded_code.script_name
        return self.entry_point

    def _model_code_args(
        self, entry_point: str | None, source_dir: str | None, dependencies: list[str] | None
    ) -> dict[str, Any]:
        """The model's code, as the SageMaker SDK's framework ``create_model``: the training job's entry
        point and code unless given. Code uploaded for the model goes under ``code_location``, else
        the estimator's output path (the SDK: the session's default bucket)."""
        if source_dir is None and dependencies:
            raise ValueError(
                "dependencies for the model need a local source_dir too (the training code is already an "
                "archive): give source_dir=..."
            )
        return {
            "entry_point": entry_point or self._model_entry_point(),
            "source_dir": source_dir or self._model_source_dir(),
            "dependencies": dependencies if source_dir else None,
            "code_location": self.code_location or self._job_output_path(),
            "container_log_level": self.container_log_level,
        }

    def create_model(
        self,
        name: str | None = None,
        env: dict[str, str] | None = None,
        *,
        entry_point: str | None = None,
        source_dir: str | None = None,
        dependencies: list[str] | None = None,
        role: str | None = None,
        image_uri: str | None = None,
        model_server_workers: int | None = None,
        predictor_cls: type[Predictor] | None = None,
    ) -> Model:
        """A Model of the latest training job's artifact, served by the same algorithm, or (a script)
        by the same framework container running the training job's code, or ``entry_point`` /
        ``source_dir`` given here."""
        if not self.script_mode:
            if entry_point or source_dir or dependencies or model_server_workers:
                raise ValueError(
                    f"the built-in algorithm {self.algorithm or self.image_uri!r} serves its own model: "
                    "entry_point, source_dir, dependencies and model_server_workers are for scripts"
                )
            return Model(
                self.model_data,
                algorithm=self.algorithm,
                image_uri=image_uri or (self.image_uri if not self.algorithm else None),
                role=role or self.role,
                name=name or self._job().name,
                env=env,
                predictor_cls=predictor_cls or Predictor,
                session=self.session,
            )
        return Model(
            self.model_data,
            image_uri=image_uri or self.training_image_uri(),
            role=role or self.role,
            name=name or self._job().name,
            env=env,
            predictor_cls=predictor_cls or Predictor,
            model_server_workers=model_server_workers,
            session=self.session,
            **self._model_code_args(entry_point, source_dir, dependencies),
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
        env: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Predictor:
        """Deploy the latest training job's model to an endpoint and return its Predictor.
        ``entry_point``, ``source_dir``, ``dependencies``, ``role``, ``image_uri``,
        ``model_server_workers`` and ``env`` go to ``create_model`` (as the SageMaker SDK passes them);
        the rest (``variant_name``, ``min_instance_count``, ...) to ``Model.deploy``."""
        model_args = {k: kwargs.pop(k) for k in _MODEL_ARGS if k in kwargs}
        model = self.create_model(name=model_name, env=env, **model_args)
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
        ``output_path``, ``accept``, ``max_payload``, ``max_concurrent_transforms``, ``env``; and, for
        a script, ``entry_point``, ``source_dir``, ``model_server_workers`` for the model)."""
        model_args = {k: kwargs.pop(k) for k in _MODEL_ARGS if k in kwargs}
        model = self.create_model(name=model_name, **model_args)
        return model.transformer(instance_count, instance_type, **kwargs)

    def _job(self) -> TrainingJob:
        if self.latest_training_job is None:
            raise ValueError("this estimator has no training job yet: call fit() first")
        return self.latest_training_job

    # --- attach ----------------------------------------------------------------------------------

    @classmethod
    def attach(
        cls,
        training_job_name: str,
        session: Session | None = None,
        *,
        sagemaker_session: Session | None = None,
    ) -> Estimator:
        """An Estimator for an existing job (from its record), with ``latest_training_job`` set. A
        script's entry point and code come back from its ``sagemaker_program`` and
        ``sagemaker_submit_directory`` hyperparameters, as in the SageMaker SDK."""
        session = session or sagemaker_session or Session()
        desc = session.call("DescribeTrainingJob", {"TrainingJobName": training_job_name})
        est = cls(**cls._prepare_init_params_from_job_description(desc), session=session)
        est.latest_training_job = TrainingJob(training_job_name, session)
        est._current_job_name = training_job_name
        if est.script_mode and is_remote(est.source_dir):
            est.uploaded_code = UploadedCode(est.source_dir, est.entry_point)  # type: ignore[arg-type]
        return est

    @classmethod
    def _prepare_init_params_from_job_description(cls, desc: dict[str, Any]) -> dict[str, Any]:
        """The constructor's arguments for a DescribeTrainingJob (or a tuning job's
        TrainingJobDefinition, its StaticHyperParameters as HyperParameters)."""
        spec = desc["AlgorithmSpecification"]
        res = desc.get("ResourceConfig") or {}
        hps = dict(desc.get("HyperParameters") or {})
        params: dict[str, Any] = {
            "role": desc.get("RoleArn"),
            "instance_count": res.get("InstanceCount", 1),
            "instance_type": res.get("InstanceType", "local"),
            "hyperparameters": hps,
            "output_path": (desc.get("OutputDataConfig") or {}).get("S3OutputPath"),
            "input_mode": spec.get("TrainingInputMode", "File"),
            "max_run": (desc.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds", 86400),
        }
        if spec.get("AlgorithmName"):
            params["algorithm"] = spec["AlgorithmName"]
        else:
            params["image_uri"] = spec.get("TrainingImage")
        if SCRIPT_PARAM_NAME in hps:
            params.update(script_params_from_hyperparameters(hps))
            if spec.get("MetricDefinitions"):
                params["metric_definitions"] = [
                    {"Name": m["Name"], "Regex": m["Regex"]} for m in spec["MetricDefinitions"]
                ]
            if spec.get("EnableSageMakerMetricsTimeSeries") is not None:
                params["enable_sagemaker_metrics"] = spec["EnableSageMakerMetricsTimeSeries"]
            if res.get("KeepAlivePeriodInSeconds") is not None:
                params["keep_alive_period_in_seconds"] = res["KeepAlivePeriodInSeconds"]
            checkpoint = desc.get("CheckpointConfig") or {}
            if checkpoint.get("S3Uri"):
                params["checkpoint_s3_uri"] = checkpoint["S3Uri"]
                params["checkpoint_local_path"] = checkpoint.get("LocalPath")
            if desc.get("Environment"):
                params["environment"] = dict(desc["Environment"])
        return params


def script_params_from_hyperparameters(hyperparameters: dict[str, str]) -> dict[str, Any]:
    """A script's ``entry_point``, ``source_dir``, ``container_log_level`` and ``distribution`` from
    the reserved hyperparameters, and the user's own, decoded (the ``sagemaker_*`` keys and
    ``_tuning_objective_metric`` left out), as ``Framework._prepare_init_params_from_job_description``."""
    params: dict[str, Any] = {
        "entry_point": decode(hyperparameters[SCRIPT_PARAM_NAME]),
        "source_dir": decode(hyperparameters.get(DIR_PARAM_NAME)) or None,
        "hyperparameters": {
            k: decode(v)
            for k, v in hyperparameters.items()
            if not k.startswith("sagemaker_") and k != TUNING_OBJECTIVE_PARAM_NAME
        },
    }
    if CONTAINER_LOG_LEVEL_PARAM_NAME in hyperparameters:
        params["container_log_level"] = decode(hyperparameters[CONTAINER_LOG_LEVEL_PARAM_NAME])
    distribution = distribution_from_hyperparameters(hyperparameters)
    if distribution:
        params["distribution"] = distribution
    return params


def _wire(value: Any) -> str:
    """Hyperparameter values travel as strings; booleans as SageMaker writes them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return str(value)
