"""CreateTrainingJob validation: botocore's shape first, then raymaker's rules; every bad request is a
ValidationError (ValidationException) whose message says what to change."""

from __future__ import annotations

import copy

import pytest

from raymaker.cluster.definition import InstanceType
from raymaker.engine.validation import (
    DEFAULT_MAX_RUNTIME_SECONDS,
    TrainingJobSpec,
    algorithm_from_image,
    validate_request,
    validate_training_job,
)
from raymaker.protocol.errors import ValidationError
from tests.engine.helpers import training_request

pytestmark = pytest.mark.usefixtures("fake_algorithms")

TYPES = {
    "local": InstanceType("local", cpus=None),
    "ml.m5.large": InstanceType("ml.m5.large", cpus=0.5, price_per_hour=0.115),
}


def check(request: dict, *fragments: str) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        validate_training_job(request, instance_types=TYPES)
    err = info.value
    assert err.code == "ValidationException" and err.http_status == 400
    assert err.to_wire() == {"__type": "ValidationException", "message": err.message}
    for fragment in fragments:
        assert fragment in err.message, err.message
    return err


def test_valid_request_is_parsed() -> None:
    request = training_request()
    spec = validate_training_job(request, instance_types=TYPES)
    assert isinstance(spec, TrainingJobSpec)
    assert spec.name == "job-1" and spec.algorithm == "fake"
    assert spec.hyperparameters == {"num_round": 10, "eta": 0.1, "objective": "reg"}
    assert [c.name for c in spec.channels] == ["train", "validation"]
    # A channel without ContentType gets the algorithm's default.
    assert spec.channel("train").content_type == "text/csv"
    assert spec.channel("validation").content_type == "text/libsvm"
    assert spec.channel("validation").input_mode == "File"
    assert spec.output_path == "s3://bucket/output"
    assert spec.instance_type is TYPES["ml.m5.large"] and spec.instance_count == 2
    assert spec.max_runtime_seconds == 3600
    assert spec.checkpoint_uri is None and spec.keep_alive_seconds == 0
    assert spec.request == request and spec.request is not request
    assert spec.algorithm_class.name == "fake"


def test_defaults_and_optional_parts() -> None:
    request = training_request(
        StoppingCondition=None,
        CheckpointConfig={"S3Uri": "s3://bucket/ckpt"},
        Environment={"A": "1"},
        RetryStrategy={"MaximumRetryAttempts": 3},
        ResourceConfig={"InstanceType": "local", "InstanceCount": 1, "KeepAlivePeriodInSeconds": 600},
        OutputDataConfig={"S3OutputPath": "file:///tmp/out"},
    )
    request["AlgorithmSpecification"]["TrainingInputMode"] = "Pipe"
    request["InputDataConfig"][1]["InputMode"] = "File"  # a channel overrides the job's mode
    spec = validate_training_job(request, instance_types=TYPES)
    assert spec.max_runtime_seconds == DEFAULT_MAX_RUNTIME_SECONDS == 86400
    assert spec.checkpoint_uri == "s3://bucket/ckpt" and spec.checkpoint_local_path == "/opt/ml/checkpoints/"
    assert spec.environment == {"A": "1"} and spec.max_retry_attempts == 3
    assert spec.keep_alive_seconds == 600 and spec.instance_count == 1
    assert spec.input_mode == "Pipe"
    assert [c.input_mode for c in spec.channels] == ["Pipe", "File"]


def test_training_image_of_a_builtin_selects_the_algorithm() -> None:
    request = training_request()
    request["AlgorithmSpecification"] = {
        "TrainingImage": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1",
        "TrainingInputMode": "File",
    }
    assert validate_training_job(request, instance_types=TYPES).algorithm == "xgboost"


@pytest.mark.parametrize(
    "image, name",
    [
        ("683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1", "xgboost"),
        ("683313688378.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-xgboost:3.0-5", "xgboost"),
        ("382416733822.dkr.ecr.us-east-1.amazonaws.com/linear-learner:1", "linear-learner"),
        ("382416733822.dkr.ecr.us-east-1.amazonaws.com/kmeans:1", "kmeans"),
        ("382416733822.dkr.ecr.us-east-1.amazonaws.com/pca:1", "pca"),
        ("382416733822.dkr.ecr.us-east-1.amazonaws.com/pca@sha256:" + "a" * 64, "pca"),
    ],
)
def test_algorithm_from_image(image: str, name: str) -> None:
    assert algorithm_from_image(image) == name


@pytest.mark.parametrize(
    "image",
    [
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-training:latest",
        "docker.io/library/python:3.11",
        "kmeans:1",
    ],
)
def test_any_other_image_is_a_custom_container(image: str) -> None:
    request = training_request()
    request["AlgorithmSpecification"] = {"TrainingImage": image, "TrainingInputMode": "File"}
    request["HyperParameters"] = {"anything": "goes", "sagemaker_program": "train.py"}
    spec = validate_training_job(request, instance_types=TYPES)
    assert spec.container is not None and spec.container.image == image
    assert spec.trainer == "container" and spec.script is None
    assert spec.hyperparameters == request["HyperParameters"]  # verbatim: the container reads them


def test_unknown_algorithm() -> None:
    request = training_request()
    request["AlgorithmSpecification"]["AlgorithmName"] = "deepar"
    check(request, "'deepar' is not a raymaker built-in", "fake", "xgboost")


def test_algorithm_name_and_image_together() -> None:
    request = training_request()
    request["AlgorithmSpecification"]["TrainingImage"] = "382416733822.dkr.ecr.us-east-1.amazonaws.com/pca:1"
    check(request, "give only one")


def test_missing_algorithm_specification() -> None:
    check(training_request(AlgorithmSpecification=None), "AlgorithmSpecification is required")


@pytest.mark.parametrize(
    "hyperparameters, fragments",
    [
        ({"num_round": "10", "max_leaves": "3"}, ("'max_leaves'", "valid ones")),
        ({"eta": "0.1"}, ("needs hyperparameter 'num_round'",)),
        ({"num_round": "ten"}, ("'num_round'", "not an integer")),
        ({"num_round": "10", "eta": "2"}, ("'eta'", "outside the valid range")),
        ({"num_round": "10", "objective": "rank"}, ("'objective'", "not one of")),
    ],
)
def test_bad_hyperparameters(hyperparameters: dict, fragments: tuple[str, ...]) -> None:
    check(training_request(HyperParameters=hyperparameters), "HyperParameters:", *fragments)


def test_channel_the_algorithm_cannot_take() -> None:
    request = training_request()
    request["InputDataConfig"][1]["ChannelName"] = "test"
    check(request, "takes no channel 'test'", "train, validation")


def test_missing_required_channel() -> None:
    request = training_request()
    request["InputDataConfig"] = request["InputDataConfig"][1:]
    check(request, "needs the channel(s) 'train'")
    check(training_request(InputDataConfig=None), "'train'")


def test_content_type_the_algorithm_cannot_read() -> None:
    request = training_request()
    request["InputDataConfig"][0]["ContentType"] = "application/x-recordio-protobuf"
    check(request, "cannot read ContentType 'application/x-recordio-protobuf'", "text/csv, text/libsvm")


def test_content_type_parameters_are_allowed() -> None:
    request = training_request()
    request["InputDataConfig"][0]["ContentType"] = "text/csv; label_size=1"
    spec = validate_training_job(request, instance_types=TYPES)
    assert spec.channel("train").content_type == "text/csv; label_size=1"


def test_bad_channel_fields_are_wrapped() -> None:
    request = training_request()
    request["InputDataConfig"][0]["InputMode"] = "Stream"
    check(request, "InputDataConfig:", "InputMode", "File, Pipe, FastFile")
    request = training_request()
    request["InputDataConfig"].append(copy.deepcopy(request["InputDataConfig"][0]))
    check(request, "must be unique")


@pytest.mark.parametrize("name", ["-job", "job-", "job_1", "job.1", "jöb"])
def test_bad_job_name(name: str) -> None:
    check(training_request(TrainingJobName=name), f"TrainingJobName {name!r} is invalid", "pattern")


def test_job_name_length() -> None:
    check(training_request(TrainingJobName="a" * 64), "TrainingJobName has 64 characters; at most 63")
    assert validate_training_job(training_request(TrainingJobName="a" * 63), instance_types=TYPES)


def test_botocore_shape_errors() -> None:
    err = check(
        training_request(OutputDataConfig=None), "CreateTrainingJob request is invalid", "OutputDataConfig"
    )
    assert "Missing required parameter" in err.message
    check(training_request(HyperParameters={"num_round": 10}), "Invalid type", "HyperParameters.num_round")
    check(training_request(ResourceConfig={"InstanceType": "local", "InstanceCount": "2"}), "InstanceCount")
    check(training_request(Unexpected=1), "Unknown parameter", "Unexpected")
    check(training_request(RoleArn="x"), "RoleArn")  # botocore requires it (min length 20)
    check(training_request(RoleArn=None), "RoleArn")


def test_model_maxima_are_enforced() -> None:
    # botocore checks only minima; the model's maxima are checked too.
    request = training_request(
        ResourceConfig={"InstanceType": "local", "InstanceCount": 1, "KeepAlivePeriodInSeconds": 99999}
    )
    check(request, "ResourceConfig.KeepAlivePeriodInSeconds is 99999", "21600")
    request = training_request(HyperParameters={"num_round": "1", "eta": "x" * 2501})
    check(request, "HyperParameters['eta'] has 2501 characters")


def test_validate_request_other_operations() -> None:
    validate_request("DescribeTrainingJob", {"TrainingJobName": "a"})
    with pytest.raises(ValidationError, match="TrainingJobName"):
        validate_request("DescribeTrainingJob", {})
    with pytest.raises(ValidationError, match="unknown SageMaker operation"):
        validate_request("LaunchRocket", {})


def test_unknown_instance_type() -> None:
    request = training_request(ResourceConfig={"InstanceType": "ml.p5.48xlarge", "InstanceCount": 1})
    check(request, "'ml.p5.48xlarge' is not an instance type", "local, ml.m5.large")


def test_missing_resource_config_and_bad_counts() -> None:
    check(training_request(ResourceConfig=None), "ResourceConfig.InstanceType is required")
    check(training_request(ResourceConfig={"InstanceType": "local", "InstanceCount": 0}), "give 1 or more")
    groups = {
        "InstanceGroups": [{"InstanceType": "ml.m5.large", "InstanceCount": 1, "InstanceGroupName": "a"}]
    }
    check(training_request(ResourceConfig={"InstanceType": "local", **groups}), "InstanceGroups")


def test_single_instance_algorithm_with_several_instances() -> None:
    request = training_request()
    request["AlgorithmSpecification"]["AlgorithmName"] = "fake-single"
    check(request, "trains on one instance only", "InstanceCount to 1")
    request["ResourceConfig"]["InstanceCount"] = 1
    assert validate_training_job(request, instance_types=TYPES).instance_count == 1


def test_bad_output_and_checkpoint_uris() -> None:
    check(
        training_request(OutputDataConfig={"S3OutputPath": "s3://"}),
        "OutputDataConfig.S3OutputPath is invalid",
    )
    check(training_request(OutputDataConfig={"S3OutputPath": "gs://bucket/x"}), "unsupported storage scheme")
    check(training_request(CheckpointConfig={"S3Uri": "s3://B_ad/x"}), "CheckpointConfig.S3Uri is invalid")


def test_default_instance_types_come_from_the_cluster_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAYMAKER_CLUSTER_CONFIG", raising=False)
    spec = validate_training_job(training_request())
    assert spec.instance_type.name == "ml.m5.large" and spec.instance_type.price_per_hour == 0.115
