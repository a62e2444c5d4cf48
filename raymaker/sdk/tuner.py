"""Automatic model tuning, named and shaped as the SageMaker Python SDK v2's ``sagemaker.tuner`` (the
ranges are in ``raymaker.sdk.parameter``, the trials' DataFrame in ``raymaker.sdk.analytics``, both
importable from here too, as from ``sagemaker.tuner``): ``HyperparameterTuner`` builds a
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
import importlib
import json
import sys
from enum import Enum
from typing import Any

from raymaker.protocol.service_model import input_shape
from raymaker.sdk import progress
from raymaker.sdk.analytics import HyperparameterTuningJobAnalytics
from raymaker.sdk.code import SCRIPT_PARAM_NAME, UploadedCode, is_remote
from raymaker.sdk.estimator import Estimator
from raymaker.sdk.names import TUNING_JOB_NAME_MAX_LENGTH, base_name_from_image, tuning_job_name
from raymaker.sdk.parameter import CategoricalParameter, ContinuousParameter, IntegerParameter, ParameterRange
from raymaker.sdk.predictor import Predictor
from raymaker.sdk.session import Session
from raymaker.sdk.waiter import TUNING_JOB, wait_for

__all__ = [
    "CategoricalParameter",
    "ContinuousParameter",
    "HyperbandStrategyConfig",
    "HyperparameterTuner",
    "HyperparameterTuningJobAnalytics",
    "IntegerParameter",
    "ParameterRange",
    "StrategyConfig",
    "TuningJobCompletionCriteriaConfig",
    "WarmStartConfig",
    "WarmStartTypes",
    "create_identical_dataset_and_algorithm_tuner",
    "create_transfer_learning_tuner",
]

HYPERPARAMETER_TUNING_JOB_NAME = "HyperParameterTuningJobName"
PARENT_HYPERPARAMETER_TUNING_JOBS = "ParentHyperParameterTuningJobs"
WARM_START_TYPE = "WarmStartType"
GRID_SEARCH = "Grid"

# StaticHyperParameters keys SageMaker (or its SDK) adds for itself; attach() leaves them out.
_RESERVED_PREFIXES = ("_tuning", "sagemaker_")
# What the SageMaker SDK adds to a framework estimator's StaticHyperParameters, so that attach() knows
# the estimator's class (JSON-encoded, as every framework hyperparameter).
SAGEMAKER_ESTIMATOR_MODULE = "sagemaker_estimator_module"
SAGEMAKER_ESTIMATOR_CLASS_NAME = "sagemaker_estimator_class_name"


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
        ``CategoricalParameterRanges``, ``IntegerParameterRanges`` (each list always present). A
        framework estimator's categorical values are JSON-encoded, as its hyperparameters are (the
        SageMaker SDK's ``as_json_range``)."""
        framework = _is_framework(self.estimator)
        out: dict[str, list[dict[str, Any]]] = {}
        for kind in ParameterRange.__all_types__:
            out[f"{kind}ParameterRanges"] = [
                p.as_json_range(name)
                if framework and isinstance(p, CategoricalParameter)
                else p.as_tuning_range(name)
                for name, p in self._hyperparameter_ranges.items()
                if p.__name__ == kind
            ]
        return out

    def _default_job_name(self) -> str:
        base = self.base_tuning_job_name or base_name_from_image(
            self.estimator.algorithm or self.estimator.training_image_uri() or "tuning"
        )
        return tuning_job_name(base)

    def tuning_job_request(self, inputs: Any = None, job_name: str | None = None) -> dict[str, Any]:
        """The CreateHyperParameterTuningJob request ``fit`` sends (what boto3's
        ``create_hyper_parameter_tuning_job`` takes). The TrainingJobDefinition is the estimator's own
        CreateTrainingJob request for ``inputs``, its tuned hyperparameters left out of
        StaticHyperParameters. A script's code is uploaded under the tuning job's name and its
        ``sagemaker_*`` hyperparameters stay static; a framework estimator's also name its class
        (``sagemaker_estimator_class_name``, ``sagemaker_estimator_module``), as in the SageMaker SDK."""
        name = job_name or self._default_job_name()
        training = self.estimator.training_job_request(inputs, name)
        static = dict(training.get("HyperParameters") or {})
        for tuned in self._hyperparameter_ranges:
            static.pop(tuned, None)
        if _is_framework(self.estimator):
            static[SAGEMAKER_ESTIMATOR_CLASS_NAME] = json.dumps(type(self.estimator).__name__)
            static[SAGEMAKER_ESTIMATOR_MODULE] = json.dumps(type(self.estimator).__module__)
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

    def fit(
        self, inputs: Any = None, job_name: str | None = None, wait: bool = True, *, logs: bool = True
    ) -> None:
        """Start a tuning job on ``inputs`` (as ``Estimator.fit`` takes them); with ``wait``, block
        until it ends, showing its progress unless ``logs=False`` (trials ended out of the maximum, the
        best objective so far, elapsed and remaining). The engine checks the ranges, objective and
        limits here (ValidationError)."""
        request = self.tuning_job_request(inputs, job_name)
        self.sagemaker_session.call("CreateHyperParameterTuningJob", request)
        self._current_job_name = request["HyperParameterTuningJobName"]
        self.latest_tuning_job = _TuningJob(self.sagemaker_session, self._current_job_name)
        if wait:
            self.latest_tuning_job.wait(logs=logs)

    def wait(self, *, logs: bool = True) -> None:
        """Block until the latest tuning job ends (showing its progress unless ``logs=False``);
        UnexpectedStatusException if it Failed."""
        self._ensure_last_tuning_job().wait(logs=logs)

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
        params = cls._prepare_init_params_from_job_description(job_details)
        if _is_framework(estimator):  # its categorical values went JSON-encoded
            params["hyperparameter_ranges"] = {
                k: CategoricalParameter([_decode(v) for v in p.values])
                if isinstance(p, CategoricalParameter)
                else p
                for k, p in params["hyperparameter_ranges"].items()
            }
        tuner = cls(estimator=estimator, **params)
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

    def wait(self, poll: float = 0.2, timeout: float | None = None, *, logs: bool = True) -> dict[str, Any]:
        """Poll until the job is Completed, Failed or Stopped; UnexpectedStatusException if Failed
        (Stopped is an end the user asked for, as the SageMaker SDK treats it). With ``logs``, its
        progress on stdout (``sdk/progress.py``)."""
        if not logs:
            return wait_for(self.sagemaker_session, TUNING_JOB, self.name, poll=poll, timeout=timeout)
        with progress.watch(TUNING_JOB, self.sagemaker_session, self.name) as w:
            return wait_for(
                self.sagemaker_session,
                TUNING_JOB,
                self.name,
                poll=poll,
                timeout=timeout,
                on_describe=w.on_describe,
            )


# --- request <-> estimator -----------------------------------------------------------------------


def _definition_shape() -> Any:
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
    stopping condition, checkpoints, retries and environment. Channels are ``fit``'s, not kept. A
    script comes back with its entry point and code (from ``sagemaker_program`` and
    ``sagemaker_submit_directory``), as the framework class its static hyperparameters name."""
    spec = definition["AlgorithmSpecification"]
    resources = definition.get("ResourceConfig") or definition.get("HyperParameterTuningResourceConfig") or {}
    hyperparameters = dict(definition.get("StaticHyperParameters") or {})
    static = {k: v for k, v in hyperparameters.items() if not k.startswith(_RESERVED_PREFIXES)}
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
    if SCRIPT_PARAM_NAME in hyperparameters:
        estimator_cls = _estimator_class(hyperparameters)
        params = estimator_cls._prepare_init_params_from_job_description(
            {**definition, "HyperParameters": hyperparameters}
        )
        for key in ("checkpoint_s3_uri", "keep_alive_period_in_seconds", "max_retry_attempts", "environment"):
            if kwargs[key] is not None:
                params.setdefault(key, kwargs[key])
        estimator = estimator_cls(**params, session=session)
        if is_remote(estimator.source_dir):
            estimator.uploaded_code = UploadedCode(estimator.source_dir, estimator.entry_point)
        return estimator
    if spec.get("AlgorithmName"):
        return Estimator(spec["AlgorithmName"], **kwargs)
    return Estimator(image_uri=spec["TrainingImage"], **kwargs)


# The SageMaker SDK's framework estimators, by the (module, class) its tuning jobs record.
_SAGEMAKER_CLASSES = {
    ("sagemaker.pytorch.estimator", "PyTorch"): ("raymaker.sdk.frameworks", "PyTorch"),
    ("sagemaker.sklearn.estimator", "SKLearn"): ("raymaker.sdk.frameworks", "SKLearn"),
    ("sagemaker.xgboost.estimator", "XGBoost"): ("raymaker.sdk.frameworks", "XGBoost"),
}


def _estimator_class(hyperparameters: dict[str, str]) -> type[Estimator]:
    """The estimator class a script's static hyperparameters name (a raymaker module, one already
    imported, or the SageMaker SDK's framework class, as raymaker's), else ``Estimator``."""
    module = _decode(hyperparameters.get(SAGEMAKER_ESTIMATOR_MODULE))
    name = _decode(hyperparameters.get(SAGEMAKER_ESTIMATOR_CLASS_NAME))
    if not isinstance(module, str) or not isinstance(name, str):
        return Estimator
    module, name = _SAGEMAKER_CLASSES.get((module, name), (module, name))
    if not (module.startswith("raymaker.") or module in sys.modules):
        return Estimator  # never import a module a record names
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return Estimator
    return found if isinstance(found, type) and issubclass(found, Estimator) else Estimator


def _is_framework(estimator: Estimator) -> bool:
    """A framework estimator (PyTorch, SKLearn, XGBoost): the SageMaker SDK's ``Framework``."""
    return bool(type(estimator)._framework_name)


def _decode(value: Any) -> Any:
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value
