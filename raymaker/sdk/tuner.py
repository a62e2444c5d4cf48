"""Automatic model tuning, named and shaped as the SageMaker Python SDK v2 (``sagemaker.tuner``,
``sagemaker.parameter`` and ``sagemaker.analytics``): ``HyperparameterTuner`` builds a
CreateHyperParameterTuningJob request from an ``Estimator`` and parameter ranges, and reads the tuning
job back (describe, wait, best training job, analytics, attach, deploy). The engine validates and runs
it; nothing here knows how trials run.

    tuner = HyperparameterTuner(
        Estimator("xgboost", hyperparameters={"num_round": 50, "objective": "binary:logistic"}),
        "validation:auc",
        {"eta": ContinuousParameter(0.05, 0.5), "max_depth": IntegerParameter(2, 8)},
        max_jobs=12,
        max_parallel_jobs=3,
    )
    tuner.fit({"train": train_uri, "validation": validation_uri})
    tuner.analytics().dataframe()
    predictor = tuner.deploy(1, "local")
"""

from __future__ import annotations

import copy
import datetime
import json
import re
import secrets
import threading
import time
from enum import Enum
from typing import Any

from raymaker.sdk.estimator import Estimator
from raymaker.sdk.predictor import Predictor
from raymaker.sdk.session import Session
from raymaker.sdk.training_job import UnexpectedStatusException

HYPERPARAMETER_TUNING_JOB_NAME = "HyperParameterTuningJobName"
PARENT_HYPERPARAMETER_TUNING_JOBS = "ParentHyperParameterTuningJobs"
WARM_START_TYPE = "WarmStartType"
GRID_SEARCH = "Grid"

# StaticHyperParameters keys SageMaker (or its SDK) adds for itself; attach() leaves them out.
_RESERVED_PREFIXES = ("_tuning", "sagemaker_")
_TERMINAL = ("Completed", "Failed", "Stopped")


# --- parameter ranges (sagemaker.parameter) ------------------------------------------------------


def _to_string(value: Any) -> str:
    """As the SageMaker SDK's ``sagemaker.utils.to_string``: ``str(value)``."""
    return value if isinstance(value, str) else str(value)


class ParameterRange:
    """Base class of the ranges a hyperparameter is tuned within (``sagemaker.parameter``)."""

    __all_types__ = ("Continuous", "Categorical", "Integer")
    __name__ = "ParameterRange"

    def __init__(self, min_value: float, max_value: float, scaling_type: str = "Auto"):
        """``scaling_type``: Auto | Linear | Logarithmic | ReverseLogarithmic."""
        self.min_value = min_value
        self.max_value = max_value
        self.scaling_type = scaling_type

    def is_valid(self, value: Any) -> bool:
        return self.min_value <= value <= self.max_value

    @classmethod
    def cast_to_type(cls, value: Any) -> Any:
        return float(value)

    def as_tuning_range(self, name: str) -> dict[str, Any]:
        """The range as a ParameterRanges entry of CreateHyperParameterTuningJob (values as strings)."""
        return {
            "Name": name,
            "MinValue": _to_string(self.min_value),
            "MaxValue": _to_string(self.max_value),
            "ScalingType": self.scaling_type,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class ContinuousParameter(ParameterRange):
    """A hyperparameter tuned over a continuous interval ``[min_value, max_value]``."""

    __name__ = "Continuous"

    @classmethod
    def cast_to_type(cls, value: Any) -> float:
        return float(value)


class IntegerParameter(ParameterRange):
    """A hyperparameter tuned over the integers in ``[min_value, max_value]``."""

    __name__ = "Integer"

    @classmethod
    def cast_to_type(cls, value: Any) -> int:
        return int(value)


class CategoricalParameter(ParameterRange):
    """A hyperparameter tuned over a list of values (sent as strings)."""

    __name__ = "Categorical"

    def __init__(self, values: Any):  # no min/max: as the SageMaker SDK
        values = values if isinstance(values, list) else [values]
        self.values = [_to_string(v) for v in values]

    def as_tuning_range(self, name: str) -> dict[str, Any]:
        return {"Name": name, "Values": list(self.values)}

    def as_json_range(self, name: str) -> dict[str, Any]:
        """The range with each value JSON-encoded (as the SDK sends it to framework containers)."""
        return {"Name": name, "Values": [json.dumps(v) for v in self.values]}

    def is_valid(self, value: Any) -> bool:
        return value in self.values

    @classmethod
    def cast_to_type(cls, value: Any) -> str:
        return str(value)


# --- warm start and strategy configuration -------------------------------------------------------


class WarmStartTypes(Enum):
    """IdenticalDataAndAlgorithm: same data and algorithm as the parents; TransferLearning: similar."""

    IDENTICAL_DATA_AND_ALGORITHM = "IdenticalDataAndAlgorithm"
    TRANSFER_LEARNING = "TransferLearning"


class WarmStartConfig:
    """Which earlier tuning jobs (1 to 5 ``parents``) a tuning job starts from, and how."""

    def __init__(self, warm_start_type: WarmStartTypes | str, parents: Any):
        if isinstance(warm_start_type, str):
            try:
                warm_start_type = WarmStartTypes(warm_start_type)
            except ValueError:
                pass
        if warm_start_type not in list(WarmStartTypes):
            raise ValueError(
                f"Invalid type: {warm_start_type}, valid warm start types are: {list(WarmStartTypes)}"
            )
        if not parents:
            raise ValueError(f"Invalid parents: {parents}, parents should not be None/empty")
        if isinstance(parents, str):
            parents = [parents]
        self.type = warm_start_type
        self.parents = set(parents)

    @classmethod
    def from_job_desc(cls, warm_start_config: dict[str, Any] | None) -> WarmStartConfig | None:
        """From DescribeHyperParameterTuningJob's WarmStartConfig (None when there is none)."""
        if (
            not warm_start_config
            or WARM_START_TYPE not in warm_start_config
            or PARENT_HYPERPARAMETER_TUNING_JOBS not in warm_start_config
        ):
            return None
        parents = [
            p[HYPERPARAMETER_TUNING_JOB_NAME] for p in warm_start_config[PARENT_HYPERPARAMETER_TUNING_JOBS]
        ]
        return cls(WarmStartTypes(warm_start_config[WARM_START_TYPE]), parents)

    def to_input_req(self) -> dict[str, Any]:
        """The request's WarmStartConfig (parents in name order, so the request is reproducible)."""
        return {
            WARM_START_TYPE: self.type.value,
            PARENT_HYPERPARAMETER_TUNING_JOBS: [
                {HYPERPARAMETER_TUNING_JOB_NAME: parent} for parent in sorted(self.parents)
            ],
        }


class HyperbandStrategyConfig:
    """Hyperband's resource bounds (epochs or boosting rounds a trial may run)."""

    def __init__(self, max_resource: int | None = None, min_resource: int | None = None):
        self.max_resource = max_resource
        self.min_resource = min_resource

    @classmethod
    def from_job_desc(cls, config: dict[str, Any]) -> HyperbandStrategyConfig:
        return cls(max_resource=config.get("MaxResource"), min_resource=config.get("MinResource"))

    def to_input_req(self) -> dict[str, int]:
        out = {}
        if self.min_resource is not None:
            out["MinResource"] = self.min_resource
        if self.max_resource is not None:
            out["MaxResource"] = self.max_resource
        return out


class StrategyConfig:
    """HyperParameterTuningJobConfig.StrategyConfig (only for the Hyperband strategy)."""

    def __init__(self, hyperband_strategy_config: HyperbandStrategyConfig):
        self.hyperband_strategy_config = hyperband_strategy_config

    @classmethod
    def from_job_desc(cls, config: dict[str, Any]) -> StrategyConfig:
        return cls(HyperbandStrategyConfig.from_job_desc(config.get("HyperbandStrategyConfig") or {}))

    def to_input_req(self) -> dict[str, Any]:
        return {"HyperbandStrategyConfig": self.hyperband_strategy_config.to_input_req()}


class TuningJobCompletionCriteriaConfig:
    """When a tuning job may end before its last trial (TuningJobCompletionCriteria)."""

    def __init__(
        self,
        max_number_of_training_jobs_not_improving: int | None = None,
        complete_on_convergence: bool | None = None,
        target_objective_metric_value: float | None = None,
    ):
        self.max_number_of_training_jobs_not_improving = max_number_of_training_jobs_not_improving
        self.complete_on_convergence = complete_on_convergence
        self.target_objective_metric_value = target_objective_metric_value

    @classmethod
    def from_job_desc(cls, config: dict[str, Any]) -> TuningJobCompletionCriteriaConfig:
        convergence = (config.get("ConvergenceDetected") or {}).get("CompleteOnConvergence")
        return cls(
            max_number_of_training_jobs_not_improving=(config.get("BestObjectiveNotImproving") or {}).get(
                "MaxNumberOfTrainingJobsNotImproving"
            ),
            complete_on_convergence=None if convergence is None else convergence == "Enabled",
            target_objective_metric_value=config.get("TargetObjectiveMetricValue"),
        )

    def to_input_req(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.max_number_of_training_jobs_not_improving is not None:
            out["BestObjectiveNotImproving"] = {
                "MaxNumberOfTrainingJobsNotImproving": self.max_number_of_training_jobs_not_improving
            }
        if self.target_objective_metric_value is not None:
            out["TargetObjectiveMetricValue"] = self.target_objective_metric_value
        if self.complete_on_convergence is not None:
            out["ConvergenceDetected"] = {
                "CompleteOnConvergence": "Enabled" if self.complete_on_convergence else "Disabled"
            }
        return out


# --- tuning job names ----------------------------------------------------------------------------

TUNING_JOB_NAME_MAX_LENGTH = 32
_issued: set[str] = set()
_issued_lock = threading.Lock()


def base_name_from_image(image: str) -> str:
    """The algorithm part of an image URI (``.../sagemaker-xgboost:1.7-1`` -> ``sagemaker-xgboost``),
    as the SageMaker SDK's ``sagemaker.utils.base_name_from_image``; a bare algorithm name as is."""
    match = re.match(r"^(.+/)?([^:/]+)(:[^:]+)?$", image)
    return match.group(2) if match else image


def tuning_job_name(base: str, max_length: int = TUNING_JOB_NAME_MAX_LENGTH) -> str:
    """``<base>-<yymmdd-HHMM>-<5 hex>``, at most ``max_length`` (32) characters: the SageMaker SDK's
    short timestamp (``name_from_base(base, max_length=32, short=True)``) plus a random suffix, so that
    two fits in the same minute get different names (never the same one twice in this process)."""
    base = re.sub(r"[^a-zA-Z0-9-]+", "-", base).strip("-") or "tuning"
    while True:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%y%m%d-%H%M")
        suffix = f"{stamp}-{secrets.token_hex(3)[:5]}"
        trimmed = base[: max_length - len(suffix) - 1].rstrip("-")
        name = f"{trimmed}-{suffix}"
        with _issued_lock:
            if name not in _issued:
                _issued.add(name)
                return name


# --- the tuner -----------------------------------------------------------------------------------


class HyperparameterTuner:
    """A hyperparameter tuning job over an Estimator's training job definition
    (``sagemaker.tuner.HyperparameterTuner``)."""

    TUNING_JOB_NAME_MAX_LENGTH = TUNING_JOB_NAME_MAX_LENGTH

    def __init__(
        self,
        estimator: Estimator,
        objective_metric_name: str,
        hyperparameter_ranges: dict[str, ParameterRange],
        metric_definitions: list[dict[str, str]] | None = None,
        strategy: str = "Bayesian",
        objective_type: str = "Maximize",
        max_jobs: int | None = None,
        max_parallel_jobs: int = 1,
        max_runtime_in_seconds: int | None = None,
        tags: list[dict[str, str]] | None = None,
        base_tuning_job_name: str | None = None,
        warm_start_config: WarmStartConfig | None = None,
        strategy_config: StrategyConfig | None = None,
        completion_criteria_config: TuningJobCompletionCriteriaConfig | None = None,
        early_stopping_type: str = "Off",
        random_seed: int | None = None,
    ):
        """``max_jobs`` left out is 1 (the SageMaker SDK's default), except for the Grid strategy,
        which runs every combination of its categorical ranges (MaxNumberOfTrainingJobs omitted)."""
        if not hyperparameter_ranges:
            raise ValueError("Need to specify hyperparameter ranges")
        for name, parameter in hyperparameter_ranges.items():
            if not isinstance(parameter, ParameterRange):
                raise TypeError(
                    f"hyperparameter_ranges[{name!r}] is a {type(parameter).__name__}; give a "
                    "ContinuousParameter, IntegerParameter or CategoricalParameter"
                )
        self.estimator = estimator
        self.objective_metric_name = objective_metric_name
        self._hyperparameter_ranges = dict(hyperparameter_ranges)
        self.metric_definitions = metric_definitions
        self.strategy = strategy
        self.objective_type = objective_type
        self.max_jobs = max_jobs
        if max_jobs is None and strategy != GRID_SEARCH:
            self.max_jobs = 1
        self.max_parallel_jobs = max_parallel_jobs
        self.max_runtime_in_seconds = max_runtime_in_seconds
        self.tags = tags
        self.base_tuning_job_name = base_tuning_job_name
        self.warm_start_config = warm_start_config
        self.strategy_config = strategy_config
        self.completion_criteria_config = completion_criteria_config
        self.early_stopping_type = early_stopping_type
        self.random_seed = random_seed
        self.static_hyperparameters: dict[str, str] | None = None
        self._current_job_name: str | None = None
        self.latest_tuning_job: _TuningJob | None = None

    @property
    def sagemaker_session(self) -> Session:
        return self.estimator.session

    session = sagemaker_session

    # --- the request ---------------------------------------------------------------------------

    def hyperparameter_ranges(self) -> dict[str, list[dict[str, Any]]]:
        """ParameterRanges as the request carries them: ``ContinuousParameterRanges``,
        ``CategoricalParameterRanges``, ``IntegerParameterRanges`` (each list always present)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for kind in ParameterRange.__all_types__:
            out[f"{kind}ParameterRanges"] = [
                p.as_tuning_range(name)
                for name, p in self._hyperparameter_ranges.items()
                if p.__name__ == kind
            ]
        return out

    def _default_job_name(self) -> str:
        base = self.base_tuning_job_name or base_name_from_image(
            self.estimator.algorithm or self.estimator.image_uri or "tuning"
        )
        return tuning_job_name(base)

    def tuning_job_request(self, inputs: Any = None, job_name: str | None = None) -> dict[str, Any]:
        """The CreateHyperParameterTuningJob request ``fit`` sends (what boto3's
        ``create_hyper_parameter_tuning_job`` takes). The TrainingJobDefinition is the estimator's own
        CreateTrainingJob request for ``inputs``, its tuned hyperparameters left out of
        StaticHyperParameters."""
        name = job_name or self._default_job_name()
        training = self.estimator.training_job_request(inputs, name)
        static = dict(training.get("HyperParameters") or {})
        for tuned in self._hyperparameter_ranges:
            static.pop(tuned, None)
        self.static_hyperparameters = static

        limits: dict[str, Any] = {"MaxParallelTrainingJobs": self.max_parallel_jobs}
        if self.max_jobs is not None:
            limits["MaxNumberOfTrainingJobs"] = self.max_jobs
        if self.max_runtime_in_seconds is not None:
            limits["MaxRuntimeInSeconds"] = self.max_runtime_in_seconds
        config: dict[str, Any] = {
            "Strategy": self.strategy,
            "HyperParameterTuningJobObjective": {
                "Type": self.objective_type,
                "MetricName": self.objective_metric_name,
            },
            "ResourceLimits": limits,
            "ParameterRanges": self.hyperparameter_ranges(),
            "TrainingJobEarlyStoppingType": self.early_stopping_type,
        }
        if self.strategy_config is not None:
            config["StrategyConfig"] = self.strategy_config.to_input_req()
        if self.completion_criteria_config is not None:
            config["TuningJobCompletionCriteria"] = self.completion_criteria_config.to_input_req()
        if self.random_seed is not None:
            config["RandomSeed"] = self.random_seed

        request: dict[str, Any] = {
            "HyperParameterTuningJobName": name,
            "HyperParameterTuningJobConfig": config,
            "TrainingJobDefinition": _training_job_definition(training, static, self.metric_definitions),
        }
        if self.warm_start_config is not None:
            request["WarmStartConfig"] = self.warm_start_config.to_input_req()
        if self.tags:
            request["Tags"] = [dict(t) for t in self.tags]
        return request

    # --- running -------------------------------------------------------------------------------

    def fit(self, inputs: Any = None, job_name: str | None = None, wait: bool = True) -> None:
        """Start a tuning job on ``inputs`` (as ``Estimator.fit`` takes them); with ``wait``, block
        until it ends. The engine checks the ranges, objective and limits here (ValidationError)."""
        request = self.tuning_job_request(inputs, job_name)
        self.sagemaker_session.call("CreateHyperParameterTuningJob", request)
        self._current_job_name = request["HyperParameterTuningJobName"]
        self.latest_tuning_job = _TuningJob(self.sagemaker_session, self._current_job_name)
        if wait:
            self.latest_tuning_job.wait()

    def wait(self) -> None:
        """Block until the latest tuning job ends; UnexpectedStatusException if it Failed."""
        self._ensure_last_tuning_job().wait()

    def describe(self) -> dict[str, Any]:
        """DescribeHyperParameterTuningJob of the latest tuning job."""
        return self._ensure_last_tuning_job().describe()

    def stop(self) -> None:
        """Stop the latest tuning job (its running trials are stopped too)."""
        self._ensure_last_tuning_job().stop()

    stop_tuning_job = stop  # the SageMaker SDK's name

    def _ensure_last_tuning_job(self) -> _TuningJob:
        if self.latest_tuning_job is None:
            raise ValueError("No tuning job available: call fit() or HyperparameterTuner.attach() first")
        return self.latest_tuning_job

    # --- results -------------------------------------------------------------------------------

    def _get_best_training_job(self) -> dict[str, Any]:
        job = self._ensure_last_tuning_job()
        desc = job.describe()
        best = desc.get("BestTrainingJob")
        if not best:
            raise ValueError(
                f"Best training job not available for tuning job: {job.name} (it is "
                f"{desc.get('HyperParameterTuningJobStatus')}; no trial has reported its objective "
                f"{self.objective_metric_name!r} yet)"
            )
        return best

    def best_training_job(self) -> str:
        """Name of the trial with the best objective value so far."""
        return self._get_best_training_job()["TrainingJobName"]

    def best_estimator(self, best_training_job: dict[str, Any] | None = None) -> Estimator:
        """An Estimator attached to the best trial (deploy it, or create_model())."""
        if best_training_job is None:
            best_training_job = self._get_best_training_job()
        return type(self.estimator).attach(best_training_job["TrainingJobName"], self.sagemaker_session)

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
        """Deploy the best trial's model; the endpoint (and model) are named after that trial unless
        ``endpoint_name`` (``model_name``) says otherwise. ``kwargs`` as ``Model.deploy`` takes them."""
        best = self._get_best_training_job()
        return self.best_estimator(best).deploy(
            initial_instance_count,
            instance_type,
            serializer=serializer,
            deserializer=deserializer,
            endpoint_name=endpoint_name or best["TrainingJobName"],
            wait=wait,
            model_name=model_name,
            **kwargs,
        )

    def delete_endpoint(self, endpoint_name: str | None = None) -> None:
        """Delete the endpoint ``deploy`` made (named after the best trial unless given)."""
        Predictor(endpoint_name or self.best_training_job(), session=self.sagemaker_session).delete_endpoint()

    def analytics(self) -> HyperparameterTuningJobAnalytics:
        """The latest tuning job's trials, as a pandas DataFrame (``.dataframe()``)."""
        return HyperparameterTuningJobAnalytics(self._ensure_last_tuning_job().name, self.sagemaker_session)

    # --- attach and warm start -----------------------------------------------------------------

    @classmethod
    def attach(
        cls,
        tuning_job_name: str,
        sagemaker_session: Session | None = None,
        job_details: dict[str, Any] | None = None,
        *,
        session: Session | None = None,
    ) -> HyperparameterTuner:
        """A tuner for an existing tuning job, rebuilt from its DescribeHyperParameterTuningJob
        (``job_details`` if given): the estimator from its TrainingJobDefinition, the ranges, limits,
        strategy and warm start. ``latest_tuning_job`` is that job."""
        session = session or sagemaker_session or Session()
        if job_details is None:
            job_details = session.call(
                "DescribeHyperParameterTuningJob", {HYPERPARAMETER_TUNING_JOB_NAME: tuning_job_name}
            )
        definition = job_details.get("TrainingJobDefinition")
        if not definition:
            raise ValueError(
                f"tuning job {tuning_job_name} has no single TrainingJobDefinition (several "
                "TrainingJobDefinitions are not supported)"
            )
        estimator = _estimator_from_definition(definition, session)
        tuner = cls(estimator=estimator, **cls._prepare_init_params_from_job_description(job_details))
        tuner._current_job_name = tuning_job_name
        tuner.latest_tuning_job = _TuningJob(session, tuning_job_name)
        return tuner

    @classmethod
    def _prepare_init_params_from_job_description(cls, job_details: dict[str, Any]) -> dict[str, Any]:
        config = job_details["HyperParameterTuningJobConfig"]
        limits = config.get("ResourceLimits") or {}
        params: dict[str, Any] = {
            "strategy": config["Strategy"],
            "max_jobs": limits.get("MaxNumberOfTrainingJobs"),
            "max_parallel_jobs": limits.get("MaxParallelTrainingJobs", 1),
            "max_runtime_in_seconds": limits.get("MaxRuntimeInSeconds"),
            "warm_start_config": WarmStartConfig.from_job_desc(job_details.get("WarmStartConfig")),
            "early_stopping_type": config.get("TrainingJobEarlyStoppingType", "Off"),
            "random_seed": config.get("RandomSeed"),
        }
        definition = job_details.get("TrainingJobDefinition") or {}
        objective = config.get("HyperParameterTuningJobObjective") or definition.get("TuningObjective")
        if objective:
            params["objective_metric_name"] = objective["MetricName"]
            params["objective_type"] = objective["Type"]
        ranges = config.get("ParameterRanges") or definition.get("HyperParameterRanges") or {}
        params["hyperparameter_ranges"] = cls._prepare_parameter_ranges_from_job_description(ranges)
        metric_definitions = (definition.get("AlgorithmSpecification") or {}).get("MetricDefinitions")
        if metric_definitions:
            params["metric_definitions"] = metric_definitions
        if config.get("StrategyConfig"):
            params["strategy_config"] = StrategyConfig.from_job_desc(config["StrategyConfig"])
        if config.get("TuningJobCompletionCriteria"):
            params["completion_criteria_config"] = TuningJobCompletionCriteriaConfig.from_job_desc(
                config["TuningJobCompletionCriteria"]
            )
        return params

    @classmethod
    def _prepare_parameter_ranges_from_job_description(
        cls, parameter_ranges: dict[str, Any]
    ) -> dict[str, ParameterRange]:
        """ParameterRanges back into parameter objects, in the description's order."""
        ranges: dict[str, ParameterRange] = {}
        for key, items in parameter_ranges.items():
            for item in items or ():
                scaling = item.get("ScalingType", "Auto")
                if key == "CategoricalParameterRanges":
                    ranges[item["Name"]] = CategoricalParameter(list(item["Values"]))
                elif key == "ContinuousParameterRanges":
                    ranges[item["Name"]] = ContinuousParameter(
                        float(item["MinValue"]), float(item["MaxValue"]), scaling
                    )
                elif key == "IntegerParameterRanges":
                    ranges[item["Name"]] = IntegerParameter(
                        int(float(item["MinValue"])), int(float(item["MaxValue"])), scaling
                    )
                else:
                    raise ValueError(f"ParameterRanges.{key} is not supported (give ranges explicitly)")
        return ranges

    def transfer_learning_tuner(
        self, additional_parents: set[str] | None = None, estimator: Estimator | None = None
    ) -> HyperparameterTuner:
        """A new tuner like this one, warm-started (TransferLearning) from this tuner's latest job and
        ``additional_parents``; ``estimator`` replaces this tuner's if given."""
        return self._create_warm_start_tuner(additional_parents, WarmStartTypes.TRANSFER_LEARNING, estimator)

    def identical_dataset_and_algorithm_tuner(
        self, additional_parents: set[str] | None = None
    ) -> HyperparameterTuner:
        """A new tuner like this one, warm-started (IdenticalDataAndAlgorithm) from this tuner's latest
        job and ``additional_parents``."""
        return self._create_warm_start_tuner(additional_parents, WarmStartTypes.IDENTICAL_DATA_AND_ALGORITHM)

    def _create_warm_start_tuner(
        self,
        additional_parents: set[str] | None,
        warm_start_type: WarmStartTypes,
        estimator: Estimator | None = None,
    ) -> HyperparameterTuner:
        parents = {self._ensure_last_tuning_job().name} | set(additional_parents or ())
        return HyperparameterTuner(
            estimator=estimator or self.estimator,
            objective_metric_name=self.objective_metric_name,
            hyperparameter_ranges=self._hyperparameter_ranges,
            metric_definitions=self.metric_definitions,
            strategy=self.strategy,
            objective_type=self.objective_type,
            max_jobs=self.max_jobs,
            max_parallel_jobs=self.max_parallel_jobs,
            max_runtime_in_seconds=self.max_runtime_in_seconds,
            tags=self.tags,
            warm_start_config=WarmStartConfig(warm_start_type, parents),
            strategy_config=self.strategy_config,
            completion_criteria_config=self.completion_criteria_config,
            early_stopping_type=self.early_stopping_type,
            random_seed=self.random_seed,
        )


def create_identical_dataset_and_algorithm_tuner(
    parent: str, additional_parents: set[str] | None = None, sagemaker_session: Session | None = None
) -> HyperparameterTuner:
    """A tuner copied from tuning job ``parent``, warm-started (IdenticalDataAndAlgorithm) from it
    and ``additional_parents``."""
    tuner = HyperparameterTuner.attach(parent, sagemaker_session)
    return tuner.identical_dataset_and_algorithm_tuner(additional_parents)


def create_transfer_learning_tuner(
    parent: str,
    additional_parents: set[str] | None = None,
    estimator: Estimator | None = None,
    sagemaker_session: Session | None = None,
) -> HyperparameterTuner:
    """A tuner copied from tuning job ``parent``, warm-started (TransferLearning) from it and
    ``additional_parents``."""
    tuner = HyperparameterTuner.attach(parent, sagemaker_session)
    return tuner.transfer_learning_tuner(additional_parents, estimator)


class _TuningJob:
    """A handle on one tuning job (``tuner.latest_tuning_job``)."""

    def __init__(self, sagemaker_session: Session, job_name: str):
        self.sagemaker_session = sagemaker_session
        self.name = job_name
        self.job_name = job_name

    def describe(self) -> dict[str, Any]:
        return self.sagemaker_session.call(
            "DescribeHyperParameterTuningJob", {HYPERPARAMETER_TUNING_JOB_NAME: self.name}
        )

    def stop(self) -> None:
        self.sagemaker_session.call(
            "StopHyperParameterTuningJob", {HYPERPARAMETER_TUNING_JOB_NAME: self.name}
        )

    def wait(self, poll: float = 0.2) -> dict[str, Any]:
        """Poll until the job is Completed, Failed or Stopped; UnexpectedStatusException if Failed
        (Stopped is an end the user asked for, as the SageMaker SDK treats it)."""
        while True:
            desc = self.describe()
            status = desc["HyperParameterTuningJobStatus"]
            if status in _TERMINAL:
                break
            time.sleep(poll)
        if status == "Failed":
            reason = desc.get("FailureReason", "(No reason provided)")
            raise UnexpectedStatusException(
                f"Error for HyperParameterTuning job {self.name}: {status}. Reason: {reason}",
                allowed_statuses=["Completed", "Stopped"],
                actual_status=status,
            )
        return desc


# --- request <-> estimator -----------------------------------------------------------------------


def _definition_shape() -> Any:
    from raymaker.protocol.service_model import input_shape

    return input_shape("CreateHyperParameterTuningJob").members["TrainingJobDefinition"]


def _training_job_definition(
    training: dict[str, Any], static: dict[str, str], metric_definitions: list[dict[str, str]] | None
) -> dict[str, Any]:
    """A CreateTrainingJob request as a HyperParameterTrainingJobDefinition: the members both shapes
    have (RoleArn, InputDataConfig, OutputDataConfig, ResourceConfig, StoppingCondition, CheckpointConfig,
    Environment, RetryStrategy, ...), StaticHyperParameters for HyperParameters, and the
    AlgorithmSpecification members a tuning job takes, with ``metric_definitions``."""
    shape = _definition_shape()
    spec_members = shape.members["AlgorithmSpecification"].members
    algo_spec = {k: v for k, v in training["AlgorithmSpecification"].items() if k in spec_members}
    if metric_definitions is not None:
        algo_spec["MetricDefinitions"] = [dict(m) for m in metric_definitions]
    definition: dict[str, Any] = {"StaticHyperParameters": dict(static), "AlgorithmSpecification": algo_spec}
    for key, value in training.items():
        if key in shape.members and key not in definition:
            definition[key] = copy.deepcopy(value)
    return definition


def _estimator_from_definition(definition: dict[str, Any], session: Session) -> Estimator:
    """The Estimator a TrainingJobDefinition came from, as far as it says: algorithm or image, role,
    instances, static hyperparameters (less the ones SageMaker reserves), output path, input mode,
    stopping condition, checkpoints, retries and environment. Channels are ``fit``'s, not kept."""
    spec = definition["AlgorithmSpecification"]
    resources = definition.get("ResourceConfig") or definition.get("HyperParameterTuningResourceConfig") or {}
    static = {
        k: v
        for k, v in (definition.get("StaticHyperParameters") or {}).items()
        if not k.startswith(_RESERVED_PREFIXES)
    }
    stopping = definition.get("StoppingCondition") or {}
    kwargs: dict[str, Any] = {
        "role": definition.get("RoleArn"),
        "instance_count": resources.get("InstanceCount", 1),
        "instance_type": resources.get("InstanceType", "local"),
        "hyperparameters": static,
        "output_path": (definition.get("OutputDataConfig") or {}).get("S3OutputPath"),
        "input_mode": spec.get("TrainingInputMode", "File"),
        "checkpoint_s3_uri": (definition.get("CheckpointConfig") or {}).get("S3Uri"),
        "keep_alive_period_in_seconds": resources.get("KeepAlivePeriodInSeconds"),
        "max_retry_attempts": (definition.get("RetryStrategy") or {}).get("MaximumRetryAttempts"),
        "environment": definition.get("Environment"),
        "session": session,
    }
    if stopping.get("MaxRuntimeInSeconds") is not None:
        kwargs["max_run"] = stopping["MaxRuntimeInSeconds"]
    if spec.get("AlgorithmName"):
        return Estimator(spec["AlgorithmName"], **kwargs)
    return Estimator(image_uri=spec["TrainingImage"], **kwargs)


# --- analytics (sagemaker.analytics) -------------------------------------------------------------


class HyperparameterTuningJobAnalytics:
    """A tuning job's trials as a pandas DataFrame (``sagemaker.analytics``)."""

    def __init__(self, hyperparameter_tuning_job_name: str, sagemaker_session: Session | None = None):
        self._session = sagemaker_session or Session()
        self._tuning_job_name = hyperparameter_tuning_job_name
        self.clear_cache()

    @property
    def name(self) -> str:
        return self._tuning_job_name

    def __repr__(self) -> str:
        return f"<raymaker.HyperparameterTuningJobAnalytics for {self.name}>"

    def clear_cache(self) -> None:
        self._dataframe: Any = None
        self._description: dict[str, Any] | None = None
        self._summaries: list[dict[str, Any]] | None = None

    def dataframe(self, force_refresh: bool = False) -> Any:
        """One row per trial: a column per tuned hyperparameter (floats for Integer and Continuous
        ranges, strings for Categorical ones), then TrainingJobName, TrainingJobStatus,
        FinalObjectiveValue, TrainingStartTime, TrainingEndTime, TrainingElapsedTimeSeconds."""
        if force_refresh:
            self.clear_cache()
        if self._dataframe is None:
            self._dataframe = self._fetch_dataframe()
        return self._dataframe

    def export_csv(self, filename: str) -> None:
        self.dataframe().to_csv(filename)

    def _fetch_dataframe(self) -> Any:
        import pandas as pd

        ranges = self.tuning_ranges
        numeric = {name for name, r in ranges.items() if "Values" not in r}

        def reshape(summary: dict[str, Any]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for key, value in (summary.get("TunedHyperParameters") or {}).items():
                out[key] = _as_float(value) if key in numeric or key not in ranges else value
            out["TrainingJobName"] = summary["TrainingJobName"]
            out["TrainingJobStatus"] = summary["TrainingJobStatus"]
            out["FinalObjectiveValue"] = (
                summary.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
            ).get("Value")
            start, end = summary.get("TrainingStartTime"), summary.get("TrainingEndTime")
            out["TrainingStartTime"] = start
            out["TrainingEndTime"] = end
            out["TrainingElapsedTimeSeconds"] = _elapsed(start, end)
            if "TrainingJobDefinitionName" in summary:
                out["TrainingJobDefinitionName"] = summary["TrainingJobDefinitionName"]
            return out

        rows = [reshape(s) for s in self.training_job_summaries()]
        columns = [*ranges, *_FIXED_COLUMNS]
        if not rows:
            return pd.DataFrame(columns=columns)
        return pd.DataFrame(rows)

    @property
    def tuning_ranges(self) -> dict[str, dict[str, Any]]:
        """Each tuned hyperparameter's ParameterRanges entry, by name."""
        desc = self.description()
        config = desc.get("HyperParameterTuningJobConfig") or {}
        ranges = (
            config.get("ParameterRanges")
            or (desc.get("TrainingJobDefinition") or {}).get("HyperParameterRanges")
            or {}
        )
        return {item["Name"]: item for items in ranges.values() for item in items or ()}

    def description(self, force_refresh: bool = False) -> dict[str, Any]:
        """DescribeHyperParameterTuningJob of the tuning job (cached)."""
        if force_refresh:
            self.clear_cache()
        if self._description is None:
            self._description = self._session.call(
                "DescribeHyperParameterTuningJob", {HYPERPARAMETER_TUNING_JOB_NAME: self.name}
            )
        return self._description

    def training_job_summaries(self, force_refresh: bool = False) -> list[dict[str, Any]]:
        """Every ListTrainingJobsForHyperParameterTuningJob summary, all pages (cached)."""
        if force_refresh:
            self.clear_cache()
        if self._summaries is not None:
            return self._summaries
        out: list[dict[str, Any]] = []
        params: dict[str, Any] = {HYPERPARAMETER_TUNING_JOB_NAME: self.name, "MaxResults": 100}
        while True:
            page = self._session.call("ListTrainingJobsForHyperParameterTuningJob", params)
            summaries = page.get("TrainingJobSummaries") or []
            out.extend(summaries)
            if not page.get("NextToken") or not summaries:
                break
            params = {**params, "NextToken": page["NextToken"]}
        self._summaries = out
        return out


_FIXED_COLUMNS = (
    "TrainingJobName",
    "TrainingJobStatus",
    "FinalObjectiveValue",
    "TrainingStartTime",
    "TrainingEndTime",
    "TrainingElapsedTimeSeconds",
)


def _as_float(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _elapsed(start: Any, end: Any) -> float | None:
    if start is None or end is None:
        return None
    if isinstance(start, datetime.datetime) and isinstance(end, datetime.datetime):
        return (end - start).total_seconds()
    return float(end) - float(start)
