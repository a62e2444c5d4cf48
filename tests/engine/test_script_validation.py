"""Script mode as the engine reads a request: which images run a script, what the toolkit's
hyperparameters must say, and what tuning accepts for a script. Each error names what to change."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from raymaker.cluster.definition import InstanceType
from raymaker.engine.train_launch import worker_job
from raymaker.engine.tuning_spec import validate_tuning_job
from raymaker.engine.validation import SCRIPT, validate_training_job
from raymaker.protocol.errors import ValidationError
from raymaker.protocol.frameworks import FRAMEWORKS

TYPES = {"local": InstanceType("local", cpus=None), "ml.m5.xlarge": InstanceType("ml.m5.xlarge", cpus=2)}
PYTORCH = FRAMEWORKS["pytorch"].image_uri("2.3.0", "py311")
SKLEARN = FRAMEWORKS["sklearn"].image_uri("1.2-1")
XGBOOST = FRAMEWORKS["xgboost"].image_uri("1.7-1")
SOURCE = "s3://bucket/job/source/sourcedir.tar.gz"


def script_request(image: str = PYTORCH, **hyperparameters: Any) -> dict[str, Any]:
    """A CreateTrainingJob request as the SageMaker SDK sends one for a framework estimator."""
    hps = {"sagemaker_program": "train.py", "sagemaker_submit_directory": SOURCE, "epochs": 3, **hyperparameters}
    return {
        "TrainingJobName": "script-1",
        "RoleArn": "arn:aws:iam::000000000000:role/raymaker",
        "AlgorithmSpecification": {
            "TrainingImage": image,
            "TrainingInputMode": "File",
            "MetricDefinitions": [{"Name": "train:loss", "Regex": r"loss=([0-9.]+)"}],
        },
        "HyperParameters": {k: json.dumps(v) for k, v in hps.items() if v is not None},
        "InputDataConfig": [
            {"ChannelName": "training", "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bucket/d/"}}}
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://bucket/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 2, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }


def refused(request: dict[str, Any], *fragments: str) -> str:
    with pytest.raises(ValidationError) as info:
        validate_training_job(request, instance_types=TYPES)
    for fragment in fragments:
        assert fragment in info.value.message, info.value.message
    return info.value.message


def test_a_framework_image_with_a_program_is_a_script_job() -> None:
    spec = validate_training_job(script_request(), instance_types=TYPES)
    assert spec.algorithm == SCRIPT and spec.trainer == SCRIPT
    assert spec.script.framework == "pytorch"
    assert spec.script.entry_point == "train.py"  # JSON-decoded, as the toolkit reads it
    assert spec.script.submit_directory == SOURCE
    assert spec.script.metric_definitions == (("train:loss", r"loss=([0-9.]+)"),)
    assert spec.instance_count == 2  # scripts run on any number of instances
    assert spec.hyperparameters["epochs"] == "3"  # the script parses its own, as sent
    assert [c.name for c in spec.channels] == ["training"]  # any channel name, any content type
    job = worker_job(spec)
    assert job.script == spec.script and job.arn.endswith(":training-job/script-1")
    assert job.seed == 0


def test_the_sklearn_image_and_xgboost_framework_mode() -> None:
    assert validate_training_job(script_request(SKLEARN), instance_types=TYPES).script.framework == "sklearn"
    assert validate_training_job(script_request(XGBOOST), instance_types=TYPES).script.framework == "xgboost"


def test_sagemaker_xgboost_without_a_program_is_the_built_in_algorithm() -> None:
    request = script_request(XGBOOST)
    request["HyperParameters"] = {"num_round": "5", "objective": "reg:squarederror"}
    request["InputDataConfig"][0]["ChannelName"] = "train"
    request["InputDataConfig"][0]["ContentType"] = "text/csv"
    spec = validate_training_job(request, instance_types=TYPES)
    assert spec.algorithm == "xgboost" and spec.script is None


def test_a_framework_image_without_a_program_says_to_give_the_entry_point() -> None:
    refused(script_request(sagemaker_program=None), "sagemaker_program", "entry_point")


def test_a_program_without_its_source_or_with_a_folder_as_source() -> None:
    refused(script_request(sagemaker_submit_directory=None), "sagemaker_submit_directory", "sourcedir.tar.gz")
    refused(script_request(sagemaker_submit_directory="s3://bucket/src/"), ".tar.gz")


def test_a_program_for_a_built_in_is_refused_and_in_a_custom_image_is_the_image_s_own() -> None:
    request = script_request()
    request["AlgorithmSpecification"] = {"AlgorithmName": "xgboost", "TrainingInputMode": "File"}
    refused(request, "built-in", "framework image")
    # The user's own image may hold the training toolkit: it reads sagemaker_program itself.
    spec = validate_training_job(script_request("123456789012.dkr.ecr.us-east-1.amazonaws.com/mine:1"),
                                 instance_types=TYPES)
    assert spec.script is None and spec.container is not None


def test_a_bad_metric_regex_names_the_metric() -> None:
    request = script_request()
    request["AlgorithmSpecification"]["MetricDefinitions"] = [{"Name": "acc", "Regex": "acc=(["}]
    refused(request, "'acc'", "not a valid regular expression")


def test_distributions() -> None:
    spec = validate_training_job(script_request(sagemaker_torch_distributed_enabled=True), instance_types=TYPES)
    assert spec.script.distribution == "torch_distributed"
    refused(
        script_request(sagemaker_torch_distributed_enabled=True, sagemaker_pytorch_ddp_enabled=True),
        "enable one",
    )
    refused(script_request(SKLEARN, sagemaker_torch_distributed_enabled=True), "for PyTorch scripts")


def tuning_request(metric: str = "train:loss") -> dict[str, Any]:
    training = script_request()
    definition = {k: copy.deepcopy(v) for k, v in training.items() if k not in ("TrainingJobName", "HyperParameters")}
    definition["StaticHyperParameters"] = training["HyperParameters"]
    return {
        "HyperParameterTuningJobName": "script-tune",
        "HyperParameterTuningJobConfig": {
            "Strategy": "Random",
            "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": metric},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 1},
            "ParameterRanges": {
                "ContinuousParameterRanges": [{"Name": "lr", "MinValue": "0.001", "MaxValue": "0.1"}],
                "CategoricalParameterRanges": [{"Name": "optimizer", "Values": ["sgd", "adam"]}],
            },
        },
        "TrainingJobDefinition": definition,
    }


def test_tuning_a_script_takes_any_hyperparameter_and_its_metric_definitions() -> None:
    spec = validate_tuning_job(tuning_request(), instance_types=TYPES)
    assert spec.algorithm == SCRIPT
    assert [r.name for r in spec.ranges] == ["lr", "optimizer"]
    with pytest.raises(ValidationError) as info:
        validate_tuning_job(tuning_request("validation:accuracy"), instance_types=TYPES)
    assert "MetricDefinitions" in info.value.message and "train:loss" in info.value.message
