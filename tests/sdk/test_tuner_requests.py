"""``HyperparameterTuner`` (raymaker.sdk.tuner) without Ray: the CreateHyperParameterTuningJob requests
it builds go through the engine's real validator (``validate_tuning_job``), and what it reads back
(DescribeHyperParameterTuningJob, ListTrainingJobsForHyperParameterTuningJob, DescribeTrainingJob) is
written as the engine answers, checked against botocore's output shapes. The only stand-in is
``RecordingBackend`` (tests/sdk/helpers.py): a backend that records each request (checked against
botocore's input shape) and answers with the responses a test gives it."""

from __future__ import annotations

import copy
import datetime
from pathlib import Path
from typing import Any

import pytest

from raymaker.engine.tuning_spec import (
    OBJECTIVE_HYPERPARAMETER,
    TUNING_JOB_NAME_RE,
    trial_request,
    validate_tuning_job,
)
from raymaker.protocol.errors import ValidationError
from raymaker.sdk.analytics import HyperparameterTuningJobAnalytics
from raymaker.sdk.estimator import Estimator
from raymaker.sdk.exceptions import UnexpectedStatusException
from raymaker.sdk.inputs import TrainingInput
from raymaker.sdk.names import base_name_from_image, tuning_job_name
from raymaker.sdk.parameter import CategoricalParameter, ContinuousParameter, IntegerParameter
from raymaker.sdk.session import Session
from raymaker.sdk.tuner import (
    HyperbandStrategyConfig,
    HyperparameterTuner,
    StrategyConfig,
    WarmStartConfig,
    WarmStartTypes,
)
from tests.sdk.helpers import T0, RecordingBackend, training_job_description

XGB_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"

# The shared recording backend (tests/sdk/helpers.py), under the name these tests grew up with.
Recorder = RecordingBackend


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def data(tmp_path: Path) -> dict[str, TrainingInput]:
    """train and validation channels: a small CSV (label first, no header) in local folders."""
    rows = "".join(f"{i % 2},{i / 10:.1f},{(20 - i) / 10:.1f}\n" for i in range(20))
    channels = {}
    for name in ("train", "validation"):
        folder = tmp_path / "data" / name
        folder.mkdir(parents=True)
        (folder / "part-0.csv").write_text(rows)
        channels[name] = TrainingInput(str(folder), content_type="text/csv")
    return channels


def xgb_estimator(tmp_path: Path, backend: Any = None, **kwargs: Any) -> Estimator:
    hyperparameters = {"num_round": 20, "objective": "binary:logistic", "eta": 0.3, "max_depth": 4}
    return Estimator(
        "xgboost",
        hyperparameters=hyperparameters,
        output_path=str(tmp_path / "output"),
        session=Session(backend=backend or Recorder()),
        **kwargs,
    )


def mixed_ranges() -> dict[str, Any]:
    return {
        "eta": ContinuousParameter(0.05, 0.5, "Logarithmic"),
        "max_depth": IntegerParameter(2, 8),
        "tree_method": CategoricalParameter(["hist", "approx"]),
    }


def describe_response(request: dict[str, Any], status: str = "InProgress", **extra: Any) -> dict[str, Any]:
    """DescribeHyperParameterTuningJob as the engine answers: the request's config and definition
    echoed (SageMaker adds ``_tuning_objective_metric`` to the static hyperparameters), plus state."""
    definition = copy.deepcopy(request["TrainingJobDefinition"])
    metric = request["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]["MetricName"]
    definition["StaticHyperParameters"][OBJECTIVE_HYPERPARAMETER] = metric
    out = {
        "HyperParameterTuningJobName": request["HyperParameterTuningJobName"],
        "HyperParameterTuningJobArn": "arn:aws:sagemaker:us-east-1:000000000000:hyper-parameter-tuning-job/"
        + request["HyperParameterTuningJobName"].lower(),
        "HyperParameterTuningJobConfig": copy.deepcopy(request["HyperParameterTuningJobConfig"]),
        "TrainingJobDefinition": definition,
        "HyperParameterTuningJobStatus": status,
        "CreationTime": T0,
        "TrainingJobStatusCounters": {"Completed": 0, "InProgress": 0, "Stopped": 0},
        "ObjectiveStatusCounters": {"Succeeded": 0, "Pending": 0, "Failed": 0},
    }
    if "WarmStartConfig" in request:
        out["WarmStartConfig"] = copy.deepcopy(request["WarmStartConfig"])
    out.update(extra)
    return out


def trial_summary(
    name: str, tuned: dict[str, str], status: str, value: float | None, seconds: float | None
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "TrainingJobName": name,
        "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:000000000000:training-job/{name}",
        "TuningJobName": name.rsplit("-", 2)[0],
        "CreationTime": T0,
        "TrainingStartTime": T0,
        "TrainingJobStatus": status,
        "TunedHyperParameters": tuned,
    }
    if seconds is not None:
        summary["TrainingEndTime"] = T0 + datetime.timedelta(seconds=seconds)
    if value is not None:
        summary["FinalHyperParameterTuningJobObjectiveMetric"] = {
            "Type": "Maximize",
            "MetricName": "validation:auc",
            "Value": value,
        }
        summary["ObjectiveStatus"] = "Succeeded"
    return summary


# --- parameter ranges ----------------------------------------------------------------------------


def test_continuous_and_integer_ranges_travel_as_strings_with_their_scaling() -> None:
    assert ContinuousParameter(0.1, 0.5).as_tuning_range("eta") == {
        "Name": "eta",
        "MinValue": "0.1",
        "MaxValue": "0.5",
        "ScalingType": "Auto",
    }
    assert IntegerParameter(1, 10, scaling_type="Logarithmic").as_tuning_range("max_depth") == {
        "Name": "max_depth",
        "MinValue": "1",
        "MaxValue": "10",
        "ScalingType": "Logarithmic",
    }
    assert ContinuousParameter(1e-5, 1).as_tuning_range("alpha")["MinValue"] == "1e-05"
    p = IntegerParameter(2, 8)
    assert p.is_valid(2) and p.is_valid(8) and not p.is_valid(9)
    assert IntegerParameter.cast_to_type("3") == 3 and ContinuousParameter.cast_to_type("0.5") == 0.5
    assert (p.__name__, ContinuousParameter(0, 1).__name__) == ("Integer", "Continuous")


def test_categorical_range_values_become_strings() -> None:
    p = CategoricalParameter([1, 2.5, True, "hist"])
    assert p.values == ["1", "2.5", "True", "hist"]
    assert p.as_tuning_range("x") == {"Name": "x", "Values": ["1", "2.5", "True", "hist"]}
    assert p.as_json_range("x") == {"Name": "x", "Values": ['"1"', '"2.5"', '"True"', '"hist"']}
    assert CategoricalParameter("gbtree").values == ["gbtree"]  # one value, not a list
    assert p.is_valid("hist") and not p.is_valid("exact")
    assert p.__name__ == "Categorical"


def test_warm_start_config_round_trips_and_rejects_bad_input() -> None:
    config = WarmStartConfig(WarmStartTypes.TRANSFER_LEARNING, parents={"parent-b", "parent-a"})
    req = config.to_input_req()
    assert req == {
        "WarmStartType": "TransferLearning",
        "ParentHyperParameterTuningJobs": [
            {"HyperParameterTuningJobName": "parent-a"},
            {"HyperParameterTuningJobName": "parent-b"},
        ],
    }
    back = WarmStartConfig.from_job_desc(req)
    assert back is not None and back.type is WarmStartTypes.TRANSFER_LEARNING
    assert back.parents == {"parent-a", "parent-b"}
    assert WarmStartConfig.from_job_desc(None) is None
    assert (
        WarmStartConfig("IdenticalDataAndAlgorithm", ["p"]).type
        is WarmStartTypes.IDENTICAL_DATA_AND_ALGORITHM
    )
    with pytest.raises(ValueError, match="Invalid type"):
        WarmStartConfig("Sideways", ["p"])
    with pytest.raises(ValueError, match="Invalid parents"):
        WarmStartConfig(WarmStartTypes.TRANSFER_LEARNING, [])


# --- requests, through the engine's validator ----------------------------------------------------


def test_random_request_passes_the_validator(tmp_path: Path, data: dict[str, TrainingInput]) -> None:
    tuner = HyperparameterTuner(
        xgb_estimator(tmp_path),
        "validation:auc",
        mixed_ranges(),
        strategy="Random",
        max_jobs=6,
        max_parallel_jobs=2,
        random_seed=7,
    )
    request = tuner.tuning_job_request(data)
    spec = validate_tuning_job(request)

    config = request["HyperParameterTuningJobConfig"]
    assert config["ResourceLimits"] == {"MaxParallelTrainingJobs": 2, "MaxNumberOfTrainingJobs": 6}
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "validation:auc"}
    assert config["TrainingJobEarlyStoppingType"] == "Off" and config["RandomSeed"] == 7
    # The SageMaker SDK's ParameterRanges: all three lists, Continuous, Categorical, Integer; strings.
    assert config["ParameterRanges"] == {
        "ContinuousParameterRanges": [
            {"Name": "eta", "MinValue": "0.05", "MaxValue": "0.5", "ScalingType": "Logarithmic"}
        ],
        "CategoricalParameterRanges": [{"Name": "tree_method", "Values": ["hist", "approx"]}],
        "IntegerParameterRanges": [
            {"Name": "max_depth", "MinValue": "2", "MaxValue": "8", "ScalingType": "Auto"}
        ],
    }
    # The estimator sets eta and max_depth too: tuned ones are not static.
    definition = request["TrainingJobDefinition"]
    assert definition["StaticHyperParameters"] == {"num_round": "20", "objective": "binary:logistic"}
    assert tuner.static_hyperparameters == definition["StaticHyperParameters"]
    assert definition["AlgorithmSpecification"] == {"TrainingInputMode": "File", "AlgorithmName": "xgboost"}
    assert [c["ChannelName"] for c in definition["InputDataConfig"]] == ["train", "validation"]
    assert definition["OutputDataConfig"] == {"S3OutputPath": str(tmp_path / "output")}
    assert definition["ResourceConfig"] == {"InstanceType": "local", "InstanceCount": 1, "VolumeSizeInGB": 30}
    assert definition["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400}
    assert "TrainingJobName" not in definition and "HyperParameters" not in definition

    name = request["HyperParameterTuningJobName"]
    assert len(name) <= 32 and TUNING_JOB_NAME_RE.match(name) and name.startswith("xgboost-")
    assert (spec.strategy, spec.max_jobs, spec.max_parallel, spec.random_seed) == ("Random", 6, 2, 7)
    assert {r.name: r.kind for r in spec.ranges} == {
        "eta": "continuous",
        "tree_method": "categorical",
        "max_depth": "integer",
    }
    # The engine's first trial is a valid training job with the tuner's static hyperparameters.
    trial = trial_request(spec, 1, {"eta": "0.1", "max_depth": "3", "tree_method": "hist"})
    assert trial["HyperParameters"]["num_round"] == "20"
    assert trial["HyperParameters"][OBJECTIVE_HYPERPARAMETER] == "validation:auc"


def test_grid_request_omits_max_jobs(tmp_path: Path, data: dict[str, TrainingInput]) -> None:
    tuner = HyperparameterTuner(
        xgb_estimator(tmp_path),
        "validation:logloss",
        {
            "max_depth": CategoricalParameter([2, 4, 6]),
            "tree_method": CategoricalParameter(["hist", "approx"]),
        },
        strategy="Grid",
        objective_type="Minimize",
        max_parallel_jobs=2,
    )
    assert tuner.max_jobs is None
    request = tuner.tuning_job_request(data)
    limits = request["HyperParameterTuningJobConfig"]["ResourceLimits"]
    assert limits == {"MaxParallelTrainingJobs": 2}
    ranges = request["HyperParameterTuningJobConfig"]["ParameterRanges"]
    assert ranges["CategoricalParameterRanges"][0] == {"Name": "max_depth", "Values": ["2", "4", "6"]}
    assert ranges["ContinuousParameterRanges"] == [] and ranges["IntegerParameterRanges"] == []
    spec = validate_tuning_job(request)
    assert (spec.strategy, spec.max_jobs, spec.objective_type) == ("Grid", 6, "Minimize")
    assert "max_depth" not in request["TrainingJobDefinition"]["StaticHyperParameters"]


def test_grid_with_a_numeric_range_fails_in_the_validator(
    tmp_path: Path, data: dict[str, TrainingInput]
) -> None:
    tuner = HyperparameterTuner(
        xgb_estimator(tmp_path), "validation:auc", {"eta": ContinuousParameter(0.1, 0.5)}, strategy="Grid"
    )
    with pytest.raises(ValidationError, match="Grid strategy takes only categorical ranges"):
        validate_tuning_job(tuner.tuning_job_request(data))


def test_non_grid_max_jobs_defaults_to_one_as_the_sdk(tmp_path: Path, data: dict[str, TrainingInput]) -> None:
    tuner = HyperparameterTuner(
        xgb_estimator(tmp_path), "validation:auc", {"eta": ContinuousParameter(0.1, 0.5)}
    )
    request = tuner.tuning_job_request(data)
    assert request["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 1
    assert validate_tuning_job(request).strategy == "Bayesian"


def test_bayesian_request_with_everything_passes_the_validator(
    tmp_path: Path, data: dict[str, TrainingInput]
) -> None:
    estimator = xgb_estimator(
        tmp_path,
        checkpoint_s3_uri=str(tmp_path / "checkpoints"),
        environment={"OMP_NUM_THREADS": "1"},
        max_retry_attempts=2,
        max_run=600,
    )
    metric_definitions = [{"Name": "validation:auc", "Regex": "validation-auc:([0-9.]+)"}]
    tuner = HyperparameterTuner(
        estimator,
        "validation:auc",
        mixed_ranges(),
        metric_definitions=metric_definitions,
        max_jobs=10,
        max_parallel_jobs=3,
        max_runtime_in_seconds=3600,
        early_stopping_type="Auto",
        warm_start_config=WarmStartConfig(WarmStartTypes.IDENTICAL_DATA_AND_ALGORITHM, ["xgb-parent-1"]),
        tags=[{"Key": "team", "Value": "ml"}],
    )
    request = tuner.tuning_job_request(data, job_name="xgb-bayes-1")
    spec = validate_tuning_job(request)

    assert request["HyperParameterTuningJobName"] == "xgb-bayes-1"
    definition = request["TrainingJobDefinition"]
    assert definition["AlgorithmSpecification"]["MetricDefinitions"] == metric_definitions
    assert definition["CheckpointConfig"] == {"S3Uri": str(tmp_path / "checkpoints")}
    assert definition["Environment"] == {"OMP_NUM_THREADS": "1"}
    assert definition["RetryStrategy"] == {"MaximumRetryAttempts": 2}
    assert definition["StoppingCondition"] == {"MaxRuntimeInSeconds": 600}
    assert request["WarmStartConfig"] == {
        "WarmStartType": "IdenticalDataAndAlgorithm",
        "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": "xgb-parent-1"}],
    }
    assert request["Tags"] == [{"Key": "team", "Value": "ml"}]
    assert (spec.strategy, spec.early_stopping, spec.max_runtime_seconds) == ("Bayesian", "Auto", 3600)
    assert spec.warm_start == {"type": "IdenticalDataAndAlgorithm", "parents": ["xgb-parent-1"]}
    assert spec.tags == ({"Key": "team", "Value": "ml"},)


def test_hyperband_request_passes_the_validator(tmp_path: Path, data: dict[str, TrainingInput]) -> None:
    tuner = HyperparameterTuner(
        xgb_estimator(tmp_path),
        "validation:auc",
        {"eta": ContinuousParameter(0.1, 0.5)},
        strategy="Hyperband",
        strategy_config=StrategyConfig(HyperbandStrategyConfig(max_resource=20, min_resource=2)),
        max_jobs=4,
    )
    request = tuner.tuning_job_request(data)
    assert request["HyperParameterTuningJobConfig"]["StrategyConfig"] == {
        "HyperbandStrategyConfig": {"MinResource": 2, "MaxResource": 20}
    }
    spec = validate_tuning_job(request)
    assert (spec.hyperband_min_resource, spec.hyperband_max_resource) == (2, 20)


def test_image_uri_estimator(tmp_path: Path, data: dict[str, TrainingInput]) -> None:
    estimator = Estimator(
        image_uri=XGB_IMAGE,
        hyperparameters={"num_round": 5},
        output_path=str(tmp_path / "out"),
        session=Session(backend=Recorder()),
    )
    tuner = HyperparameterTuner(
        estimator, "validation:auc", {"eta": ContinuousParameter(0.1, 0.5)}, max_jobs=2
    )
    request = tuner.tuning_job_request(data)
    assert request["HyperParameterTuningJobName"].startswith("sagemaker-")
    assert request["TrainingJobDefinition"]["AlgorithmSpecification"] == {
        "TrainingInputMode": "File",
        "TrainingImage": XGB_IMAGE,
    }
    assert validate_tuning_job(request).algorithm == "xgboost"


def test_default_names_fit_32_characters_and_differ_per_call() -> None:
    assert base_name_from_image(XGB_IMAGE) == "sagemaker-xgboost"
    assert base_name_from_image("linear-learner") == "linear-learner"
    names = [tuning_job_name("linear-learner") for _ in range(300)]
    assert len(set(names)) == len(names)
    for name in names:
        assert len(name) <= 32 and TUNING_JOB_NAME_RE.match(name), name
    long = tuning_job_name("a_very_long.base-name-for-a-tuning-job-")
    assert len(long) <= 32 and TUNING_JOB_NAME_RE.match(long), long
    assert long.startswith("a-very-long-b")


def test_base_tuning_job_name(tmp_path: Path, data: dict[str, TrainingInput]) -> None:
    tuner = HyperparameterTuner(
        xgb_estimator(tmp_path),
        "validation:auc",
        {"eta": ContinuousParameter(0.1, 0.5)},
        base_tuning_job_name="churn",
        max_jobs=2,
    )
    first = tuner.tuning_job_request(data)["HyperParameterTuningJobName"]
    second = tuner.tuning_job_request(data)["HyperParameterTuningJobName"]
    assert first.startswith("churn-") and second.startswith("churn-") and first != second


def test_ranges_are_required() -> None:
    with pytest.raises(ValueError, match="Need to specify hyperparameter ranges"):
        HyperparameterTuner(Estimator("xgboost", session=Session(backend=Recorder())), "validation:auc", {})
    with pytest.raises(TypeError, match="ContinuousParameter"):
        HyperparameterTuner(
            Estimator("xgboost", session=Session(backend=Recorder())), "validation:auc", {"eta": (0.1, 0.5)}
        )


# --- fit, wait, describe, stop -------------------------------------------------------------------


def test_fit_without_wait_sends_the_request(tmp_path: Path, data: dict[str, TrainingInput]) -> None:
    backend = Recorder(
        CreateHyperParameterTuningJob=lambda p: {
            "HyperParameterTuningJobArn": "arn:aws:sagemaker:us-east-1:000000000000:hyper-parameter-tuning-job/"
            + p["HyperParameterTuningJobName"]
        },
        StopHyperParameterTuningJob={},
    )
    tuner = HyperparameterTuner(
        xgb_estimator(tmp_path, backend), "validation:auc", mixed_ranges(), max_jobs=4
    )
    tuner.fit(data, job_name="xgb-fit-1", wait=False)
    assert backend.ops() == ["CreateHyperParameterTuningJob"]
    sent = backend.calls[0][1]
    assert sent == tuner.tuning_job_request(data, job_name="xgb-fit-1")
    validate_tuning_job(sent)
    assert tuner.latest_tuning_job is not None and tuner.latest_tuning_job.name == "xgb-fit-1"

    backend.answers["DescribeHyperParameterTuningJob"] = [describe_response(sent)]
    assert tuner.describe()["HyperParameterTuningJobStatus"] == "InProgress"
    tuner.stop()
    assert backend.calls[-1] == ("StopHyperParameterTuningJob", {"HyperParameterTuningJobName": "xgb-fit-1"})


def _started_tuner(tmp_path: Path, data: dict[str, TrainingInput], backend: Recorder) -> tuple[Any, dict]:
    backend.answers.setdefault(
        "CreateHyperParameterTuningJob", [{"HyperParameterTuningJobArn": "arn:aws:sagemaker:x"}]
    )
    tuner = HyperparameterTuner(
        xgb_estimator(tmp_path, backend), "validation:auc", mixed_ranges(), max_jobs=4
    )
    tuner.fit(data, job_name="xgb-tune-1", wait=False)
    return tuner, backend.calls[0][1]


def test_wait_polls_until_the_job_ends(tmp_path: Path, data: dict[str, TrainingInput]) -> None:
    backend = Recorder()
    tuner, request = _started_tuner(tmp_path, data, backend)
    backend.answers["DescribeHyperParameterTuningJob"] = [
        describe_response(request, "InProgress"),
        describe_response(request, "InProgress"),
        describe_response(request, "Completed"),
    ]
    tuner.wait()
    assert backend.ops().count("DescribeHyperParameterTuningJob") == 3

    backend.answers["DescribeHyperParameterTuningJob"] = [describe_response(request, "Stopped")]
    tuner.wait()  # stopped on request: not an error, as the SageMaker SDK


def test_wait_raises_when_the_tuning_job_fails(tmp_path: Path, data: dict[str, TrainingInput]) -> None:
    backend = Recorder()
    tuner, request = _started_tuner(tmp_path, data, backend)
    reason = "All training jobs failed: ValueError: label column has 3 classes"
    backend.answers["DescribeHyperParameterTuningJob"] = [
        describe_response(request, "Failed", FailureReason=reason)
    ]
    with pytest.raises(UnexpectedStatusException, match="label column has 3 classes") as err:
        tuner.wait()
    assert err.value.actual_status == "Failed"
    assert str(err.value).startswith("Error for HyperParameterTuning job xgb-tune-1: Failed.")


def test_nothing_to_wait_for_before_fit(tmp_path: Path) -> None:
    tuner = HyperparameterTuner(xgb_estimator(tmp_path), "validation:auc", mixed_ranges())
    with pytest.raises(ValueError, match="No tuning job available"):
        tuner.wait()


# --- best training job, best estimator, deploy ---------------------------------------------------


def _trial_description(tmp_path: Path, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """DescribeTrainingJob of the engine's trial 1 of ``request``: the trial's own CreateTrainingJob
    request (the engine's ``trial_request``) echoed as a completed job."""
    spec = validate_tuning_job(request)
    trial = trial_request(spec, 1, {"eta": "0.1", "max_depth": "3", "tree_method": "hist"})
    desc = training_job_description(
        trial["TrainingJobName"],
        "Completed",
        "Completed",
        **{
            k: copy.deepcopy(trial[k])
            for k in (
                "AlgorithmSpecification",
                "RoleArn",
                "HyperParameters",
                "OutputDataConfig",
                "ResourceConfig",
                "StoppingCondition",
            )
        },
    )
    return trial["TrainingJobName"], desc


def test_best_training_job_and_estimator(tmp_path: Path, data: dict[str, TrainingInput]) -> None:
    backend = Recorder()
    tuner, request = _started_tuner(tmp_path, data, backend)
    backend.answers["DescribeHyperParameterTuningJob"] = [describe_response(request, "InProgress")]
    with pytest.raises(ValueError, match="Best training job not available for tuning job: xgb-tune-1"):
        tuner.best_training_job()

    best_name, trial_desc = _trial_description(tmp_path, request)
    best = trial_summary(
        best_name, {"eta": "0.1", "max_depth": "3", "tree_method": "hist"}, "Completed", 0.93, 4
    )
    backend.answers["DescribeHyperParameterTuningJob"] = [
        describe_response(request, "Completed", BestTrainingJob=best)
    ]
    backend.answers["DescribeTrainingJob"] = [trial_desc]
    assert tuner.best_training_job() == best_name
    estimator = tuner.best_estimator()
    assert isinstance(estimator, Estimator) and estimator.algorithm == "xgboost"
    assert estimator.latest_training_job is not None and estimator.latest_training_job.name == best_name
    assert estimator.hyperparameters()["eta"] == "0.1" and estimator.hyperparameters()["num_round"] == "20"
    assert estimator.session is tuner.sagemaker_session


def test_deploy_serves_the_best_trial(tmp_path: Path, data: dict[str, TrainingInput]) -> None:
    backend = Recorder()
    tuner, request = _started_tuner(tmp_path, data, backend)
    best_name, trial_desc = _trial_description(tmp_path, request)
    trial_desc["ModelArtifacts"] = {"S3ModelArtifacts": f"{tmp_path}/output/{best_name}/output/model.tar.gz"}
    best = trial_summary(
        best_name, {"eta": "0.1", "max_depth": "3", "tree_method": "hist"}, "Completed", 0.9, 3
    )
    backend.answers.update(
        DescribeHyperParameterTuningJob=[describe_response(request, "Completed", BestTrainingJob=best)],
        DescribeTrainingJob=[trial_desc],
        DescribeModel=[ValidationError(f"Could not find model {best_name}")],
        CreateModel=[{"ModelArn": "arn:aws:sagemaker:x:model"}],
        CreateEndpointConfig=[{"EndpointConfigArn": "arn:aws:sagemaker:x:endpoint-config"}],
        CreateEndpoint=[{"EndpointArn": "arn:aws:sagemaker:x:endpoint"}],
    )
    predictor = tuner.deploy(1, "local", wait=False)
    assert predictor.endpoint_name == best_name
    calls = dict(backend.calls)
    assert calls["CreateModel"]["ModelName"] == best_name
    assert calls["CreateModel"]["PrimaryContainer"] == {
        "Image": "xgboost",
        "ModelDataUrl": trial_desc["ModelArtifacts"]["S3ModelArtifacts"],
    }
    assert calls["CreateEndpoint"] == {"EndpointName": best_name, "EndpointConfigName": best_name}


# --- attach --------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["Random", "Grid", "Bayesian"])
def test_attach_rebuilds_the_tuner_that_made_the_request(
    tmp_path: Path, data: dict[str, TrainingInput], strategy: str
) -> None:
    if strategy == "Grid":
        ranges: dict[str, Any] = {
            "tree_method": CategoricalParameter(["hist", "approx"]),
            "max_depth": CategoricalParameter([3, 5]),
        }
        kwargs: dict[str, Any] = {}
    else:
        ranges = mixed_ranges()
        kwargs = {"max_jobs": 5, "random_seed": 3, "early_stopping_type": "Auto"}
    original = HyperparameterTuner(
        xgb_estimator(tmp_path, instance_count=2, checkpoint_s3_uri=str(tmp_path / "ckpt")),
        "validation:auc",
        ranges,
        strategy=strategy,
        max_parallel_jobs=2,
        warm_start_config=WarmStartConfig(WarmStartTypes.TRANSFER_LEARNING, ["parent-job"]),
        **kwargs,
    )
    request = original.tuning_job_request(data, job_name=f"{strategy.lower()}-tune-1")
    validate_tuning_job(request)
    desc = describe_response(request, "Completed")
    desc["TrainingJobDefinition"]["StaticHyperParameters"]["sagemaker_estimator_module"] = (
        '"sagemaker.estimator"'
    )

    backend = Recorder(DescribeHyperParameterTuningJob=[desc])
    tuner = HyperparameterTuner.attach(request["HyperParameterTuningJobName"], Session(backend=backend))
    assert backend.calls == [
        (
            "DescribeHyperParameterTuningJob",
            {"HyperParameterTuningJobName": request["HyperParameterTuningJobName"]},
        )
    ]
    assert tuner.latest_tuning_job is not None
    assert tuner.latest_tuning_job.name == request["HyperParameterTuningJobName"]

    est = tuner.estimator
    assert (est.algorithm, est.instance_count, est.instance_type) == ("xgboost", 2, "local")
    assert est.hyperparameters() == original.static_hyperparameters  # less _tuning_* and sagemaker_*
    assert "eta" in est.hyperparameters() if strategy == "Grid" else "eta" not in est.hyperparameters()
    assert est.output_path == str(tmp_path / "output") and est.checkpoint_s3_uri == str(tmp_path / "ckpt")
    assert {n: (type(p), vars(p)) for n, p in tuner._hyperparameter_ranges.items()} == {
        n: (type(p), vars(p)) for n, p in original._hyperparameter_ranges.items()
    }
    assert (tuner.strategy, tuner.max_jobs, tuner.max_parallel_jobs) == (
        strategy,
        original.max_jobs,
        2,
    )
    assert tuner.warm_start_config is not None and tuner.warm_start_config.parents == {"parent-job"}
    # The rebuilt tuner makes the same request again.
    assert tuner.tuning_job_request(data, job_name=request["HyperParameterTuningJobName"]) == request


def test_attach_ranges_keep_their_scaling_and_types() -> None:
    ranges = HyperparameterTuner._prepare_parameter_ranges_from_job_description(
        {
            "IntegerParameterRanges": [
                {"Name": "k", "MinValue": "2", "MaxValue": "9", "ScalingType": "Linear"}
            ],
            "ContinuousParameterRanges": [
                {"Name": "lr", "MinValue": "0.001", "MaxValue": "0.9", "ScalingType": "ReverseLogarithmic"}
            ],
            "CategoricalParameterRanges": [{"Name": "loss", "Values": ["auto", "logistic"]}],
        }
    )
    assert list(ranges) == ["k", "lr", "loss"]
    k, lr, loss = ranges.values()
    assert isinstance(k, IntegerParameter) and (k.min_value, k.max_value, k.scaling_type) == (2, 9, "Linear")
    assert isinstance(lr, ContinuousParameter) and (lr.min_value, lr.scaling_type) == (
        0.001,
        "ReverseLogarithmic",
    )
    assert isinstance(loss, CategoricalParameter) and loss.values == ["auto", "logistic"]


def test_warm_start_tuners_name_the_parent(tmp_path: Path, data: dict[str, TrainingInput]) -> None:
    backend = Recorder()
    tuner, _ = _started_tuner(tmp_path, data, backend)
    child = tuner.transfer_learning_tuner(additional_parents={"older-job"})
    assert child.warm_start_config is not None
    assert child.warm_start_config.type is WarmStartTypes.TRANSFER_LEARNING
    assert child.warm_start_config.parents == {"xgb-tune-1", "older-job"}
    request = child.tuning_job_request(data)
    validate_tuning_job(request)
    assert request["WarmStartConfig"]["ParentHyperParameterTuningJobs"] == [
        {"HyperParameterTuningJobName": "older-job"},
        {"HyperParameterTuningJobName": "xgb-tune-1"},
    ]
    same = tuner.identical_dataset_and_algorithm_tuner()
    assert same.warm_start_config is not None and same.warm_start_config.parents == {"xgb-tune-1"}


# --- analytics -----------------------------------------------------------------------------------


def test_analytics_dataframe_has_the_sdk_columns_over_every_page(
    tmp_path: Path, data: dict[str, TrainingInput]
) -> None:
    backend = Recorder()
    tuner, request = _started_tuner(tmp_path, data, backend)
    page1 = [
        trial_summary(
            "xgb-tune-1-001-aaaaaaaa",
            {"eta": "0.1", "max_depth": "3", "tree_method": "hist"},
            "Completed",
            0.91,
            12.5,
        ),
        trial_summary(
            "xgb-tune-1-002-bbbbbbbb",
            {"eta": "0.4", "max_depth": "7", "tree_method": "approx"},
            "Failed",
            None,
            2.0,
        ),
    ]
    page2 = [
        trial_summary(
            "xgb-tune-1-003-cccccccc",
            {"eta": "0.25", "max_depth": "5", "tree_method": "hist"},
            "InProgress",
            None,
            None,
        ),
    ]
    backend.answers.update(
        DescribeHyperParameterTuningJob=[describe_response(request, "InProgress")],
        ListTrainingJobsForHyperParameterTuningJob=[
            {"TrainingJobSummaries": page1, "NextToken": "2"},
            {"TrainingJobSummaries": page2},
        ],
    )
    analytics = tuner.analytics()
    assert isinstance(analytics, HyperparameterTuningJobAnalytics) and analytics.name == "xgb-tune-1"
    df = analytics.dataframe()

    lists = [p for op, p in backend.calls if op == "ListTrainingJobsForHyperParameterTuningJob"]
    assert lists == [
        {"HyperParameterTuningJobName": "xgb-tune-1", "MaxResults": 100},
        {"HyperParameterTuningJobName": "xgb-tune-1", "MaxResults": 100, "NextToken": "2"},
    ]
    assert list(df.columns) == [
        "eta",
        "max_depth",
        "tree_method",
        "TrainingJobName",
        "TrainingJobStatus",
        "FinalObjectiveValue",
        "TrainingStartTime",
        "TrainingEndTime",
        "TrainingElapsedTimeSeconds",
    ]
    assert len(df) == 3
    assert df["eta"].tolist() == [0.1, 0.4, 0.25] and df["max_depth"].tolist() == [3.0, 7.0, 5.0]
    assert df["tree_method"].tolist() == ["hist", "approx", "hist"]
    assert df["TrainingJobStatus"].tolist() == ["Completed", "Failed", "InProgress"]
    assert df["FinalObjectiveValue"].iloc[0] == 0.91 and df["FinalObjectiveValue"].iloc[1:].isna().all()
    assert (
        df["TrainingElapsedTimeSeconds"].iloc[0] == 12.5 and df["TrainingElapsedTimeSeconds"].isna().iloc[2]
    )
    assert df["TrainingStartTime"].iloc[0] == T0

    calls = len(backend.calls)
    assert analytics.dataframe() is df and len(backend.calls) == calls  # cached
    analytics.dataframe(force_refresh=True)
    assert len(backend.calls) > calls
    csv = tmp_path / "trials.csv"
    analytics.export_csv(str(csv))
    assert "xgb-tune-1-003-cccccccc" in csv.read_text()


def test_analytics_of_a_job_without_trials_yet(tmp_path: Path, data: dict[str, TrainingInput]) -> None:
    backend = Recorder()
    tuner, request = _started_tuner(tmp_path, data, backend)
    backend.answers.update(
        DescribeHyperParameterTuningJob=[describe_response(request)],
        ListTrainingJobsForHyperParameterTuningJob=[{"TrainingJobSummaries": []}],
    )
    df = tuner.analytics().dataframe()
    assert df.empty and list(df.columns)[:3] == ["eta", "tree_method", "max_depth"]
    assert "TrainingElapsedTimeSeconds" in df.columns
