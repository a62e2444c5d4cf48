"""The JSON 1.1 wire: what a boto3 user sends reaches the engine unchanged, and what the engine answers
reaches the user as boto3 itself would parse it (timestamps, nested lists, errors)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from botocore.parsers import create_parser
from botocore.utils import ArgumentGenerator

from raymaker.protocol import wire
from raymaker.protocol.errors import (
    ResourceNotFound,
    SerializationException,
    UnknownOperationException,
    ValidationError,
)
from raymaker.protocol.service_model import extension_model, output_shape, service_model

CREATE_TRAINING_JOB = {
    "TrainingJobName": "xgb-2024-12-02",
    "AlgorithmSpecification": {
        "TrainingImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/xgboost:1.7-1",
        "TrainingInputMode": "File",
        "MetricDefinitions": [{"Name": "validation:auc", "Regex": "validation-auc:([0-9.]+)"}],
    },
    "RoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
    "HyperParameters": {"max_depth": "5", "eta": "0.2", "objective": "binary:logistic"},
    "InputDataConfig": [
        {
            "ChannelName": "train",
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": "s3://bucket/train/",
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
            "ContentType": "text/csv",
        }
    ],
    "OutputDataConfig": {"S3OutputPath": "s3://bucket/output/"},
    "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 2, "VolumeSizeInGB": 30},
    "StoppingCondition": {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200},
    "EnableManagedSpotTraining": True,
    "Tags": [{"Key": "team", "Value": "ml"}, {"Key": "cost-center", "Value": "42"}],
}

T0 = datetime(2024, 12, 2, 11, 46, 40, 123456, tzinfo=UTC)


def ms(t: datetime) -> datetime:
    """What the wire keeps of a timestamp: milliseconds, tz-aware."""
    t = t if t.tzinfo else t.replace(tzinfo=UTC)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def boto3_parse(body: bytes, operation: str, status: int = 200) -> dict:
    """What boto3 itself makes of a response body."""
    return create_parser("json").parse(
        {"body": body, "headers": {}, "status_code": status}, output_shape(operation)
    )


def test_create_training_job_request_round_trips():
    headers, body = wire.encode_request("CreateTrainingJob", CREATE_TRAINING_JOB)
    assert headers["X-Amz-Target"] == "SageMaker.CreateTrainingJob"
    assert headers["Content-Type"] == wire.CONTENT_TYPE
    assert wire.operation_from_target(headers["X-Amz-Target"]) == "CreateTrainingJob"
    assert wire.decode_request("CreateTrainingJob", body) == CREATE_TRAINING_JOB


def test_list_request_timestamp_round_trips_as_the_same_instant():
    after = datetime(2024, 12, 2, 12, 46, 40, 250000, tzinfo=timezone(timedelta(hours=1)))
    _, body = wire.encode_request("ListTrainingJobs", {"CreationTimeAfter": after, "MaxResults": 10})
    decoded = wire.decode_request("ListTrainingJobs", body)
    assert decoded == {"CreationTimeAfter": after, "MaxResults": 10}
    assert decoded["CreationTimeAfter"].utcoffset() == timedelta(0)


def test_decode_request_passes_mismatches_through_for_validation_to_name():
    body = json.dumps({"CreationTimeAfter": "yesterday", "MaxResults": "ten", "Bogus": [1]}).encode()
    assert wire.decode_request("ListTrainingJobs", body) == {
        "CreationTimeAfter": "yesterday",
        "MaxResults": "ten",
        "Bogus": [1],
    }
    assert wire.decode_request("ListTrainingJobs", b"") == {}


@pytest.mark.parametrize(
    ("body", "problem"), [(b'{"TrainingJobName": ', "not valid JSON"), (b'["a"]', "must be a JSON object")]
)
def test_decode_request_refuses_what_is_not_a_json_object(body, problem):
    with pytest.raises(SerializationException, match=problem) as caught:
        wire.decode_request("DescribeTrainingJob", body)
    assert caught.value.http_status == 400


def describe_training_job_result() -> dict:
    naive = T0.replace(tzinfo=None) + timedelta(minutes=5, microseconds=999)  # naive means UTC
    return {
        "TrainingJobName": "xgb-2024-12-02",
        "TrainingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/xgb-2024-12-02",
        "ModelArtifacts": {"S3ModelArtifacts": "s3://bucket/output/xgb/output/model.tar.gz"},
        "TrainingJobStatus": "Completed",
        "SecondaryStatus": "Completed",
        "AlgorithmSpecification": CREATE_TRAINING_JOB["AlgorithmSpecification"],
        "ResourceConfig": CREATE_TRAINING_JOB["ResourceConfig"],
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "CreationTime": T0,
        "TrainingStartTime": T0 + timedelta(seconds=1, microseconds=1),
        "TrainingEndTime": naive,
        "LastModifiedTime": naive,
        "FailureReason": None,  # the engine may leave unset members as None
        "SecondaryStatusTransitions": [
            {
                "Status": "Starting",
                "StartTime": T0,
                "EndTime": T0 + timedelta(seconds=1),
                "StatusMessage": "up",
            },
            {"Status": "Completed", "StartTime": naive, "StatusMessage": "done"},
        ],
        "FinalMetricDataList": [{"MetricName": "validation:auc", "Value": 0.91, "Timestamp": naive}],
        "BillableTimeInSeconds": 300,
    }


def expected_on_the_client(result: dict) -> dict:
    def convert(value):
        if isinstance(value, datetime):
            return ms(value)
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [convert(v) for v in value]
        return value

    return convert(result)


def test_describe_training_job_response_reaches_the_client_with_millisecond_timestamps():
    result = describe_training_job_result()
    body = wire.encode_response("DescribeTrainingJob", result)
    assert json.loads(body)["CreationTime"] == 1733140000.123  # SageMaker's own form: epoch seconds, ms
    decoded = wire.decode_response("DescribeTrainingJob", 200, {}, body)
    assert decoded == expected_on_the_client(result)
    assert all(t["StartTime"].tzinfo is not None for t in decoded["SecondaryStatusTransitions"])
    by_boto3 = boto3_parse(body, "DescribeTrainingJob")
    by_boto3.pop("ResponseMetadata", None)
    assert by_boto3 == decoded


def test_encode_response_refuses_a_key_the_output_shape_lacks():
    with pytest.raises(ValueError, match="Surprise"):
        wire.encode_response("DescribeTrainingJob", describe_training_job_result() | {"Surprise": 1})


@pytest.mark.parametrize(
    ("operation", "request_", "result"),
    [
        (
            "GetTrainingJobMetrics",
            {"TrainingJobName": "xgb", "MetricName": "train:loss"},
            {"Metrics": [{"MetricName": "train:loss", "Value": 0.5, "Step": 3, "Timestamp": T0}]},
        ),
        (
            "ListAuditEvents",
            {"StartTime": T0, "EndTime": T0 + timedelta(hours=1), "ErrorsOnly": True, "MaxResults": 5},
            {
                "Events": [{"EventId": "e1", "EventName": "CreateTrainingJob", "EventTime": T0}],
                "NextToken": "n",
            },
        ),
    ],
)
def test_raymaker_extension_operations_round_trip(operation, request_, result):
    headers, body = wire.encode_request(operation, request_)
    assert wire.operation_from_target(headers["X-Amz-Target"]) == operation
    assert wire.decode_request(operation, body) == request_
    encoded = wire.encode_response(operation, result)
    assert wire.decode_response(operation, 200, {}, encoded) == expected_on_the_client(result)


def test_resource_not_found_reaches_the_client_as_itself():
    status, body, headers = wire.encode_error(ResourceNotFound("Requested resource not found."))
    assert status == 400
    assert headers == {"Content-Type": wire.CONTENT_TYPE, "x-amzn-ErrorType": "ResourceNotFound"}
    with pytest.raises(ResourceNotFound) as caught:
        wire.decode_response("DescribeTrainingJob", status, headers, body)
    assert caught.value.message == "Requested resource not found."
    assert boto3_parse(body, "DescribeTrainingJob", status)["Error"] == {
        "Code": "ResourceNotFound",
        "Message": "Requested resource not found.",
    }


def test_an_unexpected_exception_is_a_500_that_leaks_nothing():
    status, body, headers = wire.encode_error(RuntimeError("secret path /srv/db at line 12"))
    assert status == 500
    assert headers["x-amzn-ErrorType"] == "InternalFailure"
    assert "secret" not in body.decode() and "RuntimeError" not in body.decode()
    assert boto3_parse(body, "DescribeTrainingJob", status)["Error"]["Code"] == "InternalFailure"


def test_decode_response_reads_the_code_from_the_header_when_the_body_lacks_it():
    with pytest.raises(ResourceNotFound, match="gone"):
        wire.decode_response(
            "DescribeTrainingJob",
            400,
            {"X-Amzn-ErrorType": "ResourceNotFound:http://x"},
            b'{"message": "gone"}',
        )


def test_encode_request_refuses_what_boto3_refuses_as_a_validation_error():
    with pytest.raises(ValidationError, match="Unknown parameter in input"):
        wire.encode_request("DescribeTrainingJob", {"TrainingJobName": "x", "Bogus": 1})


def test_operation_from_target():
    assert wire.operation_from_target("SageMaker.DescribeTrainingJob") == "DescribeTrainingJob"
    assert wire.operation_from_target("SageMaker.ListAuditEvents") == "ListAuditEvents"


@pytest.mark.parametrize(
    "target", [None, "", "DescribeTrainingJob", "Kinesis.DescribeTrainingJob", "SageMaker.Nope"]
)
def test_operation_from_target_refuses_what_names_no_operation(target):
    with pytest.raises(UnknownOperationException, match="SageMaker.<Operation>") as caught:
        wire.operation_from_target(target)
    assert repr(target) in caught.value.message
    assert caught.value.http_status == 400


class _Sample(ArgumentGenerator):
    """A value for every member of a shape (botocore's own generator), with real timestamps and blobs."""

    def _generate_skeleton(self, shape, stack, name=""):
        if shape.type_name == "timestamp":
            return T0
        if shape.type_name == "blob":
            return b"\x00\xffbytes"
        return super()._generate_skeleton(shape, stack, name)


def _output_shapes():
    for model in (service_model(), extension_model()):
        for name in model.operation_names:
            shape = model.operation_model(name).output_shape
            if shape is not None:
                yield name, shape


def test_every_answer_is_written_as_botocores_serializer_writes_it():
    """encode_response's encoders, built once per shape, against botocore's JSONSerializer walking the
    same shape (None members dropped first, as SageMaker omits them), for every operation's output."""
    from botocore.serialize import TIMESTAMP_PRECISION_MILLISECOND, JSONSerializer

    class Reference(JSONSerializer):
        def _serialize_type_structure(self, serialized, value, shape, key):
            if not shape.is_document_type:
                value = {k: v for k, v in value.items() if v is not None}
            super()._serialize_type_structure(serialized, value, shape, key)

    reference = Reference(timestamp_precision=TIMESTAMP_PRECISION_MILLISECOND)
    checked = 0
    for operation, shape in _output_shapes():
        result = _Sample(use_member_names=True).generate_skeleton(shape)
        if isinstance(result, dict) and result:
            result[next(iter(result))] = None  # a None member is left out
        expected: dict = {}
        reference._serialize(expected, result, shape)
        assert json.loads(wire.encode_response(operation, result)) == expected, operation
        checked += 1
    assert checked > 300  # SageMaker's operations and raymaker's
